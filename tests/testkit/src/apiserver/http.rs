//! HTTP front end: URL routing, query parameters, discovery documents, request accounting,
//! fault injection and translation of store results into responses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::store::{ApiError, DeleteOpts, Object, PatchType, ResourceDef, Store};
use super::watch::{self, WatchParams};
use super::{FaultRule, RequestKey, Shared, WriteRecord, lock};

const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn bytes_response(code: u16, body: Bytes) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A `<Kind>List` body made from the items as serialized once: the same text as `json!`
/// would make of it (keys in order).
fn list_body(def: &ResourceDef, metadata: &Value, items: &[Arc<Object>]) -> Bytes {
    let size: usize = items.iter().map(|o| o.json().len() + 1).sum();
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(b"{\"apiVersion\":");
    out.extend_from_slice(Value::from(def.api_version()).to_string().as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(o.json());
    }
    out.extend_from_slice(b"],\"kind\":");
    out.extend_from_slice(
        Value::from(format!("{}List", def.kind))
            .to_string()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(metadata.to_string().as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// A parsed resource URL.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Version,
    ApiVersions,
    GroupList,
    ResourceList(String, String),
    Resource(Target),
    Unknown,
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::ApiVersions,
        ["apis"] => return Route::GroupList,
        ["api", v] => return Route::ResourceList(String::new(), v.to_string()),
        ["apis", g, v] => return Route::ResourceList(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Route::Unknown,
    };
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, r) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match r {
        [p] => (p, None, None),
        [p, n] => (p, Some(n.to_string()), None),
        [p, n, s] => (p, Some(n.to_string()), Some(s.to_string())),
        _ => return Route::Unknown,
    };
    Route::Resource(Target {
        group,
        version,
        namespace,
        plural: plural.to_string(),
        name,
        sub,
    })
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn selectors(q: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    let labels = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s)
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
        None => FieldSelector::default(),
    };
    Ok(Selectors { labels, fields })
}

/// The page a list asks for: `limit` and `continue`. As a real API server serving a list with
/// `resourceVersion=0` from its watch cache, such a list is not paged. Pages after the first
/// are read from the store as it is then (a real server reads them at the first page's
/// resourceVersion); every page reports the first page's resourceVersion, so a watch from it
/// replays whatever changed in between.
struct Page {
    limit: Option<usize>,
    /// The (namespace, name) the page starts after.
    after: Option<(String, String)>,
    /// The resourceVersion of the first page.
    rv: u64,
}

impl Page {
    fn of(q: &HashMap<String, String>, current_rv: u64) -> Result<Self, ApiError> {
        let limit = match q.get("limit") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {v:?}")))?,
            None => 0,
        };
        let from_cache = q.get("resourceVersion").is_some_and(|v| v == "0");
        let limit = (limit > 0 && !from_cache).then_some(limit);
        let Some(token) = q.get("continue").filter(|t| !t.is_empty()) else {
            return Ok(Self {
                limit,
                after: None,
                rv: current_rv,
            });
        };
        let invalid = || ApiError::bad_request("continue key is not valid");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&decoded).map_err(|_| invalid())?;
        let text = |f: &str| value[f].as_str().map(str::to_owned).ok_or_else(invalid);
        Ok(Self {
            limit,
            after: Some((text("ns")?, text("name")?)),
            rv: value["rv"].as_u64().ok_or_else(invalid)?,
        })
    }

    /// The opaque `continue` token of a page that ended at `namespace`/`name`.
    fn token(rv: u64, namespace: &str, name: &str) -> String {
        let key = json!({"rv": rv, "ns": namespace, "name": name});
        base64::engine::general_purpose::STANDARD.encode(key.to_string())
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if ct.contains("yaml") => serde_yaml::from_slice::<Value>(body)
            .map_err(|ye| ApiError::bad_request(format!("invalid YAML body: {ye} (as JSON: {e})"))),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    match ct {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
            ),
        )),
    }
}

