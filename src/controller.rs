//! The controller: a `kube::runtime::Controller` on ServiceBuild that owns build Jobs.
//!
//! Each reconcile runs observe → [`decide`] → act → record. Acting steps are idempotent: each
//! one reads first and writes only what is not already so. Status is written only when it
//! differs from what the API server has, and Events follow from those status changes, so a
//! reconcile that finds everything in place writes nothing at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{
    BuildStatus, CurrentStatus, FIELD_MANAGER, HistoryEntry, Phase, REBUILD_ANNOTATION,
    SERVICEBUILD_LABEL, ServiceBuild, ServiceBuildStatus, Target, TargetStatus, is_valid_tag,
    short_digest, short_revision,
};
use crate::build::{BuildSettings, build_job, job_name, job_state, push_reference};
use crate::conditions::{reasons, types};
use crate::decide::{JobState, Observed, Plan, build_is_current, decide};
use crate::lease::Leadership;
use crate::metrics::{Metrics, ResultLabels};
use crate::registry::{RegistryAuth, RegistryClient, RetagOutcome};
use crate::status::{Note, Summary, record_history, set_condition, summarize, transition_notes};
use crate::targets::kubernetes::{self, Workload};
use crate::targets::nomad::{NomadAccess, NomadAllowlist, NomadClients};
use crate::targets::{PinOutcome, pinned_reference};
use crate::telemetry::Health;
use crate::{Error, Result};

