//! The controller across restarts, superseded revisions, failed builds and broken references,
//! against the in-process API server, the job runner and a real registry.

mod common;

use common::{condition, create, merge, phase, wait_for};

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use monoship_testkit::apiserver::FaultRule;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::{Value, json};

/// Where to crash the controller during banana's first promotion, and how to get there: a
/// fault that stops the controller just after the step, and what shows the step happened.
#[derive(Debug, Clone, Copy)]
enum CrashAfter {
    JobCreated,
    DigestResolved,
    CurrentRecorded,
    TagMoved,
    TargetPinned,
}

async fn crash_and_recover(crash: CrashAfter) {
    let seed = Seed::start().await;
    let registry = seed.registry.host();
    let status_patch = || {
        FaultRule::new("patch", "servicebuilds")
            .subresource("status")
            .name("banana")
    };
    let fault = match crash {
        // Every status write fails: the Job exists, nothing about it is recorded.
        CrashAfter::JobCreated => status_patch().times(100_000),
        // The Building status lands; the write after the digest resolution fails.
        CrashAfter::DigestResolved => status_patch().after(1).times(100_000),
        // status.current lands (and the tag moves); the target write fails.
        CrashAfter::CurrentRecorded | CrashAfter::TagMoved => {
            FaultRule::new("patch", "deployments")
                .name("banana")
                .times(100_000)
        }
        // Building and Promoting land, the Deployment is pinned; the final status write fails.
        CrashAfter::TargetPinned => status_patch().after(2).times(100_000),
    };
    seed.api.inject_fault(fault);
    let first = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();
    seed.set_revision(&revision).await;
    let short = &revision[..12];

    // Wait until the crash point is reached.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let banana = seed.get("banana").await;
        let requests = seed.registry.requests();
        let reached = match crash {
            CrashAfter::JobCreated => seed.jobs().await.iter().any(|j| j.starts_with("banana-")),
            CrashAfter::DigestResolved => requests.iter().any(|r| {
                r.method == "HEAD" && r.path == format!("/v2/shop/banana/manifests/{short}")
            }),
            CrashAfter::CurrentRecorded => banana["status"]["current"]["digest"].is_string(),
            CrashAfter::TagMoved => requests
                .iter()
                .any(|r| r.is_manifest_put("shop/banana", "latest")),
            CrashAfter::TargetPinned => seed.deployment_image("banana").await.contains('@'),
        };
        if reached {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{crash:?} was never reached: {:#}",
            banana["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    seed.api.clear_faults();

    let second = common::start(&seed, Duration::from_secs(600)).await;
    let settled = seed.settled(&revision).await;
    for object in &settled {
        let name = object["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            phase(object),
            "Promoted",
            "{crash:?} {name}: {:#}",
            object["status"]
        );
        let digest = object["status"]["current"]["digest"].as_str().unwrap();
        assert_eq!(
            seed.deployment_image(name).await,
            format!("{registry}/shop/{name}@{digest}"),
            "{crash:?}"
        );
        assert_eq!(
            common::target_writes(&seed, name),
            1,
            "{crash:?}: one write per target per new digest"
        );
        let puts = seed
            .registry
            .requests()
            .iter()
            .filter(|r| r.is_manifest_put(&format!("shop/{name}"), "latest"))
            .count();
        assert_eq!(
            puts,
            1,
            "{crash:?} {name}: one tag move per new digest: {:#?}",
            seed.registry
                .requests()
                .iter()
                .filter(|r| r.path.contains("latest"))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        common::job_creates(&seed),
        2,
        "{crash:?}: exactly one Job per service and revision"
    );
    assert_eq!(seed.jobs().await.len(), 2, "{crash:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_job_creation() {
    crash_and_recover(CrashAfter::JobCreated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_digest_resolution() {
    crash_and_recover(CrashAfter::DigestResolved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_current_is_recorded() {
    crash_and_recover(CrashAfter::CurrentRecorded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_the_tag_moved() {
    crash_and_recover(CrashAfter::TagMoved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_the_target_is_pinned() {
    crash_and_recover(CrashAfter::TargetPinned).await;
}

fn with_command(mut object: Value, command: &[&str]) -> Value {
    object["spec"]["build"]["template"]["spec"]["containers"][0]["command"] = json!(command);
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_revision_supersedes_a_running_build() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let slow = seed.repo.head();
    let object = with_command(seed.servicebuild("banana", &slow), &["sleep", "60"]);
    let normal = seed.servicebuild("banana", &slow)["spec"]["build"].clone();
    create(&seed, object).await;
    wait_for(&seed, "banana", "Building", |o| phase(o) == "Building").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seed.runner.running() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow build never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow_job = seed.get("banana").await["status"]["build"]["jobName"]
        .as_str()
        .unwrap()
        .to_owned();

    let newer = seed.change_service("banana", "newer\n");
    merge(
        &seed,
        "banana",
        json!({"spec": {"source": {"revision": newer}, "build": normal}}),
    )
    .await;
    let done = wait_for(&seed, "banana", "Promoted at the newer revision", |o| {
        phase(o) == "Promoted" && o["status"]["build"]["revision"] == newer.as_str()
    })
    .await;

    assert!(
        !seed.jobs().await.contains(&slow_job),
        "the superseded Job is deleted"
    );
    let deleted = seed.api.writes().iter().any(|w| {
        w.resource == "jobs" && w.verb == "delete" && w.name.as_deref() == Some(slow_job.as_str())
    });
    assert!(deleted);
    assert_eq!(done["status"]["current"]["revision"], newer.as_str());
    let history = done["status"]["history"].as_array().unwrap();
    assert!(
        history.iter().all(|h| h["revision"] != slow.as_str()),
        "never promoted: {history:?}"
    );
    let events = seed
        .api
        .list_objects("events.k8s.io", "events", Some(NAMESPACE));
    assert!(events.iter().any(|e| e["reason"] == "BuildSuperseded"));
    assert_eq!(common::target_writes(&seed, "banana"), 1);
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_build_waits_for_the_rebuild_annotation() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_millis(300)).await;
    let revision = seed.repo.head();
    let good_build = seed.servicebuild("banana", &revision)["spec"]["build"].clone();
    let object = with_command(
        seed.servicebuild("banana", &revision),
        &["sh", "-c", "echo compiler exploded >&2; exit 3"],
    );
    create(&seed, object).await;
    let failed = wait_for(&seed, "banana", "Failed", |o| phase(o) == "Failed").await;
    let build = &failed["status"]["build"];
    assert_eq!(build["failureReason"], "BackoffLimitExceeded");
    let stalled = condition(&failed, "Stalled").expect("Stalled is set");
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("BuildFailed"))
    );
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("monoship.dev/rebuild")
    );
    assert_eq!(condition(&failed, "Ready").unwrap()["status"], "False");

    // Fixing the template alone does not retry the same revision...
    merge(&seed, "banana", json!({"spec": {"build": good_build}})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        seed.runner.runs(),
        1,
        "a failed build is not retried by itself"
    );
    assert_eq!(common::job_creates(&seed), 1);
    assert_eq!(phase(&seed.get("banana").await), "Failed");

    // ...a new value of the rebuild annotation does.
    merge(
        &seed,
        "banana",
        json!({"metadata": {"annotations": {"monoship.dev/rebuild": "1"}}}),
    )
    .await;
    let promoted = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    assert_eq!(promoted["status"]["build"]["rebuild"], "1");
    assert_eq!(common::job_creates(&seed), 2);
    assert_eq!(seed.runner.runs(), 2);
    assert!(condition(&promoted, "Stalled").is_none());
    controller.stop().await;
}

/// Each broken reference stalls the ServiceBuild with its own reason, and nothing but its
/// status (and an Event) is written: no Job, no target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_references_stall_and_write_nothing_else() {
    let seed = Seed::start().await;
    seed.api.reset_counters();
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();

    let mut missing_secret = seed.servicebuild("banana", &revision);
    missing_secret["spec"]["image"]["pushSecretRef"] = json!({"name": "registry-push"});
    let mut unknown_deployment = seed.servicebuild("orange", &revision);
    unknown_deployment["spec"]["targets"][0]["kubernetes"]["name"] = json!("ghost");
    let mut unknown_container = seed.servicebuild("banana", &revision);
    unknown_container["metadata"]["name"] = json!("kiwi");
    // Its own repository: banana's tag is banana's (a second claim on it would be refused).
    unknown_container["spec"]["image"]["repository"] = json!(seed.repository("kiwi"));
    unknown_container["spec"]["targets"][0]["kubernetes"]["container"] = json!("nope");

    let cases = [
        (
            missing_secret,
            "banana",
            "SecretNotFound",
            "shop/registry-push",
        ),
        (
            unknown_deployment,
            "orange",
            "TargetNotFound",
            "Deployment shop/ghost",
        ),
        (unknown_container, "kiwi", "ContainerNotFound", "\"nope\""),
    ];
    for (object, name, reason, mentions) in cases {
        create(&seed, object).await;
        let stalled = wait_for(&seed, name, "Stalled", |o| phase(o) == "Stalled").await;
        let condition = condition(&stalled, "Stalled").expect("Stalled is set");
        assert_eq!(condition["reason"], reason, "{name}");
        let message = condition["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{name}: {message}");
        assert_eq!(
            self::condition(&stalled, "Ready").unwrap()["reason"],
            reason
        );
    }
    let others: Vec<_> = seed
        .api
        .writes()
        .into_iter()
        .filter(|w| {
            w.changed
                && !(w.resource == "servicebuilds" && w.subresource.as_deref() == Some("status"))
        })
        .filter(|w| !matches!(w.resource.as_str(), "events" | "servicebuilds"))
        .collect();
    assert!(
        others.is_empty(),
        "only status and Events are written: {others:#?}"
    );
    assert!(seed.jobs().await.is_empty());
    assert!(seed.registry.requests().is_empty(), "no registry call");
    controller.stop().await;
}

/// A target changed behind monoship's back is re-pinned on the next resync, and the drift is
/// reported in its status entry and in an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drifted_target_is_re_pinned_and_reported() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_millis(300)).await;
    let revision = seed.repo.head();
    seed.set_revision(&revision).await;
    seed.settled(&revision).await;
    let pinned = seed.deployment_image("banana").await;

    // Someone edits the image by hand (a merge patch, as kubectl edit/set image does).
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(seed.client.clone(), NAMESPACE);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.org/hotfix:1"}]}}}});
    let edited = deployments
        .patch("banana", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    // (What the edit wrote; the controller may re-pin it at any moment after.)
    let containers = edited.spec.template.spec.unwrap().containers;
    assert_eq!(containers[0].image.as_deref(), Some("example.org/hotfix:1"));

    let repaired = wait_for(&seed, "banana", "drift reported", |o| {
        o["status"]["targets"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("example.org/hotfix:1"))
    })
    .await;
    assert_eq!(seed.deployment_image("banana").await, pinned);
    let entry = &repaired["status"]["targets"][0];
    assert_eq!(entry["inSync"], true);
    assert_eq!(phase(&repaired), "Promoted");
    let events = seed
        .api
        .list_objects("events.k8s.io", "events", Some(NAMESPACE));
    let drift = events
        .iter()
        .find(|e| e["reason"] == "TargetDrifted")
        .expect("a TargetDrifted Event");
    assert_eq!(drift["type"], "Warning");
    assert!(
        drift["note"]
            .as_str()
            .unwrap()
            .contains("example.org/hotfix:1")
    );
    // Orange did not drift: it is not written.
    assert_eq!(common::target_writes(&seed, "orange"), 1);
    controller.stop().await;
}

/// `suspend: true` stops every action and shows phase Suspended; resuming builds the revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspend_stops_every_action() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_millis(300)).await;
    let revision = seed.repo.head();
    let mut object = seed.servicebuild("banana", &revision);
    object["spec"]["suspend"] = json!(true);
    create(&seed, object).await;
    let suspended = wait_for(&seed, "banana", "Suspended", |o| phase(o) == "Suspended").await;
    assert_eq!(
        condition(&suspended, "Ready").unwrap()["reason"],
        "Suspended"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(seed.jobs().await.is_empty(), "no build while suspended");
    assert_eq!(common::target_writes(&seed, "banana"), 0);

    merge(&seed, "banana", json!({"spec": {"suspend": false}})).await;
    wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    assert_eq!(common::job_creates(&seed), 1);
    controller.stop().await;
}

/// `--namespace` confines the controller: a ServiceBuild elsewhere is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespaced_controller_leaves_other_namespaces_alone() {
    let seed = Seed::start().await;
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    settings.namespace = Some("elsewhere".to_owned());
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    let revision = seed.repo.head();
    seed.set_service_revision("banana", &revision).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        seed.get("banana").await["status"].is_null(),
        "not reconciled"
    );
    assert!(seed.jobs().await.is_empty());
    controller.stop().await;
}

/// A stalled ServiceBuild that is looked at again, with nothing changed, writes nothing: no
/// status, no Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_a_stall_that_did_not_change_writes_nothing() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let mut object = seed.servicebuild("banana", &seed.repo.head());
    object["spec"]["image"]["pushSecretRef"] = json!({"name": "registry-push"});
    create(&seed, object).await;
    wait_for(&seed, "banana", "Stalled", |o| phase(o) == "Stalled").await;
    controller.stop().await;

    // A fresh controller reconciles it again: the same stall, so nothing is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seed.api.reset_counters();
    let again = common::start(&seed, Duration::from_secs(600)).await;
    again.wait_for_reconcile("stalled").await;
    let writes = seed.api.writes();
    assert!(writes.is_empty(), "{writes:#?}");
    again.stop().await;
}

/// A floating tag added after the promotion is moved to the current digest, without
/// touching the targets or counting a new promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_added_later_is_moved_to_the_current_digest() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();
    seed.set_revision(&revision).await;
    seed.settled(&revision).await;
    let mark = seed.registry.mark();

    merge(
        &seed,
        "banana",
        json!({"spec": {"image": {"tags": ["latest", "stable"]}}}),
    )
    .await;
    let done = wait_for(&seed, "banana", "the stable tag recorded", |o| {
        o["status"]["current"]["tags"] == json!(["latest", "stable"])
    })
    .await;
    assert_eq!(phase(&done), "Promoted");
    let since = seed.registry.requests_since(mark);
    let puts = |tag: &str| {
        since
            .iter()
            .filter(|r| r.is_manifest_put("shop/banana", tag))
            .count()
    };
    assert_eq!((puts("stable"), puts("latest")), (1, 0));
    assert_eq!(
        common::target_writes(&seed, "banana"),
        1,
        "the Deployment is not written again"
    );
    let text = controller.metrics.encode();
    assert_eq!(
        common::counter(&text, "monoship_promotions_total"),
        2.0,
        "{text}"
    );
    controller.stop().await;
}

/// A transient fault (the API server failing a target write) is shown on Ready=False with its
/// reason, retried with backoff, and the promotion completes once the fault is gone. (A 500:
/// kube's client already retries 429, 503 and 504 by itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_fault_shows_on_ready_and_is_retried() {
    let (seed, controller) = common::with_failing_target_writes(500).await;
    let failing = wait_for(&seed, "banana", "Ready=False from the fault", |o| {
        condition(o, "Ready")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "KubernetesAPIError")
    })
    .await;
    assert_eq!(
        phase(&failing),
        "Promoting",
        "the promotion is under way, not stalled"
    );
    assert!(condition(&failing, "Stalled").is_none());
    assert_eq!(
        condition(&failing, "Reconciling").unwrap()["status"],
        "True"
    );
    assert_eq!(failing["status"]["targets"][0]["inSync"], false);

    seed.api.clear_faults();
    let done = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    assert_eq!(condition(&done, "Ready").unwrap()["status"], "True");
    let text = controller.metrics.encode();
    assert!(
        common::counter(&text, "monoship_reconciles_total{result=\"error\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(common::target_writes(&seed, "banana"), 1);
    controller.stop().await;
}
