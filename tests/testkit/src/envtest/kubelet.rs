//! A stand-in kubelet for the real API server: Job pods run as local processes.
//!
//! [`Kubelet::start`] registers a `Node` of its own (named after the namespace, kept `Ready` by
//! a status heartbeat every 10 s) and watches the pods of one namespace. A pod of a Job (label
//! `batch.kubernetes.io/job-name` or `job-name`) that no node has is bound to this node through
//! `pods/binding`; other pods (a Deployment's, say) are left alone and stay `Pending`, as with
//! no scheduler. A bound pod is run once, by uid, with the code the [`crate::jobrunner`] uses
//! (see [`crate::process`]): init containers in order, then the first container, each as a
//! local process in a workspace of the pod's own (`MONOSHIP_WORKSPACE`). Its status goes
//! through `pods/status` as a kubelet writes it: `Running` with `startTime`, then `Succeeded` or
//! `Failed` with `initContainerStatuses` and `containerStatuses` in `terminated` state (exit
//! code, reason `Completed`/`Error`, and the termination message: each container's
//! `terminationMessagePath` is a temporary file of the pod's own, never a path under `/dev`,
//! see [`crate::process`]), so the real Job controller
//! completes or fails the Job. `activeDeadlineSeconds` of the pod kills it (`DeadlineExceeded`);
//! a pod being deleted has its process killed and is then removed (grace period 0), as a
//! kubelet confirms a deletion.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::process::{self, Exit, Stop, echo, now};

const MANAGER: &str = "monoship-testkit-kubelet";
const JOB_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

/// Options for [`Kubelet::start`].
#[derive(Clone, Default)]
pub struct KubeletOptions {
    /// Environment added to every process (overrides the container's `env`).
    pub extra_env: Vec<(String, String)>,
    /// Where the pods' workspaces are made (a temporary directory when `None`).
    pub workdir: Option<PathBuf>,
}

struct Shared {
    client: Client,
    namespace: String,
    node: String,
    extra_env: Vec<(String, String)>,
    workdir: PathBuf,
    runs: AtomicUsize,
    running: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

/// A running stand-in kubelet; dropping it stops it and kills its processes.
pub struct Kubelet {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    _workdir: Option<tempfile::TempDir>,
}

impl Kubelet {
    /// Register a Node and start running the Job pods of `namespace` on it.
    pub async fn start(client: Client, namespace: &str, options: KubeletOptions) -> Self {
        let (workdir, temporary) = match options.workdir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                (dir.path().to_owned(), Some(dir))
            }
        };
        let shared = Arc::new(Shared {
            client: client.clone(),
            namespace: namespace.to_owned(),
            node: format!("envtest-{namespace}"),
            extra_env: options.extra_env,
            workdir,
            runs: AtomicUsize::new(0),
            running: Mutex::new(HashMap::new()),
        });
        register_node(&shared).await;
        let tasks = vec![
            tokio::spawn(heartbeat(shared.clone())),
            tokio::spawn(watch_pods(shared.clone())),
        ];
        Self {
            shared,
            tasks,
            _workdir: temporary,
        }
    }

    /// The name of this kubelet's Node.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// How many pods were started.
    pub fn runs(&self) -> usize {
        self.shared.runs.load(Ordering::SeqCst)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn node_status() -> Value {
    let t = now();
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "nodeInfo": {"kubeletVersion": "v1.36.3-envtest", "architecture": "amd64",
                     "operatingSystem": "linux", "machineID": "", "systemUUID": "", "bootID": "",
                     "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "local://",
                     "kubeProxyVersion": ""}
    })
}

async fn register_node(shared: &Shared) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": shared.node, "labels": {"kubernetes.io/hostname": shared.node}},
        "status": node_status()
    }))
    .expect("a Node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("the Node {} is not created: {e}", shared.node),
    }
}

