//! The decision: from what was observed to the next step. Pure: no I/O, no clock.
//!
//! The state that makes this resumable lives in `status`: `status.build` says which build
//! (revision, rebuild token) is current and what digest it produced; `status.current` says which
//! digest the targets should run, and `current.promotedAt` is set only once every tag and
//! target carries it. A crash between any two steps leaves a status from which [`decide`] picks
//! the same next step again, and every step first checks whether it is already done.

use crate::api::{ServiceBuildSpec, ServiceBuildStatus};

/// The state of the build Job for the wanted build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// No Job with the wanted name exists.
    Missing,
    /// The Job exists and has not finished.
    Running,
    /// The Job completed successfully.
    Succeeded,
    /// The Job failed; `reason` and `message` come from its `Failed` condition.
    Failed { reason: String, message: String },
}

/// What [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub spec: &'a ServiceBuildSpec,
    pub status: &'a ServiceBuildStatus,
    /// Value of the `monoship.dev/rebuild` annotation.
    pub rebuild: Option<&'a str>,
    /// The Job of the wanted build (`spec.source.revision` and `rebuild`).
    pub job: &'a JobState,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `spec.suspend`: do nothing but show it.
    Suspend,
    /// The wanted build has no Job: create it, and delete any Job it supersedes.
    CreateJob,
    /// The wanted build's Job runs: record Building and wait for it.
    AwaitJob,
    /// The wanted build's Job failed: record Failed and wait for a new revision or rebuild.
    RecordFailure { reason: String, message: String },
    /// The wanted build succeeded: read the pushed image's digest from the registry.
    ResolveDigest,
    /// The build's digest is not (yet fully) promoted: record it as current, move the tags,
    /// pin the targets, then record the promotion.
    Promote { digest: String },
    /// The build's digest is current and promoted: keep targets pinned to it (re-pin drift).
    Settle { digest: String },
}

/// Whether `status.build` describes the build that `spec` and the rebuild token ask for.
pub fn build_is_current(
    spec: &ServiceBuildSpec,
    status: &ServiceBuildStatus,
    rebuild: Option<&str>,
) -> bool {
    status
        .build
        .as_ref()
        .is_some_and(|b| b.revision == spec.source.revision && b.rebuild.as_deref() == rebuild)
}

/// The next step for what was observed.
pub fn decide(observed: Observed<'_>) -> Plan {
    let Observed {
        spec,
        status,
        rebuild,
        job,
    } = observed;
    if spec.suspend {
        return Plan::Suspend;
    }
    let recorded = build_is_current(spec, status, rebuild)
        .then_some(status.build.as_ref())
        .flatten();
    if let Some(digest) = recorded.and_then(|b| b.digest.as_deref()) {
        // The build is finished and its digest known: promotion, or steady state.
        let promoted = status
            .current
            .as_ref()
            .is_some_and(|c| c.digest == digest && c.promoted_at.is_some());
        return if promoted {
            Plan::Settle {
                digest: digest.to_owned(),
            }
        } else {
            Plan::Promote {
                digest: digest.to_owned(),
            }
        };
    }
    match job {
        JobState::Succeeded => Plan::ResolveDigest,
        JobState::Running => Plan::AwaitJob,
        JobState::Failed { reason, message } => Plan::RecordFailure {
            reason: reason.clone(),
            message: message.clone(),
        },
        JobState::Missing => {
            // A recorded failure of this very build stays failed even when its Job is gone
            // (deleted by hand or by a TTL): only a new revision or rebuild token retries.
            match recorded.and_then(|b| b.failure_reason.as_ref().map(|r| (r, &b.message))) {
                Some((reason, message)) => Plan::RecordFailure {
                    reason: reason.clone(),
                    message: message.clone().unwrap_or_default(),
                },
                None => Plan::CreateJob,
            }
        }
    }
}
