//! The fixture every measure shares: the API server, the registry behind its recording proxy,
//! and the fleet of services promoted at a first commit with the job runner and the controller
//! running; plus the helpers to change a ServiceBuild's revision and wait for it to settle.

mod controller;
mod registry;
mod settle;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use monoship_testkit::apiserver::{ApiServer, ApiServerConfig, WriteRecord};
use monoship_testkit::git::GitRepo;
use monoship_testkit::git_server::{GitServer, GitServerOptions};
use monoship_testkit::jobrunner::{HookDecision, JobRunner, JobRunnerOptions};
use monoship_testkit::registry::TestRegistry;
use monoship_testkit::scenario::servicebuild_resource;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use controller::{Controller, kib_field, process_cpu_seconds};
pub use registry::{
    Image, Setup, blob_bytes, build_image, classes, classes_text, noise, skopeo_copy,
};
pub use settle::wait_settled;

use crate::report::Report;
use crate::{Outcome, fail};

pub const NAMESPACE: &str = "bench";
const CONTAINER: &str = "app";

/// The API server, the registry, the monorepo on its git server, and where the bench writes
/// its files.
pub struct Fixture {
    pub api: ApiServer,
    /// The monorepo: a bare repository served over smart HTTP (`git http-backend`), every
    /// request counted.
    pub git: GitServer,
    pub repo: GitRepo,
    pub client: Client,
    pub registry: TestRegistry,
    /// The registry's proxy, which records every request.
    pub host: String,
    pub setup: Setup,
    pub out_dir: PathBuf,
    log_path: PathBuf,
    kubeconfig: PathBuf,
    /// The controller's git cache (`--git-cache-dir`), emptied when the bench starts.
    git_cache: PathBuf,
}

impl Fixture {
    /// A fresh API server and registry; the controller's log goes to `log` (emptied) in the
    /// bench's directory.
    pub async fn start(log: &str) -> Outcome<Self> {
        let out_dir = target_dir().join("bench");
        std::fs::create_dir_all(&out_dir)?;
        let log_path = out_dir.join(log);
        let _ = std::fs::remove_file(&log_path);
        let api = ApiServer::start_with(ApiServerConfig {
            history_limit: 200_000,
            ..ApiServerConfig::default()
        })
        .await;
        let client = api.client();
        let registry = TestRegistry::start().await;
        let host = registry.host();
        let setup = Setup {
            http: reqwest::Client::new(),
            backend: registry.backend_host(),
        };
        let git = GitServer::start(GitServerOptions::anonymous());
        let repo = git.repo("monorepo");
        let git_cache = out_dir.join("git-cache");
        let _ = std::fs::remove_dir_all(&git_cache);
        Ok(Self {
            api,
            git,
            repo,
            git_cache,
            client,
            registry,
            host,
            setup,
            kubeconfig: out_dir.join("kubeconfig.yaml"),
            out_dir,
            log_path,
        })
    }

    /// Commit a change to the inputs of each of `services` (`services/<name>/data.txt`);
    /// returns the commit id.
    pub fn commit(&self, services: &[String], what: &str) -> String {
        let files: Vec<(String, String)> = services
            .iter()
            .map(|s| (format!("services/{s}/data.txt"), format!("{s} {what}\n")))
            .collect();
        let changes: Vec<(&str, Option<&str>)> = files
            .iter()
            .map(|(path, content)| (path.as_str(), Some(content.as_str())))
            .collect();
        self.repo.commit(&changes, what)
    }

    /// Fetch commands the controller sent to the git server (gix announces itself as
    /// `agent=git/oxide-…`).
    pub fn controller_fetches(&self) -> usize {
        self.git
            .log()
            .iter()
            .filter(|r| r.body.contains("command=fetch") && r.body.contains("agent=git/oxide"))
            .count()
    }

    /// A new `monoship run` process, ready.
    pub async fn start_controller(&self) -> Outcome<Controller> {
        Controller::start(
            &self.kubeconfig,
            &self.host,
            &self.log_path,
            &self.git_cache,
        )
        .await
    }
}