/// How often a settled ServiceBuild is looked at again, to find drifted targets.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(600);
/// How often a ServiceBuild stalled on something outside it (a Secret, a target) is retried.
const STALLED_RETRY: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long in-flight reconciles may run on after the controller was told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Controller-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch one namespace; all when `None`.
    pub namespace: Option<String>,
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub build: BuildSettings,
    /// Name of this controller in Events (`reportingController`).
    pub reporter: String,
    /// This replica's name in Events (`reportingInstance`), usually the pod name.
    pub instance: Option<String>,
    /// Requeue interval of settled ServiceBuilds.
    pub resync: Duration,
    /// The Nomad addresses targets may name; empty allows every address.
    pub nomad_allowed_addresses: NomadAllowlist,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            insecure_registries: Vec::new(),
            build: BuildSettings {
                checkout_image: crate::DEFAULT_CHECKOUT_IMAGE.to_owned(),
            },
            reporter: "monoship".to_owned(),
            instance: None,
            resync: DEFAULT_RESYNC,
            nomad_allowed_addresses: NomadAllowlist::default(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    registry: RegistryClient,
    nomad: NomadClients,
    recorder: Recorder,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<ObjectRef<ServiceBuild>, u32>>,
    /// The resourceVersion each ServiceBuild got from this replica's last status write.
    written: Mutex<HashMap<ObjectRef<ServiceBuild>, String>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: settings.reporter.clone(),
            instance: settings.instance.clone(),
        };
        Self {
            registry: RegistryClient::new(settings.insecure_registries.clone())
                .with_metrics(metrics.clone()),
            nomad: NomadClients::new(settings.nomad_allowed_addresses.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            leadership,
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The ServiceBuild to reconcile. A reconcile can be triggered (by a Job, say) before the
    /// cache has seen this replica's own last status write; acting on that older copy would
    /// redo work already recorded. When the cached copy does not carry the resourceVersion of
    /// our last write, read the object once from the API server instead.
    async fn read_your_writes(&self, sb: Arc<ServiceBuild>) -> Result<Arc<ServiceBuild>> {
        let key = ObjectRef::from_obj(sb.as_ref());
        let last = self
            .written
            .lock()
            .ok()
            .and_then(|written| written.get(&key).cloned());
        match last {
            Some(rv) if sb.resource_version().as_ref() != Some(&rv) => {
                let namespace = sb.namespace().unwrap_or_default();
                let api: Api<ServiceBuild> = Api::namespaced(self.client.clone(), &namespace);
                Ok(api.get_opt(&sb.name_any()).await?.map_or(sb, Arc::new))
            }
            _ => Ok(sb),
        }
    }

    fn remember_write(&self, sb: &ServiceBuild) {
        if let (Ok(mut written), Some(rv)) = (self.written.lock(), sb.resource_version()) {
            written.insert(ObjectRef::from_obj(sb), rv);
        }
    }

    /// Every write is preceded by this check: a replica that lost the Lease stops at once.
    fn ensure_leader(&self) -> Result<()> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}

/// Run the controller until `shutdown` is cancelled. It reconciles only while `leadership`
/// says this replica leads; when the Lease is lost, the controller stops and waits to lead
/// again.
pub async fn run(
    client: Client,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) {
    let (servicebuilds, jobs) = match &settings.namespace {
        Some(ns) => (
            Api::<ServiceBuild>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let context = Arc::new(Context::new(client, settings, leadership.clone(), metrics));
    loop {
        let mut waiting = leadership.clone();
        // Biased: after a shutdown both branches are ready, and the controller must not start
        // again (a restarted one waits forever for caches that will never sync).
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = waiting.wait_for(true) => {}
        }
        info!("leading: starting the controller");
        let controller = Controller::new(
            servicebuilds.clone(),
            watcher::Config::default().any_semantic(),
        )
        .owns(
            jobs.clone(),
            watcher::Config::default().labels(SERVICEBUILD_LABEL),
        );
        let store = controller.store();
        let synced = {
            let health = health.clone();
            tokio::spawn(async move {
                // kube-runtime's readiness future keeps only its last poller's waker, and the
                // controller's own runner waits on it too: poll again until it reports ready.
                loop {
                    match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                        .await
                    {
                        Ok(Ok(())) => {
                            debug!("caches synced");
                            health.set_synced(true);
                            break;
                        }
                        Ok(Err(error)) => {
                            debug!(%error, "the cache will never sync");
                            break;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let running = controller
            .graceful_shutdown_on(stopping(shutdown.clone(), leadership.clone()))
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => debug!(servicebuild = %object, "reconciled"),
                    Err(error) => debug!(%error, "reconcile did not complete"),
                }
            });
        // In-flight reconciles get a grace period to finish; after it they are dropped, which is
        // safe because every step is idempotent. (kube-runtime's graceful shutdown also waits
        // for its cache to be ready, which may never happen once stopping has begun.)
        let grace = async {
            stopping(shutdown.clone(), leadership.clone()).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = running => {}
            () = grace => warn!(?SHUTDOWN_GRACE, "reconciles did not finish in time; dropped them"),
        }
        synced.abort();
        health.set_synced(false);
        info!("the controller stopped");
    }
}

/// Completes when the controller must stop: on shutdown, or when this replica stops leading.
async fn stopping(shutdown: CancellationToken, mut leadership: Leadership) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = leadership.wait_for(false) => {}
    }
}

/// One reconcile of one ServiceBuild.
pub async fn reconcile(sb: Arc<ServiceBuild>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = sb.namespace().unwrap_or_default(),
        name = sb.name_any(),
        revision = short_revision(&sb.spec.source.revision),
    );
    let started = std::time::Instant::now();
    let outcome = reconcile_inner(&sb, &ctx).instrument(span).await;
    let result = match &outcome {
        Ok((_, true)) => "stalled",
        Ok(_) => "ok",
        Err(_) => "error",
    };
    let labels = ResultLabels { result };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    outcome.map(|(action, _)| action)
}

/// The reconcile proper; the flag says whether it ended Stalled.
async fn reconcile_inner(sb: &Arc<ServiceBuild>, ctx: &Arc<Context>) -> Result<(Action, bool)> {
    if sb.meta().deletion_timestamp.is_some() {
        if let Ok(mut written) = ctx.written.lock() {
            written.remove(&ObjectRef::from_obj(sb.as_ref()));
        }
        return Ok((Action::await_change(), false));
    }
    let sb = &ctx.read_your_writes(sb.clone()).await?;
    let mut run = Run::new(sb, ctx)?;
    let outcome = run.pipeline().await;
    let stalled =
        outcome.as_ref().is_err_and(Error::is_stalled) || run.status.phase == Some(Phase::Failed);
    let action = match outcome {
        Ok(action) => action,
        Err(error) if error.is_stalled() => {
            let reason = error.reason();
            let message = error.to_string();
            warn!(reason, %message, "stalled");
            if run.status.phase != Some(Phase::Failed) {
                run.status.phase = Some(Phase::Stalled);
            }
            summarize(
                &mut run.status,
                Summary::Stalled {
                    reason,
                    message: &message,
                },
                run.generation,
                &run.now,
            );
            // Announce a stall once, not on every retry that finds it unchanged.
            let known =
                run.written.conditions.iter().any(|c| {
                    c.type_ == types::STALLED && c.reason == reason && c.message == message
                });
            if !known {
                run.notes.push(Note {
                    warning: true,
                    reason,
                    message: message.clone(),
                });
            }
            if reason == reasons::INVALID_SPEC {
                Action::await_change()
            } else {
                Action::requeue(STALLED_RETRY)
            }
        }
        Err(error) => {
            let message = error.to_string();
            summarize(
                &mut run.status,
                Summary::Retrying {
                    reason: error.reason(),
                    message: &message,
                },
                run.generation,
                &run.now,
            );
            // Show the fault on Ready=False, then let the error policy back off.
            if let Err(write_error) = run.flush().await {
                debug!(%write_error, "could not record the fault");
            }
            return Err(error);
        }
    };
    run.flush().await?;
    if let Ok(mut failures) = ctx.failures.lock() {
        failures.remove(&ObjectRef::from_obj(sb.as_ref()));
    }
    Ok((action, stalled))
}

/// Transient faults are retried with exponential backoff per ServiceBuild.
pub fn error_policy(sb: Arc<ServiceBuild>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx.failures.lock().map_or(1, |mut failures| {
        let n = failures
            .entry(ObjectRef::from_obj(sb.as_ref()))
            .or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    let delay = Duration::from_millis(500)
        .saturating_mul(1 << attempts.min(10))
        .min(MAX_BACKOFF);
    warn!(%error, attempts, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The state of one reconcile.
struct Run<'a> {
    sb: &'a ServiceBuild,
    ctx: &'a Context,
    namespace: String,
    generation: Option<i64>,
    rebuild: Option<String>,
    /// What the API server has.
    written: ServiceBuildStatus,
    /// What this reconcile wants it to have.
    status: ServiceBuildStatus,
    /// Events besides those implied by status transitions.
    notes: Vec<Note>,
    now: Time,
}

impl<'a> Run<'a> {
    fn new(sb: &'a ServiceBuild, ctx: &'a Context) -> Result<Self> {
        let namespace = sb.namespace().ok_or_else(|| {
            Error::stalled(reasons::INVALID_SPEC, "a ServiceBuild must be namespaced")
        })?;
        let status = sb.status.clone().unwrap_or_default();
        Ok(Self {
            sb,
            ctx,
            namespace,
            generation: sb.metadata.generation,
            rebuild: sb.annotations().get(REBUILD_ANNOTATION).cloned(),
            written: status.clone(),
            status,
            notes: Vec::new(),
            now: Time(jiff::Timestamp::now()),
        })
    }

    fn client(&self) -> Client {
        self.ctx.client.clone()
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client(), &self.namespace)
    }

    fn wanted_job_name(&self) -> String {
        job_name(
            &self.sb.name_any(),
            &self.sb.spec.source.revision,
            self.rebuild.as_deref(),
        )
    }

    async fn pipeline(&mut self) -> Result<Action> {
        validate(self.sb, &self.namespace)?;
        // At most one step of each kind runs per reconcile; the loop ends on a wait.
        for _ in 0..4 {
            let spec = &self.sb.spec;
            let finished = build_is_current(spec, &self.status, self.rebuild.as_deref())
                && self
                    .status
                    .build
                    .as_ref()
                    .is_some_and(|b| b.digest.is_some());
            let job = if finished {
                None
            } else {
                self.jobs().get_opt(&self.wanted_job_name()).await?
            };
            let job_state = job_state(job.as_ref());
            let plan = decide(Observed {
                spec,
                status: &self.status,
                rebuild: self.rebuild.as_deref(),
                job: &job_state,
            });
            debug!(?plan, "decided");
            match plan {
                Plan::Suspend => {
                    self.status.phase = Some(Phase::Suspended);
                    summarize(
                        &mut self.status,
                        Summary::Suspended,
                        self.generation,
                        &self.now,
                    );
                    return Ok(Action::await_change());
                }
                Plan::CreateJob => {
                    self.create_job().await?;
                    return Ok(Action::requeue(self.ctx.settings.resync));
                }
                Plan::AwaitJob => {
                    self.record_building(job.as_ref());
                    return Ok(Action::requeue(self.ctx.settings.resync));
                }
                Plan::RecordFailure { reason, message } => {
                    self.record_failure(job.as_ref(), &reason, &message);
                    return Ok(Action::await_change());
                }
                Plan::ResolveDigest => self.resolve_digest(job.as_ref()).await?,
                Plan::Promote { digest } => {
                    self.promote(&digest).await?;
                    return Ok(Action::requeue(self.ctx.settings.resync));
                }
                Plan::Settle { digest } => {
                    self.settle(&digest).await?;
                    return Ok(Action::requeue(self.ctx.settings.resync));
                }
            }
        }
        Ok(Action::requeue(Duration::from_secs(1)))
    }

    /// A fresh `status.build` for the wanted build, unless it already describes it.
    fn ensure_build_status(&mut self, job: Option<&Job>) -> &mut BuildStatus {
        let spec = &self.sb.spec;
        if !build_is_current(spec, &self.status, self.rebuild.as_deref()) {
            let revision = spec.source.revision.clone();
            self.status.build = Some(BuildStatus {
                short_revision: short_revision(&revision).to_owned(),
                revision,
                rebuild: self.rebuild.clone(),
                job_name: self.wanted_job_name(),
                image: Some(push_reference(self.sb)),
                start_time: job
                    .and_then(|j| j.status.as_ref())
                    .and_then(|s| s.start_time.clone())
                    .or_else(|| Some(self.now.clone())),
                ..BuildStatus::default()
            });
            set_condition(
                &mut self.status.conditions,
                types::BUILT,
                false,
                reasons::BUILDING,
                "the build of the current revision has not finished",
                self.generation,
                &self.now,
            );
        }
        self.status.build.get_or_insert_with(BuildStatus::default)
    }

    async fn create_job(&mut self) -> Result<()> {
        self.check_references().await?;
        let job = build_job(self.sb, self.rebuild.as_deref(), &self.ctx.settings.build)?;
        let name = self.wanted_job_name();
        self.ctx.ensure_leader()?;
        self.supersede_jobs(&name).await?;
        match self.jobs().create(&PostParams::default(), &job).await {
            Ok(_) => info!(job = %name, "created build Job"),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(job = %name, "build Job already exists")
            }
            Err(error) => return Err(error.into()),
        }
        self.record_building(None);
        Ok(())
    }

    /// Delete the Jobs of this ServiceBuild that the wanted build supersedes: any still running,
    /// and finished ones older than the last recorded build.
    async fn supersede_jobs(&mut self, wanted: &str) -> Result<()> {
        let selector = format!("{SERVICEBUILD_LABEL}={}", self.sb.name_any());
        let jobs = self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await?;
        let previous = self.status.build.as_ref().map(|b| b.job_name.clone());
        for job in jobs {
            let name = job.name_any();
            if name == wanted || !owned_by(&job, self.sb) {
                continue;
            }
            let running = job_state(Some(&job)) == JobState::Running;
            if !running && previous.as_deref() == Some(name.as_str()) {
                continue;
            }
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match self.jobs().delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
            if running {
                self.notes.push(Note {
                    warning: false,
                    reason: reasons::BUILD_SUPERSEDED,
                    message: format!(
                        "Deleted build Job {name}: revision {} supersedes it",
                        short_revision(&self.sb.spec.source.revision)
                    ),
                });
            }
        }
        Ok(())
    }

    fn record_building(&mut self, job: Option<&Job>) {
        let build = self.ensure_build_status(job);
        let message = format!(
            "build Job {} runs for revision {}",
            build.job_name, build.short_revision
        );
        self.status.phase = Some(Phase::Building);
        summarize(
            &mut self.status,
            Summary::Progressing {
                reason: reasons::BUILDING,
                message: &message,
            },
            self.generation,
            &self.now,
        );
    }

    fn record_failure(&mut self, job: Option<&Job>, reason: &str, message: &str) {
        let now = self.now.clone();
        let build = self.ensure_build_status(job);
        build.failure_reason = Some(reason.to_owned());
        build.message = Some(message.to_owned());
        if build.completion_time.is_none() {
            build.completion_time = Some(now);
        }
        let summary = format!(
            "build Job {} failed ({reason}): {message}. Set a new revision, or a new value of the \
             {REBUILD_ANNOTATION} annotation, to build again",
            build.job_name
        );
        self.status.phase = Some(Phase::Failed);
        set_condition(
            &mut self.status.conditions,
            types::BUILT,
            false,
            reasons::BUILD_FAILED,
            &summary,
            self.generation,
            &self.now,
        );
        summarize(
            &mut self.status,
            Summary::Stalled {
                reason: reasons::BUILD_FAILED,
                message: &summary,
            },
            self.generation,
            &self.now,
        );
    }

    async fn resolve_digest(&mut self, job: Option<&Job>) -> Result<()> {
        let spec = &self.sb.spec;
        let auth = self.push_auth().await?;
        let tag = spec.revision_tag_for(&spec.source.revision);
        let digest = self
            .ctx
            .registry
            .resolve_digest(&spec.image.repository, &tag, &auth)
            .await?;
        info!(%digest, "resolved the build's digest");
        let completion = job
            .and_then(|j| j.status.as_ref())
            .and_then(|s| s.completion_time.clone())
            .unwrap_or_else(|| self.now.clone());
        let build = self.ensure_build_status(job);
        build.digest = Some(digest);
        build.completion_time = Some(completion);
        build.failure_reason = None;
        build.message = None;
        set_condition(
            &mut self.status.conditions,
            types::BUILT,
            true,
            reasons::BUILD_SUCCEEDED,
            "the build of the current revision succeeded and its digest is known",
            self.generation,
            &self.now,
        );
        Ok(())
    }

    /// Record `digest` as current, then move the tags, then pin the targets, then record the
    /// promotion. The first write comes before any tag or target moves, so a crash in between
    /// resumes this same promotion.
    async fn promote(&mut self, digest: &str) -> Result<()> {
        let spec = &self.sb.spec;
        let revision = self
            .status
            .build
            .as_ref()
            .map(|b| b.revision.clone())
            .unwrap_or_default();
        // A finished promotion that only lacks a newly listed tag is caught up in place.
        let catching_up = self
            .status
            .current
            .as_ref()
            .is_some_and(|c| c.digest == digest && c.promoted_at.is_some());
        // The first write records the digest as current before anything moves; a retry of a
        // promotion already recorded (after a crash or a stall) needs no second one.
        let recorded = self
            .written
            .current
            .as_ref()
            .is_some_and(|c| c.digest == digest);
        if !catching_up && !recorded {
            if self
                .status
                .current
                .as_ref()
                .is_none_or(|c| c.digest != digest)
            {
                self.status.current = Some(CurrentStatus {
                    digest: digest.to_owned(),
                    short_digest: short_digest(digest),
                    revision: revision.clone(),
                    promoted_at: None,
                    tags: Vec::new(),
                });
            }
            self.status.phase = Some(Phase::Promoting);
            let message = format!("moving tags and targets to {digest}");
            summarize(
                &mut self.status,
                Summary::Progressing {
                    reason: reasons::PROMOTING,
                    message: &message,
                },
                self.generation,
                &self.now,
            );
            self.flush().await?;
        }

        if !spec.image.tags.is_empty() {
            let auth = self.push_auth().await?;
            for tag in &spec.image.tags {
                self.ctx.ensure_leader()?;
                let outcome = self
                    .ctx
                    .registry
                    .retag_without_upload(&spec.image.repository, digest, tag, &auth)
                    .await?;
                if let RetagOutcome::Moved { previous } = outcome {
                    self.notes.push(Note {
                        warning: false,
                        reason: reasons::TAG_MOVED,
                        message: format!(
                            "Moved tag {tag} to {} (was {})",
                            short_digest(digest),
                            previous.as_deref().map_or("unset".to_owned(), short_digest)
                        ),
                    });
                }
            }
        }
        if let Some(current) = &mut self.status.current {
            current.tags = spec.image.tags.clone();
        }
        if catching_up {
            return self.settle(digest).await;
        }
        self.pin_targets(digest, false).await?;
        if let Some(current) = &mut self.status.current {
            current.promoted_at = Some(self.now.clone());
        }
        record_history(
            &mut self.status,
            HistoryEntry {
                revision,
                digest: digest.to_owned(),
                promoted: true,
                at: self.now.clone(),
            },
            spec.history_limit,
        );
        self.status.phase = Some(Phase::Promoted);
        self.summarize_ready();
        Ok(())
    }

    /// The digest is current and promoted: keep every target on it.
    async fn settle(&mut self, digest: &str) -> Result<()> {
        self.pin_targets(digest, true).await?;
        let build_revision = self
            .status
            .build
            .as_ref()
            .map(|b| b.revision.clone())
            .unwrap_or_default();
        let promoted = self
            .status
            .current
            .as_ref()
            .is_some_and(|c| c.revision == build_revision);
        if !promoted {
            record_history(
                &mut self.status,
                HistoryEntry {
                    revision: build_revision,
                    digest: digest.to_owned(),
                    promoted: false,
                    at: self.now.clone(),
                },
                self.sb.spec.history_limit,
            );
        }
        self.status.phase = Some(if promoted {
            Phase::Promoted
        } else {
            Phase::Unchanged
        });
        self.summarize_ready();
        Ok(())
    }

    fn summarize_ready(&mut self) {
        let (reason, message) = match (&self.status.phase, &self.status.current, &self.status.build)
        {
            (Some(Phase::Unchanged), Some(current), Some(build)) => (
                reasons::UNCHANGED,
                format!(
                    "revision {} built {}, unchanged since revision {}: nothing moved",
                    build.short_revision,
                    current.short_digest,
                    short_revision(&current.revision)
                ),
            ),
            (_, Some(current), _) => (
                reasons::PROMOTED,
                format!(
                    "{} (revision {}) is on every tag and target",
                    current.short_digest,
                    short_revision(&current.revision)
                ),
            ),
            _ => (reasons::PROMOTED, "promoted".to_owned()),
        };
        summarize(
            &mut self.status,
            Summary::Ready {
                reason,
                message: &message,
            },
            self.generation,
            &self.now,
        );
    }

    /// Pin every target to `digest`. Each target is tried even when another fails; the first
    /// error is returned after all were tried. `settled`: the digest was already promoted, so a
    /// write means the target had drifted.
    async fn pin_targets(&mut self, digest: &str, settled: bool) -> Result<()> {
        let image = pinned_reference(&self.sb.spec.image.repository, digest);
        let mut entries = Vec::with_capacity(self.sb.spec.targets.len());
        let mut first_error = None;
        for target in &self.sb.spec.targets {
            let id = target.id(&self.namespace);
            let previous = self
                .status
                .targets
                .iter()
                .find(|t| t.target == id)
                .cloned()
                .unwrap_or_default();
            let mut entry = TargetStatus {
                target: id.clone(),
                ..previous
            };
            match self.pin_target(target, &image).await {
                Ok(PinOutcome::AlreadyPinned) => {
                    // A drift report stays until the next write; an error is cleared.
                    if !entry.in_sync || entry.digest.as_deref() != Some(digest) {
                        entry.message = None;
                    }
                    entry.digest = Some(digest.to_owned());
                    entry.in_sync = true;
                }
                Ok(PinOutcome::Pinned(pinned)) => {
                    self.ctx.metrics.target_write(target_kind(target), "pinned");
                    let was = pinned
                        .previous_image
                        .unwrap_or_else(|| "no image".to_owned());
                    if settled {
                        self.notes.push(Note {
                            warning: true,
                            reason: reasons::TARGET_DRIFTED,
                            message: format!("Target {id} ran {was} instead of {image}; re-pinned"),
                        });
                    }
                    self.notes.push(Note {
                        warning: false,
                        reason: reasons::TARGET_PINNED,
                        message: format!("Pinned {id} to {image}"),
                    });
                    entry = TargetStatus {
                        target: id,
                        digest: Some(digest.to_owned()),
                        in_sync: true,
                        updated_at: Some(self.now.clone()),
                        message: settled.then(|| format!("re-pinned after drift: found {was}")),
                        job_modify_index: pinned.job_modify_index,
                        eval_id: pinned.eval_id,
                    };
                }
                Err(error) => {
                    self.ctx.metrics.target_write(target_kind(target), "failed");
                    entry.in_sync = false;
                    entry.message = Some(error.to_string());
                    first_error.get_or_insert(error);
                }
            }
            entries.push(entry);
        }
        self.status.targets = entries;
        first_error.map_or(Ok(()), Err)
    }

    async fn pin_target(&self, target: &Target, image: &str) -> Result<PinOutcome> {
        self.ctx.ensure_leader()?;
        if let Some(k8s) = &target.kubernetes {
            let workload = Workload::new(k8s, &self.namespace);
            return kubernetes::pin_target(&self.ctx.client, &workload, image).await;
        }
        if let Some(nomad) = &target.nomad {
            let token = match &nomad.token_secret_ref {
                Some(r) => Some(
                    self.secret_text(&r.name, r.key.as_deref().unwrap_or("token"))
                        .await?,
                ),
                None => None,
            };
            let ca_pem = match &nomad.ca_secret_ref {
                Some(r) => Some(
                    self.secret_text(&r.name, r.key.as_deref().unwrap_or("ca.crt"))
                        .await?
                        .into_bytes(),
                ),
                None => None,
            };
            let client = self
                .ctx
                .nomad
                .client(nomad, &NomadAccess { token, ca_pem })?;
            return client.pin_task_image(image).await;
        }
        Err(Error::stalled(
            reasons::INVALID_SPEC,
            "a target must set exactly one of kubernetes or nomad",
        ))
    }

    /// Everything the build and the promotion reference must exist before a Job is created.
    async fn check_references(&self) -> Result<()> {
        let spec = &self.sb.spec;
        if let Some(secret) = &spec.image.push_secret_ref {
            self.push_auth_from(&secret.name).await?;
        }
        if let Some(secret) = &spec.source.secret_ref {
            self.secret(&secret.name, "source.secretRef").await?;
        }
        for target in &spec.targets {
            if let Some(k8s) = &target.kubernetes {
                kubernetes::current_image(&self.ctx.client, &Workload::new(k8s, &self.namespace))
                    .await?;
            }
        }
        Ok(())
    }

    async fn secret(&self, name: &str, field: &str) -> Result<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client(), &self.namespace);
        api.get_opt(name).await?.ok_or_else(|| {
            Error::stalled(
                reasons::SECRET_NOT_FOUND,
                format!(
                    "Secret {}/{name} named by {field} does not exist",
                    self.namespace
                ),
            )
        })
    }

    async fn secret_text(&self, name: &str, key: &str) -> Result<String> {
        let secret = self.secret(name, "a Nomad target").await?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| {
                Error::stalled(
                    reasons::INVALID_SECRET,
                    format!("Secret {}/{name} has no key {key:?}", self.namespace),
                )
            })?;
        String::from_utf8(bytes.0.clone())
            .map(|s| s.trim().to_owned())
            .map_err(|_| {
                Error::stalled(
                    reasons::INVALID_SECRET,
                    format!(
                        "Secret {}/{name} key {key:?} is not UTF-8 text",
                        self.namespace
                    ),
                )
            })
    }

    async fn push_auth(&self) -> Result<RegistryAuth> {
        match &self.sb.spec.image.push_secret_ref {
            Some(secret) => self.push_auth_from(&secret.name).await,
            None => Ok(RegistryAuth::Anonymous),
        }
    }

    async fn push_auth_from(&self, name: &str) -> Result<RegistryAuth> {
        let secret = self.secret(name, "image.pushSecretRef").await?;
        let config = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .ok_or_else(|| {
                Error::stalled(
                    reasons::INVALID_SECRET,
                    format!(
                        "Secret {}/{name} named by image.pushSecretRef has no .dockerconfigjson key: \
                         it must be of type kubernetes.io/dockerconfigjson",
                        self.namespace
                    ),
                )
            })?;
        RegistryAuth::from_docker_config_json(&config.0, &self.sb.spec.image.repository)
    }

    /// Write the status if it changed, then publish the Events it implies.
    async fn flush(&mut self) -> Result<()> {
        self.ctx.ensure_leader()?;
        if self.status != self.written {
            let api: Api<ServiceBuild> = Api::namespaced(self.client(), &self.namespace);
            let body = json!({
                "apiVersion": "monoship.dev/v1alpha1",
                "kind": "ServiceBuild",
                "status": self.status,
            });
            let updated = api
                .patch_status(
                    &self.sb.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await?;
            self.ctx.remember_write(&updated);
            let mut notes = transition_notes(&self.written, &self.status);
            notes.append(&mut self.notes);
            self.notes = notes;
            self.written = self.status.clone();
        }
        let reference = self.sb.object_ref(&());
        for note in self.notes.drain(..) {
            self.ctx.metrics.count(note.reason);
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.to_owned(),
                note: Some(note.message),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            if let Err(error) = self.ctx.recorder.publish(&event, &reference).await {
                warn!(%error, "could not publish an Event");
            }
        }
        Ok(())
    }
}

fn target_kind(target: &Target) -> &'static str {
    if target.nomad.is_some() {
        "nomad"
    } else {
        "kubernetes"
    }
}

fn owned_by(job: &Job, sb: &ServiceBuild) -> bool {
    let uid = sb.uid();
    job.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

/// Checks of the spec that admission cannot make.
pub fn validate(sb: &ServiceBuild, namespace: &str) -> Result<()> {
    let spec = &sb.spec;
    let tag = spec.revision_tag_for(&spec.source.revision);
    if !is_valid_tag(&tag) {
        return Err(Error::stalled(
            reasons::INVALID_SPEC,
            format!(
                "image.revisionTag {:?} renders to {tag:?}, which is not a valid tag \
                 (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')",
                spec.image.revision_tag
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for target in &spec.targets {
        if target.kubernetes.is_some() == target.nomad.is_some() {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                "each target must set exactly one of kubernetes or nomad",
            ));
        }
        let id = target.id(namespace);
        if !seen.insert(id.clone()) {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                format!("targets name {id} twice"),
            ));
        }
    }
    Ok(())
}
