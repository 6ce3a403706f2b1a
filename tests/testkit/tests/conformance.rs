//! Conformance of the fake apiserver against the behaviour of kube-apiserver, exercised through
//! the real `kube::Client`, `kube::Api`, `watcher` and `Controller`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, CustomResource, Resource, ResourceExt};
use monoship_testkit::apiserver::{ApiServer, ApiServerConfig, FaultRule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "monoship.dev",
    version = "v1alpha1",
    kind = "ServiceBuild",
    namespaced,
    status = "ServiceBuildStatus"
)]
pub struct ServiceBuildSpec {
    pub service: String,
    #[serde(default)]
    pub commit: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct ServiceBuildStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Value>,
}

const NS: &str = "default";

fn sb(name: &str, service: &str) -> ServiceBuild {
    let mut s = ServiceBuild::new(
        name,
        ServiceBuildSpec {
            service: service.into(),
            commit: "c1".into(),
        },
    );
    s.metadata.namespace = Some(NS.into());
    s
}

fn builds(client: &Client) -> Api<ServiceBuild> {
    Api::namespaced(client.clone(), NS)
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv<K: Resource>(k: &K) -> u64 {
    k.meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch event within 5s")
        .expect("stream not ended")
        .expect("watch event ok")
}

/// Skip bookmarks.
async fn next_change<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match next_event(stream).await {
            WatchEvent::Bookmark(_) => continue,
            other => return other,
        }
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn create_assigns_server_metadata() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let created = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(rv(&created), server.resource_version());
    assert_eq!(meta.namespace.as_deref(), Some(NS));

    let second = api
        .create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    assert!(
        rv(&second) > rv(&created),
        "resourceVersion is one increasing counter"
    );
    assert_ne!(second.metadata.uid, created.metadata.uid);

    let mut gen_named = sb("", "web");
    gen_named.metadata.name = None;
    gen_named.metadata.generate_name = Some("build-".into());
    let g = api
        .create(&PostParams::default(), &gen_named)
        .await
        .unwrap();
    let name = g.name_any();
    assert!(
        name.starts_with("build-") && name.len() == "build-".len() + 5,
        "{name}"
    );

    let dup = api_err(
        api.create(&PostParams::default(), &sb("a", "web"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        dup.message,
        r#"servicebuilds.monoship.dev "a" already exists"#
    );

    let mut unnamed = sb("", "web");
    unnamed.metadata.name = None;
    let invalid = api_err(
        api.create(&PostParams::default(), &unnamed)
            .await
            .unwrap_err(),
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));

    // The namespace of the URL is honoured; a different one in the body is rejected.
    let other: Api<ServiceBuild> = Api::namespaced(server.client(), "other");
    let mut x = sb("x", "web");
    x.metadata.namespace = None;
    let made = other.create(&PostParams::default(), &x).await.unwrap();
    assert_eq!(made.metadata.namespace.as_deref(), Some("other"));
    let mismatch = api_err(
        other
            .create(&PostParams::default(), &sb("y", "web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(mismatch.code, 400);
}

#[tokio::test]
async fn get_missing_and_unknown_resources_are_not_found_statuses() {
    let server = ApiServer::start().await;
    let client = server.client();
    let err = api_err(builds(&client).get("nope").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        err.message,
        r#"servicebuilds.monoship.dev "nope" not found"#
    );
    let details = err.details.expect("details");
    assert_eq!(details.name, "nope");
    assert_eq!(details.group, "monoship.dev");

    let req = axum::http::Request::get("/apis/example.com/v1/namespaces/default/widgets")
        .body(Vec::new())
        .unwrap();
    let unknown = api_err(client.request_text(req).await.unwrap_err());
    assert_eq!((unknown.code, unknown.reason.as_str()), (404, "NotFound"));

    let secrets: Api<Secret> = Api::namespaced(client, NS);
    let err = api_err(
        secrets
            .delete("nope", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.message, r#"secrets "nope" not found"#);
}

#[tokio::test]
async fn malformed_requests_get_status_answers() {
    let server = ApiServer::start().await;
    let client = server.client();
    let bad_json =
        axum::http::Request::post("/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds")
            .header("content-type", "application/json")
            .body(b"{not json".to_vec())
            .unwrap();
    let e = api_err(client.request_text(bad_json).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));

    let api = builds(&client);
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let e = api_err(
        api.list(&ListParams::default().labels("a in (b"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    // Odd but well-formed JSON never crashes the server.
    let odd: [(&str, &str, &str, &[u8]); 6] = [
        (
            "POST",
            "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds",
            "application/json",
            b"[]",
        ),
        (
            "POST",
            "/api/v1/namespaces",
            "application/json",
            br#"{"metadata":{"name":"n"},"status":"weird"}"#,
        ),
        (
            "PUT",
            "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
            "application/json",
            b"5",
        ),
        (
            "PATCH",
            "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
            "application/json-patch+json",
            br#"{"op":"add"}"#,
        ),
        (
            "PATCH",
            "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
            "application/merge-patch+json",
            b"5",
        ),
        (
            "GET",
            "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds?watch=true&resourceVersion=abc",
            "",
            b"",
        ),
    ];
    api_ok_or_status(&client, &odd).await;
    assert_eq!(
        api.get("a").await.unwrap().spec.service,
        "web",
        "the server survived"
    );

    let bad_patch = axum::http::Request::patch(
        "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
    )
    .header("content-type", "text/plain")
    .body(b"{}".to_vec())
    .unwrap();
    let e = api_err(client.request_text(bad_patch).await.unwrap_err());
    assert_eq!(e.code, 415);

    // Apply without a field manager is rejected by the server (kube refuses to send it).
    let no_manager = axum::http::Request::patch(
        "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
    )
    .header("content-type", "application/apply-patch+yaml")
    .body(
        br#"{"apiVersion":"monoship.dev/v1alpha1","kind":"ServiceBuild","spec":{"service":"x"}}"#
            .to_vec(),
    )
    .unwrap();
    let e = api_err(client.request_text(no_manager).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    let failing_test: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/service", "value": "other"}]))
            .unwrap();
    let bad_json_patch = Patch::Json::<()>(failing_test);
    let e = api_err(
        api.patch("a", &PatchParams::default(), &bad_json_patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
}

/// Send raw requests; each must be answered with success or a `Status` error.
async fn api_ok_or_status(client: &Client, reqs: &[(&str, &str, &str, &[u8])]) {
    for (method, uri, ct, body) in reqs {
        let mut b = axum::http::Request::builder().method(*method).uri(*uri);
        if !ct.is_empty() {
            b = b.header("content-type", *ct);
        }
        match client.request_text(b.body(body.to_vec()).unwrap()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) => assert!(
                s.code >= 400 && !s.reason.is_empty(),
                "{method} {uri}: {s:?}"
            ),
            Err(e) => panic!("{method} {uri}: transport error {e}"),
        }
    }
}

#[tokio::test]
async fn list_honours_selectors_namespaces_and_resource_version() {
    let server = ApiServer::start().await;
    let client = server.client();
    for (ns, name, labels) in [
        ("a", "one", json!({"app": "web", "tier": "fe"})),
        ("a", "two", json!({"app": "db"})),
        ("b", "three", json!({"app": "web"})),
    ] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        let mut v: Vec<String> = l.items.iter().map(|c| c.name_any()).collect();
        v.sort();
        v
    };
    let everything = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        everything.metadata.resource_version.as_deref(),
        Some(server.resource_version().to_string().as_str())
    );
    assert_eq!(names(everything), ["one", "three", "two"]);
    let raw = axum::http::Request::get("/api/v1/configmaps")
        .body(Vec::new())
        .unwrap();
    let raw: Value = serde_json::from_str(&client.request_text(raw).await.unwrap()).unwrap();
    assert_eq!(raw["kind"], "ConfigMapList");
    assert_eq!(raw["items"][0]["kind"], "ConfigMap");
    assert_eq!(raw["items"][0]["apiVersion"], "v1");
    let cases: [(&str, &str, &[&str]); 8] = [
        ("app=web", "", &["one", "three"]),
        ("app==web,tier", "", &["one"]),
        ("app!=web", "", &["two"]),
        ("app in (db,x)", "", &["two"]),
        ("app notin (db)", "", &["one", "three"]),
        ("!tier", "", &["three", "two"]),
        ("", "metadata.namespace=b", &["three"]),
        ("app=web", "metadata.name!=one", &["three"]),
    ];
    for (labels, fields, want) in cases {
        let mut lp = ListParams::default();
        if !labels.is_empty() {
            lp = lp.labels(labels);
        }
        if !fields.is_empty() {
            lp = lp.fields(fields);
        }
        assert_eq!(
            names(all.list(&lp).await.unwrap()),
            want,
            "{labels} / {fields}"
        );
    }
    let in_a: Api<ConfigMap> = Api::namespaced(client, "a");
    assert_eq!(
        names(
            in_a.list(&ListParams::default().fields("metadata.name==two"))
                .await
                .unwrap()
        ),
        ["two"]
    );
}

/// `limit` pages a list with `continue` tokens, in (namespace, name) order, every page at the
/// first page's resourceVersion; `resourceVersion=0` is served whole, as from a watch cache;
/// the watcher reads every page.
#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let server = ApiServer::start().await;
    let client = server.client();
    for (ns, name) in [("a", "x"), ("a", "y"), ("b", "v"), ("b", "w"), ("b", "z")] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let rv = server.resource_version().to_string();
    let all: Api<ConfigMap> = Api::all(client.clone());
    let mut seen = Vec::new();
    let mut remaining = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = all.list(&lp).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        remaining.push(page.metadata.remaining_item_count);
        seen.extend(
            page.items
                .iter()
                .map(|c| format!("{}/{}", c.namespace().unwrap(), c.name_any())),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
        // A change between pages shows in the pages still to come.
        if seen.len() == 2 {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "b");
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": "y2"}})).unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
    assert_eq!(seen, ["a/x", "a/y", "b/v", "b/w", "b/y2", "b/z"]);
    assert_eq!(remaining, [Some(3), Some(2), None]);
    let in_b: Api<ConfigMap> = Api::namespaced(client.clone(), "b");
    let first = in_b.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    // kube leaves resourceVersion=0 out of a list with a limit; a raw request sends both.
    let raw = axum::http::Request::get("/api/v1/namespaces/b/configmaps?limit=1&resourceVersion=0")
        .body(Vec::new())
        .unwrap();
    let cached: Value = serde_json::from_str(&client.request_text(raw).await.unwrap()).unwrap();
    assert_eq!(
        cached["items"].as_array().map(Vec::len),
        Some(4),
        "resourceVersion=0 is not paged"
    );
    assert_eq!(cached["metadata"].get("continue"), None);
    let bad = all
        .list(&ListParams::default().limit(1).continue_token("not a token"))
        .await
        .unwrap_err();
    assert_eq!(api_err(bad).code, 400);

    let before = server.requests("list", "configmaps");
    let listed: Vec<String> = watcher(all, watcher::Config::default().page_size(2))
        .take_while(|e| std::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
        .filter_map(|e| async move {
            match e {
                Ok(watcher::Event::InitApply(cm)) => Some(cm.name_any()),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(listed, ["x", "y", "v", "w", "y2", "z"]);
    assert_eq!(server.requests("list", "configmaps") - before, 3);
}

#[tokio::test]
async fn put_with_stale_resource_version_conflicts() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let v1 = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.spec.commit = "c2".into();
    let v2 = api.replace("a", &PostParams::default(), &v2).await.unwrap();
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(v2.metadata.generation, Some(2));
    let mut stale = v1.clone();
    stale.spec.commit = "c3".into();
    let e = api_err(
        api.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on servicebuilds.monoship.dev "a": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let missing = api_err(
        api.replace("zzz", &PostParams::default(), &{
            let mut m = v2.clone();
            m.metadata.name = Some("zzz".into());
            m
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(missing.code, 404);
    assert_eq!(api.get("a").await.unwrap().spec.commit, "c2");
}

#[tokio::test]
async fn merge_and_json_patches() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let p = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}, "spec": {"commit": "c9"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.commit, "c9");
    assert_eq!(p.labels().get("x").map(String::as_str), Some("1"));
    assert_eq!(p.metadata.generation, Some(2));
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/service", "value": "api"},
        {"op": "remove", "path": "/metadata/labels/x"},
    ]))
    .unwrap();
    let j = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap();
    assert_eq!(j.spec.service, "api");
    assert!(j.labels().is_empty());
    // A resourceVersion in a merge patch is a precondition.
    let e = api_err(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"commit": "zz"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
}

#[tokio::test]
async fn server_side_apply_tracks_managers_conflicts_and_force() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let apply = |service: &str, label: Option<&str>| {
        let mut v = json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
            "metadata": {"name": "a"}, "spec": {"service": service}});
        if let Some(l) = label {
            v["metadata"]["labels"] = json!({"owner": l});
        }
        Patch::Apply(v)
    };
    // Apply creates a missing object.
    let created = api
        .patch(
            "a",
            &PatchParams::apply("alice"),
            &apply("web", Some("alice")),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.service, "web");
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert!(fields.pointer("/f:spec/f:service").is_some(), "{fields}");

    // Same config again: no change.
    let again = api
        .patch(
            "a",
            &PatchParams::apply("alice"),
            &apply("web", Some("alice")),
        )
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&created));

    // Another applier changing an owned field conflicts...
    let e = api_err(
        api.patch("a", &PatchParams::apply("bob"), &apply("api", None))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains(r#"conflict with "alice""#) && e.message.contains(".spec.service"),
        "{}",
        e.message
    );
    // ...agreeing on the value shares ownership...
    api.patch("a", &PatchParams::apply("bob"), &apply("web", None))
        .await
        .unwrap();
    // ...and force takes it over.
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("carol").force(),
            &apply("db", None),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.service, "db");
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"carol".to_string()));
    // alice dropping the label she owned removes it (nobody else owns it).
    let dropped = api
        .patch(
            "a",
            &PatchParams::apply("alice").force(),
            &apply("db", None),
        )
        .await
        .unwrap();
    assert!(
        dropped.labels().get("owner").is_none(),
        "{:?}",
        dropped.labels()
    );
    // An update (merge patch) takes ownership of what it changes: the applier now conflicts
    // with the updating manager, and force takes the field back.
    api.patch(
        "a",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"service": "edited"}})),
    )
    .await
    .unwrap();
    let e = api_err(
        api.patch("a", &PatchParams::apply("carol"), &apply("db", None))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains(r#"conflict with "kubectl-edit""#),
        "{}",
        e.message
    );
    let back = api
        .patch(
            "a",
            &PatchParams::apply("carol").force(),
            &apply("db", None),
        )
        .await
        .unwrap();
    assert_eq!(back.spec.service, "db");
    // Fields only set at create time by a plain client do not block an applier that agrees.
    let created = api
        .create(&PostParams::default(), &sb("plain", "web"))
        .await
        .unwrap();
    let same = api
        .patch(
            "plain",
            &PatchParams::apply("ctrl"),
            &Patch::Apply(json!({"apiVersion": "monoship.dev/v1alpha1",
            "kind": "ServiceBuild", "spec": {"service": "web"}})),
        )
        .await
        .unwrap();
    assert!(rv(&same) > rv(&created), "new manager recorded");
    // Apply on /status of a missing object is 404.
    let e = api_err(api.patch_status("zz", &PatchParams::apply("alice"), &Patch::Apply(json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild", "status": {"phase": "x"}}))).await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn list_maps_merge_by_key() {
    let server = ApiServer::start().await;
    let client = server.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let base = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}]}}}});
    deps.patch("d", &PatchParams::apply("ctrl"), &Patch::Apply(base))
        .await
        .unwrap();
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "side:1"},
        {"name": "app", "env": [{"name": "B", "value": "2"}]}]}}}});
    let d = deps
        .patch("d", &PatchParams::apply("mesh"), &Patch::Apply(sidecar))
        .await
        .unwrap();
    let containers = d.spec.template.spec.unwrap().containers;
    let by_name: BTreeMap<_, _> = containers
        .iter()
        .map(|c| (c.name.clone(), c.clone()))
        .collect();
    assert_eq!(by_name.len(), 2);
    assert_eq!(by_name["app"].image.as_deref(), Some("app:1"));
    let env: Vec<_> = by_name["app"]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"]);

    // Strategic merge patch merges containers by name too.
    let d = deps
        .patch("d", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}}})))
        .await
        .unwrap();
    let containers = d.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(
        containers
            .iter()
            .find(|c| c.name == "sidecar")
            .unwrap()
            .image
            .as_deref(),
        Some("side:2")
    );

    // Conditions merge by type through status apply.
    let api = builds(&client);
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let cond = |t: &str, s: &str| {
        json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
        "status": {"conditions": [{"type": t, "status": s}]}})
    };
    api.patch_status(
        "a",
        &PatchParams::apply("ready"),
        &Patch::Apply(cond("Ready", "True")),
    )
    .await
    .unwrap();
    let b = api
        .patch_status(
            "a",
            &PatchParams::apply("built"),
            &Patch::Apply(cond("Built", "False")),
        )
        .await
        .unwrap();
    let types: Vec<_> = b
        .status
        .unwrap()
        .conditions
        .iter()
        .map(|c| c["type"].clone())
        .collect();
    assert_eq!(types, [json!("Ready"), json!("Built")]);
}

