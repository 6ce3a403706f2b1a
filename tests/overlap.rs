//! Targets that overlap: several containers of one workload pinned by one ServiceBuild or by
//! several, a target whose container changes, and two ServiceBuilds naming the same container.
//! Against the in-process API server (server-side apply with managedFields, and the 422 a pod
//! template without an image gets), the job runner and a real registry.

mod common;

use common::{condition, create, merge, phase, wait_for};

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use monoship_testkit::apiserver::FaultRule;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::{Value, json};

/// Resync of the controller in these tests: several resyncs fit in [`WATCH`].
const RESYNC: Duration = Duration::from_millis(300);
/// How long a settled state is watched for writes that should not happen.
const WATCH: Duration = Duration::from_secs(3);

/// A Deployment's containers, name → image.
async fn containers(seed: &Seed, name: &str) -> BTreeMap<String, Option<String>> {
    let deployments: Api<Deployment> = Api::namespaced(seed.client.clone(), NAMESPACE);
    let deployment = deployments.get(name).await.unwrap();
    deployment
        .spec
        .template
        .spec
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.image))
        .collect()
}

/// The `pin.monoship.dev/*` annotations of a Deployment, container → claimant.
async fn claims(seed: &Seed, name: &str) -> BTreeMap<String, String> {
    let deployments: Api<Deployment> = Api::namespaced(seed.client.clone(), NAMESPACE);
    let deployment = deployments.get(name).await.unwrap();
    deployment
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("pin.monoship.dev/")?.to_owned(), v)))
        .collect()
}

fn deployment_target(name: &str, container: &str) -> Value {
    json!({"kubernetes": {"kind": "Deployment", "name": name, "container": container}})
}

/// The seed ServiceBuild of `service` at HEAD, with other targets.
fn with_targets(seed: &Seed, service: &str, targets: Value) -> Value {
    let mut object = seed.servicebuild(service, &seed.repo.head());
    object["spec"]["targets"] = targets;
    object
}

/// `repository@digest` of a promoted ServiceBuild.
fn pinned(seed: &Seed, object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap();
    let digest = object["status"]["current"]["digest"].as_str().unwrap();
    format!("{}@{digest}", seed.repository(name))
}

fn promoted(o: &Value) -> bool {
    phase(o) == "Promoted"
}

/// One ServiceBuild pins two containers of one Deployment: one write each, and resyncs keep
/// both (each pin carries the other's image, so neither takes the other away).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_servicebuild_pins_two_containers_of_one_deployment() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, RESYNC).await;
    let targets = json!([
        deployment_target("banana", "app"),
        deployment_target("banana", "sidecar")
    ]);
    create(&seed, with_targets(&seed, "banana", targets)).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    let image = pinned(&seed, &banana);
    assert_eq!(
        common::target_writes(&seed, "banana"),
        2,
        "one write per target"
    );

    tokio::time::sleep(WATCH).await;
    let both = BTreeMap::from([
        ("app".to_owned(), Some(image.clone())),
        ("sidecar".to_owned(), Some(image.clone())),
    ]);
    assert_eq!(containers(&seed, "banana").await, both);
    assert_eq!(
        claims(&seed, "banana").await,
        BTreeMap::from([
            ("app".to_owned(), "shop/banana".to_owned()),
            ("sidecar".to_owned(), "shop/banana".to_owned()),
        ])
    );
    assert_eq!(
        common::target_writes(&seed, "banana"),
        2,
        "no write on resync"
    );
    let banana = seed.get("banana").await;
    assert_eq!(phase(&banana), "Promoted", "{:#}", banana["status"]);
    for entry in banana["status"]["targets"].as_array().unwrap() {
        assert_eq!(entry["inSync"], true, "{entry}");
        assert!(entry["message"].is_null(), "no drift: {entry}");
    }
    controller.stop().await;
}