/// Keep the Node `Ready`: without it, the node lifecycle controller marks it unreachable after
/// about 50 s and taints it.
async fn heartbeat(shared: Arc<Shared>) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    loop {
        let patch = json!({"status": {"conditions": node_status()["conditions"]}});
        if let Err(e) = nodes
            .patch_status(&shared.node, &pp, &Patch::Strategic(patch))
            .await
        {
            tracing::debug!("kubelet heartbeat of {}: {e}", shared.node);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

fn is_job_pod(pod: &Pod) -> bool {
    JOB_LABELS.iter().any(|l| pod.labels().contains_key(*l))
}

fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

async fn watch_pods(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let mut started: HashSet<String> = HashSet::new();
    let mut tasks = JoinSet::new();
    let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.uid() {
                    lock(&shared.running).remove(&uid);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("kubelet watch error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let (Some(uid), true) = (pod.uid(), is_job_pod(&pod)) else {
            continue;
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            // Dropping the sender kills the process; then confirm the deletion.
            lock(&shared.running).remove(&uid);
            if node.as_deref() == Some(shared.node.as_str()) {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                let _ = pods.delete(&pod.name_any(), &dp).await;
            }
            continue;
        }
        if is_terminal(&pod) {
            continue;
        }
        match node {
            None => bind(&pods, &pod, &shared.node).await,
            Some(node) if node == shared.node && started.insert(uid.clone()) => {
                let (tx, rx) = oneshot::channel();
                lock(&shared.running).insert(uid, tx);
                tasks.spawn(run_pod(shared.clone(), pod, rx));
            }
            Some(_) => {}
        }
    }
}

async fn bind(pods: &Api<Pod>, pod: &Pod, node: &str) {
    let name = pod.name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": pod.namespace()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    if let Err(e) = pods
        .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        tracing::warn!("kubelet: binding {name} to {node} failed: {e}");
    }
}

async fn patch_status(pods: &Api<Pod>, name: &str, status: Value) {
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = pods
        .patch_status(name, &pp, &Patch::Merge(json!({"status": status})))
        .await
    {
        tracing::warn!("kubelet: status update of pod {name} failed: {e}");
    }
}

async fn run_pod(shared: Arc<Shared>, pod: Pod, mut cancel: oneshot::Receiver<()>) {
    let name = pod.name_any();
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let label = format!("[pod {}/{name}]", shared.namespace);
    let uid = pod.uid().unwrap_or_default();
    shared.runs.fetch_add(1, Ordering::SeqCst);
    let spec = pod.spec.clone().unwrap_or_default();
    let started = now();
    patch_status(
        &pods,
        &name,
        json!({"phase": "Running", "startTime": started, "hostIP": "127.0.0.1",
               "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}),
    )
    .await;
    let workspace = shared.workdir.join(format!("{}-{name}", shared.namespace));
    if let Err(e) = std::fs::create_dir_all(&workspace) {
        tracing::warn!("kubelet: cannot create {}: {e}", workspace.display());
    }
    let deadline = spec
        .active_deadline_seconds
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs.max(0) as u64));
    let run = process::Run {
        workdir: &workspace,
        workspace: Some(&workspace),
        extra_env: &shared.extra_env,
        label: &label,
        deadline,
    };
    let exits = process::run_pod(&spec, &run, &mut cancel).await;
    lock(&shared.running).remove(&uid);
    let Some(exits) = exits else {
        echo!("{label} killed (pod deleted or kubelet stopped)");
        return;
    };
    let succeeded = !exits.is_empty() && exits.iter().all(Exit::succeeded);
    let deadline_exceeded = exits.last().is_some_and(|e| e.stop == Stop::Deadline);
    let mut status = json!({
        "phase": if succeeded { "Succeeded" } else { "Failed" },
        "initContainerStatuses": process::container_statuses(spec.init_containers.as_deref().unwrap_or_default(), &exits),
        "containerStatuses": process::container_statuses(&spec.containers, &exits),
    });
    if deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    echo!("{label} finished: {}", status["phase"]);
    patch_status(&pods, &name, status).await;
}