#[tokio::test]
async fn no_op_patch_does_not_bump_or_notify() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let created = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    server.reset_counters();
    let same = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"service": "web"}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&created));
    let applied = api
        .patch("a", &PatchParams::apply("m"), &Patch::Apply(json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild", "spec": {"service": "web"}})))
        .await
        .unwrap();
    // The first apply records a new manager: that is a change.
    assert!(rv(&applied) > rv(&created));
    let again = api
        .patch("a", &PatchParams::apply("m"), &Patch::Apply(json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild", "spec": {"service": "web"}})))
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&applied));
    assert_eq!(server.write_requests("servicebuilds"), 3);
    assert_eq!(server.changing_writes("servicebuilds"), 1);
    let writes = server.writes();
    assert!(!writes[0].changed && writes[1].changed && !writes[2].changed);
    assert_eq!(writes[2].field_manager.as_deref(), Some("m"));
    assert_eq!(writes[2].patch_type.as_deref(), Some("apply"));
    match next_change(&mut stream).await {
        WatchEvent::Modified(o) => assert_eq!(rv(&o), rv(&applied)),
        other => panic!("unexpected {other:?}"),
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(
        matches!(quiet, Err(_) | Ok(Some(Ok(WatchEvent::Bookmark(_))))),
        "no-op writes emit no events"
    );
}

#[tokio::test]
async fn status_subresource_rules_and_generation() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let created = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Status write through /status: spec ignored, generation unchanged.
    let s = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"service": "evil"}, "status": {"phase": "Building"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.service, "web");
    assert_eq!(
        s.status.as_ref().unwrap().phase.as_deref(),
        Some("Building")
    );
    assert_eq!(s.metadata.generation, Some(1));
    assert!(rv(&s) > rv(&created));
    // Main resource: status ignored, spec change bumps generation.
    let m = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"commit": "c2"}, "status": {"phase": "Hacked"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        m.status.as_ref().unwrap().phase.as_deref(),
        Some("Building")
    );
    assert_eq!(m.metadata.generation, Some(2));
    // Metadata-only change: no generation bump.
    let l = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"k": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(2));
    // PUT on /status honours the resourceVersion precondition and ignores spec.
    let mut put = l.clone();
    put.spec.service = "nope".into();
    put.status = Some(ServiceBuildStatus {
        phase: Some("Done".into()),
        conditions: vec![],
    });
    let done = api
        .replace_status("a", &PostParams::default(), &put)
        .await
        .unwrap();
    assert_eq!(done.spec.service, "web");
    assert_eq!(done.status.unwrap().phase.as_deref(), Some("Done"));
    let e = api_err(
        api.replace_status("a", &PostParams::default(), &put)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    // Resources without a status subresource bump generation on any non-metadata change.
    let secrets: Api<Secret> = Api::namespaced(server.client(), NS);
    let sec: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
            .unwrap();
    secrets.create(&PostParams::default(), &sec).await.unwrap();
    let sec = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "Opaque"})),
        )
        .await
        .unwrap();
    assert_eq!(sec.metadata.generation, Some(2));
    // /status on a resource without the subresource is 404.
    let e = api_err(
        secrets
            .patch_status("s", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn watch_resumes_from_resource_version_in_order() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let first = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"commit": "c2"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut s = api
        .watch(&WatchParams::default(), &first.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (kind, o) = match next_change(&mut s).await {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        seen.push((kind, o.name_any(), rv(&o)));
    }
    assert_eq!(
        seen.iter()
            .map(|(k, n, _)| (*k, n.as_str()))
            .collect::<Vec<_>>(),
        [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    );
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2));
    // Live events follow; label selectors apply to watches, with transitions.
    let mut labelled = api
        .watch(&WatchParams::default().labels("team=x"), "0")
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next_change(&mut labelled).await, WatchEvent::Added(o) if o.name_any() == "a")
    );
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "y"}}})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next_change(&mut labelled).await, WatchEvent::Deleted(o) if o.name_any() == "a")
    );
    // rv=0 starts with the current state.
    let mut from_zero = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next_change(&mut from_zero).await, WatchEvent::Added(o) if o.name_any() == "a")
    );
}

