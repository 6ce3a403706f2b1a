//! Record: from (status as read, plan, outcome, clock) to the status to write and the Events it
//! implies. Pure: the controller writes the status only when it differs from what the API
//! server has, and publishes the Events after that write.
//!
//! Timestamps move only on transitions (a condition's `lastTransitionTime` when its status
//! changes, `startTime` when a build starts, `promotedAt` when a promotion ends), so a reconcile
//! that finds everything in place records a status identical to the one it read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{Summary, set_condition, summarize};
use super::decide::Plan;
use super::events::{Note, transition_notes};
use super::observe::{Inputs, Observed, WantedBuild, build_is_current};
use super::outcome::{Fault, Outcome, TagMove, TargetOutcome};
use super::provenance::check;
use crate::api::{
    CurrentStatus, HistoryEntry, Phase, ServiceBuildStatus, short_digest, short_revision,
};
use crate::conditions::{reasons, types};

/// The status to write and the Events to publish after writing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub status: ServiceBuildStatus,
    pub events: Vec<Note>,
}

/// Record one step: `plan` was acted on with `outcome`; `fault` is why it stopped, if it did.
pub fn record(
    observed: &Observed<'_>,
    plan: &Plan,
    outcome: &Outcome,
    fault: Option<&Fault>,
    now: &Time,
) -> Recorded {
    let mut step = Step {
        observed,
        status: observed.status.clone(),
        events: Vec::new(),
        now,
    };
    match (plan, outcome) {
        (Plan::Stall { reason, message }, _) => {
            step.fault(&Fault::stalled(reason, message.clone()))
        }
        (Plan::Suspend, _) => {
            step.status.phase = Some(Phase::Suspended);
            step.summarize(Summary::Suspended);
        }
        (
            Plan::CreateJob | Plan::Reuse { .. },
            Outcome::JobCreated {
                superseded,
                reuse_refused,
            },
        ) => {
            for name in superseded {
                step.event(
                    false,
                    reasons::BUILD_SUPERSEDED,
                    format!(
                        "Deleted build Job {name}: revision {} supersedes it",
                        short_revision(&observed.wanted.revision)
                    ),
                );
            }
            step.building();
            if let (Some(refused), Some(build)) = (reuse_refused, step.status.build.as_mut()) {
                build.inputs_message = Some(refused.clone());
            }
        }
        (Plan::Reuse { digest, from }, Outcome::Reused { .. }) => step.reused(digest, from),
        (Plan::AwaitJob, _) => {
            step.building();
            if let Some(stuck) = &observed.job.stuck {
                step.stuck(stuck);
            }
        }
        (Plan::RecordFailure { reason, message }, _) => step.failed(reason, message),
        (Plan::ResolveDigest { reported }, Outcome::DigestResolved { tagged }) => {
            match check(reported.as_deref(), tagged, &observed.wanted.image) {
                Ok(source) => step.resolved(tagged, source),
                Err(mismatch) => step.mismatch(&mismatch),
            }
        }
        (Plan::StartPromotion { digest }, _) => step.start_promotion(digest),
        (Plan::Promote { digest }, Outcome::Promoted { tags, targets }) => {
            step.promoted(digest, tags, targets.as_deref(), fault.is_none())
        }
        (Plan::Settle { digest }, Outcome::Settled { targets }) => {
            step.pinned(digest, targets, true);
            if fault.is_none() {
                step.settled(digest);
            }
        }
        // The targets were not read: their entries stay as the last check left them.
        (Plan::Steady { digest }, _) => step.settled(digest),
        // A step that did not get as far as an outcome records only its fault.
        _ => {}
    }
    if let Some(fault) = fault {
        step.fault(fault);
    }
    // A condition whose status is as read keeps its transition time, even when this step
    // replaced it on the way (building, then stalled).
    for condition in &mut step.status.conditions {
        let read = observed
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_);
        if let Some(read) = read.filter(|c| c.status == condition.status) {
            condition.last_transition_time = read.last_transition_time.clone();
        }
    }
    let mut events = transition_notes(observed.status, &step.status);
    events.append(&mut step.events);
    Recorded {
        status: step.status,
        events,
    }
}

/// Record a fault met before any plan (while observing): only the conditions change.
pub fn record_fault(observed: &Observed<'_>, fault: &Fault, now: &Time) -> Recorded {
    record(
        observed,
        &Plan::AwaitJob,
        &Outcome::Nothing,
        Some(fault),
        now,
    )
}

struct Step<'a> {
    observed: &'a Observed<'a>,
    status: ServiceBuildStatus,
    events: Vec<Note>,
    now: &'a Time,
}

