//! Secrets stay where they belong: no registry password, `.dockerconfigjson` content or Nomad
//! token shows in any ServiceBuild status, Event, log line (at TRACE, the controller's and its
//! HTTP clients') or metric, on the happy path and on every error path: a registry that denies
//! the credentials, a malformed push Secret, a Nomad token Nomad refuses.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use monoship_testkit::jobrunner::HookDecision;
use monoship_testkit::nomad::NomadDouble;
use monoship_testkit::oci::{build_and_push_with, write_tree};
use monoship_testkit::registry::TestRegistry;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::json;

use common::{create, phase, wait_for};

const USER: &str = "builder";
const PASSWORD: &str = "pw-7f3c9a1e-registry";
const WRONG_PASSWORD: &str = "pw-0b2d4c6e-wrong";
const BROKEN: &str = "pw-5a8e1f3b-broken";
const TOKEN: &str = "tok-9d7b5f3a-nomad-good";
const BAD_TOKEN: &str = "tok-1c3e5a7b-nomad-bad";

/// Every log line of this test binary, at TRACE.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        // `try_init` also routes the `log` records of reqwest and hyper into the capture.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn secret(seed: &Seed, name: &str, type_: &str, data: serde_json::Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "type": type_, "data": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(seed.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn docker_config(host: &str, password: &str) -> String {
    let auth = b64(&format!("{USER}:{password}"));
    json!({"auths": {host: {"username": USER, "password": password, "auth": auth}}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_shows_in_status_events_logs_or_metrics() {
    let logs = logs();
    // Builds "succeed" at once; the images they would push are pushed here beforehand.
    let seed = Seed::start_with_hook(Some(Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::Succeed
    })))
    .await;
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD).await;
    let revision = seed.repo.head();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("app.txt", "v1\n")]);
    for service in ["banana", "orange", "lime"] {
        let image = format!("{}/shop/{service}:{}", registry.host(), &revision[..12]);
        build_and_push_with(dir.path(), &image, 1, Some((USER, PASSWORD)));
    }
    let nomad = NomadDouble::start_with_token(TOKEN).await.unwrap();
    nomad.seed_docker_job("lime", "web", "server", "example.org/lime:1", &[]);
    let dockerconfig = "kubernetes.io/dockerconfigjson";
    let host = registry.host();
    secret(
        &seed,
        "push",
        dockerconfig,
        json!({".dockerconfigjson": b64(&docker_config(&host, PASSWORD))}),
    )
    .await;
    secret(
        &seed,
        "push-wrong",
        dockerconfig,
        json!({".dockerconfigjson": b64(&docker_config(&host, WRONG_PASSWORD))}),
    )
    .await;
    let broken = format!(r#"{{"auths":{{"{host}":{{"password":"{BROKEN}""#);
    secret(
        &seed,
        "push-broken",
        dockerconfig,
        json!({".dockerconfigjson": b64(&broken)}),
    )
    .await;
    secret(
        &seed,
        "nomad-bad",
        "Opaque",
        json!({"token": b64(BAD_TOKEN)}),
    )
    .await;

    let mut settings = common::settings(&seed, Duration::from_secs(600));
    settings.insecure_registries.push(host.clone());
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    let cases = [
        ("banana", "push", None, "Promoted"),
        ("orange", "push-wrong", None, "Stalled"),
        ("kiwi", "push-broken", None, "Stalled"),
        ("lime", "push", Some("nomad-bad"), "Stalled"),
    ];
    for (name, push, nomad_secret, _) in cases {
        let mut object = seed.servicebuild("banana", &revision);
        object["metadata"]["name"] = json!(name);
        object["spec"]["image"]["repository"] = json!(format!("{host}/shop/{name}"));
        object["spec"]["image"]["pushSecretRef"] = json!({"name": push});
        if let Some(token) = nomad_secret {
            object["spec"]["targets"] = json!([{"nomad": {
                "address": nomad.address(), "job": "lime", "group": "web", "task": "server",
                "tokenSecretRef": {"name": token}}}]);
        }
        create(&seed, object).await;
    }
    let mut statuses = Vec::new();
    for (name, _, _, wanted) in cases {
        let object = wait_for(&seed, name, wanted, |o| phase(o) == wanted).await;
        statuses.push(object["status"].to_string());
    }
    let reasons: Vec<_> = statuses
        .iter()
        .map(|s| {
            s.contains("RegistryAccessDenied")
                || s.contains("InvalidSecret")
                || s.contains("NomadAccessDenied")
        })
        .collect();
    assert_eq!(
        reasons,
        [false, true, true, true],
        "each error path was taken: {statuses:#?}"
    );
    let (_, metrics) = controller.get("/metrics").await;
    controller.stop().await;

    let events = serde_json::to_string(&seed.api.list_objects(
        "events.k8s.io",
        "events",
        Some(NAMESPACE),
    ))
    .unwrap();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("TRACE"), "the capture saw TRACE lines");
    let basic = b64(&format!("{USER}:{PASSWORD}"));
    for secret in [
        PASSWORD,
        WRONG_PASSWORD,
        BROKEN,
        TOKEN,
        BAD_TOKEN,
        basic.as_str(),
    ] {
        for (place, text) in [
            ("status", statuses.join("\n")),
            ("Events", events.clone()),
            ("logs", logs.clone()),
            ("metrics", metrics.clone()),
        ] {
            assert!(!text.contains(secret), "{secret} shows in {place}");
        }
    }
}