#[tokio::test]
async fn watch_sends_bookmarks_and_honours_timeout() {
    let server = ApiServer::start_with(ApiServerConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let api = builds(&server.client());
    let created = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams::default().timeout(1),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata.resource_version,
            created.resource_version().unwrap()
        ),
        other => panic!("expected bookmark, got {other:?}"),
    }
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"commit": "c2"}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_change(&mut s).await, WatchEvent::Modified(_)));
    let mut bookmarks = 0;
    let started = std::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .expect("stream ends by itself")
    {
        if matches!(ev.unwrap(), WatchEvent::Bookmark(_)) {
            bookmarks += 1;
        }
    }
    assert!(bookmarks >= 3, "periodic bookmarks, got {bookmarks}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "timeoutSeconds ends the stream"
    );
    // Without allowWatchBookmarks, none are sent.
    let mut quiet = api
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(1),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(3), quiet.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn too_old_resource_version_expires_and_watcher_relists() {
    let server = ApiServer::start_with(ApiServerConfig {
        history_limit: 2,
        ..Default::default()
    })
    .await;
    let api = builds(&server.client());
    let first = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    for i in 0..3 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"commit": format!("c{i}")}})),
        )
        .await
        .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default(), &first.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {}", rv(&first))),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(s.next().await.is_none(), "stream ends after the error");

    // The real watcher: make its next watch request wait while history moves on.
    let cfg = watcher::Config::default().timeout(1).disable_bookmarks();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(watcher(api.clone(), cfg).for_each(move |e| {
        let _ = tx.send(e);
        async {}
    }));
    loop {
        if let watcher::Event::InitDone = events.recv().await.unwrap().unwrap() {
            break;
        }
    }
    eventually("first watch request", || {
        server.requests("watch", "servicebuilds") > 1
    })
    .await;
    let watches = server.requests("watch", "servicebuilds");
    server.inject_fault(FaultRule::new("watch", "servicebuilds").delay(Duration::from_millis(800)));
    // The first watch times out after 1s; wait until the (delayed) second one has arrived.
    eventually("second watch request", || {
        server.requests("watch", "servicebuilds") > watches
    })
    .await;
    for name in ["b", "c", "d"] {
        api.create(&PostParams::default(), &sb(name, "web"))
            .await
            .unwrap();
    }
    let mut got_410 = false;
    let mut relisted = Vec::new();
    while relisted.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Err(watcher::Error::WatchError(e)) if e.code == 410 => got_410 = true,
            Ok(watcher::Event::InitApply(o)) => relisted.push(o.name_any()),
            Ok(watcher::Event::Apply(o)) => {
                panic!("saw {} as a live event; expected a relist", o.name_any())
            }
            _ => {}
        }
    }
    driver.abort();
    assert!(got_410);
    relisted.sort();
    assert_eq!(relisted, ["a", "b", "c", "d"]);
    assert_eq!(server.requests("list", "servicebuilds"), 2);
}

