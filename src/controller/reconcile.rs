//! One reconcile of one ServiceBuild: observe → decide → act → record, step by step, until a
//! step has to wait. The status is written only when it changed, once at the end, and before
//! the reconcile goes on where a plan asks for it (a promotion is recorded before anything
//! moves); the Events each step implies are published after the write.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info_span, warn};

use super::observe::{Followed, accepting_namespaces, follow_monorepo, read_inputs, tag_claimant};
use super::resync::resync_of;
use super::{Context, STALLED_RETRY};
use crate::act::build::{diagnose, find_job, observe_job, report, wanted_build};
use crate::act::{Acted, Actor};
use crate::api::{FIELD_MANAGER, Phase, ServiceBuild, ServiceBuildStatus, short_revision};
use crate::conditions::reasons;
use crate::metrics::ResultLabels;
use crate::pipeline::decide::{Plan, decide_by_job, decide_without_job};
use crate::pipeline::events::Note;
use crate::pipeline::observe::{
    Inputs, JobState, Observed, ObservedJob, Policy, WantedBuild, build_is_current,
    build_is_finished,
};
use crate::pipeline::outcome::{Fault, Outcome, PinOutcome, TargetOutcome};
use crate::pipeline::record::{Recorded, record, record_fault};
use crate::{Error, Result};
use k8s_openapi::api::batch::v1::Job;

/// At most this many steps run in one reconcile; a step that waits ends it sooner.
const MAX_STEPS: usize = 4;
/// How soon a build waiting for its inputs looks again if no fetch woke it.
const INPUTS_WAIT: Duration = Duration::from_secs(30);
/// How soon a build Job without a running pod is looked at again.
const POD_CHECK: Duration = Duration::from_secs(20);

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
    if outcome.is_err() {
        // What a step found of the targets may not be on the status (its write failed): the
        // next reconcile reads them again.
        ctx.target_checks.forget(&sb);
    }
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