fn patch_type_name(p: PatchType) -> &'static str {
    match p {
        PatchType::Merge => "merge",
        PatchType::Json => "json",
        PatchType::Strategic => "strategic",
        PatchType::Apply => "apply",
    }
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> Option<&'static str> {
    Some(match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if truthy(q, "watch") => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

fn fault_matches(rule: &FaultRule, verb: &str, t: &Target) -> bool {
    fn ok(f: &Option<String>, v: Option<&str>) -> bool {
        f.as_deref().is_none_or(|f| Some(f) == v)
    }
    rule.times > 0
        && ok(&rule.verb, Some(verb))
        && ok(&rule.resource, Some(&t.plural))
        && ok(&rule.subresource, Some(t.sub.as_deref().unwrap_or("")))
        && ok(&rule.namespace, t.namespace.as_deref())
        && ok(&rule.name, t.name.as_deref())
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let route = parse_route(parts.uri.path());
    let t = match route {
        Route::Version => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-monoship-testkit",
                        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                        "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
            );
        }
        Route::ApiVersions => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            );
        }
        Route::GroupList => return json_response(200, &group_list(&shared)),
        Route::ResourceList(g, v) => {
            return match resource_list(&shared, &g, &v) {
                Some(body) => json_response(200, &body),
                None => error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            };
        }
        Route::Unknown => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        Route::Resource(t) => t,
    };
    let Some(def) = lock(&shared.store).find(&t.group, &t.version, &t.plural) else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let Some(verb) = verb_of(&parts.method, &t, &q) else {
        return error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    };
    {
        let mut stats = lock(&shared.stats);
        let key = RequestKey {
            verb: verb.to_string(),
            resource: t.plural.clone(),
            subresource: t.sub.clone().unwrap_or_default(),
        };
        *stats.counters.entry(key).or_insert(0) += 1;
    }
    let is_write = matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    let manager = q.get("fieldManager").cloned();
    // Non-apply writes without a field manager are attributed to the user agent's name.
    let default_manager = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string();
    let mut record = WriteRecord {
        verb: verb.to_string(),
        resource: t.plural.clone(),
        subresource: t.sub.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        field_manager: manager.clone(),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        patch_type: None,
        code: 0,
        changed: false,
    };
    if verb == "patch" {
        record.patch_type = patch_type(&parts.headers)
            .ok()
            .map(|p| patch_type_name(p).to_string());
    }

    // Fault injection.
    let fault = {
        let mut faults = lock(&shared.faults);
        let hit = faults
            .iter_mut()
            .find(|r| {
                fault_matches(r, verb, &t)
                    && r.user_agent
                        .as_deref()
                        .is_none_or(|agent| record.user_agent.as_deref() == Some(agent))
            })
            .and_then(|r| {
                if r.after > 0 {
                    r.after -= 1;
                    return None;
                }
                r.times -= 1;
                Some((r.status, r.delay))
            });
        faults.retain(|r| r.times > 0);
        hit
    };
    if let Some((status, delay)) = fault {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if let Some(code) = status {
            let e = ApiError::new(code, reason_for(code), format!("injected fault ({code})"));
            if is_write {
                record.code = code;
                lock(&shared.stats).writes.push(record);
            }
            return error_response(&e);
        }
    }

    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("cannot read body: {e}"))),
    };
    let req = Req {
        t: &t,
        verb,
        q: &q,
        headers: &parts.headers,
        body: &body,
        manager: manager.as_deref(),
        default_manager: &default_manager,
    };
    let result = serve(&shared, &def, &req);
    let (resp, changed) = match result {
        Ok(Served::Json(code, v, changed)) => {
            // A create names its object in the body, not the URL.
            if record.name.is_none() && verb == "create" {
                record.name = v
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned);
            }
            (bytes_response(code, v.json().clone()), changed)
        }
        Ok(Served::List(code, body, changed)) => (bytes_response(code, body), changed),
        Ok(Served::Watch(params)) => match watch::start(shared.clone(), def.clone(), params) {
            Ok(r) => (r, false),
            Err(e) => (error_response(&e), false),
        },
        Err(e) => (error_response(&e), false),
    };
    if is_write {
        record.code = resp.status().as_u16();
        record.changed = changed;
        lock(&shared.stats).writes.push(record);
    }
    resp
}

enum Served {
    /// A stored object.
    Json(u16, Arc<Object>, bool),
    /// A list body.
    List(u16, Bytes, bool),
    Watch(WatchParams),
}

fn require_name(t: &Target) -> Result<&str, ApiError> {
    t.name
        .as_deref()
        .ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "a resource name is required"))
}

struct Req<'a> {
    t: &'a Target,
    verb: &'a str,
    q: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    manager: Option<&'a str>,
    default_manager: &'a str,
}

/// Run a write against the store, or against a throw-away copy for `?dryRun`.
fn with_store<T>(
    shared: &Shared,
    dry_run: bool,
    f: impl FnOnce(&mut Store) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut guard = lock(&shared.store);
    if dry_run {
        f(&mut guard.dry_run_copy())
    } else {
        f(&mut guard)
    }
}