#[tokio::test]
async fn streaming_list_watcher_works() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["a"]);
    api.create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests("list", "servicebuilds"), 0);
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    let mut obj = sb("a", "web");
    obj.metadata.finalizers = Some(vec!["monoship.dev/cleanup".into()]);
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let mut s = api
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let deleting = api
        .delete("a", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("object returned");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(0));
    assert!(
        matches!(next_change(&mut s).await, WatchEvent::Modified(o) if o.metadata.deletion_timestamp.is_some())
    );
    // Still there; deleting again changes nothing.
    assert!(
        api.get("a")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let before = server.resource_version();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(server.resource_version(), before);
    // Removing the last finalizer removes the object.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(matches!(next_change(&mut s).await, WatchEvent::Deleted(o) if o.name_any() == "a"));
    assert_eq!(api_err(api.get("a").await.unwrap_err()).code, 404);
    // Without finalizers, deletion is immediate and returns the object.
    api.create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    let gone = api.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(gone.left().unwrap().name_any(), "b");
    assert!(matches!(next_change(&mut s).await, WatchEvent::Added(_)));
    assert!(matches!(next_change(&mut s).await, WatchEvent::Deleted(o) if o.name_any() == "b"));
}

fn owned_job(name: &str, owner: &ServiceBuild) -> Job {
    let mut job: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    job.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    job
}

