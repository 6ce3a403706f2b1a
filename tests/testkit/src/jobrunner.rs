//! A stand-in for the kubelet and the Job controller: runs batch/v1 Jobs as local processes.
//!
//! [`JobRunner`] watches Jobs through a [`kube::Client`] (usually one from
//! [`crate::apiserver::ApiServer::client`]). For each Job without a terminal condition it:
//!
//! 1. patches `/status` with `startTime` and `active: 1`;
//! 2. runs the pod template's init containers in order, then its **first container**,
//!    each one's `command` + `args` as a local process
//!    (no image, no shell unless the command is one), with the environment made of `PATH` and
//!    `HOME` of the test process, the container's `env` entries that have a literal `value`
//!    (`$(VAR)` references in command/args are expanded from those), then the runner's
//!    `extra_env` (which wins on clashes);
//! 3. creates the Job's Pod, as the Job controller and a kubelet leave it: labels
//!    `batch.kubernetes.io/job-name` and `job-name`, an owner reference to the Job, the
//!    template's spec, and a status with phase `Succeeded`/`Failed` and each container that ran
//!    in `terminated` state (exit code and termination message: what the container wrote to its
//!    `terminationMessagePath`, a temporary file of the run's own, at most 4096 bytes; see
//!    [`crate::process`]). A hook's `Succeed` or `Fail` gets a Pod whose first container exited
//!    0 or 1 with no message;
//! 4. patches `/status` like the Job controller: on exit 0 `succeeded: 1` with the
//!    `SuccessCriteriaMet` and `Complete` conditions and `completionTime`; otherwise `failed: 1`
//!    with `FailureTarget` and `Failed` (reason `BackoffLimitExceeded`), or reason
//!    `DeadlineExceeded` when `spec.activeDeadlineSeconds` ran out (the process is killed).
//!
//! The working directory is, in order: the `workdir` given to the runner, else the
//! `MONOSHIP_WORKSPACE` environment variable of the test process, else the current directory.
//! The container's `workingDir` is ignored.
//!
//! Only one attempt is made per Job: `backoffLimit`, `completions`, `parallelism`, pod
//! failure policies and success policies are ignored. Suspended Jobs are not run. A Job is
//! run at most once per runner (tracked by uid); deleting a running Job kills its process.
//! Output lines are written to stderr (captured by the test harness; see [`echo_to_stderr`])
//! and to `tracing`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::process::{self, Exit, Stop, echo, now};

/// What a [`JobHook`] wants done with a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookDecision {
    /// Run the container command as usual.
    Run,
    /// Do not run anything; mark the Job complete.
    Succeed,
    /// Do not run anything; mark the Job failed with this message.
    Fail(String),
    /// Do what the Job controller does when the API server refuses the Job's pod (Pod Security
    /// admission, a quota, a missing ServiceAccount): no pod, a status with only `startTime`,
    /// and a Warning Event `FailedCreate` on the Job whose note is `Error creating: ` and this
    /// message (the API server's, e.g. `pods "x" is forbidden: violates PodSecurity ...`).
    CannotCreatePod(String),
}

/// Called for every Job before it runs.
pub type JobHook = Arc<dyn Fn(&Job) -> HookDecision + Send + Sync>;

const MANAGER: &str = "monoship-testkit-jobrunner";

/// Whether job runners (and envtest kubelets) in this process write what they run and its
/// output to stderr (on by default). `tracing` gets it either way. The demo turns it off to keep
/// its output readable.
pub fn echo_to_stderr(on: bool) {
    process::set_echo(on);
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed {
        reason: &'static str,
        message: String,
    },
}

struct Settings {
    extra_env: Vec<(String, String)>,
    workdir: PathBuf,
    workspace_per_job: bool,
    hook: Option<JobHook>,
    runs: AtomicUsize,
    running: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

/// A running job runner; dropping it stops watching and kills running processes.
pub struct JobRunner {
    settings: Arc<Settings>,
    task: Option<JoinHandle<()>>,
}

/// Options for [`JobRunner::start_with`].
#[derive(Clone, Default)]
pub struct JobRunnerOptions {
    /// Only watch this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Environment added to every process (overrides the container's `env`).
    pub extra_env: Vec<(String, String)>,
    /// Working directory (else `$MONOSHIP_WORKSPACE`, else the current directory).
    pub workdir: Option<PathBuf>,
    /// Decide per Job whether to run it, or to pretend it succeeded or failed.
    pub hook: Option<JobHook>,
    /// Give each Job its own directory under the working directory, and point
    /// `MONOSHIP_WORKSPACE` at it (the pod's `/workspace` volume).
    pub workspace_per_job: bool,
}

impl JobRunner {
    /// Start watching Jobs in `namespace` (or all namespaces).
    pub fn start(
        client: Client,
        namespace: Option<String>,
        extra_env: Vec<(String, String)>,
        workdir: Option<PathBuf>,
    ) -> Self {
        Self::start_with(
            client,
            JobRunnerOptions {
                namespace,
                extra_env,
                workdir,
                hook: None,
                workspace_per_job: false,
            },
        )
    }

