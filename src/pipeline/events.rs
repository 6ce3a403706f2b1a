//! Events implied by a change of status. Part of [`super::record`]: deriving Events from status
//! transitions makes them as idempotent as the status, so a reconcile that changes nothing
//! publishes nothing.

use crate::api::{Phase, ServiceBuildStatus, short_digest, short_revision};
use crate::conditions::reasons;

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
    let same_build = old_build.is_some_and(|b| {
        b.revision == build.revision && b.rebuild == build.rebuild && b.job_name == build.job_name
    });
    let skipped = build.reused_from.is_some();
    if !same_build {
        notes.push(match &build.reused_from {
            Some(from) => Note {
                warning: false,
                reason: reasons::BUILD_SKIPPED,
                message: format!(
                    "Skipped the build of revision {}: {}",
                    build.short_revision,
                    build.inputs_message.as_deref().unwrap_or(from.as_str())
                ),
            },
            None => Note {
                warning: false,
                reason: reasons::BUILD_STARTED,
                message: format!(
                    "Started build Job {} for revision {}",
                    build.job_name, build.revision
                ),
            },
        });
    }
    let phase_changed = !same_build || old.phase != new.phase;
    let newly_resolved = !same_build || old_build.and_then(|b| b.digest.as_ref()).is_none();
    if let Some(digest) = build.digest.as_ref().filter(|_| newly_resolved && !skipped) {
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
            // A skipped build's BuildSkipped already named the digest it reuses: one Event per
            // service and commit is enough, and most services of a commit are skipped.
            Some(Phase::Unchanged) if !skipped => {
                if let Some(current) = &new.current {
                    notes.push(Note {
                        warning: false,
                        reason: reasons::UNCHANGED,
                        message: format!(
                            "Revision {} built {}, the digest already promoted from revision {}: nothing moved",
                            build.short_revision,
                            short_digest(&current.digest),
                            short_revision(&current.revision)
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap_or_default())
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
