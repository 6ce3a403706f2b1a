//! A registry that answers with HTML, an octet-stream or a 64 MiB body, met by the real
//! controller after a build: no digest, no promotion, nothing written to a target, a transient
//! fault shown on the ServiceBuild, and at most the manifest cap read per attempt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use monoship_testkit::fake_registry::{Behaviour, FakeRegistry, ManifestAnswer};
use monoship_testkit::jobrunner::HookDecision;
use monoship_testkit::scenario::Seed;
use serde_json::json;

use common::{condition, create, wait_for};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry whose HEAD carries no digest, so the digest would come from what GET answers.
async fn answering(get: ManifestAnswer) -> FakeRegistry {
    FakeRegistry::start(Behaviour {
        digest_header: false,
        get,
        ..Behaviour::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_registry_yields_no_digest_and_no_promotion() {
    let seed = Seed::start_with_hook(Some(Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::Succeed
    })))
    .await;
    let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_vec();
    let html = answering(ManifestAnswer::Fixed {
        content_type: "text/html".into(),
        body: b"<html><body>Sign in</body></html>".to_vec(),
    })
    .await;
    let octets = answering(ManifestAnswer::Fixed {
        content_type: "application/octet-stream".into(),
        body: manifest.clone(),
    })
    .await;
    let huge = answering(ManifestAnswer::Huge {
        content_type: OCI_MANIFEST.into(),
        total: 64 << 20,
        declare_length: false,
    })
    .await;
    let revision = seed.repo.head();
    let registries = [("banana", &html), ("orange", &octets), ("kiwi", &huge)];
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    for (name, registry) in &registries {
        settings.insecure_registries.push(registry.host());
        registry.put_manifest(
            &format!("shop/{name}"),
            &revision[..12],
            OCI_MANIFEST,
            &manifest,
        );
    }
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    for (name, registry) in &registries {
        let mut object = seed.servicebuild("banana", &revision);
        object["metadata"]["name"] = json!(name);
        object["spec"]["image"]["repository"] = json!(format!("{}/shop/{name}", registry.host()));
        create(&seed, object).await;
    }
    for (name, registry) in &registries {
        let failing = wait_for(&seed, name, "Ready=False from the registry", |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == "RegistryError")
        })
        .await;
        assert!(
            failing["status"]["build"]["digest"].is_null(),
            "{name}: no digest"
        );
        assert!(
            failing["status"]["current"].is_null(),
            "{name}: nothing promoted"
        );
        assert_eq!(
            condition(&failing, "Reconciling").unwrap()["status"],
            "True"
        );
        let puts = registry
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count();
        assert_eq!(puts, 0, "{name}: no tag moved");
    }
    assert_eq!(common::target_writes(&seed, "banana"), 0);
    assert_eq!(common::target_writes(&seed, "orange"), 0);
    // The 64 MiB answer is never read to its end: each attempt stops at the 4 MiB cap.
    assert!(!huge.stream_finished(), "the whole body was read");
    let gets = huge.requests().iter().filter(|r| r.method == "GET").count();
    let read = huge.streamed_bytes();
    assert!(
        read <= gets.max(1) * ((4 << 20) + (1 << 20)),
        "{read} bytes handed over for {gets} GETs"
    );
    controller.stop().await;
}