/// The reconcile proper; the flag says whether it ended Stalled (or Failed).
async fn reconcile_inner(sb: &Arc<ServiceBuild>, ctx: &Context) -> Result<(Action, bool)> {
    if sb.meta().deletion_timestamp.is_some() {
        ctx.forget(sb);
        return Ok((Action::await_change(), false));
    }
    let sb = ctx.read_your_writes(sb.clone()).await?;
    let namespace = sb.namespace().ok_or_else(|| {
        Error::stalled(reasons::INVALID_SPEC, "a ServiceBuild must be namespaced")
    })?;
    let sb = match follow_monorepo(ctx, sb.clone(), &namespace).await? {
        Followed::Ready(followed) => followed,
        Followed::Waiting => return Ok((Action::requeue(INPUTS_WAIT), false)),
        Followed::Missing(fault) => {
            return stall_before_pipeline(ctx, &sb, &namespace, fault).await;
        }
    };
    let read = sb.status.clone().unwrap_or_default();
    let mut wanted = wanted_build(&sb, &read);
    // The inputs matter only to a build not recorded yet: they decide whether it runs.
    let inputs = if build_is_current(&read, &wanted) || sb.spec.suspend {
        Inputs::NotRead
    } else {
        read_inputs(ctx, &sb, &namespace).await
    };
    if let Inputs::Known(key) = &inputs {
        wanted.input_key = Some(key.key.clone());
    }
    let actor = Actor {
        client: &ctx.client,
        registry: &ctx.registry,
        nomad: &ctx.nomad,
        leadership: &ctx.leadership,
        build: &ctx.settings.build,
        sb: &sb,
        namespace: &namespace,
    };
    let mut writer = Writer {
        ctx,
        sb: &sb,
        namespace: &namespace,
        written: read.clone(),
        resource_version: sb.resource_version(),
        events: Vec::new(),
    };
    let accepting = accepting_namespaces(
        &ctx.client,
        &sb.spec,
        &namespace,
        &ctx.settings.policy,
        ctx.settings.namespace.is_some(),
    )
    .await;
    // Another ServiceBuild pushing to the same tag matters only while a Job may be created.
    let claimant = if build_is_finished(&read, &wanted) {
        None
    } else {
        tag_claimant(ctx, &sb, &namespace, &wanted).await?
    };
    let checked = ctx.target_checks.fresh(&sb, std::time::Instant::now());
    let facts = Facts {
        sb: &sb,
        namespace: &namespace,
        wanted: &wanted,
        policy: &ctx.settings.policy,
        accepting_namespaces: &accepting,
        tag_claimed_by: claimant.as_deref(),
        inputs: &inputs,
        targets_checked: checked.as_ref().map(|c| c.digest.as_str()),
    };
    let mut status = read;
    let now = Time(jiff::Timestamp::now());

    for _ in 0..MAX_STEPS {
        // Observe: the wanted build's Job, unless the build is finished or the next step does
        // not depend on it (a skipped build reads no Job).
        let missing = ObservedJob::missing();
        let early = decide_without_job(&facts.observed(&status, &missing));
        let job = if early.is_some() || build_is_finished(&status, &wanted) {
            missing
        } else {
            match observe_build_job(ctx, &sb, &namespace, &wanted, &now).await {
                Ok(observed) => observed,
                Err(error) => {
                    let missing = ObservedJob::missing();
                    let fault = Fault::from(&error);
                    let recorded = record_fault(&facts.observed(&status, &missing), &fault, &now);
                    return Err(writer.fail(recorded, error).await);
                }
            }
        };
        let observed = facts.observed(&status, &job);
        // `decide`, in two parts: the Job was read only when the first part had no plan.
        let plan = early.unwrap_or_else(|| decide_by_job(&observed));
        debug!(?plan, "decided");
        let Acted { outcome, error } = actor.act(&plan, &observed).await;
        count_target_writes(ctx, &outcome);
        let (period, read_at) = (ctx.settings.resync, std::time::Instant::now());
        let checks = &ctx.target_checks;
        checks.note(&sb, &plan, &outcome, error.is_some(), read_at, period);
        let fault = error.as_ref().map(Fault::from);
        let recorded = record(&observed, &plan, &outcome, fault.as_ref(), &now);
        let failed = recorded.status.phase == Some(Phase::Failed);
        match error {
            Some(error) if error.is_stalled() => {
                warn!(reason = error.reason(), message = %error, "stalled");
                let action = retry_after_stall(error.reason());
                writer.write(recorded, &mut status).await?;
                return Ok(writer.done(action, true));
            }
            Some(error) => return Err(writer.fail(recorded, error).await),
            None => {}
        }
        let action = match &plan {
            Plan::Stall { reason, message } => {
                warn!(reason, %message, "stalled");
                Some((retry_after_stall(reason), true))
            }
            Plan::Suspend | Plan::RecordFailure { .. } => Some((Action::await_change(), failed)),
            // A Job without a running pod is looked at again soon: the reason it has none is
            // in Events and pods, whose changes do not wake this controller.
            Plan::CreateJob | Plan::AwaitJob
                if job.waiting_for_pod || job.state == JobState::Missing =>
            {
                Some((Action::requeue(POD_CHECK), failed))
            }
            Plan::CreateJob | Plan::AwaitJob | Plan::Promote { .. } | Plan::Settle { .. } => {
                Some((Action::requeue(resync_of(ctx.settings.resync, &sb)), failed))
            }
            // The targets are read once the period of their last check ends.
            Plan::Steady { .. } => {
                let due_in = checked.as_ref().map(|c| c.due_in);
                let due_in = due_in.unwrap_or_else(|| resync_of(ctx.settings.resync, &sb));
                Some((Action::requeue(due_in), failed))
            }
            // The fetch that ends wakes this ServiceBuild; the requeue is a backstop.
            Plan::AwaitInputs => Some((Action::requeue(INPUTS_WAIT), false)),
            Plan::ResolveDigest { .. } | Plan::StartPromotion { .. } | Plan::Reuse { .. } => None,
        };
        if plan.writes_before_next() || action.is_some() {
            let conditional = plan.writes_before_next();
            if let Err(error) = writer.write_if(recorded, &mut status, conditional).await {
                // The write that starts a promotion failed: nothing moved; show the fault.
                let fault = Fault::from(&error);
                let recorded = record_fault(&facts.observed(&status, &job), &fault, &now);
                return Err(writer.fail(recorded, error).await);
            }
        } else {
            writer.events.extend(recorded.events);
            status = recorded.status;
        }
        if let Some((action, stalled)) = action {
            return Ok(writer.done(action, stalled));
        }
    }
    let recorded = Recorded {
        status: status.clone(),
        events: Vec::new(),
    };
    writer.write(recorded, &mut status).await?;
    Ok(writer.done(Action::requeue(Duration::from_secs(1)), false))
}

