//! The seed scenario: a git monorepo with `banana` and `orange`, a real registry, one Deployment
//! and one ServiceBuild per service, on the in-process API server with the job runner
//! ([`Seed`]) or on a real kube-apiserver and Job controller with the stand-in kubelet
//! ([`RealSeed`]); both dereference to the [`Fixture`] the tests drive.
//!
//! Shared by the end-to-end tests, the benches and the demo. ServiceBuilds are handled as JSON
//! here, so the testkit does not depend on the crate it tests.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::apiserver::ApiServer;
use crate::envtest::Envtest;
use crate::envtest::kubelet::{Kubelet, KubeletOptions};
use crate::git::Monorepo;
use crate::jobrunner::{JobHook, JobRunner, JobRunnerOptions};
use crate::oci;
use crate::registry::TestRegistry;

pub const NAMESPACE: &str = "shop";
pub const SERVICES: [&str; 2] = ["banana", "orange"];
/// The container of each Deployment that monoship pins.
pub const CONTAINER: &str = "app";

/// `monoship.dev/v1alpha1` ServiceBuild, for dynamic APIs.
pub fn servicebuild_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monoship.dev", "v1alpha1", "ServiceBuild"),
        "servicebuilds",
    )
}

/// The seed scenario on the in-process API server, with the job runner.
pub struct Seed {
    pub api: ApiServer,
    pub runner: JobRunner,
    pub fixture: Fixture,
}

/// The seed scenario on a real kube-apiserver and Job controller (see [`crate::envtest`]),
/// with the stand-in kubelet, in a namespace of its own.
pub struct RealSeed {
    pub kubelet: Kubelet,
    pub fixture: Fixture,
}

/// What the seed scenario is made of on either API server: the registry, the monorepo, the
/// namespace with one Deployment per service, and the ServiceBuilds.
pub struct Fixture {
    pub registry: TestRegistry,
    pub repo: Monorepo,
    /// The client the fixture writes with (cluster admin on a real server).
    pub client: Client,
    pub namespace: String,
    /// Image layers per build.
    pub layers: usize,
    /// When set, each ServiceBuild also targets the Nomad job named after its service
    /// (group `web`, task `server`) at this address.
    pub nomad_address: Option<String>,
    /// The repository URL ServiceBuilds name instead of the monorepo's `file://` URL (the same
    /// commits served elsewhere, e.g. over HTTP), and the Secret they name for it.
    pub source_url: Option<String>,
    pub source_secret: Option<String>,
    workspaces: tempfile::TempDir,
}

impl std::ops::Deref for Seed {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl std::ops::DerefMut for Seed {
    fn deref_mut(&mut self) -> &mut Fixture {
        &mut self.fixture
    }
}

impl std::ops::Deref for RealSeed {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl std::ops::DerefMut for RealSeed {
    fn deref_mut(&mut self) -> &mut Fixture {
        &mut self.fixture
    }
}

impl Seed {
    /// Start the API server, the registry and the job runner; create the namespace and one
    /// Deployment per service. No ServiceBuild exists yet: see [`Fixture::set_revision`].
    pub async fn start() -> Self {
        Self::start_with_hook(None).await
    }

    /// Like [`Seed::start`], with a job runner hook that decides per Job what happens.
    pub async fn start_with_hook(hook: Option<JobHook>) -> Self {
        Self::start_with(hook, Vec::new()).await
    }

