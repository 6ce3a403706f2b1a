//! The object store: resource table, objects as JSON, resourceVersions, watch history and the
//! write semantics (create, update, patch, apply, delete, finalizers, garbage collection).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::ops::{Bound, Deref};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::apply::{self, FieldPath, FieldSet};
use super::selector::Selectors;
use super::validate::validate;

/// One served resource (a group/version/resource plus what the server needs to know about it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name as used in URLs, e.g. `servicebuilds`.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` is a subresource (and the main resource ignores `.status` writes).
    pub status_subresource: bool,
    /// Whether a PUT without `metadata.resourceVersion` is accepted (true for built-in
    /// resources, false for custom resources, as in kube-apiserver).
    pub unconditional_update: bool,
}

impl ResourceDef {
    /// A namespaced resource without a status subresource.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        let builtin = !group.contains('.') || group.ends_with(".k8s.io");
        Self {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced: true,
            status_subresource: false,
            unconditional_update: builtin,
        }
    }

    /// Mark the resource cluster-scoped.
    pub fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// Give the resource a `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(crate) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub(crate) fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }
}

/// The resources every server starts with.
pub fn builtin_resources() -> Vec<ResourceDef> {
    vec![
        ResourceDef::new("monoship.dev", "v1alpha1", "servicebuilds", "ServiceBuild").with_status(),
        ResourceDef::new("monoship.dev", "v1alpha1", "monorepos", "Monorepo").with_status(),
        ResourceDef::new("batch", "v1", "jobs", "Job").with_status(),
        ResourceDef::new("batch", "v1", "cronjobs", "CronJob").with_status(),
        ResourceDef::new("", "v1", "pods", "Pod").with_status(),
        ResourceDef::new("", "v1", "secrets", "Secret"),
        ResourceDef::new("", "v1", "configmaps", "ConfigMap"),
        ResourceDef::new("", "v1", "serviceaccounts", "ServiceAccount"),
        ResourceDef::new("", "v1", "services", "Service").with_status(),
        ResourceDef::new("", "v1", "namespaces", "Namespace")
            .cluster_scoped()
            .with_status(),
        ResourceDef::new("", "v1", "events", "Event"),
        ResourceDef::new("apps", "v1", "deployments", "Deployment").with_status(),
        ResourceDef::new("apps", "v1", "statefulsets", "StatefulSet").with_status(),
        ResourceDef::new("apps", "v1", "daemonsets", "DaemonSet").with_status(),
        ResourceDef::new("coordination.k8s.io", "v1", "leases", "Lease"),
        ResourceDef::new("events.k8s.io", "v1", "events", "Event"),
    ]
}

/// An error answered as a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, def: &ResourceDef, name: &str, kind: &str) -> Self {
        self.details = Some(json!({"name": name, "group": def.group, "kind": kind}));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
        )
        .with_details(def, name, &def.plural)
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified()),
        )
        .with_details(def, name, &def.plural)
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                def.qualified()
            ),
        )
        .with_details(def, name, &def.plural)
    }

    pub fn invalid(def: &ResourceDef, name: &str, field: &str, detail: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                def.qualified_kind()
            ),
        )
        .with_details(def, name, &def.kind)
    }

    /// The `Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

pub type Result<T> = std::result::Result<T, ApiError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One version of a stored object, shared (never changed) by the store, the watch history and
/// the responses that carry it; serialized at most once, when first sent.
#[derive(Debug)]
pub struct Object {
    value: Value,
    json: OnceLock<Bytes>,
}

impl Object {
    pub fn new(value: Value) -> Arc<Self> {
        Arc::new(Self {
            value,
            json: OnceLock::new(),
        })
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object as JSON text.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(self.value.to_string()))
    }
}

impl Deref for Object {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change, as retained in the watch history and broadcast to live watches.
#[derive(Debug)]
pub struct StoredEvent {
    pub key: String,
    pub namespace: String,
    pub etype: EventType,
    pub object: Arc<Object>,
    /// The object before a modification (to turn selector transitions into ADDED/DELETED).
    pub prev: Option<Arc<Object>>,
    pub rv: u64,
}

/// Options of a DELETE request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `dryRun` in the DeleteOptions body.
    pub dry_run: bool,
}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

type ObjKey = (String, String, String);