/// The fleet: one namespace, one Deployment and one ServiceBuild per service, each service with
/// its own repository holding the image its build "pushed" for each revision.
pub struct Fleet {
    host: String,
    /// The monorepo's URL on the git server.
    repository: String,
    pub count: usize,
    /// The image every service's build yields, and the one the changed service's does in P3.
    pub image_a: Image,
    pub image_b: Image,
    /// Every ServiceBuild's revision, by name.
    pub revisions: HashMap<String, String>,
    pub controller: Controller,
    /// VmHWM of the controller before any ServiceBuild existed, in KiB.
    pub idle_hwm_kib: u64,
    runner: Option<JobRunner>,
    _workspace: TempDir,
}

impl Fleet {
    /// Create `count` services and promote each at a first commit: the job runner marks build
    /// Jobs complete at once and the images are placed in the registry beforehand.
    pub async fn promote(fixture: &Fixture, count: usize, report: &mut Report) -> Outcome<Self> {
        progress(&format!(
            "set-up: {count} services promoted at a first commit"
        ));
        let started = Instant::now();
        let client = &fixture.client;
        let setup = &fixture.setup;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
            )
            .await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
        for name in (0..count).map(service) {
            deployments
                .create(&PostParams::default(), &deployment(&fixture.host, &name)?)
                .await?;
        }
        let small = |seed: u64| {
            vec![
                ("bin".to_owned(), noise(seed, 64 * 1024)),
                ("etc".to_owned(), noise(seed + 1, 4 * 1024)),
            ]
        };
        build_image(&setup.backend, "bench/base", "a", 2, small(100)).await?;
        build_image(&setup.backend, "bench/base", "b", 2, small(200)).await?;
        let image_a = setup.image("bench/base", "a").await?;
        let image_b = setup.image("bench/base", "b").await?;
        let names: Vec<String> = (0..count).map(service).collect();
        let rev1 = fixture.commit(&names, "rev1");
        let image = &image_a;
        for_each_service(count, 16, |name| {
            let repository = repository_path(&name);
            let rev = short(&rev1).to_owned();
            async move {
                setup.mount(image, &repository).await?;
                setup.tag(image, &repository, &rev).await
            }
        })
        .await?;

        let workspace = tempfile::tempdir()?;
        let runner = JobRunner::start_with(
            client.clone(),
            JobRunnerOptions {
                namespace: Some(NAMESPACE.to_owned()),
                workdir: Some(workspace.path().to_owned()),
                hook: Some(Arc::new(|_: &Job| HookDecision::Succeed)),
                ..JobRunnerOptions::default()
            },
        );
        controller::write_kubeconfig(&fixture.kubeconfig, &fixture.api.url())?;
        let controller = fixture.start_controller().await?;
        let (idle_hwm_kib, _) = controller.memory()?;