#[tokio::test]
async fn owner_references_cascade_in_the_background() {
    let server = ApiServer::start().await;
    let client = server.client();
    let api = builds(&client);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let owner = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &owned_job("j1", &owner))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &owned_job("j2", &owner))
        .await
        .unwrap();
    let mut unrelated = owned_job("free", &owner);
    unrelated.metadata.owner_references = None;
    jobs.create(&PostParams::default(), &unrelated)
        .await
        .unwrap();
    api.delete("a", &DeleteParams::background()).await.unwrap();
    let left: Vec<_> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(left, ["free"]);

    // Orphan leaves dependents and drops the reference.
    let owner = api
        .create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &owned_job("j3", &owner))
        .await
        .unwrap();
    api.delete("b", &DeleteParams::orphan()).await.unwrap();
    let j3 = jobs.get("j3").await.unwrap();
    assert!(j3.metadata.owner_references.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn counters_count_exact_writes() {
    let server = ApiServer::start().await;
    let client = server.client();
    let leases: Api<Lease> = Api::namespaced(client, NS);
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}),
    )
    .unwrap();
    server.reset_counters();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    leases.get("l").await.unwrap();
    leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "you"}})),
        )
        .await
        .unwrap();
    leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "you"}})),
        )
        .await
        .unwrap();
    leases.delete("l", &DeleteParams::default()).await.unwrap();
    assert_eq!(server.write_requests("leases"), 4);
    assert_eq!(server.changing_writes("leases"), 3);
    assert_eq!(
        server.count_writes("leases"),
        monoship_testkit::apiserver::WriteCounts {
            requests: 4,
            changed: 3
        }
    );
    assert_eq!(server.requests("patch", "leases"), 2);
    assert_eq!(server.requests("get", "leases"), 1);
    let verbs: Vec<_> = server
        .writes()
        .into_iter()
        .map(|w| (w.verb, w.name, w.changed))
        .collect();
    assert_eq!(
        verbs,
        [
            ("create".to_string(), Some("l".to_string()), true),
            ("patch".to_string(), Some("l".to_string()), true),
            ("patch".to_string(), Some("l".to_string()), false),
            ("delete".to_string(), Some("l".to_string()), true),
        ]
    );
    server.reset_counters();
    assert!(server.counters().is_empty());
}