    /// Like [`Seed::start_with_hook`], with `extra_env` in every build container (what a
    /// kubelet would provide, such as the mounted git credentials).
    pub async fn start_with(hook: Option<JobHook>, extra_env: Vec<(String, String)>) -> Self {
        let api = ApiServer::start().await;
        let client = api.client();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("a namespace");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("the namespace is created");
        let fixture = Fixture::new(client.clone(), NAMESPACE.to_owned()).await;
        let runner = JobRunner::start_with(
            client,
            JobRunnerOptions {
                namespace: Some(NAMESPACE.to_owned()),
                workdir: Some(fixture.workspaces()),
                workspace_per_job: true,
                hook,
                extra_env,
            },
        );
        Self {
            api,
            runner,
            fixture,
        }
    }
}

impl RealSeed {
    /// Like [`Seed::start`] on the real control plane `env`: a new namespace `shop-<n>` with
    /// `labels`, one Deployment per service, and a kubelet for the namespace's Job pods.
    pub async fn start(env: &Envtest, labels: &[(&str, &str)]) -> Self {
        let client = env.client().await;
        let namespace = env.namespace(&client, NAMESPACE, labels).await;
        let fixture = Fixture::new(client.clone(), namespace.clone()).await;
        let options = KubeletOptions {
            workdir: Some(fixture.workspaces()),
            ..KubeletOptions::default()
        };
        let kubelet = Kubelet::start(client, &namespace, options).await;
        Self { kubelet, fixture }
    }
}

impl Fixture {
    async fn new(client: Client, namespace: String) -> Self {
        let fixture = Self {
            registry: TestRegistry::start().await,
            repo: Monorepo::new(),
            client,
            namespace,
            layers: 2,
            nomad_address: None,
            source_url: None,
            source_secret: None,
            workspaces: tempfile::tempdir().expect("a temporary directory"),
        };
        fixture.create_deployments().await;
        fixture
    }

    async fn create_deployments(&self) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        for service in SERVICES {
            let deployment: Deployment = serde_json::from_value(json!({
                "metadata": {"name": service, "namespace": self.namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": service}},
                    "template": {
                        "metadata": {"labels": {"app": service}},
                        "spec": {"containers": [
                            {"name": CONTAINER, "image": format!("{}/shop/{service}:bootstrap", self.registry.host())},
                            {"name": "sidecar", "image": "example.org/proxy:1"}
                        ]}
                    }
                }
            }))
            .expect("a deployment");
            deployments
                .create(&PostParams::default(), &deployment)
                .await
                .expect("the deployment is created");
        }
    }

    /// Where the job runner makes each build's workspace.
    pub fn workspaces(&self) -> PathBuf {
        self.workspaces.path().to_owned()
    }

    /// The image repository of a service.
    pub fn repository(&self, service: &str) -> String {
        format!("{}/shop/{service}", self.registry.host())
    }

    /// The ServiceBuild of `service` at `revision`.
    pub fn servicebuild(&self, service: &str, revision: &str) -> Value {
        let script = oci::build_script();
        let mut targets = vec![
            json!({"kubernetes": {"kind": "Deployment", "name": service, "container": CONTAINER}}),
        ];
        if let Some(address) = &self.nomad_address {
            targets.push(json!({"nomad": {"address": address, "job": service, "group": "web", "task": "server"}}));
        }
        let mut source = json!({
            "repository": self.source_url.clone().unwrap_or_else(|| self.repo.url()),
            "revision": revision,
            "paths": [format!("services/{service}")]
        });
        if let Some(secret) = &self.source_secret {
            source["secretRef"] = json!({ "name": secret });
        }
        json!({
            "apiVersion": "monoship.dev/v1alpha1",
            "kind": "ServiceBuild",
            "metadata": {"name": service, "namespace": self.namespace},
            "spec": {
                "source": source,
                "build": {
                    "template": {"spec": {"containers": [{
                        "name": "build",
                        "image": "quay.io/skopeo/stable:v1.16",
                        "command": ["bash", script.to_string_lossy(), "--layers", self.layers.to_string(),
                                    format!("services/{service}")]
                    }]}},
                    "timeoutSeconds": 300
                },
                "image": {"repository": self.repository(service), "tags": ["latest"]},
                "targets": targets
            }
        })
    }

    pub fn servicebuilds(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &servicebuild_resource(),
        )
    }