pub struct Store {
    pub resources: Vec<ResourceDef>,
    objects: BTreeMap<ObjKey, Arc<Object>>,
    pub rv: u64,
    pub history: VecDeque<Arc<StoredEvent>>,
    pub history_limit: usize,
    /// Highest resourceVersion that has fallen out of the history.
    pub compacted_rv: u64,
    pub tx: broadcast::Sender<Arc<StoredEvent>>,
    rand: RandomState,
    rand_counter: u64,
    /// Refuse to create namespaced objects in namespaces that do not exist.
    pub require_namespaces: bool,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(o) = obj else {
        unreachable!("made an object above")
    };
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

fn finalizers(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn rv_of(obj: &Value) -> Option<String> {
    meta_str(obj, "resourceVersion").map(str::to_string)
}

/// One parsed `managedFields` entry.
#[derive(Debug, Clone)]
struct ManagedEntry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    set: FieldSet,
}

fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                time: s("time"),
                set: apply::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            }
        })
        .collect()
}

fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": apply::to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Whether the part of an object whose change bumps `metadata.generation` differs between
/// `a` and `b`: `.spec` with a status subresource, else everything outside metadata and status.
fn generation_changed(def: &ResourceDef, a: &Value, b: &Value) -> bool {
    if def.status_subresource {
        return a.get("spec").unwrap_or(&Value::Null) != b.get("spec").unwrap_or(&Value::Null);
    }
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let counted = |(k, _): &(&String, &Value)| {
                !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion")
            };
            !a.iter().filter(counted).eq(b.iter().filter(counted))
        }
        _ => a != b,
    }
}

/// The metadata fields the manager tracking can own.
fn owned_metadata(field: &str) -> bool {
    matches!(
        field,
        "labels" | "annotations" | "finalizers" | "ownerReferences"
    )
}

/// Strip what the manager tracking never owns from an object.
fn strip_server_fields(mut o: Value) -> Value {
    if let Value::Object(m) = &mut o {
        m.remove("kind");
        m.remove("apiVersion");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.retain(|k, _| owned_metadata(k));
        }
        if m.get("metadata")
            .is_some_and(|meta| meta.as_object().is_some_and(Map::is_empty))
        {
            m.remove("metadata");
        }
    }
    o
}

/// The leaf paths of `strip_server_fields(obj)` (without `.status` when `skip_status`), read
/// from `obj` itself. Those paths lead to the same values in `obj` as in the stripped copy,
/// except the empty path (an object stripped down to `{}`).
fn owned_leaf_paths(obj: &Value, skip_status: bool) -> FieldSet {
    owned_leaf_paths_changed(obj, skip_status, None)
}

/// [`owned_leaf_paths`] without those under a top-level field (or owned metadata field) that
/// is the same in `other`: none of them leads to a different value there. The empty path
/// still stands for `obj` stripped down to `{}`.
fn owned_leaf_paths_changed(obj: &Value, skip_status: bool, other: Option<&Value>) -> FieldSet {
    let Value::Object(m) = obj else {
        return apply::leaf_paths(obj);
    };
    let other_meta = other.and_then(|o| o.get("metadata"));
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    let mut stripped_empty = true;
    for (k, v) in m {
        match (k.as_str(), v) {
            ("kind" | "apiVersion", _) => {}
            ("status", _) if skip_status => {}
            ("metadata", Value::Object(meta)) => {
                prefix.push("f:metadata".to_string());
                for (mk, mv) in meta.iter().filter(|(mk, _)| owned_metadata(mk)) {
                    stripped_empty = false;
                    collect_field(mk, mv, other_meta, &mut prefix, &mut out);
                }
                prefix.pop();
            }
            _ => {
                stripped_empty = false;
                collect_field(k, v, other, &mut prefix, &mut out);
            }
        }
    }
    // Every field left contributes a path; none left is the empty object, one leaf.
    if stripped_empty {
        out.insert(Vec::new());
    }
    out
}

/// Add the leaf paths of the field `k` (value `v`) of a map at `prefix`, unless `other` (the
/// same map in another object) has the same value there.
fn collect_field(
    k: &str,
    v: &Value,
    other: Option<&Value>,
    prefix: &mut FieldPath,
    out: &mut FieldSet,
) {
    if other.and_then(|o| o.get(k)) == Some(v) {
        return;
    }
    prefix.push(format!("f:{k}"));
    apply::collect(v, Some(k), prefix, out);
    prefix.pop();
}