/// Two ServiceBuilds pin one container each of one Deployment: one write each, whatever order
/// they land in, and resyncs keep both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servicebuilds_pin_two_containers_of_one_deployment() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, RESYNC).await;
    let orange_targets = json!([deployment_target("banana", "sidecar")]);
    create(&seed, seed.servicebuild("banana", &seed.repo.head())).await;
    create(&seed, with_targets(&seed, "orange", orange_targets)).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    let orange = wait_for(&seed, "orange", "Promoted", promoted).await;
    assert_eq!(
        common::target_writes(&seed, "banana"),
        2,
        "one write per ServiceBuild"
    );

    tokio::time::sleep(WATCH).await;
    assert_eq!(
        containers(&seed, "banana").await,
        BTreeMap::from([
            ("app".to_owned(), Some(pinned(&seed, &banana))),
            ("sidecar".to_owned(), Some(pinned(&seed, &orange))),
        ])
    );
    assert_eq!(
        claims(&seed, "banana").await,
        BTreeMap::from([
            ("app".to_owned(), "shop/banana".to_owned()),
            ("sidecar".to_owned(), "shop/orange".to_owned()),
        ])
    );
    assert_eq!(
        common::target_writes(&seed, "banana"),
        2,
        "no write on resync"
    );
    assert_eq!(common::target_writes(&seed, "orange"), 0, "not a target");
    for name in ["banana", "orange"] {
        let object = seed.get(name).await;
        assert_eq!(phase(&object), "Promoted", "{name}: {:#}", object["status"]);
    }
    controller.stop().await;
}

/// A target whose container is renamed pins the new container and leaves the old one its image:
/// no field is removed from the workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_target_container_keeps_the_old_containers_image() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, RESYNC).await;
    create(&seed, seed.servicebuild("banana", &seed.repo.head())).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    let image = pinned(&seed, &banana);

    let targets = json!([deployment_target("banana", "sidecar")]);
    merge(&seed, "banana", json!({"spec": {"targets": targets}})).await;
    wait_for(&seed, "banana", "the sidecar pinned", |o| {
        let entry = &o["status"]["targets"][0];
        entry["target"] == "Deployment/shop/banana:sidecar" && entry["inSync"] == true
    })
    .await;
    tokio::time::sleep(WATCH).await;
    assert_eq!(
        containers(&seed, "banana").await,
        BTreeMap::from([
            ("app".to_owned(), Some(image.clone())),
            ("sidecar".to_owned(), Some(image.clone())),
        ])
    );
    assert_eq!(
        common::target_writes(&seed, "banana"),
        2,
        "one write per container"
    );
    let banana = seed.get("banana").await;
    assert_eq!(phase(&banana), "Promoted", "{:#}", banana["status"]);
    controller.stop().await;
}

/// A second ServiceBuild naming a container another one pins stalls with `TargetClaimed` and
/// writes nothing, however often it is looked at; once the owner is deleted it takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_claimant_of_a_container_stalls_until_the_owner_is_gone() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, RESYNC).await;
    create(&seed, seed.servicebuild("banana", &seed.repo.head())).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    let banana_image = pinned(&seed, &banana);

    let orange_targets = json!([deployment_target("banana", "app")]);
    create(&seed, with_targets(&seed, "orange", orange_targets)).await;
    let orange = wait_for(&seed, "orange", "Stalled", |o| phase(o) == "Stalled").await;
    let stalled = condition(&orange, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "TargetClaimed", "{stalled}");
    let message = stalled["message"].as_str().unwrap();
    assert!(message.contains("ServiceBuild shop/banana"), "{message}");
    assert!(message.contains("Deployment shop/banana"), "{message}");
    assert_eq!(orange["status"]["targets"][0]["inSync"], false);

    // Several resyncs: the Deployment keeps banana's single write.
    tokio::time::sleep(WATCH).await;
    assert_eq!(
        common::target_writes(&seed, "banana"),
        1,
        "only banana's pin"
    );
    assert_eq!(containers(&seed, "banana").await["app"], Some(banana_image));
    assert_eq!(phase(&seed.get("banana").await), "Promoted");
    assert_eq!(phase(&seed.get("orange").await), "Stalled");

    // The owner goes away: the claim is stale and orange takes over when it is next looked at.
    seed.servicebuilds()
        .delete("banana", &DeleteParams::default())
        .await
        .unwrap();
    merge(
        &seed,
        "orange",
        json!({"metadata": {"annotations": {"example.org/touched": "1"}}}),
    )
    .await;
    let orange = wait_for(&seed, "orange", "Promoted", promoted).await;
    assert_eq!(
        containers(&seed, "banana").await["app"],
        Some(pinned(&seed, &orange))
    );
    assert_eq!(
        claims(&seed, "banana").await,
        BTreeMap::from([("app".to_owned(), "shop/orange".to_owned())])
    );
    assert_eq!(common::target_writes(&seed, "banana"), 2);
    controller.stop().await;
}