    pub fn start_with(client: Client, opts: JobRunnerOptions) -> Self {
        let workdir = opts
            .workdir
            .or_else(|| std::env::var_os("MONOSHIP_WORKSPACE").map(PathBuf::from))
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let settings = Arc::new(Settings {
            extra_env: opts.extra_env,
            workdir,
            workspace_per_job: opts.workspace_per_job,
            hook: opts.hook,
            runs: AtomicUsize::new(0),
            running: Mutex::new(HashMap::new()),
        });
        let api: Api<Job> = match &opts.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let task = tokio::spawn(watch_jobs(client, api, settings.clone()));
        Self {
            settings,
            task: Some(task),
        }
    }

    /// How many Jobs were started (processes spawned or hook decisions taken).
    pub fn runs(&self) -> usize {
        self.settings.runs.load(Ordering::SeqCst)
    }

    /// How many Jobs are running right now.
    pub fn running(&self) -> usize {
        lock(&self.settings.running).len()
    }

    /// Stop watching and kill running processes.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

async fn watch_jobs(client: Client, api: Api<Job>, settings: Arc<Settings>) {
    let mut started: HashSet<String> = HashSet::new();
    let mut tasks = JoinSet::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!("job runner watch error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match ev {
            watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                let Some(uid) = job.uid() else { continue };
                if job.metadata.deletion_timestamp.is_some() {
                    lock(&settings.running).remove(&uid);
                    continue;
                }
                let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
                if suspended || is_finished(&job) || !started.insert(uid.clone()) {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                lock(&settings.running).insert(uid.clone(), tx);
                tasks.spawn(run_job(client.clone(), job, settings.clone(), rx));
            }
            watcher::Event::Delete(job) => {
                if let Some(uid) = job.uid() {
                    // Dropping the sender cancels the run.
                    lock(&settings.running).remove(&uid);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        while tasks.try_join_next().is_some() {}
    }
}

fn condition(type_: &str, reason: &str, message: &str, time: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": time, "lastTransitionTime": time})
}

async fn patch_status(api: &Api<Job>, name: &str, status: Value) {
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    if let Err(e) = api
        .patch_status(name, &pp, &Patch::Merge(json!({"status": status})))
        .await
    {
        tracing::warn!("job runner: status update of {name} failed: {e}");
    }
}

async fn run_job(client: Client, job: Job, settings: Arc<Settings>, cancel: oneshot::Receiver<()>) {
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let uid = job.uid().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(client, &ns);
    let label = format!("[job {ns}/{name}]");
    settings.runs.fetch_add(1, Ordering::SeqCst);
    let start = now();
    let decision = match &settings.hook {
        Some(hook) => hook(&job),
        None => HookDecision::Run,
    };
    if let HookDecision::CannotCreatePod(message) = &decision {
        patch_status(&api, &name, json!({"startTime": start})).await;
        record_failed_create(api.clone().into_client(), &job, message).await;
        lock(&settings.running).remove(&uid);
        return;
    }
    patch_status(
        &api,
        &name,
        json!({"startTime": start, "active": 1, "ready": 0}),
    )
    .await;
    let hooked = |code: i32| {
        let name = first_container(&job).unwrap_or_default();
        let (started_at, finished_at) = (start.clone(), now());
        let (stop, detail, message) = (Stop::Exited, String::new(), None);
        vec![Exit {
            name,
            stop,
            exit_code: code,
            detail,
            message,
            started_at,
            finished_at,
        }]
    };
    let outcome = match decision {
        HookDecision::CannotCreatePod(_) => None,
        HookDecision::Succeed => Some((Outcome::Succeeded, hooked(0))),
        HookDecision::Fail(message) => Some((
            Outcome::Failed {
                reason: "BackoffLimitExceeded",
                message,
            },
            hooked(1),
        )),
        HookDecision::Run => run_process(&job, &settings, &label, cancel).await,
    };
    lock(&settings.running).remove(&uid);
    let Some((outcome, exits)) = outcome else {
        echo!("{label} cancelled (job deleted or runner stopped)");
        return;
    };
    create_pod(api.clone().into_client(), &job, &outcome, &exits, &start).await;
    let t = now();
    let status = match outcome {
        Outcome::Succeeded => {
            let msg = "Reached expected number of succeeded pods";
            json!({"active": null, "ready": 0, "succeeded": 1, "completionTime": t,
                   "conditions": [condition("SuccessCriteriaMet", "CompletionsReached", msg, &t),
                                  condition("Complete", "CompletionsReached", msg, &t)]})
        }
        Outcome::Failed { reason, message } => {
            json!({"active": null, "ready": 0, "failed": 1,
                   "conditions": [condition("FailureTarget", reason, &message, &t),
                                  condition("Failed", reason, &message, &t)]})
        }
    };
    echo!("{label} finished: {}", status["conditions"][1]["type"]);
    patch_status(&api, &name, status).await;
}

fn first_container(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    Some(pod.containers.first()?.name.clone())
}

/// The Job's Pod after its run, as the Job controller creates it and a kubelet reports it.
async fn create_pod(client: Client, job: &Job, outcome: &Outcome, exits: &[Exit], start: &str) {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let pod_name = format!("{name}-{}", uid.get(..5).unwrap_or("pod00"));
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let spec = template.spec.unwrap_or_default();
    let mut labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("job-name".into(), name.clone());
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                 "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
    });
    let succeeded = matches!(outcome, Outcome::Succeeded);
    let status = json!({
        "phase": if succeeded { "Succeeded" } else { "Failed" },
        "startTime": start,
        "initContainerStatuses": process::container_statuses(spec.init_containers.as_deref().unwrap_or_default(), exits),
        "containerStatuses": process::container_statuses(&spec.containers, exits),
    });
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let created = match serde_json::from_value::<Pod>(pod) {
        Ok(pod) => pods.create(&Default::default(), &pod).await.map(|_| ()),
        Err(error) => {
            echo!("[job {ns}/{name}] no Pod: {error}");
            return;
        }
    };
    if let Err(error) = created {
        echo!("[job {ns}/{name}] could not create its Pod: {error}");
        return;
    }
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(json!({"status": status}));
    if let Err(error) = pods.patch_status(&pod_name, &pp, &patch).await {
        echo!("[job {ns}/{name}] could not write its Pod's status: {error}");
    }
}

/// The Warning Event the Job controller records when it cannot create a pod.
async fn record_failed_create(client: Client, job: &Job, message: &str) {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    let t = now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", std::process::id()), "namespace": ns},
        "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "namespace": ns,
                           "name": name, "uid": job.uid()},
        "reason": "FailedCreate",
        "message": format!("Error creating: {message}"),
        "type": "Warning",
        "source": {"component": "job-controller"},
        "count": 1,
        "firstTimestamp": t,
        "lastTimestamp": t,
        "reportingComponent": "job-controller",
    });
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &ns);
    let event = serde_json::from_value(event).expect("an Event");
    if let Err(error) = api.create(&Default::default(), &event).await {
        echo!("[job {ns}/{name}] could not record FailedCreate: {error}");
    }
}