/// A stall found before the pipeline runs (a Monorepo that does not exist): recorded on the
/// status as any stall is, and retried when the Monorepo appears (its watch wakes the
/// ServiceBuild) or after [`STALLED_RETRY`].
async fn stall_before_pipeline(
    ctx: &Context,
    sb: &ServiceBuild,
    namespace: &str,
    fault: Fault,
) -> Result<(Action, bool)> {
    let read = sb.status.clone().unwrap_or_default();
    let wanted = wanted_build(sb, &read);
    let job = ObservedJob::missing();
    let inputs = Inputs::NotRead;
    let facts = Facts {
        sb,
        namespace,
        wanted: &wanted,
        policy: &ctx.settings.policy,
        accepting_namespaces: &[],
        tag_claimed_by: None,
        inputs: &inputs,
        targets_checked: None,
    };
    let plan = Plan::Stall {
        reason: fault.reason,
        message: fault.message,
    };
    let now = Time(jiff::Timestamp::now());
    let recorded = record(
        &facts.observed(&read, &job),
        &plan,
        &Outcome::Nothing,
        None,
        &now,
    );
    let mut writer = Writer {
        ctx,
        sb,
        namespace,
        written: read.clone(),
        resource_version: sb.resource_version(),
        events: Vec::new(),
    };
    let mut status = read;
    writer.write(recorded, &mut status).await?;
    Ok(writer.done(Action::requeue(STALLED_RETRY), true))
}

/// What stays the same across the steps of one reconcile.
struct Facts<'a> {
    sb: &'a ServiceBuild,
    namespace: &'a str,
    wanted: &'a WantedBuild,
    policy: &'a Policy,
    accepting_namespaces: &'a [String],
    tag_claimed_by: Option<&'a str>,
    inputs: &'a Inputs,
    targets_checked: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// What decide and record look at, for one step.
    fn observed(&self, status: &'a ServiceBuildStatus, job: &'a ObservedJob) -> Observed<'a> {
        Observed {
            namespace: self.namespace,
            generation: self.sb.metadata.generation,
            spec: &self.sb.spec,
            status,
            wanted: self.wanted,
            job,
            policy: self.policy,
            accepting_namespaces: self.accepting_namespaces,
            tag_claimed_by: self.tag_claimed_by,
            inputs: self.inputs,
            targets_checked: self.targets_checked,
        }
    }
}

/// The wanted build's Job as observed: why it has no pod yet, if it has none for a while, and
/// once it succeeded, the digest its build container reported.
async fn observe_build_job(
    ctx: &Context,
    sb: &ServiceBuild,
    namespace: &str,
    wanted: &WantedBuild,
    now: &Time,
) -> Result<ObservedJob> {
    let job = find_job(&ctx.client, namespace, &wanted.job_name, sb).await?;
    let mut observed = observe_job(job.as_ref());
    if let Some(job) = job.as_ref().filter(|_| observed.waiting_for_pod) {
        observed.stuck = why_stuck(ctx, namespace, job, now).await;
    }
    let container = sb.spec.build.template.spec.as_ref();
    let container = container
        .and_then(|p| p.containers.first())
        .map(|c| c.name.as_str());
    if let (JobState::Succeeded, Some(container)) = (&observed.state, container) {
        observed.reported_digest =
            report::reported_digest(&ctx.client, namespace, &wanted.job_name, container).await?;
    }
    Ok(observed)
}