#[tokio::test]
async fn writes_record_the_user_agent() {
    let server = ApiServer::start().await;
    let leases = |client: Client| Api::<Lease>::namespaced(client, NS);
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap();
    leases(server.client_as("replica-a"))
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    server.inject_fault(FaultRule::new("delete", "leases"));
    leases(server.client_as("replica-b"))
        .delete("l", &DeleteParams::default())
        .await
        .unwrap_err();
    leases(server.client())
        .delete("l", &DeleteParams::default())
        .await
        .unwrap();
    let writes: Vec<_> = server
        .writes()
        .into_iter()
        .map(|w| (w.verb, w.code, w.user_agent))
        .collect();
    assert_eq!(
        writes,
        [
            ("create".to_string(), 201, Some("replica-a".to_string())),
            ("delete".to_string(), 500, Some("replica-b".to_string())),
            ("delete".to_string(), 200, None),
        ]
    );
}

#[tokio::test]
async fn injected_faults_fail_then_recover() {
    let server = ApiServer::start().await;
    let api = builds(&server.client());
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    server.inject_fault(FaultRule::new("get", "servicebuilds").name("a"));
    let e = api_err(api.get("a").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");

    server.inject_fault(
        FaultRule::new("patch", "servicebuilds")
            .status(409)
            .times(2),
    );
    let p = PatchParams::default();
    let m = Patch::Merge(json!({"spec": {"commit": "z"}}));
    assert_eq!(api_err(api.patch("a", &p, &m).await.unwrap_err()).code, 409);
    assert_eq!(api_err(api.patch("a", &p, &m).await.unwrap_err()).code, 409);
    assert_eq!(api.patch("a", &p, &m).await.unwrap().spec.commit, "z");
    let failed = server
        .writes()
        .into_iter()
        .filter(|w| w.code == 409)
        .count();
    assert_eq!(failed, 2);

    // Subresource filters: "" is the main resource only.
    server.inject_fault(FaultRule::new("patch", "servicebuilds").subresource("status"));
    api.patch("a", &p, &m).await.unwrap();
    let status_patch = Patch::Merge(json!({"status": {"phase": "x"}}));
    assert_eq!(
        api_err(api.patch_status("a", &p, &status_patch).await.unwrap_err()).code,
        500
    );
    api.patch_status("a", &p, &status_patch).await.unwrap();

    // `after`: the first matching requests pass, the next one fails.
    server.inject_fault(FaultRule::new("get", "servicebuilds").name("a").after(2));
    api.get("a").await.unwrap();
    api.get("a").await.unwrap();
    assert_eq!(api_err(api.get("a").await.unwrap_err()).code, 500);
    api.get("a").await.unwrap();

    server.inject_fault(FaultRule::new("get", "servicebuilds").delay(Duration::from_millis(300)));
    let t = std::time::Instant::now();
    api.get("a").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn discovery_documents_are_served() {
    let server = ApiServer::start().await;
    let client = server.client();
    let gvk = kube::api::GroupVersionKind::gvk("monoship.dev", "v1alpha1", "ServiceBuild");
    let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
    assert_eq!(ar.plural, "servicebuilds");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "batch"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(
        core.resources
            .iter()
            .any(|r| r.name == "namespaces" && !r.namespaced)
    );
}

struct Ctx {
    client: Client,
    reconciles: AtomicUsize,
}

async fn reconcile(sb: Arc<ServiceBuild>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &sb.namespace().unwrap());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{}-config", sb.name_any()), "ownerReferences": [sb.controller_owner_ref(&()).unwrap()]},
        "data": {"service": sb.spec.service}});
    // Force, as controllers must: someone else's edit of a field makes them its owner.
    cms.patch(
        &format!("{}-config", sb.name_any()),
        &PatchParams::apply("monoship-test").force(),
        &Patch::Apply(cm),
    )
    .await?;
    Ok(Action::await_change())
}

#[tokio::test]
async fn controller_reconciles_and_reacts_to_owned_children() {
    let server = ApiServer::start().await;
    let client = server.client();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
    });
    let controller = Controller::new(builds(&client), watcher::Config::default())
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    builds(&client)
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    eventually("child created", || {
        server.get::<ConfigMap>(Some(NS), "a-config").is_some()
    })
    .await;
    let child = cms.get("a-config").await.unwrap();
    assert_eq!(child.data.unwrap()["service"], "web");
    let owner = &child.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ServiceBuild", "a", Some(true))
    );
    // One reconcile for the ServiceBuild, one because the child appeared.
    eventually("reconciled for owner and child", || {
        ctx.reconciles.load(Ordering::SeqCst) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ctx.reconciles.load(Ordering::SeqCst);
    // The controller's own apply of an unchanged child is a no-op write.
    let changing = server.changing_writes("configmaps");
    assert!(server.write_requests("configmaps") > changing);
    // Tamper with the child: the controller is triggered through .owns() and restores it.
    cms.patch(
        "a-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"service": "tampered"}})),
    )
    .await
    .unwrap();
    eventually("reconcile after child change", || {
        ctx.reconciles.load(Ordering::SeqCst) > before
    })
    .await;
    eventually("child restored", || {
        server
            .get::<ConfigMap>(Some(NS), "a-config")
            .and_then(|c| c.data)
            .is_some_and(|d| d["service"] == "web")
    })
    .await;
    assert_eq!(server.changing_writes("configmaps"), changing + 2);
    // Deleting the owner garbage-collects the child.
    builds(&client)
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(server.get::<ConfigMap>(Some(NS), "a-config").is_none());
    handle.abort();
}

fn shell_job(name: &str, script: &str, env: &[(&str, &str)], deadline: Option<i64>) -> Job {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"activeDeadlineSeconds": deadline, "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c"], "args": [script], "env": env}]}}}
    }))
    .unwrap()
}