    /// Point every ServiceBuild at `revision`, creating them on first use, as a GitOps commit
    /// would.
    pub async fn set_revision(&self, revision: &str) {
        for service in SERVICES {
            self.set_service_revision(service, revision).await;
        }
    }

    /// Point one ServiceBuild at `revision`, creating it on first use.
    pub async fn set_service_revision(&self, service: &str, revision: &str) {
        let api = self.servicebuilds();
        if api
            .get_opt(service)
            .await
            .expect("get ServiceBuild")
            .is_some()
        {
            let patch = json!({"spec": {"source": {"revision": revision}}});
            api.patch(service, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("the revision is set");
        } else {
            let object: DynamicObject =
                serde_json::from_value(self.servicebuild(service, revision))
                    .expect("a ServiceBuild");
            api.create(&PostParams::default(), &object)
                .await
                .expect("the ServiceBuild is created");
        }
    }

    /// The ServiceBuild of `service` as JSON.
    pub async fn get(&self, service: &str) -> Value {
        let object = self
            .servicebuilds()
            .get(service)
            .await
            .expect("the ServiceBuild exists");
        serde_json::to_value(object).expect("JSON")
    }

    /// Wait until `done` holds for every ServiceBuild (as JSON), or panic with what they say.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut all = Vec::new();
            for service in SERVICES {
                if let Some(object) = self.servicebuilds().get_opt(service).await.expect("get") {
                    all.push(serde_json::to_value(object).expect("JSON"));
                }
            }
            if all.len() == SERVICES.len() && all.iter().all(&done) {
                return all;
            }
            if tokio::time::Instant::now() > deadline {
                let statuses: Vec<_> = all
                    .iter()
                    .map(|o| (o["metadata"]["name"].clone(), o["status"].clone()))
                    .collect();
                panic!("timed out waiting for {what}: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until every ServiceBuild has finished with `revision`: its status describes the
    /// current generation and build, and it is Promoted, Unchanged, Failed or Stalled.
    pub async fn settled(&self, revision: &str) -> Vec<Value> {
        self.wait_until(
            &format!("every ServiceBuild settled at {revision}"),
            Duration::from_secs(120),
            |o| settled_at(o, revision),
        )
        .await
    }

    /// The image of a Deployment's pinned container.
    pub async fn deployment_image(&self, service: &str) -> String {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let deployment = deployments
            .get(service)
            .await
            .expect("the deployment exists");
        let containers = deployment
            .spec
            .template
            .spec
            .map(|s| s.containers)
            .unwrap_or_default();
        containers
            .into_iter()
            .find(|c| c.name == CONTAINER)
            .and_then(|c| c.image)
            .unwrap_or_default()
    }

    /// Commit a change to one service's source; returns the new revision.
    pub fn change_service(&self, service: &str, content: &str) -> String {
        self.repo
            .write(&format!("services/{service}/data/fruit.txt"), content);
        self.repo.commit(&format!("change {service}"))
    }

    /// Commit a change outside every service (e.g. the repository README).
    pub fn change_nothing_built(&self, content: &str) -> String {
        self.repo.write("README.md", content);
        self.repo.commit("docs")
    }

    /// Names of the Jobs in the namespace.
    pub async fn jobs(&self) -> Vec<String> {
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(self.client.clone(), &self.namespace);
        jobs.list(&Default::default())
            .await
            .expect("list jobs")
            .items
            .iter()
            .map(|j| j.name_any())
            .collect()
    }
}

/// Whether a ServiceBuild (JSON) has finished with `revision`.
pub fn settled_at(object: &Value, revision: &str) -> bool {
    let status = &object["status"];
    let phase = status["phase"].as_str().unwrap_or_default();
    status["observedGeneration"] == object["metadata"]["generation"]
        && status["build"]["revision"] == revision
        && matches!(phase, "Promoted" | "Unchanged" | "Failed" | "Stalled")
}