/// The owned leaf paths whose value changed from `old` to `new`, and those that went.
fn changed_fields(old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    let odd_metadata = |o: &Value| o.get("metadata").is_some_and(|m| !m.is_object());
    if odd_metadata(old) || odd_metadata(new) {
        // `f:metadata` is a leaf of one and the parent of owned fields in the other: compare
        // the stripped copies themselves.
        let (old, new) = (
            strip_server_fields(old.clone()),
            strip_server_fields(new.clone()),
        );
        let changed = apply::leaf_paths(&new)
            .into_iter()
            .filter(|p| apply::get_path(&old, p) != apply::get_path(&new, p))
            .collect();
        let removed = apply::leaf_paths(&old)
            .into_iter()
            .filter(|p| apply::get_path(&new, p).is_none())
            .collect();
        return (changed, removed);
    }
    // Compared as with the server fields stripped: the empty path stands for a whole object
    // stripped down to `{}`, which only differs from another one that is not. Fields the
    // same in both objects can neither change nor go.
    let before = owned_leaf_paths_changed(old, false, Some(new));
    let changed = owned_leaf_paths_changed(new, false, Some(old))
        .into_iter()
        .filter(|p| match p.is_empty() {
            true => !before.contains(p),
            false => apply::get_path(old, p) != apply::get_path(new, p),
        })
        .collect();
    let removed = before
        .into_iter()
        .filter(|p| !p.is_empty() && apply::get_path(new, p).is_none())
        .collect();
    (changed, removed)
}

/// Make `target` equal to `source`, copying only the parts that differ.
fn assign(target: &mut Value, source: &Value) {
    if let (Value::Object(t), Value::Object(s)) = (&mut *target, source) {
        assign_map(t, s, None);
    } else if *target != *source {
        *target = source.clone();
    }
}