fn condition_types(job: &Job) -> Vec<(String, String)> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.reason.unwrap_or_default()))
        .collect()
}

async fn wait_finished(server: &ApiServer, name: &str) -> Job {
    let mut job = None;
    eventually(&format!("job {name} finished"), || {
        job = server.get::<Job>(Some(NS), name);
        job.as_ref().is_some_and(|j| {
            condition_types(j)
                .iter()
                .any(|(t, _)| t == "Complete" || t == "Failed")
        })
    })
    .await;
    job.unwrap()
}

#[tokio::test]
async fn job_runner_runs_jobs_and_reports_status() {
    use monoship_testkit::jobrunner::JobRunner;
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runner = JobRunner::start(
        server.client(),
        Some(NS.into()),
        vec![("EXTRA".into(), "x".into())],
        Some(dir.path().to_path_buf()),
    );
    let jobs: Api<Job> = Api::namespaced(server.client(), NS);
    jobs.create(
        &PostParams::default(),
        &shell_job("ok", "echo $FOO$EXTRA > out", &[("FOO", "bar")], None),
    )
    .await
    .unwrap();
    let done = wait_finished(&server, "ok").await;
    assert_eq!(
        condition_types(&done),
        [
            (
                "SuccessCriteriaMet".to_string(),
                "CompletionsReached".to_string()
            ),
            ("Complete".to_string(), "CompletionsReached".to_string())
        ]
    );
    let status = done.status.unwrap();
    assert_eq!((status.succeeded, status.active), (Some(1), None));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "barx\n"
    );

    jobs.create(
        &PostParams::default(),
        &shell_job("bad", "exit 3", &[], None),
    )
    .await
    .unwrap();
    let failed = wait_finished(&server, "bad").await;
    assert_eq!(
        condition_types(&failed),
        [
            (
                "FailureTarget".to_string(),
                "BackoffLimitExceeded".to_string()
            ),
            ("Failed".to_string(), "BackoffLimitExceeded".to_string())
        ]
    );
    let status = failed.status.unwrap();
    assert_eq!(status.failed, Some(1));
    assert!(status.completion_time.is_none());
    assert_eq!(runner.runs(), 2);
    // Finished Jobs are not run again, even after later updates.
    jobs.patch(
        "ok",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runner.runs(), 2);
    runner.shutdown().await;
}

#[tokio::test]
async fn job_runner_enforces_deadlines_deletion_and_hooks() {
    use monoship_testkit::jobrunner::{HookDecision, JobRunner, JobRunnerOptions};
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook: monoship_testkit::jobrunner::JobHook = Arc::new(|job: &Job| {
        if job.name_any() == "hooked" {
            HookDecision::Fail("hook says no".into())
        } else {
            HookDecision::Run
        }
    });
    let runner = JobRunner::start_with(
        server.client(),
        JobRunnerOptions {
            workdir: Some(dir.path().to_path_buf()),
            hook: Some(hook),
            ..Default::default()
        },
    );
    let jobs: Api<Job> = Api::namespaced(server.client(), NS);
    let t = std::time::Instant::now();
    jobs.create(
        &PostParams::default(),
        &shell_job("slow", "sleep 30", &[], Some(1)),
    )
    .await
    .unwrap();
    let slow = wait_finished(&server, "slow").await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(
        condition_types(&slow)[1],
        ("Failed".to_string(), "DeadlineExceeded".to_string())
    );

    jobs.create(
        &PostParams::default(),
        &shell_job("hooked", "touch ran", &[], None),
    )
    .await
    .unwrap();
    let hooked = wait_finished(&server, "hooked").await;
    assert_eq!(condition_types(&hooked)[1].0, "Failed");
    assert!(!dir.path().join("ran").exists());

    jobs.create(
        &PostParams::default(),
        &shell_job("doomed", "sleep 2; touch late", &[], None),
    )
    .await
    .unwrap();
    eventually("doomed running", || runner.running() == 1).await;
    jobs.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("process killed", || runner.running() == 0).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!dir.path().join("late").exists(), "the process was killed");
    assert_eq!(runner.runs(), 3);
}