/// A pin that meets a concurrent write (409 Conflict on its resourceVersion) reads the workload
/// again and retries at once, without failing the reconcile; the workload is changed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_that_meets_a_concurrent_write_reads_again_and_retries() {
    let seed = Seed::start().await;
    seed.api.inject_fault(
        FaultRule::new("patch", "deployments")
            .name("banana")
            .status(409)
            .times(2),
    );
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    create(&seed, seed.servicebuild("banana", &seed.repo.head())).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    assert_eq!(
        containers(&seed, "banana").await["app"],
        Some(pinned(&seed, &banana))
    );
    let patches = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.verb == "patch")
        .map(|w| (w.code, w.changed))
        .collect::<Vec<_>>();
    assert_eq!(patches, [(409, false), (409, false), (200, true)]);
    // Retried within the pin: no reconcile failed for it.
    let errors = r#"monoship_reconciles_total{result="error"}"#;
    assert_eq!(common::counter(&controller.metrics.encode(), errors), 0.0);
    controller.stop().await;
}

/// Git's server-side apply of a Deployment, as Flux (or Argo CD with server-side apply) makes it.
async fn git_apply(seed: &Seed, name: &str, containers: Value) {
    let deployments: Api<Deployment> = Api::namespaced(seed.client.clone(), NAMESPACE);
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}
        }
    });
    deployments
        .patch(
            name,
            &PatchParams::apply("flux").force(),
            &Patch::Apply(&manifest),
        )
        .await
        .unwrap();
}

/// A container Git's server-side apply removes stays in the workload while monoship's fields
/// keep it: its own ServiceBuild stalls `ContainerNotFound`, and no other pin carries it on,
/// so the next pin of the workload lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_git_removed_is_not_carried_on() {
    let seed = Seed::start().await;
    let bootstrap = json!({"name": "app", "image": "example.org/kiwi:bootstrap"});
    let sidecar = json!({"name": "sidecar", "image": "example.org/proxy:1"});
    git_apply(&seed, "kiwi", json!([bootstrap, sidecar])).await;
    let controller = common::start(&seed, RESYNC).await;
    let banana_targets = json!([deployment_target("kiwi", "app")]);
    let orange_targets = json!([deployment_target("kiwi", "sidecar")]);
    create(&seed, with_targets(&seed, "banana", banana_targets)).await;
    create(&seed, with_targets(&seed, "orange", orange_targets)).await;
    let banana = wait_for(&seed, "banana", "Promoted", promoted).await;
    wait_for(&seed, "orange", "Promoted", promoted).await;

    // Git drops the sidecar (and, having no ignore rule, puts its own app image back).
    git_apply(&seed, "kiwi", json!([bootstrap])).await;
    let orange = wait_for(&seed, "orange", "ContainerNotFound", |o| {
        condition(o, "Stalled").is_some_and(|c| c["reason"] == "ContainerNotFound")
    })
    .await;
    let message = condition(&orange, "Stalled").unwrap()["message"].clone();
    assert!(
        message.as_str().unwrap().contains("\"sidecar\""),
        "{message}"
    );
    wait_for(&seed, "banana", "the drift re-pinned", |o| {
        o["status"]["targets"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("example.org/kiwi:bootstrap"))
    })
    .await;
    tokio::time::sleep(WATCH).await;
    assert_eq!(
        containers(&seed, "kiwi").await,
        BTreeMap::from([("app".to_owned(), Some(pinned(&seed, &banana)))])
    );
    assert_eq!(
        claims(&seed, "kiwi").await,
        BTreeMap::from([("app".to_owned(), "shop/banana".to_owned())])
    );
    let monoship_writes = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.name.as_deref() == Some("kiwi"))
        .filter(|w| w.changed && w.field_manager.as_deref() == Some("monoship"))
        .count();
    assert_eq!(
        monoship_writes, 3,
        "two pins and one re-pin after Git's apply"
    );
    controller.stop().await;
}