/// [`assign`] for maps, leaving the `keep` entry of `target` as it is.
fn assign_map(target: &mut Map<String, Value>, source: &Map<String, Value>, keep: Option<&str>) {
    target.retain(|k, _| Some(k.as_str()) == keep || source.contains_key(k));
    for (k, v) in source {
        if Some(k.as_str()) == keep {
            continue;
        }
        match target.get_mut(k) {
            Some(t) => assign(t, v),
            None => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(16 * 1024);
        Self {
            resources: builtin_resources(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            tx,
            rand: RandomState::new(),
            rand_counter: 0,
            require_namespaces: false,
        }
    }

    /// A copy to run a dry-run request against: same objects, nobody listening.
    pub fn dry_run_copy(&self) -> Store {
        let (tx, _) = broadcast::channel(16);
        Store {
            resources: self.resources.clone(),
            objects: self.objects.clone(),
            rv: self.rv,
            history: VecDeque::new(),
            history_limit: self.history_limit,
            compacted_rv: self.rv,
            tx,
            rand: self.rand.clone(),
            rand_counter: self.rand_counter + 1_000_000,
            require_namespaces: self.require_namespaces,
        }
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("/v1/namespaces".to_string(), String::new(), ns.to_string()))
    }

    pub fn register(&mut self, def: ResourceDef) {
        self.resources.retain(|r| {
            !(r.group == def.group && r.version == def.version && r.plural == def.plural)
        });
        self.resources.push(def);
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn def_by_key(&self, key: &str) -> Option<ResourceDef> {
        self.resources.iter().find(|r| r.key() == key).cloned()
    }

    fn random(&mut self) -> u64 {
        self.rand_counter += 1;
        let mut h = self.rand.build_hasher();
        h.write_u64(self.rand_counter);
        h.finish()
    }

    fn uid(&mut self) -> String {
        let a = self.random();
        let b = self.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn obj_key(def: &ResourceDef, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if def.namespaced { ns.unwrap_or("") } else { "" };
        (def.key(), ns.to_string(), name.to_string())
    }

    fn emit(
        &mut self,
        def: &ResourceDef,
        etype: EventType,
        object: Arc<Object>,
        prev: Option<Arc<Object>>,
    ) {
        let ev = Arc::new(StoredEvent {
            key: def.key(),
            namespace: meta_str(&object, "namespace").unwrap_or("").to_string(),
            etype,
            rv: self.rv,
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Shrink (or grow) the retained watch history; dropping events makes older
    /// resourceVersions "too old" for watches.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    /// Forget all history: any watch from a resourceVersion below the current one gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Arc<Object>> {
        self.objects
            .get(&Self::obj_key(def, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    pub fn list(&self, def: &ResourceDef, ns: Option<&str>, sel: &Selectors) -> Vec<Arc<Object>> {
        self.list_page(def, ns, sel, None, None).0
    }

    /// Up to `limit` objects (all when `None`) that come after `after` (namespace, name) in
    /// (namespace, name) order, and how many more match after them.
    pub fn list_page(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        sel: &Selectors,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> (Vec<Arc<Object>>, usize) {
        // Objects are ordered by (resource, namespace, name): read only the range of this
        // resource (and namespace), not every object of every resource.
        let key = def.key();
        let start = match after {
            Some((after_ns, after_name)) => Bound::Excluded((key.clone(), after_ns, after_name)),
            None => Bound::Included((key.clone(), ns.unwrap_or("").to_owned(), String::new())),
        };
        let mut matching = self
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|((k, ons, _), _)| *k == key && ns.is_none_or(|ns| ns == ons))
            .filter(|(_, v)| sel.matches(v));
        let page = matching
            .by_ref()
            .take(limit.unwrap_or(usize::MAX))
            .map(|(_, v)| Arc::clone(v))
            .collect();
        (page, matching.count())
    }

    /// All objects of all resources (for GC lookups).
    fn exists_uid(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|o| meta_str(o, "uid") == Some(uid))
    }

    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        mut body: Value,
        manager: Option<&str>,
    ) -> Result<Arc<Object>> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if def.namespaced && ns.is_none() {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        body["kind"] = json!(def.kind);
        body["apiVersion"] = json!(def.api_version());
        fold_string_data(def, &mut body);
        let time = now_rfc3339();
        let mut name = meta_str(&body, "name").unwrap_or("").to_string();
        if name.is_empty() {
            match meta_str(&body, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    name = format!("{prefix}{}", self.suffix());
                }
                _ => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            }
        }
        if let Some(body_ns) = meta_str(&body, "namespace")
            && def.namespaced
            && Some(body_ns) != ns
            && !body_ns.is_empty()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if rv_of(&body).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if let Some(ns) = ns
            && def.namespaced
            && self.require_namespaces
            && !self.namespace_exists(ns)
        {
            let mut e = ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
            e.details = Some(json!({"name": ns, "group": "", "kind": "namespaces"}));
            return Err(e);
        }
        let key = Self::obj_key(def, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(def, &name));
        }
        validate(def, &name, &body)?;
        // A create through the API records its manager; clients cannot supply managedFields.
        if let Some(manager) = manager {
            let entry = ManagedEntry {
                manager: manager.to_string(),
                operation: "Update".into(),
                subresource: String::new(),
                api_version: def.api_version(),
                time: time.clone(),
                // Status is not owned by the creator (kube-apiserver would have dropped it).
                set: owned_leaf_paths(&body, def.status_subresource),
            };
            write_managed(&mut body, &[entry]);
        }
        if def.plural == "namespaces" && def.group.is_empty() {
            let status = body
                .as_object_mut()
                .map(|o| o.entry("status").or_insert_with(|| json!({})));
            match status {
                Some(Value::Object(st)) => {
                    st.entry("phase").or_insert_with(|| json!("Active"));
                }
                Some(other) => *other = json!({"phase": "Active"}),
                None => {}
            }
        }
        let uid = self.uid();
        let rv = self.next_rv();
        let meta = meta_mut(&mut body);
        meta.insert("name".into(), json!(name));
        if def.namespaced {
            meta.insert("namespace".into(), json!(ns.unwrap_or("")));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(time));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        let object = Object::new(body);
        self.objects.insert(key, Arc::clone(&object));
        self.emit(def, EventType::Added, Arc::clone(&object), None);
        Ok(object)
    }

    /// Build the object that results from writing `candidate` over `old` through `sub`. With
    /// `keep_managed` the candidate's `managedFields` stay (an apply computed them), else they
    /// are `old`'s. What `old` contributes is copied only where the candidate differs.
    fn prepare(
        def: &ResourceDef,
        old: &Value,
        mut candidate: Value,
        sub: Option<&str>,
        keep_managed: bool,
    ) -> Value {
        fold_string_data(def, &mut candidate);
        let mut new = if candidate.is_object() {
            candidate
        } else {
            json!({})
        };
        if sub == Some("status") {
            // The old object with the candidate's status.
            match (&mut new, old) {
                (Value::Object(n), Value::Object(o)) => {
                    n.retain(|k, _| k == "status" || o.contains_key(k));
                    for (k, v) in o.iter().filter(|(k, _)| *k != "status") {
                        match (n.get_mut(k), v) {
                            (Some(t), Value::Object(om)) if keep_managed && k == "metadata" => {
                                if !t.is_object() {
                                    *t = Value::Object(Map::new());
                                }
                                if let Value::Object(nm) = t {
                                    assign_map(nm, om, Some("managedFields"));
                                }
                            }
                            (Some(t), _) => assign(t, v),
                            (None, _) => {
                                let mut v = v.clone();
                                if keep_managed
                                    && k == "metadata"
                                    && let Value::Object(m) = &mut v
                                {
                                    m.remove("managedFields");
                                }
                                n.insert(k.clone(), v);
                            }
                        }
                    }
                }
                (n, o) => {
                    let status = n.get("status").cloned();
                    *n = o.clone();
                    if let (Some(s), Value::Object(m)) = (status, &mut *n) {
                        m.insert("status".into(), s);
                    }
                }
            }
        } else if def.status_subresource {
            match (old.get("status"), new.get_mut("status")) {
                (Some(s), Some(t)) => assign(t, s),
                (Some(s), None) => new["status"] = s.clone(),
                (None, _) => {
                    if let Value::Object(m) = &mut new {
                        m.remove("status");
                    }
                }
            }
        }
        new["kind"] = json!(def.kind);
        new["apiVersion"] = json!(def.api_version());
        let old_meta = old.get("metadata");
        let meta = meta_mut(&mut new);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "resourceVersion",
        ] {
            if keep_managed && f == "managedFields" {
                continue;
            }
            match (old_meta.and_then(|m| m.get(f)), meta.get_mut(f)) {
                (Some(v), Some(t)) => assign(t, v),
                (Some(v), None) => {
                    meta.insert(f.to_string(), v.clone());
                }
                (None, _) => {
                    meta.remove(f);
                }
            }
        }
        new
    }

    /// Record `manager` (operation Update) as owner of the fields that changed; other
    /// managers lose ownership of fields that were changed or removed.
    fn record_update_manager(
        def: &ResourceDef,
        old: &Value,
        new: &mut Value,
        manager: &str,
        sub: Option<&str>,
    ) {
        let (changed, removed) = changed_fields(old, new);
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let mut entries = read_managed(old);
        let sub = sub.unwrap_or("");
        for e in entries.iter_mut() {
            e.set
                .retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        if !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
            {
                Some(e) => {
                    e.set.extend(changed);
                    e.time = now_rfc3339();
                }
                None => entries.push(ManagedEntry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    subresource: sub.to_string(),
                    api_version: def.api_version(),
                    time: now_rfc3339(),
                    set: changed,
                }),
            }
        }
        write_managed(new, &entries);
    }

    /// Store `new` over `old` unless nothing changed. Returns the stored object and whether
    /// anything changed.
    fn commit_update(
        &mut self,
        def: &ResourceDef,
        old: Arc<Object>,
        mut new: Value,
    ) -> (Arc<Object>, bool) {
        if new == *old.value() {
            return (old, false);
        }
        let old_gen = old.pointer("/metadata/generation").and_then(Value::as_i64);
        let gen_now = old_gen.unwrap_or(1);
        let bump = generation_changed(def, &old, &new);
        let rv = self.next_rv();
        {
            let meta = meta_mut(&mut new);
            meta.insert(
                "generation".into(),
                json!(if bump { gen_now + 1 } else { gen_now }),
            );
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let name = meta_str(&new, "name").unwrap_or("").to_string();
        let ns = meta_str(&new, "namespace").map(str::to_string);
        let key = Self::obj_key(def, ns.as_deref(), &name);
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        let new = Object::new(new);
        if deleting && finalizers(&new).is_empty() {
            self.objects.remove(&key);
            self.emit(def, EventType::Deleted, Arc::clone(&new), Some(old));
            self.collect_garbage(&new, false);
            return (new, true);
        }
        self.objects.insert(key, Arc::clone(&new));
        self.emit(def, EventType::Modified, Arc::clone(&new), Some(old));
        (new, true)
    }

    /// PUT. `sub` is `None` or `Some("status")`.
    pub fn update(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        body: Value,
        manager: &str,
    ) -> Result<(Arc<Object>, bool)> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(bname) = meta_str(&body, "name")
            && bname != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get(def, ns, name)?;
        match rv_of(&body) {
            Some(rv) if Some(&rv) != rv_of(&old).as_ref() => {
                return Err(ApiError::conflict(def, name));
            }
            None if !def.unconditional_update => {
                return Err(ApiError::invalid(
                    def,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
            _ => {}
        }
        let mut new = Self::prepare(def, &old, body, sub, false);
        if sub.is_none() {
            validate(def, name, &new)?;
        }
        Self::record_update_manager(def, &old, &mut new, manager, sub);
        Ok(self.commit_update(def, old, new))
    }

    /// PATCH (including server-side apply). Returns the object, whether it changed and
    /// whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        ptype: PatchType,
        patch: Value,
        manager: Option<&str>,
        force: bool,
    ) -> Result<(Arc<Object>, bool, bool)> {
        let existing = self.get(def, ns, name);
        if ptype == PatchType::Apply {
            return self.apply(def, ns, name, sub, existing, patch, manager, force);
        }
        let old = existing?;
        let mut doc = old.value().clone();
        match ptype {
            PatchType::Merge => json_patch::merge(&mut doc, &patch),
            PatchType::Strategic => apply::strategic_merge(&mut doc, &patch),
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
            }
            PatchType::Apply => {
                return self.apply(def, ns, name, sub, Ok(old), patch, manager, force);
            }
        }
        if rv_of(&doc) != rv_of(&old) {
            return Err(ApiError::conflict(def, name));
        }
        let mut new = Self::prepare(def, &old, doc, sub, false);
        if sub.is_none() {
            validate(def, name, &new)?;
        }
        Self::record_update_manager(def, &old, &mut new, manager.unwrap_or("unknown"), sub);
        let (obj, changed) = self.commit_update(def, old, new);
        Ok((obj, changed, false))
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        existing: Result<Arc<Object>>,
        patch: Value,
        manager: Option<&str>,
        force: bool,
    ) -> Result<(Arc<Object>, bool, bool)> {
        let manager = manager.ok_or_else(|| {
            ApiError::invalid(
                def,
                name,
                "metadata.managedFields",
                "Required value: is required for apply patch",
            )
        })?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("the apply body must be an object"));
        }
        let api_version = patch.get("apiVersion").and_then(Value::as_str);
        let kind = patch.get("kind").and_then(Value::as_str);
        if api_version != Some(def.api_version().as_str()) || kind != Some(def.kind.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid object type: {}, Kind={} (expected {}, Kind={})",
                api_version.unwrap_or(""),
                kind.unwrap_or(""),
                def.api_version(),
                def.kind
            )));
        }
        if let Some(bname) = meta_str(&patch, "name")
            && bname != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        let old = match existing {
            Ok(o) => o,
            // Apply creates missing objects, but not through /status.
            Err(e) if sub.is_some() => return Err(e),
            Err(_) => {
                let skeleton = json!({"metadata": {"name": name}});
                let merged = self.apply_merge(def, &skeleton, None, patch, manager, force)?;
                let obj = self.create(def, ns, merged, None)?;
                return Ok((obj, true, true));
            }
        };
        if let Some(rv) = rv_of(&patch)
            && Some(&rv) != rv_of(&old).as_ref()
        {
            return Err(ApiError::conflict(def, name));
        }
        let merged = self.apply_merge(def, &old, sub, patch, manager, force)?;
        // The merged object carries the applied managedFields.
        let new = Self::prepare(def, &old, merged, sub, true);
        if sub.is_none() {
            validate(def, name, &new)?;
        }
        let (obj, changed) = self.commit_update(def, old, new);
        Ok((obj, changed, false))
    }

    /// Merge an apply configuration into `old`, checking and updating field ownership.
    /// Returns the merged object with updated `managedFields`.
    fn apply_merge(
        &self,
        def: &ResourceDef,
        old: &Value,
        sub: Option<&str>,
        patch: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value> {
        let name = meta_str(old, "name").unwrap_or("").to_string();
        // Reduce the configuration to what this endpoint may set.
        let mut config = strip_server_fields(patch);
        if let Value::Object(m) = &mut config {
            if sub == Some("status") {
                m.retain(|k, _| k == "status");
            } else if def.status_subresource {
                m.remove("status");
            }
        }
        let new_set = apply::leaf_paths(&config);
        let sub_name = sub.unwrap_or("");
        let mut entries = read_managed(old);
        let mut conflicts = Vec::new();
        for e in entries.iter_mut() {
            if e.manager == manager {
                continue;
            }
            let clashing: Vec<_> = e
                .set
                .intersection(&new_set)
                .filter(|p| apply::get_path(old, p) != apply::get_path(&config, p))
                .cloned()
                .collect();
            for p in clashing {
                if force {
                    e.set.remove(&p);
                } else {
                    conflicts.push((e.manager.clone(), p));
                }
            }
        }
        if !conflicts.is_empty() {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| {
                    json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": apply::display_path(p)})
                })
                .collect();
            let listing: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {}", apply::display_path(p)))
                .collect();
            let mut err = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    listing.join("\n")
                ),
            );
            err.details = Some(
                json!({"name": name, "group": def.group, "kind": def.plural, "causes": causes}),
            );
            return Err(err);
        }
        let mut merged = old.clone();
        apply::strategic_merge(&mut merged, &config);
        let pos = entries.iter().position(|e| {
            e.manager == manager && e.operation == "Apply" && e.subresource == sub_name
        });
        let prev_set = pos
            .map(|i| std::mem::take(&mut entries[i].set))
            .unwrap_or_default();
        for p in prev_set.difference(&new_set) {
            let owned_elsewhere = entries
                .iter()
                .enumerate()
                .any(|(i, e)| Some(i) != pos && e.set.contains(p));
            if !owned_elsewhere {
                apply::remove_path(&mut merged, p);
            }
        }
        match pos {
            Some(i) => {
                if prev_set != new_set {
                    entries[i].time = now_rfc3339();
                }
                entries[i].set = new_set;
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                subresource: sub_name.to_string(),
                api_version: def.api_version(),
                time: now_rfc3339(),
                set: new_set,
            }),
        }
        write_managed(&mut merged, &entries);
        Ok(merged)
    }

    /// DELETE. Returns the final (or terminating) object and whether anything changed.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<(Arc<Object>, bool)> {
        let old = self.get(def, ns, name)?;
        if let Some(uid) = &opts.precondition_uid
            && meta_str(&old, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    def.qualified(),
                    meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv_of(&old).as_ref() != Some(rv)
        {
            return Err(ApiError::conflict(def, name));
        }
        let orphan = opts.propagation.as_deref() == Some("Orphan");
        if !finalizers(&old).is_empty() {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut new = old.value().clone();
            let rv = self.next_rv();
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            let key = Self::obj_key(def, ns, name);
            let new = Object::new(new);
            self.objects.insert(key, Arc::clone(&new));
            self.emit(def, EventType::Modified, Arc::clone(&new), Some(old));
            return Ok((new, true));
        }
        let key = Self::obj_key(def, ns, name);
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut gone = old.value().clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        let gone = Object::new(gone);
        self.emit(def, EventType::Deleted, Arc::clone(&gone), Some(old));
        self.collect_garbage(&gone, orphan);
        if def.group.is_empty() && def.plural == "namespaces" {
            self.delete_namespace_contents(name);
        }
        Ok((gone, true))
    }

    /// Delete every object in a deleted namespace (finalizers are honoured per object).
    fn delete_namespace_contents(&mut self, ns: &str) {
        let inside: Vec<ObjKey> = self
            .objects
            .keys()
            .filter(|(_, ons, _)| ons == ns)
            .cloned()
            .collect();
        for (rkey, _, name) in inside {
            if let Some(def) = self.def_by_key(&rkey) {
                let _ = self.delete(&def, Some(ns), &name, &DeleteOpts::default());
            }
        }
    }

    /// After `owner` is gone: delete its dependents (background propagation) or, for
    /// orphaning, drop the owner reference from them.
    fn collect_garbage(&mut self, owner: &Value, orphan: bool) {
        let Some(uid) = meta_str(owner, "uid").map(str::to_string) else {
            return;
        };
        let dependents: Vec<(ObjKey, Arc<Object>)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid.as_str()))
                    })
            })
            .map(|(k, o)| (k.clone(), Arc::clone(o)))
            .collect();
        for ((rkey, ns, name), obj) in dependents {
            let Some(def) = self.def_by_key(&rkey) else {
                continue;
            };
            let ns = (!ns.is_empty()).then_some(ns);
            let other_owner_alive = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .any(|u| u != uid && self.exists_uid(u));
            if orphan || other_owner_alive {
                let mut new = obj.value().clone();
                if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                self.commit_update(&def, obj, new);
            } else {
                let _ = self.delete(&def, ns.as_deref(), &name, &DeleteOpts::default());
            }
        }
    }
}

