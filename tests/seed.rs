//! The seed scenario end to end: the real controller against the in-process API server, the
//! job runner, a real registry and a Nomad API double.
//!
//! Commit 1 builds and promotes both services. Commit 2 changes only banana: banana gets a new
//! digest, its tag moves and its targets are re-pinned; orange's inputs did not change, so it is
//! not built (its image gets the commit's tag) and nothing else of orange's is written: not its
//! Deployment, not its `latest` tag, not its Nomad job.

mod common;

use std::time::Duration;

use monoship_testkit::nomad::NomadDouble;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::Value;

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

fn by_name<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .expect("the ServiceBuild is there")
}

/// Changing writes to one object of a resource, since the last counter reset.
fn changing_writes(seed: &Seed, resource: &str, name: &str) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == resource && w.name.as_deref() == Some(name) && w.changed)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_commit_rolls_out_exactly_the_service_it_changed() {
    let mut seed = Seed::start().await;
    let nomad = NomadDouble::start().await.unwrap();
    for service in ["banana", "orange"] {
        let image = format!("{}:bootstrap", seed.repository(service));
        nomad.seed_docker_job(service, "web", "server", &image, &[("team", "fruit")]);
    }
    seed.nomad_address = Some(nomad.address());
    let controller = common::start(&seed, Duration::from_secs(600)).await;

    // Commit 1: both services are built and promoted.
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    let first = seed.settled(&rev1).await;
    let mut digests1 = std::collections::HashMap::new();
    for service in ["banana", "orange"] {
        let sb = by_name(&first, service);
        assert_eq!(phase(sb), "Promoted", "{service}: {:#}", sb["status"]);
        let digest = sb["status"]["current"]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(sb["status"]["build"]["digestSource"], "Reported");
        let pinned = format!("{}@{digest}", seed.repository(service));
        assert_eq!(seed.deployment_image(service).await, pinned);
        let job = nomad.job("default", service).unwrap();
        assert_eq!(
            job["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
            pinned.as_str()
        );
        assert_eq!(sb["status"]["targets"].as_array().unwrap().len(), 2);
        assert!(
            sb["status"]["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["inSync"] == true)
        );
        digests1.insert(service, digest);
    }
    assert_ne!(digests1["banana"], digests1["orange"]);
    assert_eq!(
        seed.jobs().await.len(),
        2,
        "one Job per service and revision"
    );

    // Commit 2 changes only banana.
    seed.api.reset_counters();
    let mark = seed.registry.mark();
    let orange_version = nomad.version("default", "orange");
    let banana_read = nomad.job("default", "banana").unwrap();
    let (banana_posts, orange_posts) = (nomad.posts("banana"), nomad.posts("orange"));
    let rev2 = seed.change_service("banana", "a riper banana\n");
    seed.set_revision(&rev2).await;
    let second = seed.settled(&rev2).await;

    let banana = by_name(&second, "banana");
    assert_eq!(phase(banana), "Promoted", "{:#}", banana["status"]);
    let banana_digest = banana["status"]["current"]["digest"].as_str().unwrap();
    assert_ne!(banana_digest, digests1["banana"]);
    assert_eq!(banana["status"]["current"]["revision"], rev2.as_str());
    assert_eq!(
        seed.deployment_image("banana").await,
        format!("{}@{banana_digest}", seed.repository("banana"))
    );

    let orange = by_name(&second, "orange");
    assert_eq!(phase(orange), "Unchanged", "{:#}", orange["status"]);
    assert_eq!(
        orange["status"]["current"]["digest"],
        digests1["orange"].as_str()
    );
    assert_eq!(orange["status"]["current"]["revision"], rev1.as_str());
    assert_eq!(orange["status"]["build"]["revision"], rev2.as_str());
    assert_eq!(
        orange["status"]["build"]["digest"],
        digests1["orange"].as_str()
    );
    let history = &orange["status"]["history"][0];
    assert_eq!(
        (history["revision"].as_str(), history["promoted"].as_bool()),
        (Some(rev2.as_str()), Some(false))
    );
    let ready = orange["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Unchanged"))
    );

    // The write counters: orange's Deployment 0 times, banana's exactly once.
    assert_eq!(changing_writes(&seed, "deployments", "orange"), 0);
    assert_eq!(
        seed.api
            .writes()
            .iter()
            .filter(|w| w.resource == "deployments" && w.name.as_deref() == Some("orange"))
            .count(),
        0
    );
    assert_eq!(changing_writes(&seed, "deployments", "banana"), 1);
    // One build Job for commit 2, banana's: orange's inputs (services/orange) did not change,
    // so its build was skipped and its image got the commit's tag.
    let jobs: Vec<_> = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "jobs" && w.verb == "create")
        .filter_map(|w| w.name.clone())
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].starts_with("banana-"), "{jobs:?}");
    assert_eq!(orange["status"]["build"]["digestSource"], "Reused");
    assert_eq!(orange["status"]["build"]["reusedFrom"], rev1.as_str());

    // The registry's request log: orange's `latest` is not PUT again, banana's exactly once, and
    // monoship uploaded no blob (any blob upload came from banana's own build push).
    let since = seed.registry.requests_since(mark);
    let puts = |repo: &str, tag: &str| {
        since
            .iter()
            .filter(|r| r.is_manifest_put(repo, tag))
            .count()
    };
    assert_eq!(puts("shop/orange", "latest"), 0);
    assert_eq!(
        puts("shop/orange", &rev2[..12]),
        1,
        "orange's image tagged with commit 2"
    );
    assert_eq!(puts("shop/banana", "latest"), 1);
    let orange_uploads = since
        .iter()
        .filter(|r| r.is_blob_upload() && r.path.contains("/shop/orange/"))
        .count();
    assert_eq!(orange_uploads, 0, "orange's commit-2 tag uploads no blob");

    // Nomad: banana's job gets exactly one enforced POST that changes only the image; orange's
    // gets none and keeps its version.
    assert_eq!(nomad.posts("orange") - orange_posts, 0);
    assert_eq!(nomad.version("default", "orange"), orange_version);
    assert_eq!(nomad.posts("banana") - banana_posts, 1);
    let body = nomad.post_bodies("banana").pop().unwrap();
    assert_eq!(body["EnforceIndex"], true);
    assert_eq!(body["JobModifyIndex"], banana_read["JobModifyIndex"]);
    let mut expected = banana_read.clone();
    expected["TaskGroups"][0]["Tasks"][0]["Config"]["image"] =
        Value::from(format!("{}@{banana_digest}", seed.repository("banana")));
    assert_eq!(
        body["Job"], expected,
        "only the image differs from what was read"
    );

    // Events say what happened, and /metrics counts it.
    let events = seed
        .api
        .list_objects("events.k8s.io", "events", Some(NAMESPACE));
    let reasons_for = |name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    };
    // Orange's build was skipped: BuildSkipped is its one Event for the commit.
    let orange = reasons_for("orange");
    assert!(orange.contains(&"BuildSkipped".to_owned()), "{orange:?}");
    assert!(!orange.contains(&"Unchanged".to_owned()), "{orange:?}");
    // The recorder folds repeats of one reason into a series on one Event, as kube's does.
    for reason in [
        "BuildStarted",
        "DigestResolved",
        "Promoted",
        "TagMoved",
        "TargetPinned",
    ] {
        assert!(
            reasons_for("banana").iter().any(|r| r == reason),
            "{reason}: {:?}",
            reasons_for("banana")
        );
    }
    let (code, text) = controller.get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        common::counter(&text, "monoship_promotions_total"),
        3.0,
        "{text}"
    );
    // Orange's build was skipped, not run: no build ran for nothing.
    assert_eq!(
        common::counter(&text, "monoship_unchanged_builds_total"),
        0.0,
        "{text}"
    );
    assert_eq!(
        common::counter(&text, "monoship_builds_total{result=\"started\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        common::counter(&text, "monoship_builds_total{result=\"skipped\"}"),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("banana") && !text.contains("orange"),
        "no object names in labels"
    );
    let (code, _) = controller.get("/readyz").await;
    assert_eq!(code, 200);

    // A no-op resync: every ServiceBuild reconciled again writes nothing and calls no registry.
    controller.stop().await;
    seed.api.reset_counters();
    let mark = seed.registry.mark();
    let resyncing = common::start(&seed, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = common::counter(
        &resyncing.metrics.encode(),
        "monoship_reconciles_total{result=\"ok\"}",
    );
    assert!(reconciles >= 6.0, "resyncs happened: {reconciles}");
    let writes: Vec<_> = seed
        .api
        .writes()
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(writes.is_empty(), "a no-op resync wrote: {writes:#?}");
    assert!(
        seed.registry.requests_since(mark).is_empty(),
        "a no-op resync called the registry"
    );
    assert_eq!(
        nomad.posts("banana") + nomad.posts("orange"),
        banana_posts + orange_posts + 1
    );
    resyncing.stop().await;
}

/// Nomad ACL tokens come from Secrets and are sent only to Nomad: neither the right token (a
/// successful pin) nor a wrong one (a 403) shows up in any ServiceBuild status or Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nomad_tokens_never_show_in_status_or_events() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DynamicObject, PostParams};

    const GOOD: &str = "b1e5c0de-good-token-4f2a";
    const BAD: &str = "deadbeef-wrong-token-9c1d";
    let seed = Seed::start().await;
    let nomad = NomadDouble::start_with_token(GOOD).await.unwrap();
    for service in ["banana", "orange"] {
        let image = format!("{}:bootstrap", seed.repository(service));
        nomad.seed_docker_job(service, "web", "server", &image, &[]);
    }
    let secrets: Api<Secret> = Api::namespaced(seed.client.clone(), NAMESPACE);
    for (name, token) in [("nomad-good", GOOD), ("nomad-bad", BAD)] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "data": {"token": base64_encode(token)}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();
    for (service, secret) in [("banana", "nomad-good"), ("orange", "nomad-bad")] {
        let mut object = seed.servicebuild(service, &revision);
        object["spec"]["targets"] = serde_json::json!([{"nomad": {
            "address": nomad.address(), "job": service, "group": "web", "task": "server",
            "tokenSecretRef": {"name": secret}
        }}]);
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        seed.servicebuilds()
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let settled = seed.settled(&revision).await;
    assert_eq!(phase(by_name(&settled, "banana")), "Promoted");
    let orange = by_name(&settled, "orange");
    assert_eq!(phase(orange), "Stalled", "{:#}", orange["status"]);
    assert!(orange["status"].to_string().contains("NomadAccessDenied"));

    // Metrics are labelled by bounded values only: no token, no address.
    let (code, metrics) = controller.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("monoship_target_writes_total"),
        "{metrics}"
    );
    for token in [GOOD, BAD] {
        assert!(!metrics.contains(token), "a token is in the metrics");
    }
    assert!(!metrics.contains(&nomad.address()), "{metrics}");

    // Retrying the stalled promotion, with nothing changed, writes nothing.
    controller.stop().await;
    seed.api.reset_counters();
    let again = common::start(&seed, Duration::from_secs(600)).await;
    again.wait_for_reconcile("stalled").await;
    let writes: Vec<_> = seed
        .api
        .writes()
        .into_iter()
        .filter(|w| w.name.as_deref() == Some("orange"))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");

    let statuses = serde_json::to_string(&settled).unwrap();
    let events = serde_json::to_string(&seed.api.list_objects(
        "events.k8s.io",
        "events",
        Some(NAMESPACE),
    ))
    .unwrap();
    for token in [GOOD, BAD] {
        assert!(!statuses.contains(token), "a token is in a status");
        assert!(!events.contains(token), "a token is in an Event");
    }
    again.stop().await;
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
