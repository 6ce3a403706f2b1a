//! Record: status conditions and the Events that status changes imply. Pure functions; the
//! controller writes the status only when it differs from what the API server has.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{HistoryEntry, Phase, ServiceBuildStatus, short_digest};
use crate::conditions::{reasons, types};

/// Set (or replace) the condition of `type_`, keeping `lastTransitionTime` when its status did
/// not change, so that a repeated reconcile produces an identical status.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// Remove a condition.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// What the ServiceBuild's conditions should say.
#[derive(Debug, Clone, Copy)]
pub enum Summary<'a> {
    /// Work is under way (`phase` is Pending, Building or Promoting).
    Progressing { reason: &'a str, message: &'a str },
    /// Every target carries the current digest.
    Ready { reason: &'a str, message: &'a str },
    /// A person must act.
    Stalled { reason: &'a str, message: &'a str },
    /// A transient fault; it is retried.
    Retrying { reason: &'a str, message: &'a str },
    /// `spec.suspend`.
    Suspended,
}

/// Set `Ready`, `Reconciling` and `Stalled` from a summary.
pub fn summarize(
    status: &mut ServiceBuildStatus,
    summary: Summary<'_>,
    generation: Option<i64>,
    now: &Time,
) {
    let conditions = &mut status.conditions;
    let (ready, reason, message, reconciling, stalled) = match summary {
        Summary::Progressing { reason, message } => (false, reason, message, true, false),
        Summary::Ready { reason, message } => (true, reason, message, false, false),
        Summary::Stalled { reason, message } => (false, reason, message, false, true),
        Summary::Retrying { reason, message } => (false, reason, message, true, false),
        Summary::Suspended => (
            false,
            reasons::SUSPENDED,
            "spec.suspend is true: no builds, tag moves or target writes",
            false,
            false,
        ),
    };
    set_condition(
        conditions,
        types::READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
    // kstatus: `Reconciling` and `Stalled` are present only while true.
    for (type_, present) in [(types::RECONCILING, reconciling), (types::STALLED, stalled)] {
        if present {
            set_condition(conditions, type_, true, reason, message, generation, now);
        } else {
            remove_condition(conditions, type_);
        }
    }
    status.observed_generation = generation;
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

/// An Event implied by a change of status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The Events that the change from `old` to `new` implies. Deriving them from status makes them
/// as idempotent as the status: a reconcile that changes nothing publishes nothing.
pub fn transition_notes(old: &ServiceBuildStatus, new: &ServiceBuildStatus) -> Vec<Note> {
    let mut notes = Vec::new();
    let (Some(build), old_build) = (new.build.as_ref(), old.build.as_ref()) else {
        return notes;
    };
    let same_build = old_build.is_some_and(|b| b.job_name == build.job_name);
    if !same_build {
        notes.push(Note {
            warning: false,
            reason: reasons::BUILD_STARTED,
            message: format!(
                "Started build Job {} for revision {}",
                build.job_name, build.revision
            ),
        });
    }
    let phase_changed = !same_build || old.phase != new.phase;
    let newly_resolved = !same_build || old_build.and_then(|b| b.digest.as_ref()).is_none();
    if let Some(digest) = build.digest.as_ref().filter(|_| newly_resolved) {
        notes.push(Note {
            warning: false,
            reason: reasons::DIGEST_RESOLVED,
            message: format!(
                "Revision {} built {} as {}",
                build.short_revision,
                build.image.as_deref().unwrap_or("the image"),
                digest
            ),
        });
    }
    if phase_changed {
        match new.phase {
            Some(Phase::Failed) => notes.push(Note {
                warning: true,
                reason: reasons::BUILD_FAILED,
                message: format!(
                    "Build Job {} for revision {} failed: {}",
                    build.job_name,
                    build.short_revision,
                    build.message.as_deref().unwrap_or("no message")
                ),
            }),
            Some(Phase::Promoted) => {
                if let Some(current) = &new.current {
                    notes.push(Note {
                        warning: false,
                        reason: reasons::PROMOTED,
                        message: format!(
                            "Promoted {} (revision {}) to its tags and {} target(s)",
                            current.digest,
                            build.short_revision,
                            new.targets.len()
                        ),
                    });
                }
            }
            Some(Phase::Unchanged) => {
                if let Some(current) = &new.current {
                    notes.push(Note {
                        warning: false,
                        reason: reasons::UNCHANGED,
                        message: format!(
                            "Revision {} built {}, the digest already promoted from revision {}: nothing moved",
                            build.short_revision,
                            short_digest(&current.digest),
                            crate::api::short_revision(&current.revision)
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BuildStatus, CurrentStatus};

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap_or_default())
    }

    #[test]
    fn a_repeated_condition_keeps_its_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            types::READY,
            true,
            "Promoted",
            "m",
            Some(1),
            &at(10),
        );
        set_condition(
            &mut conditions,
            types::READY,
            true,
            "Unchanged",
            "m2",
            Some(2),
            &at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "Unchanged");
        set_condition(
            &mut conditions,
            types::READY,
            false,
            "Building",
            "m3",
            Some(3),
            &at(30),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
    }

    #[test]
    fn summarize_follows_kstatus() {
        let mut status = ServiceBuildStatus::default();
        let now = at(1);
        summarize(
            &mut status,
            Summary::Stalled {
                reason: "SecretNotFound",
                message: "x",
            },
            Some(4),
            &now,
        );
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
        assert_eq!(status.observed_generation, Some(4));
        summarize(
            &mut status,
            Summary::Ready {
                reason: "Promoted",
                message: "y",
            },
            Some(5),
            &now,
        );
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready"]);
        assert_eq!(status.conditions[0].status, "True");
    }

    #[test]
    fn history_is_bounded_and_not_repeated() {
        let mut status = ServiceBuildStatus::default();
        for i in 0..5 {
            let entry = HistoryEntry {
                revision: format!("r{i}"),
                digest: "d".into(),
                promoted: false,
                at: at(i),
            };
            record_history(&mut status, entry.clone(), 3);
            record_history(&mut status, entry, 3);
        }
        let revisions: Vec<_> = status.history.iter().map(|h| h.revision.as_str()).collect();
        assert_eq!(revisions, ["r4", "r3", "r2"]);
    }

    #[test]
    fn notes_come_from_transitions_only() {
        let build = BuildStatus {
            revision: "a".repeat(40),
            short_revision: "a".repeat(12),
            job_name: "banana-1".into(),
            ..BuildStatus::default()
        };
        let building = ServiceBuildStatus {
            phase: Some(Phase::Building),
            build: Some(build.clone()),
            ..ServiceBuildStatus::default()
        };
        let started = transition_notes(&ServiceBuildStatus::default(), &building);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].reason, reasons::BUILD_STARTED);
        assert!(transition_notes(&building, &building).is_empty());

        let unchanged = ServiceBuildStatus {
            phase: Some(Phase::Unchanged),
            build: Some(BuildStatus {
                digest: Some("sha256:ff".into()),
                ..build
            }),
            current: Some(CurrentStatus {
                digest: "sha256:ff".into(),
                short_digest: "sha256:ff".into(),
                revision: "b".repeat(40),
                promoted_at: Some(at(1)),
                tags: vec![],
            }),
            ..ServiceBuildStatus::default()
        };
        let reasons: Vec<_> = transition_notes(&building, &unchanged)
            .into_iter()
            .map(|n| n.reason)
            .collect();
        assert_eq!(reasons, [reasons::DIGEST_RESOLVED, reasons::UNCHANGED]);
        assert!(transition_notes(&unchanged, &unchanged).is_empty());
    }
}
