//! Starting and killing the real controller in end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use monoship::app::{self, Options};
use monoship::controller::{GitCacheSettings, Settings};
use monoship::metrics::Metrics;
use monoship_testkit::scenario::{Fixture, Seed};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running controller. [`Running::kill`] aborts it at whatever point it is, like SIGKILL;
/// [`Running::stop`] shuts it down gracefully.
pub struct Running {
    task: JoinHandle<()>,
    token: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub endpoints: SocketAddr,
}

impl Running {
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn stop(self) {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }

    /// Wait until this controller has finished at least one reconcile with `result` (`ok`,
    /// `stalled` or `error`), as its metrics count them.
    pub async fn wait_for_reconcile(&self, result: &str) {
        let series = format!("monoship_reconciles_total{{result=\"{result}\"}}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while counter(&self.metrics.encode(), &series) < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {result} reconcile within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET a path of the metrics and health endpoint.
    pub async fn get(&self, path: &str) -> (u16, String) {
        // No idle connection is kept, so a graceful shutdown does not wait on one.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client");
        let response = client
            .get(format!("http://{}{path}", self.endpoints))
            .send()
            .await
            .expect("the endpoint answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

/// The controller's settings for the seed scenario: as `monoship run` has them by default,
/// inputs read from git into a cache of the test's own.
pub fn settings(seed: &Fixture, resync: Duration) -> Settings {
    Settings {
        insecure_registries: vec![seed.registry.host()],
        resync,
        git_cache: Some(GitCacheSettings {
            dir: seed.workspaces().join("git-cache"),
            max_bytes: 256 << 20,
            parallel_fetches: 4,
            allow_credentials_over_http: true,
            allowed_origins: Default::default(),
        }),
        ..Settings::default()
    }
}

pub async fn start(seed: &Fixture, resync: Duration) -> Running {
    start_with(seed.client.clone(), settings(seed, resync), None).await
}

pub async fn start_with(
    client: kube::Client,
    settings: Settings,
    election: Option<monoship::lease::LeaseSettings>,
) -> Running {
    monoship::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoints = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    let token = CancellationToken::new();
    let options = Options {
        settings,
        endpoints: Some(listener),
        election,
        lease_client: None,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(app::run(client, options, token.clone()));
    Running {
        task,
        token,
        metrics,
        endpoints,
    }
}

/// The value of a counter in the Prometheus text, 0 when absent.
pub fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Wait until `done` holds for one ServiceBuild, or panic with its status.
pub async fn wait_for(seed: &Seed, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let object = seed.get(name).await;
        if done(&object) {
            return object;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {name} {what}: {:#}",
                object["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub async fn create(seed: &Seed, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    seed.servicebuilds()
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

pub async fn merge(seed: &Seed, name: &str, patch: Value) {
    seed.servicebuilds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The seed scenario whose API server answers every write to banana's Deployment with `code`,
/// a controller, and banana set to the first commit.
pub async fn with_failing_target_writes(code: u16) -> (Seed, Running) {
    let seed = Seed::start().await;
    seed.api.inject_fault(
        monoship_testkit::apiserver::FaultRule::new("patch", "deployments")
            .name("banana")
            .status(code)
            .times(100_000),
    );
    let controller = start(&seed, Duration::from_secs(600)).await;
    seed.set_service_revision("banana", &seed.repo.head()).await;
    (seed, controller)
}

/// Build Jobs created since the last counter reset.
pub fn job_creates(seed: &Seed) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == "jobs" && w.verb == "create" && w.changed)
        .count()
}

/// Writes that changed the Deployment `name` (its creation aside) since the last counter reset.
pub fn target_writes(seed: &Seed, name: &str) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.name.as_deref() == Some(name))
        .filter(|w| w.changed && w.verb != "create")
        .count()
}