/// Why a Job has had no ready pod for longer than [`diagnose::GRACE_SECONDS`], if Events or pods
/// say. A failure to read them only loses the explanation.
async fn why_stuck(ctx: &Context, namespace: &str, job: &Job, now: &Time) -> Option<Fault> {
    let created = job.metadata.creation_timestamp.as_ref()?;
    let age = now.0.as_second() - created.0.as_second();
    if age < diagnose::GRACE_SECONDS {
        return None;
    }
    match diagnose::why_no_pod(&ctx.client, namespace, job).await {
        Ok(stuck) => stuck,
        Err(error) => {
            debug!(%error, "could not read why the build Job has no pod");
            None
        }
    }
}

/// A spec mistake, or a tag found on another digest than the build reported, waits for the spec
/// to change; a missing Secret or target, or a tag claimed by another ServiceBuild, is looked at
/// again.
fn retry_after_stall(reason: &str) -> Action {
    if reason == reasons::INVALID_SPEC || reason == reasons::DIGEST_MISMATCH {
        Action::await_change()
    } else {
        Action::requeue(STALLED_RETRY)
    }
}

fn count_target_writes(ctx: &Context, outcome: &Outcome) {
    let targets: &[TargetOutcome] = match outcome {
        Outcome::Promoted {
            targets: Some(targets),
            ..
        }
        | Outcome::Settled { targets } => targets,
        _ => return,
    };
    for target in targets {
        match &target.result {
            Ok(PinOutcome::Pinned(_)) => ctx.metrics.target_write(target.kind, "pinned"),
            Ok(_) => {}
            Err(_) => ctx.metrics.target_write(target.kind, "failed"),
        }
    }
}

/// Writes the status (only when it changed) and publishes Events, for one reconcile.
struct Writer<'a> {
    ctx: &'a Context,
    sb: &'a ServiceBuild,
    namespace: &'a str,
    /// What the API server has.
    written: ServiceBuildStatus,
    /// The ServiceBuild's resourceVersion as read, or as this reconcile's last write left it.
    resource_version: Option<String>,
    /// Events recorded by steps whose status is not written yet.
    events: Vec<Note>,
}

impl Writer<'_> {
    /// Write `recorded.status` if it differs from what the API server has, then publish every
    /// Event recorded so far. `status` becomes what was recorded.
    async fn write(&mut self, recorded: Recorded, status: &mut ServiceBuildStatus) -> Result<()> {
        self.write_if(recorded, status, false).await
    }

    /// [`Writer::write`]; when `conditional`, only if the ServiceBuild is still the one this
    /// reconcile read (its resourceVersion is a precondition of the write): a spec changed in
    /// between makes it fail with 409 Conflict, so nothing that follows acts on an old spec.
    async fn write_if(
        &mut self,
        recorded: Recorded,
        status: &mut ServiceBuildStatus,
        conditional: bool,
    ) -> Result<()> {
        self.events.extend(recorded.events);
        *status = recorded.status;
        self.ctx.leadership.ensure()?;
        if *status != self.written {
            let api: Api<ServiceBuild> = Api::namespaced(self.ctx.client.clone(), self.namespace);
            let mut body = json!({
                "apiVersion": "monoship.dev/v1alpha1",
                "kind": "ServiceBuild",
                "status": status,
            });
            if let Some(version) = self.resource_version.as_ref().filter(|_| conditional) {
                body["metadata"] =
                    json!({ "name": self.sb.name_any(), "resourceVersion": version });
            }
            let updated = api
                .patch_status(
                    &self.sb.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await?;
            self.ctx.remember_write(&updated);
            self.resource_version = updated.resource_version();
            self.written = status.clone();
        }
        self.publish().await;
        Ok(())
    }

    /// Show a transient fault on the status (best effort), and hand the error back for the
    /// error policy's backoff.
    async fn fail(&mut self, recorded: Recorded, error: Error) -> Error {
        let mut status = ServiceBuildStatus::default();
        if let Err(write_error) = self.write(recorded, &mut status).await {
            debug!(%write_error, "could not record the fault");
        }
        error
    }

    /// The reconcile finished (it may have stalled): the backoff of transient faults starts over.
    fn done(&self, action: Action, stalled: bool) -> (Action, bool) {
        self.ctx.forget_failures(self.sb);
        (action, stalled)
    }

    async fn publish(&mut self) {
        let reference = self.sb.object_ref(&());
        let notes: Vec<Note> = self.events.drain(..).collect();
        self.ctx.publish(&reference, notes).await;
    }
}