fn serve(shared: &Shared, def: &ResourceDef, req: &Req<'_>) -> Result<Served, ApiError> {
    let Req {
        t,
        verb,
        q,
        headers,
        body,
        manager,
        default_manager,
    } = *req;
    let dry_run = q.contains_key("dryRun");
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    if t.namespace.is_some() && !def.namespaced {
        return Err(not_found());
    }
    if let Some(sub) = &t.sub
        && !(sub == "status" && def.status_subresource)
    {
        return Err(not_found());
    }
    let needs_ns = def.namespaced && !matches!(verb, "list" | "watch" | "deletecollection");
    if needs_ns && t.namespace.is_none() {
        return Err(not_found());
    }
    let ns = t.namespace.as_deref();
    match verb {
        "get" => {
            let obj = lock(&shared.store).get(def, ns, require_name(t)?)?;
            Ok(Served::Json(200, obj, false))
        }
        "list" => {
            let sel = selectors(q)?;
            let (page_rv, items, remaining) = {
                let store = lock(&shared.store);
                let page = Page::of(q, store.rv)?;
                let (items, remaining) = store.list_page(def, ns, &sel, page.after, page.limit);
                (page.rv, items, remaining)
            };
            let mut metadata = json!({"resourceVersion": page_rv.to_string()});
            if remaining > 0 {
                let last = items.last().map(|o| {
                    let meta = &o["metadata"];
                    let text = |f: &str| meta[f].as_str().unwrap_or_default().to_owned();
                    (text("namespace"), text("name"))
                });
                if let Some((last_ns, last_name)) = last {
                    metadata["continue"] = json!(Page::token(page_rv, &last_ns, &last_name));
                    metadata["remainingItemCount"] = json!(remaining);
                }
            }
            Ok(Served::List(200, list_body(def, &metadata, &items), false))
        }
        "watch" => Ok(Served::Watch(WatchParams {
            namespace: t.namespace.clone(),
            resource_version: q.get("resourceVersion").cloned(),
            selectors: selectors(q)?,
            bookmarks: truthy(q, "allowWatchBookmarks"),
            timeout: match q.get("timeoutSeconds") {
                Some(s) => Some(std::time::Duration::from_secs(s.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds {s:?}"))
                })?)),
                None => None,
            },
            send_initial_events: truthy(q, "sendInitialEvents"),
        })),
        "create" => {
            let body = parse_body(headers, body)?;
            let manager = manager.unwrap_or(default_manager);
            let obj = with_store(shared, dry_run, |s| s.create(def, ns, body, Some(manager)))?;
            Ok(Served::Json(201, obj, !dry_run))
        }
        "update" => {
            let body = parse_body(headers, body)?;
            let name = require_name(t)?;
            let manager = manager.unwrap_or(default_manager);
            let (obj, changed) = with_store(shared, dry_run, |s| {
                s.update(def, ns, name, t.sub.as_deref(), body, manager)
            })?;
            Ok(Served::Json(200, obj, changed && !dry_run))
        }
        "patch" => {
            let ptype = patch_type(headers)?;
            let body = parse_body(headers, body)?;
            let force = truthy(q, "force");
            if force && ptype != PatchType::Apply {
                return Err(ApiError::bad_request(
                    "force is not allowed for non-apply patch types",
                ));
            }
            let manager = match ptype {
                PatchType::Apply => manager,
                _ => Some(manager.unwrap_or(default_manager)),
            };
            let name = require_name(t)?;
            let (obj, changed, created) = with_store(shared, dry_run, |s| {
                s.patch(def, ns, name, t.sub.as_deref(), ptype, body, manager, force)
            })?;
            let code = if created { 201 } else { 200 };
            Ok(Served::Json(code, obj, changed && !dry_run))
        }
        "delete" => {
            let opts = delete_opts(headers, body, q)?;
            let dry_run = dry_run || opts.dry_run;
            let name = require_name(t)?;
            let (obj, changed) = with_store(shared, dry_run, |s| s.delete(def, ns, name, &opts))?;
            Ok(Served::Json(200, obj, changed && !dry_run))
        }
        "deletecollection" => {
            let opts = delete_opts(headers, body, q)?;
            let dry_run = dry_run || opts.dry_run;
            let sel = selectors(q)?;
            let (items, rv, changed) = with_store(shared, dry_run, |store| {
                let mut items = Vec::new();
                let mut changed = false;
                for obj in store.list(def, ns, &sel) {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let ons = obj
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    if let Ok((gone, c)) = store.delete(def, ons.as_deref(), &name, &opts) {
                        changed |= c;
                        items.push(gone);
                    }
                }
                Ok((items, store.rv, changed))
            })?;
            let metadata = json!({"resourceVersion": rv.to_string()});
            Ok(Served::List(
                200,
                list_body(def, &metadata, &items),
                changed && !dry_run,
            ))
        }
        _ => Err(ApiError::new(405, "MethodNotAllowed", "unsupported verb")),
    }
}

fn delete_opts(
    headers: &HeaderMap,
    body: &Bytes,
    q: &HashMap<String, String>,
) -> Result<DeleteOpts, ApiError> {
    let v = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        parse_body(headers, body)?
    };
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let mut propagation = s("/propagationPolicy").or_else(|| q.get("propagationPolicy").cloned());
    if propagation.is_none() && v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        propagation = Some("Orphan".into());
    }
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {p:?}"
        )));
    }
    Ok(DeleteOpts {
        propagation,
        precondition_uid: s("/preconditions/uid"),
        precondition_rv: s("/preconditions/resourceVersion"),
        dry_run: v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty()),
    })
}

fn group_list(shared: &Shared) -> Value {
    let store = lock(&shared.store);
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in store.resources.iter().filter(|r| !r.group.is_empty()) {
        let versions = groups.entry(&r.group).or_default();
        if !versions.contains(&r.version.as_str()) {
            versions.push(&r.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Option<Value> {
    let store = lock(&shared.store);
    let defs: Vec<&ResourceDef> = store
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in defs {
        resources.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