#[tokio::test]
async fn dry_run_namespaces_and_create_preconditions() {
    let server = ApiServer::start_with(ApiServerConfig {
        require_namespaces: true,
        ..Default::default()
    })
    .await;
    let client = server.client();
    let api = builds(&client);
    // NamespaceLifecycle: the namespace has to exist.
    let e = api_err(
        api.create(&PostParams::default(), &sb("a", "web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, r#"namespaces "default" not found"#)
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    let ns = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));

    // Dry runs answer but persist nothing.
    let before = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let would = api.create(&dry, &sb("a", "web")).await.unwrap();
    assert_eq!(would.name_any(), "a");
    assert!(server.get::<ServiceBuild>(Some(NS), "a").is_none());
    let real = api
        .create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default().dry_run(),
        &Patch::Merge(json!({"spec": {"commit": "dry"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert_eq!(api.get("a").await.unwrap().spec.commit, "c1");
    assert_eq!(server.resource_version(), before + 1);
    assert_eq!(server.changing_writes("servicebuilds"), 1);

    // Objects to be created must not carry a resourceVersion.
    let mut copy = real.clone();
    copy.metadata.name = Some("b".into());
    let e = api_err(api.create(&PostParams::default(), &copy).await.unwrap_err());
    assert_eq!(e.code, 500);
    assert!(e.message.contains("resourceVersion should not be set"));

    // Apply needs apiVersion and kind.
    let e = api_err(
        api.patch(
            "a",
            &PatchParams::apply("m"),
            &Patch::Apply(json!({"spec": {"service": "x"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    // Writes without fieldManager are attributed to the client's user agent (kube sends none).
    let req = axum::http::Request::patch(
        "/apis/monoship.dev/v1alpha1/namespaces/default/servicebuilds/a",
    )
    .header("content-type", "application/merge-patch+json")
    .header("user-agent", "my-tool/1.0 (linux)")
    .body(br#"{"spec":{"commit":"ua"}}"#.to_vec())
    .unwrap();
    client.request_text(req).await.unwrap();
    let managers: Vec<_> = api
        .get("a")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"my-tool".to_string()), "{managers:?}");

    // Deleting a namespace deletes what is in it.
    namespaces
        .delete(NS, &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        server
            .list_objects("monoship.dev", "servicebuilds", None)
            .is_empty()
    );
}

#[tokio::test]
async fn delete_collection_and_event_recorder() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = ApiServer::start().await;
    let client = server.client();
    let api = builds(&client);
    for name in ["a", "b", "c"] {
        let mut o = sb(name, "web");
        o.metadata.labels = Some([("batch".to_string(), (name != "c").to_string())].into());
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=true"),
    )
    .await
    .unwrap();
    let left: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(left, ["c"]);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "monoship".into(),
            instance: None,
        },
    );
    let c = api.get("c").await.unwrap();
    let ev = Event {
        type_: EventType::Normal,
        reason: "Built".into(),
        note: Some("image built".into()),
        action: "Build".into(),
        secondary: None,
    };
    recorder.publish(&ev, &c.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &c.object_ref(&())).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, NS);
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason.as_deref(), Some("Built"));
    assert_eq!(list[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn reflector_follows_changes_and_shutdown_stops_serving() {
    use kube::runtime::{WatchStreamExt, reflector};
    let server = ApiServer::start().await;
    let client = server.client();
    let api = builds(&client);
    api.create(&PostParams::default(), &sb("a", "web"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ServiceBuild>();
    let rf = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let handle = tokio::spawn(rf);
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"commit": "c7"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &sb("b", "web"))
        .await
        .unwrap();
    eventually("reflector caught up", || {
        reader.state().len() == 2
            && reader
                .get(&reflector::ObjectRef::new("a").within(NS))
                .is_some_and(|o| o.spec.commit == "c7")
    })
    .await;
    handle.abort();

    // A running watch ends when the server shuts down, and nothing answers afterwards.
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next_change(&mut s).await, WatchEvent::Added(_)));
    server.shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = s.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "watch stream ended on shutdown");
    assert!(api.get("a").await.is_err());
}

/// The job runner leaves a Pod per Job, as the Job controller and a kubelet do: labelled with
/// the Job's name, owned by the Job, its first container `terminated` with the exit code and the
/// termination message it wrote to its `terminationMessagePath` (the default `/dev/termination-log`
/// or the template's), mapped to a file of the run's own, bounded to 4096 bytes.
#[tokio::test]
async fn job_runner_pods_carry_the_termination_message() {
    use k8s_openapi::api::core::v1::Pod;
    use monoship_testkit::jobrunner::JobRunner;
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runner = JobRunner::start(
        server.client(),
        Some(NS.into()),
        vec![],
        Some(dir.path().to_path_buf()),
    );
    let jobs: Api<Job> = Api::namespaced(server.client(), NS);
    let written = r#"printf 'sha256:%064d\n' 7 > "$OUT""#;
    let mut default_path = shell_job("reports", written, &[("OUT", "/dev/termination-log")], None);
    let own_file = format!("/tmp/monoship-conformance-{}.msg", std::process::id());
    let mut own_path = shell_job(
        "own",
        &format!("{written}; head -c 5000 /dev/zero | tr '\\0' x >> \"$OUT\"; exit 2"),
        &[("OUT", &own_file)],
        None,
    );
    let container = &mut own_path
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    container.termination_message_path = Some(own_file.clone());
    default_path.metadata.labels = Some([("team".to_owned(), "fruit".to_owned())].into());
    for job in [&default_path, &own_path] {
        jobs.create(&PostParams::default(), job).await.unwrap();
    }
    let done = wait_finished(&server, "reports").await;
    wait_finished(&server, "own").await;
    let pods: Api<Pod> = Api::namespaced(server.client(), NS);
    let listed = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=reports"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    assert_eq!(pod.labels()["job-name"], "reports");
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("Job", done.metadata.uid.as_ref())
    );
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let terminated = |pod: &Pod| {
        pod.status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap()
    };
    let reported = terminated(pod);
    assert_eq!(reported.exit_code, 0);
    assert_eq!(reported.message, Some(format!("sha256:{:064}\n", 7)));
    assert!(
        !std::path::Path::new("/dev/termination-log").exists(),
        "nothing written to /dev"
    );

    let own = pods
        .list(&ListParams::default().labels("job-name=own"))
        .await
        .unwrap();
    let own = &own.items[0];
    assert_eq!(
        own.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let failed = terminated(own);
    assert_eq!(failed.exit_code, 2);
    let message = failed.message.unwrap();
    assert_eq!(message.len(), 4096, "a kubelet keeps at most 4096 bytes");
    assert!(message.starts_with("sha256:"));
    assert!(
        !std::path::Path::new(&own_file).exists(),
        "the template's path is mapped too"
    );
    runner.shutdown().await;
}
