//! What a real cluster does that the in-process API server does not show: server-side apply's
//! field removal (two pins on one Deployment) and Pod Security admission. Each was first written
//! as the behaviour should be and ignored with the title of the issue that fixed it; a new gap
//! goes here the same way (`cargo test --test real -- --ignored` runs the ignored ones).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use monoship::controller::Settings;
use monoship_testkit::scenario::{RealSeed, SERVICES, settled_at};
use serde_json::{Value, json};

use crate::common;

/// Wait until both ServiceBuilds settle at `revision`; fail at once, with its message, when the
/// Job controller reports that it cannot create a build pod (the reason is only in that Event),
/// or when a ServiceBuild's condition reports a write the API server refused as invalid.
async fn settled_or_failed_create(seed: &RealSeed, revision: &str) -> Vec<Value> {
    let events: Api<Event> = Api::namespaced(seed.client.clone(), &seed.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = Vec::new();
        for service in SERVICES {
            if let Some(object) = seed.servicebuilds().get_opt(service).await.unwrap() {
                all.push(serde_json::to_value(object).unwrap());
            }
        }
        if all.len() == SERVICES.len() && all.iter().all(|o| settled_at(o, revision)) {
            return all;
        }
        let refused: Vec<String> = all
            .iter()
            .flat_map(|o| {
                let phase = o["status"]["phase"].clone();
                let name = o["metadata"]["name"].clone();
                let conditions = o["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conditions.into_iter().filter_map(move |c| {
                    let message = c["message"].as_str()?;
                    message.contains("is invalid:").then(|| {
                        format!(
                            "{name} (phase {phase}): {} {} {}: {message}",
                            c["type"], c["status"], c["reason"]
                        )
                    })
                })
            })
            .collect();
        assert!(refused.is_empty(), "a write was refused: {refused:#?}");
        let failed_create: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Job"))
            .filter_map(|e| e.note)
            .collect();
        assert!(
            failed_create.is_empty(),
            "the Job controller cannot create a build pod: {failed_create:#?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled within 120 s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(seed: &RealSeed, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    seed.servicebuilds()
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

fn namespaced(seed: &RealSeed) -> Settings {
    Settings {
        namespace: Some(seed.namespace.clone()),
        ..common::settings(seed, Duration::from_secs(600))
    }
}

/// Two ServiceBuilds pin two containers of one Deployment: banana the `app` container, orange
/// the `sidecar`. Each apply carries every image monoship holds on the Deployment; an apply that
/// carried only its own container would drop the other's image, and kube-apiserver would answer
/// 422 `spec.template.spec.containers[0].image: Required value`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servicebuilds_pin_two_containers_of_one_deployment() {
    let env = envtest!();
    let _shared = crate::NAMESPACED.read().await;
    let seed = RealSeed::start(env, &[]).await;
    crate::install_crd(&seed.client).await;
    let controller = common::start_with(seed.client.clone(), namespaced(&seed), None).await;
    let revision = seed.repo.head();
    for (service, container) in [("banana", "app"), ("orange", "sidecar")] {
        let mut object = seed.servicebuild(service, &revision);
        object["spec"]["targets"] = json!([{"kubernetes": {"kind": "Deployment", "name": "banana", "container": container}}]);
        create(&seed, object).await;
    }
    let settled = settled_or_failed_create(&seed, &revision).await;
    for sb in &settled {
        assert_eq!(sb["status"]["phase"], "Promoted", "{:#}", sb["status"]);
    }
    let deployments: Api<Deployment> = Api::namespaced(seed.client.clone(), &seed.namespace);
    let deployment = deployments.get("banana").await.unwrap();
    let images: Vec<(String, String)> = deployment
        .spec
        .template
        .spec
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.image.unwrap_or_default()))
        .collect();
    let digest = |service: &str| {
        let sb = settled
            .iter()
            .find(|o| o["metadata"]["name"] == service)
            .unwrap();
        format!(
            "{}@{}",
            seed.repository(service),
            sb["status"]["current"]["digest"].as_str().unwrap()
        )
    };
    assert_eq!(
        images,
        [
            ("app".to_owned(), digest("banana")),
            ("sidecar".to_owned(), digest("orange"))
        ]
    );
    controller.stop().await;
}

/// A tenant namespace enforcing the `restricted` Pod Security Standard, and a build template
/// that complies with it. Every container of the build pod must comply, monoship's checkout
/// init container included, or the Job controller cannot create the pod (`violates PodSecurity
/// "restricted:latest"` in a FailedCreate Event).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_run_in_a_namespace_enforcing_restricted_pod_security() {
    let env = envtest!();
    let _shared = crate::NAMESPACED.read().await;
    let seed = RealSeed::start(env, &[("pod-security.kubernetes.io/enforce", "restricted")]).await;
    crate::install_crd(&seed.client).await;
    let controller = common::start_with(seed.client.clone(), namespaced(&seed), None).await;
    let revision = seed.repo.head();
    for service in SERVICES {
        let mut object = seed.servicebuild(service, &revision);
        let spec = &mut object["spec"]["build"]["template"]["spec"];
        spec["securityContext"] = json!({
            "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}
        });
        spec["containers"][0]["securityContext"] =
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
        create(&seed, object).await;
    }
    let settled = settled_or_failed_create(&seed, &revision).await;
    for sb in &settled {
        assert_eq!(sb["status"]["phase"], "Promoted", "{:#}", sb["status"]);
    }
    let pods: Api<Pod> = Api::namespaced(seed.client.clone(), &seed.namespace);
    let build_pods = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name"))
        .await
        .unwrap()
        .items;
    assert_eq!(build_pods.len(), 2, "one admitted build pod per service");
    controller.stop().await;
}