/// Run the init containers in order, then the first container, as the kubelet would; the
/// first failure ends the Job. The outcome and how each container ended; `None` when cancelled.
async fn run_process(
    job: &Job,
    settings: &Settings,
    label: &str,
    mut cancel: oneshot::Receiver<()>,
) -> Option<(Outcome, Vec<Exit>)> {
    let spec = job.spec.as_ref();
    let Some(pod) = spec
        .and_then(|s| s.template.spec.as_ref())
        .filter(|p| !p.containers.is_empty())
    else {
        let failed = Outcome::Failed {
            reason: "BackoffLimitExceeded",
            message: "Job has no containers".into(),
        };
        return Some((failed, Vec::new()));
    };
    let workspace = if settings.workspace_per_job {
        let dir = settings.workdir.join(format!(
            "{}-{}",
            job.namespace().unwrap_or_default(),
            job.name_any()
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            let failed = Outcome::Failed {
                reason: "BackoffLimitExceeded",
                message: format!("cannot create the workspace {}: {e}", dir.display()),
            };
            return Some((failed, Vec::new()));
        }
        Some(dir)
    } else {
        None
    };
    let deadline = spec
        .and_then(|s| s.active_deadline_seconds)
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs.max(0) as u64));
    let run = process::Run {
        workdir: workspace.as_deref().unwrap_or(&settings.workdir),
        workspace: workspace.as_deref(),
        extra_env: &settings.extra_env,
        label,
        deadline,
    };
    let exits = process::run_pod(pod, &run, &mut cancel).await?;
    let outcome = match exits.last() {
        Some(exit) if !exit.succeeded() => match exit.stop {
            Stop::Deadline => Outcome::Failed {
                reason: "DeadlineExceeded",
                message: "Job was active longer than specified deadline".into(),
            },
            Stop::StartError => Outcome::Failed {
                reason: "BackoffLimitExceeded",
                message: exit.detail.clone(),
            },
            Stop::Exited => Outcome::Failed {
                reason: "BackoffLimitExceeded",
                message: format!(
                    "Job has reached the specified backoff limit ({}: {})",
                    exit.name, exit.detail
                ),
            },
        },
        _ => Outcome::Succeeded,
    };
    Some((outcome, exits))
}
