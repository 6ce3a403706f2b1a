//! Tenant isolation: a ServiceBuild reaches no further than its own namespace unless a cluster
//! admin allowed it, by the target namespace's `monoship.dev/accept-targets-from` annotation or
//! the controller flag `--allow-cross-namespace-targets`.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use monoship_testkit::scenario::Seed;
use serde_json::{Value, json};

use common::{condition, create, merge, phase, wait_for};

const SYSTEM: &str = "kube-system";

/// `kube-system` with one Deployment, `coredns`, whose container `app` monoship could pin.
async fn kube_system(seed: &Seed) {
    let namespaces: Api<Namespace> = Api::all(seed.client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": SYSTEM}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "coredns", "namespace": SYSTEM},
        "spec": {
            "selector": {"matchLabels": {"app": "coredns"}},
            "template": {"metadata": {"labels": {"app": "coredns"}},
                         "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/coredns:1"}]}}
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(seed.client.clone(), SYSTEM)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

/// banana, built in `shop`, targeting `kube-system/<name>` instead of its own Deployment.
fn reaching(seed: &Seed, name: &str, deployment: &str) -> Value {
    let mut object = seed.servicebuild("banana", &seed.repo.head());
    object["metadata"]["name"] = json!(name);
    // A repository of its own: one tag is pushed to by one ServiceBuild only.
    object["spec"]["image"]["repository"] = json!(seed.repository(name));
    object["spec"]["targets"] = json!([{"kubernetes": {
        "kind": "Deployment", "name": deployment, "namespace": SYSTEM, "container": "app"}}]);
    object
}