        let fleet = Self {
            host: fixture.host.clone(),
            repository: fixture.repo.http_url(),
            count,
            revisions: (0..count).map(|i| (service(i), rev1.clone())).collect(),
            image_a,
            image_b,
            controller,
            idle_hwm_kib,
            runner: Some(runner),
            _workspace: workspace,
        };
        let sb_api = servicebuilds(client);
        for name in fleet.services() {
            let object: DynamicObject = serde_json::from_value(fleet.servicebuild(&name, &rev1))?;
            sb_api.create(&PostParams::default(), &object).await?;
        }
        let first = wait_settled(client, &fleet.revisions, settle_limit(count)).await?;
        let promoted = first.iter().filter(|o| phase(o) == "Promoted").count();
        if promoted != count {
            return fail(format!(
                "only {promoted} of {count} ServiceBuilds were promoted"
            ));
        }
        report.note(format!(
            "set-up: {count} services built (instantly) and promoted at the first commit in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(fleet)
    }

    /// Stop the controller and the job runner; the Deployments and the registry stay.
    pub async fn stop(&mut self) {
        self.controller.kill();
        if let Some(runner) = self.runner.take() {
            runner.shutdown().await;
        }
    }

    pub fn services(&self) -> impl Iterator<Item = String> + use<> {
        (0..self.count).map(service)
    }

    /// Run `f` for every service, `concurrency` at a time; the first error ends it.
    pub async fn for_each<F, Fut>(&self, concurrency: usize, f: F) -> Outcome<()>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Outcome<()>>,
    {
        for_each_service(self.count, concurrency, f).await
    }

    /// The image repository of `service`, with the registry's host.
    fn repository(&self, service: &str) -> String {
        format!("{}/{}", self.host, repository_path(service))
    }

    fn servicebuild(&self, service: &str, revision: &str) -> Value {
        json!({
            "apiVersion": "monoship.dev/v1alpha1",
            "kind": "ServiceBuild",
            "metadata": {"name": service, "namespace": NAMESPACE},
            "spec": {
                "source": {
                    "repository": self.repository,
                    "revision": revision,
                    "paths": [format!("services/{service}")]
                },
                "build": {
                    "template": {"spec": {"containers": [{
                        "name": "build",
                        "image": "quay.io/skopeo/stable:v1.16",
                        "command": ["sh", "-c", "build.sh"]
                    }]}},
                    "timeoutSeconds": 300
                },
                "image": {"repository": self.repository(service), "tags": ["latest"]},
                "targets": [
                    {"kubernetes": {"kind": "Deployment", "name": service, "container": CONTAINER}}
                ]
            }
        })
    }

    /// The CI baseline's deploy step: every service's Deployment gets the commit's tag and a
    /// commit annotation, as strategic-merge PATCHes.
    pub async fn redeploy(&self, client: &Client, rev: &str) -> Outcome<()> {
        let deployments: &Api<Deployment> = &Api::namespaced(client.clone(), NAMESPACE);
        self.for_each(32, |name| {
            let patch = json!({"spec": {"template": {
                "metadata": {"annotations": {"bench.monoship.dev/commit": rev}},
                "spec": {"containers": [{"name": CONTAINER,
                    "image": format!("{}:{}", self.repository(&name), short(rev))}]}
            }}});
            async move {
                deployments
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await?;
                Ok(())
            }
        })
        .await
    }
}

async fn for_each_service<F, Fut>(count: usize, concurrency: usize, f: F) -> Outcome<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Outcome<()>>,
{
    futures::stream::iter((0..count).map(service))
        .map(f)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn deployment(host: &str, service: &str) -> Outcome<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": service, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": service}},
            "template": {
                "metadata": {"labels": {"app": service}},
                "spec": {"containers": [
                    {"name": CONTAINER, "image": format!("{host}/{}:bootstrap", repository_path(service))},
                    {"name": "sidecar", "image": "example.org/proxy:1"}
                ]}
            }
        }
    }))?)
}

/// The revision's tag, as the build pushes it.
pub fn short(revision: &str) -> &str {
    &revision[..12]
}

pub fn service(i: usize) -> String {
    format!("svc-{i:04}")
}

/// The image repository of `service` inside the registry.
pub fn repository_path(service: &str) -> String {
    format!("bench/{service}")
}

pub fn servicebuilds(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NAMESPACE, &servicebuild_resource())
}

pub async fn set_revision(client: &Client, service: &str, revision: &str) -> Outcome<()> {
    let patch = json!({"spec": {"source": {"revision": revision}}});
    servicebuilds(client)
        .patch(service, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

/// How long `count` ServiceBuilds may take to settle at a commit before the bench gives up:
/// 10 minutes per 2500 (at 5000 they took about 4.5 minutes on 2 cores).
pub fn settle_limit(count: usize) -> Duration {
    let quarters = u32::try_from(count.div_ceil(2500)).unwrap_or(u32::MAX);
    Duration::from_secs(600) * quarters.max(1)
}

/// The build Jobs created among `writes`.
pub fn job_creates(writes: &[WriteRecord]) -> usize {
    writes
        .iter()
        .filter(|w| w.resource == "jobs" && w.verb == "create")
        .count()
}

/// The writes to target Deployments among `writes`.
pub fn target_writes(writes: &[WriteRecord]) -> usize {
    writes
        .iter()
        .filter(|w| w.resource == "deployments")
        .count()
}

/// How many of `items` fall in each key.
pub fn tally(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

pub fn progress(what: &str) {
    eprintln!("bench: {what}");
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