impl Step<'_> {
    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.events.push(Note {
            warning,
            reason,
            message,
        });
    }

    fn summarize(&mut self, summary: Summary<'_>) {
        summarize(
            &mut self.status,
            summary,
            self.observed.generation,
            self.now,
        );
    }

    fn condition(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let generation = self.observed.generation;
        set_condition(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            self.now,
        );
    }

    fn build_revision(&self) -> String {
        self.status
            .build
            .as_ref()
            .map(|b| b.revision.clone())
            .unwrap_or_default()
    }

    fn build_input_key(&self) -> Option<String> {
        self.status.build.as_ref().and_then(|b| b.input_key.clone())
    }

    fn build_skipped(&self) -> bool {
        self.status
            .build
            .as_ref()
            .is_some_and(|b| b.reused_from.is_some())
    }

    fn start_promotion(&mut self, digest: &str) {
        if self
            .status
            .current
            .as_ref()
            .is_none_or(|c| c.digest != digest)
        {
            self.status.current = Some(CurrentStatus {
                digest: digest.to_owned(),
                short_digest: short_digest(digest),
                revision: self.build_revision(),
                promoted_at: None,
                tags: Vec::new(),
            });
        }
        self.status.phase = Some(Phase::Promoting);
        let message = format!("moving tags and targets to {digest}");
        self.summarize(Summary::Progressing {
            reason: reasons::PROMOTING,
            message: &message,
        });
    }

    fn promoted(
        &mut self,
        digest: &str,
        tags: &[TagMove],
        targets: Option<&[TargetOutcome]>,
        finished: bool,
    ) {
        // A finished promotion that only lacked a newly listed tag is caught up in place.
        let catching_up = self
            .status
            .current
            .as_ref()
            .is_some_and(|c| c.digest == digest && c.promoted_at.is_some());
        for moved in tags {
            self.event(
                false,
                reasons::TAG_MOVED,
                format!(
                    "Moved tag {} to {} (was {})",
                    moved.tag,
                    short_digest(digest),
                    moved
                        .previous
                        .as_deref()
                        .map_or("unset".to_owned(), short_digest)
                ),
            );
        }
        let Some(targets) = targets else {
            return;
        };
        if let Some(current) = &mut self.status.current {
            current.tags = self.observed.spec.image.tags.clone();
        }
        self.pinned(digest, targets, catching_up);
        if !finished {
            return;
        }
        if catching_up {
            self.settled(digest);
            return;
        }
        let now = self.now.clone();
        if let Some(current) = &mut self.status.current {
            current.promoted_at = Some(now.clone());
        }
        let entry = HistoryEntry {
            revision: self.build_revision(),
            digest: digest.to_owned(),
            promoted: true,
            input_key: self.build_input_key(),
            skipped: self.build_skipped(),
            at: now,
        };
        record_history(&mut self.status, entry, self.observed.spec.history_limit);
        self.status.phase = Some(Phase::Promoted);
        self.ready();
    }

    /// The digest is current and promoted, every target carries it.
    fn settled(&mut self, digest: &str) {
        let revision = self.build_revision();
        // A skipped build promoted only when its own promotion is the latest history entry: a
        // rollback to the revision that first promoted the digest, which is current still,
        // moved nothing.
        let promoted = if self.build_skipped() {
            self.status
                .history
                .first()
                .is_some_and(|h| h.revision == revision && h.digest == digest && h.promoted)
        } else {
            self.status
                .current
                .as_ref()
                .is_some_and(|c| c.revision == revision)
        };
        if !promoted {
            let entry = HistoryEntry {
                revision,
                digest: digest.to_owned(),
                promoted: false,
                input_key: self.build_input_key(),
                skipped: self.build_skipped(),
                at: self.now.clone(),
            };
            record_history(&mut self.status, entry, self.observed.spec.history_limit);
        }
        self.status.phase = Some(if promoted {
            Phase::Promoted
        } else {
            Phase::Unchanged
        });
        self.ready();
    }

    fn ready(&mut self) {
        let (reason, message) = match (&self.status.phase, &self.status.current, &self.status.build)
        {
            (Some(Phase::Unchanged), Some(current), Some(build)) => (
                reasons::UNCHANGED,
                format!(
                    "revision {} {} {}, unchanged since revision {}: nothing moved",
                    build.short_revision,
                    if build.reused_from.is_some() {
                        "reuses"
                    } else {
                        "built"
                    },
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
        self.summarize(Summary::Ready {
            reason,
            message: &message,
        });
    }

    /// The build's pod cannot run: a cause in the spec stalls; anything else (a quota, an image
    /// pull) is shown on `Ready` and `Reconciling`, and announced once, while Kubernetes retries.
    fn stuck(&mut self, stuck: &Fault) {
        if stuck.stalled {
            self.fault(stuck);
            return;
        }
        let known = self.observed.status.conditions.iter().any(|c| {
            c.type_ == types::READY && c.reason == stuck.reason && c.message == stuck.message
        });
        self.summarize(Summary::Progressing {
            reason: stuck.reason,
            message: &stuck.message,
        });
        if !known {
            self.event(true, stuck.reason, stuck.message.clone());
        }
    }

    /// A stall is shown on `Stalled` (and announced once); a transient fault on `Ready=False`
    /// while it is retried.
    fn fault(&mut self, fault: &Fault) {
        if !fault.stalled {
            self.summarize(Summary::Retrying {
                reason: fault.reason,
                message: &fault.message,
            });
            return;
        }
        if self.status.phase != Some(Phase::Failed) {
            self.status.phase = Some(Phase::Stalled);
        }
        self.summarize(Summary::Stalled {
            reason: fault.reason,
            message: &fault.message,
        });
        // Announce a stall once, not on every retry that finds it unchanged.
        let known = self.observed.status.conditions.iter().any(|c| {
            c.type_ == types::STALLED && c.reason == fault.reason && c.message == fault.message
        });
        if !known {
            self.event(true, fault.reason, fault.message.clone());
        }
    }
}

/// Record a finished build in `history`, newest first, bounded by `limit`; a build already at
/// the head is not recorded twice.
pub fn record_history(status: &mut ServiceBuildStatus, entry: HistoryEntry, limit: u32) {
    let known = status
        .history
        .first()
        .is_some_and(|h| h.revision == entry.revision && h.digest == entry.digest);
    if !known {
        status.history.insert(0, entry);
    }
    status.history.truncate(limit.max(1) as usize);
}

mod build;
#[cfg(test)]
mod steps;
mod targets;
#[cfg(test)]
mod tests;