fn system_image(deployment: &Value) -> &str {
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn deployment_requests(seed: &Seed) -> u64 {
    [
        "get", "list", "watch", "patch", "update", "create", "delete",
    ]
    .iter()
    .map(|verb| seed.api.requests(verb, "deployments"))
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_in_another_namespace_is_refused_without_reading_it() {
    let seed = Seed::start().await;
    kube_system(&seed).await;
    seed.api.reset_counters();
    let controller = common::start(&seed, Duration::from_secs(600)).await;

    create(&seed, reaching(&seed, "banana", "coredns")).await;
    create(&seed, reaching(&seed, "kiwi", "ghost")).await;
    let mut messages = Vec::new();
    for (name, deployment) in [("banana", "coredns"), ("kiwi", "ghost")] {
        let stalled = wait_for(&seed, name, "Stalled", |o| phase(o) == "Stalled").await;
        let stall = condition(&stalled, "Stalled").expect("Stalled is set");
        assert_eq!(stall["reason"], "CrossNamespaceTargetRefused");
        let message = stall["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("monoship.dev/accept-targets-from=shop")
                && message.contains("--allow-cross-namespace-targets"),
            "the message says how an admin allows it: {message}"
        );
        messages.push(message.replace(deployment, "X"));
    }
    // The same words whether or not the Deployment exists: nothing leaks into status.
    assert_eq!(messages[0], messages[1]);

    // Nothing in kube-system was read or written, no build ran, no registry was called.
    assert_eq!(deployment_requests(&seed), 0, "{:#?}", seed.api.counters());
    assert!(seed.jobs().await.is_empty());
    assert!(seed.registry.requests().is_empty());
    let writes: Vec<_> = seed
        .api
        .writes()
        .into_iter()
        .filter(|w| w.namespace.as_deref() == Some(SYSTEM))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");

    // A cluster admin lets `shop` in; any change to the ServiceBuild gets it looked at at once
    // (else the next retry of the stall does).
    let opt_in =
        json!({"metadata": {"annotations": {"monoship.dev/accept-targets-from": "team-b, shop"}}});
    Api::<Namespace>::all(seed.client.clone())
        .patch(SYSTEM, &PatchParams::default(), &Patch::Merge(&opt_in))
        .await
        .unwrap();
    merge(
        &seed,
        "banana",
        json!({"metadata": {"annotations": {"touched": "1"}}}),
    )
    .await;
    let promoted = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    let digest = promoted["status"]["current"]["digest"].as_str().unwrap();
    let coredns = seed
        .api
        .get_object("apps", "deployments", Some(SYSTEM), "coredns")
        .unwrap();
    assert_eq!(
        system_image(&coredns),
        format!("{}@{digest}", seed.repository("banana"))
    );
    let pins = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.changed)
        .count();
    assert_eq!(
        pins, 1,
        "exactly one write, to the Deployment the admin opened"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_flag_allows_every_namespace() {
    let seed = Seed::start().await;
    kube_system(&seed).await;
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    settings.policy.allow_cross_namespace_targets = true;
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    create(&seed, reaching(&seed, "banana", "coredns")).await;
    let promoted = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    let digest = promoted["status"]["current"]["digest"].as_str().unwrap();
    let coredns = seed
        .api
        .get_object("apps", "deployments", Some(SYSTEM), "coredns")
        .unwrap();
    assert!(system_image(&coredns).ends_with(digest));
    assert_eq!(
        seed.api.requests("get", "namespaces"),
        0,
        "no annotation read"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_service_account_can_be_forbidden_by_the_admin() {
    let seed = Seed::start().await;
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    settings.policy.forbid_build_service_account = true;
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    let mut object = seed.servicebuild("banana", &seed.repo.head());
    object["spec"]["build"]["template"]["spec"]["serviceAccountName"] = json!("deployer");
    create(&seed, object).await;
    let stalled = wait_for(&seed, "banana", "Stalled", |o| phase(o) == "Stalled").await;
    assert_eq!(
        condition(&stalled, "Stalled").unwrap()["reason"],
        "BuildServiceAccountRefused"
    );
    assert!(seed.jobs().await.is_empty());
    controller.stop().await;
}

/// A 403 from the API server (monoship's ServiceAccount lacks a permission) is Stalled with the
/// server's own words, which name the verb and the resource; it is not retried in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forbidden_write_stalls_and_is_not_retried_in_a_loop() {
    let (seed, controller) = common::with_failing_target_writes(403).await;
    let stalled = wait_for(&seed, "banana", "Stalled", |o| phase(o) == "Stalled").await;
    let stall = condition(&stalled, "Stalled").unwrap();
    assert_eq!(stall["reason"], "KubernetesAPIForbidden");
    let message = stall["message"].as_str().unwrap();
    assert!(
        message.contains("injected fault (403)") && !message.contains("Status {"),
        "{message}"
    );
    // The stall's own status write wakes one more reconcile, which meets the same 403 and
    // writes nothing; then nothing happens until the stall retry period.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patches = seed.api.requests("patch", "deployments");
    assert!(patches <= 2, "{patches} attempts");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        seed.api.requests("patch", "deployments"),
        patches,
        "a stall waits for a change or the stall retry period, not a backoff loop"
    );
    controller.stop().await;
}

/// When the API server refuses the build's pod, the Job controller records only a
/// `FailedCreate` Event on the Job and the Job never gets a pod. monoship shows the API
/// server's sentence on the ServiceBuild within a minute, as a stall (the cause is in the
/// spec), and announces it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_pod_the_api_server_refuses_is_shown_within_a_minute() {
    use monoship_testkit::jobrunner::HookDecision;
    use std::sync::Arc;
    const REFUSAL: &str = r#"pods "banana-x7k2p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "build" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "build" must set securityContext.capabilities.drop=["ALL"])"#;
    let hook = Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::CannotCreatePod(REFUSAL.to_owned())
    });
    let seed = Seed::start_with_hook(Some(hook)).await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let started = std::time::Instant::now();
    seed.set_service_revision("banana", &seed.repo.head()).await;
    let stalled = wait_for(&seed, "banana", "Stalled on the refused pod", |o| {
        phase(o) == "Stalled"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let stall = condition(&stalled, "Stalled").unwrap();
    assert_eq!(stall["reason"], "BuildPodRejected");
    let message = stall["message"].as_str().unwrap();
    assert!(message.contains(REFUSAL), "{message}");
    assert_eq!(condition(&stalled, "Ready").unwrap()["status"], "False");
    let events = seed
        .api
        .list_objects("events.k8s.io", "events", Some("shop"));
    let announced = events
        .iter()
        .filter(|e| e["reason"] == "BuildPodRejected")
        .count();
    assert_eq!(announced, 1, "announced once");
    assert_eq!(seed.jobs().await.len(), 1, "no second Job");
    controller.stop().await;
}