/// A Secret's `stringData` is write-only, as on kube-apiserver: each key is stored base64-encoded
/// in `data` (over a `data` key of the same name) and `stringData` is dropped.
fn fold_string_data(def: &ResourceDef, body: &mut Value) {
    use base64::Engine as _;
    if !def.group.is_empty() || def.kind != "Secret" {
        return;
    }
    let Some(Value::Object(strings)) = body.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !body["data"].is_object() {
        body["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        body["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "uid": "u"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            json!({"kind": "X", "metadata": "odd", "status": {"phase": "A"}}),
            json!({}),
            json!({"metadata": {"name": "a", "labels": {}, "annotations": {"x": "1"},
                   "ownerReferences": [{"uid": "o", "kind": "K"}], "managedFields": [{"manager": "m"}]},
                   "spec": {"containers": [{"name": "c", "image": "i"}], "list": [], "map": {}},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"status": {"phase": "A"}}),
            json!({"metadata": {"name": "b", "labels": {"x": "2"},
                   "ownerReferences": [{"uid": "o", "kind": "K"}, {"uid": "p", "kind": "L"}]},
                   "spec": {"containers": [{"name": "c", "image": "j"}, {"name": "d"}], "list": [1]},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        ]
    }

    #[test]
    fn owned_leaf_paths_are_those_of_the_stripped_copy() {
        for obj in objects() {
            for skip_status in [false, true] {
                let mut stripped = strip_server_fields(obj.clone());
                if skip_status && let Value::Object(m) = &mut stripped {
                    m.remove("status");
                }
                assert_eq!(
                    owned_leaf_paths(&obj, skip_status),
                    apply::leaf_paths(&stripped),
                    "{obj} (without status: {skip_status})"
                );
            }
        }
    }

    #[test]
    fn changed_fields_are_those_of_the_stripped_copies() {
        for old in objects() {
            for new in objects() {
                let before = strip_server_fields(old.clone());
                let after = strip_server_fields(new.clone());
                let changed: FieldSet = apply::leaf_paths(&after)
                    .into_iter()
                    .filter(|p| apply::get_path(&before, p) != apply::get_path(&after, p))
                    .collect();
                let removed: FieldSet = apply::leaf_paths(&before)
                    .into_iter()
                    .filter(|p| apply::get_path(&after, p).is_none())
                    .collect();
                assert_eq!(
                    changed_fields(&old, &new),
                    (changed, removed),
                    "{old} -> {new}"
                );
            }
        }
    }

    #[test]
    fn assign_makes_equal() {
        let all = objects();
        for source in &all {
            for target in &all {
                let mut t = target.clone();
                assign(&mut t, source);
                assert_eq!(&t, source);
            }
        }
    }

    /// `prepare` as it was written with whole copies of the old object.
    fn prepare_by_copy(
        def: &ResourceDef,
        old: &Value,
        candidate: Value,
        sub: Option<&str>,
        keep_managed: bool,
    ) -> Value {
        let managed = candidate.pointer("/metadata/managedFields").cloned();
        let mut new = if sub == Some("status") {
            let mut n = old.clone();
            match candidate.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().unwrap().remove("status");
                }
            }
            n
        } else {
            let mut n = if candidate.is_object() {
                candidate
            } else {
                json!({})
            };
            if def.status_subresource {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().unwrap().remove("status");
                    }
                }
            }
            n
        };
        new["kind"] = json!(def.kind);
        new["apiVersion"] = json!(def.api_version());
        let meta = meta_mut(&mut new);
        for f in [
            "name",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
            "namespace",
        ] {
            match old.get("metadata").and_then(|m| m.get(f)) {
                Some(v) => meta.insert(f.to_string(), v.clone()),
                None => meta.remove(f),
            };
        }
        if keep_managed {
            match managed {
                Some(m) => meta.insert("managedFields".into(), m),
                None => meta.remove("managedFields"),
            };
        }
        new
    }

    #[test]
    fn prepare_copies_only_what_differs_with_the_same_result() {
        let old = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "uid": "u", "resourceVersion": "3", "labels": {"x": "1"},
                         "managedFields": [{"manager": "old"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"}});
        let candidates = [
            old.clone(),
            json!({"metadata": {"name": "a", "labels": {"y": "2"}, "managedFields": [{"manager": "new"}]},
                   "spec": {"containers": [{"name": "c", "image": "j"}]}, "status": {"phase": "Failed"}}),
            json!({"status": {"phase": "Failed"}, "extra": true}),
            json!({"metadata": {"uid": "other", "generation": 7}}),
            json!({"metadata": "odd", "status": null}),
            json!("not an object"),
        ];
        for def in [
            ResourceDef::new("", "v1", "pods", "Pod").with_status(),
            ResourceDef::new("", "v1", "pods", "Pod"),
        ] {
            for candidate in &candidates {
                for sub in [None, Some("status")] {
                    for keep in [false, true] {
                        assert_eq!(
                            Store::prepare(&def, &old, candidate.clone(), sub, keep),
                            prepare_by_copy(&def, &old, candidate.clone(), sub, keep),
                            "{candidate} through {sub:?} (keep managedFields: {keep})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn generation_counts_spec_or_everything_but_metadata_and_status() {
        let crd = builtin_resources().remove(0);
        let cm = ResourceDef::new("", "v1", "configmaps", "ConfigMap");
        let a = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "data": {"k": "v"}});
        let b = json!({"metadata": {"name": "b"}, "spec": {"x": 1}, "status": {"y": 2}});
        assert!(!generation_changed(&crd, &a, &b));
        assert!(generation_changed(&cm, &a, &b));
        let no_spec = json!({"spec": null});
        assert!(!generation_changed(&crd, &json!({}), &no_spec));
        assert!(generation_changed(&cm, &json!({}), &no_spec));
        assert!(!generation_changed(
            &cm,
            &json!({"kind": "A"}),
            &json!({"status": 1})
        ));
    }
}
