//! The rollout of one Monorepo revision, over the ServiceBuilds that follow it. Pure: from the
//! followers' statuses to the Monorepo's summary, conditions and Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{Summary, summarize_conditions};
use super::events::Note;
use crate::api::{MonorepoStatus, Phase, RolloutSummary, ServiceBuildStatus, short_revision};
use crate::conditions::reasons;

/// Names a summary lists before it only counts.
pub const MAX_NAMES: usize = 20;

/// One ServiceBuild that follows the Monorepo, as read.
#[derive(Debug, Clone, Copy)]
pub struct Follower<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub status: Option<&'a ServiceBuildStatus>,
}

/// Where one follower is with `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Building,
    Promoted,
    Unchanged,
    Failed,
    Stalled,
}

fn state(follower: &Follower<'_>, revision: &str) -> (State, bool) {
    let Some(status) = follower.status else {
        return (State::Building, false);
    };
    let on_revision = status
        .build
        .as_ref()
        .is_some_and(|b| b.revision == revision);
    let current = status.observed_generation == follower.generation;
    // Built at this revision (not skipped): its inputs changed.
    let changed = on_revision
        && status
            .build
            .as_ref()
            .is_some_and(|b| b.reused_from.is_none() && !b.job_name.is_empty());
    // A stall is shown whatever the revision: the spec or what it references is wrong. Not
    // one on this very Monorepo being missing: it exists, the follower has yet to see it.
    if status.phase == Some(Phase::Stalled) && current && !waits_for_monorepo(status) {
        return (State::Stalled, changed);
    }
    if !on_revision || !current {
        return (State::Building, changed);
    }
    let state = match status.phase {
        Some(Phase::Promoted) => State::Promoted,
        Some(Phase::Unchanged) => State::Unchanged,
        Some(Phase::Failed) => State::Failed,
        _ => State::Building,
    };
    (state, changed)
}

/// Whether a follower is stalled because the Monorepo it follows did not exist when it looked.
fn waits_for_monorepo(status: &ServiceBuildStatus) -> bool {
    status.conditions.iter().any(|c| {
        c.type_ == crate::conditions::types::STALLED
            && c.status == "True"
            && c.reason == reasons::MONOREPO_NOT_FOUND
    })
}

/// The rollout of `revision` over `followers` (sorted by name for stable lists).
pub fn summarize(revision: &str, followers: &[Follower<'_>]) -> RolloutSummary {
    let mut followers = followers.to_vec();
    followers.sort_by(|a, b| a.name.cmp(b.name));
    let mut summary = RolloutSummary {
        revision: revision.to_owned(),
        services: u32::try_from(followers.len()).unwrap_or(u32::MAX),
        ..RolloutSummary::default()
    };
    for follower in &followers {
        let (state, changed) = state(follower, revision);
        let name = || follower.name.to_owned();
        if changed {
            summary.changed += 1;
            push_name(&mut summary.changed_names, name());
        }
        match state {
            State::Building => summary.building += 1,
            State::Promoted => summary.promoted += 1,
            State::Unchanged => summary.unchanged += 1,
            State::Failed => {
                summary.failed += 1;
                push_name(&mut summary.failed_names, name());
            }
            State::Stalled => {
                summary.stalled += 1;
                push_name(&mut summary.stalled_names, name());
            }
        }
    }
    summary
}

fn push_name(names: &mut Vec<String>, name: String) {
    if names.len() < MAX_NAMES {
        names.push(name);
    }
}

/// Whether every follower has settled on the revision (promoted, unchanged, failed or stalled).
pub fn finished(summary: &RolloutSummary) -> bool {
    summary.building == 0
}

/// Record the rollout of `summary.revision` on `status`: the summary, the history (the
/// revision it replaces goes there), conditions, and the Events of the transitions.
pub fn record_rollout(
    read: &MonorepoStatus,
    mut summary: RolloutSummary,
    generation: Option<i64>,
    history_limit: u32,
    now: &Time,
) -> (MonorepoStatus, Vec<Note>) {
    let mut status = read.clone();
    let mut notes = Vec::new();
    let previous = read.summary.as_ref();
    let new_revision = previous.is_none_or(|p| p.revision != summary.revision);
    if new_revision {
        if let Some(previous) = previous.cloned() {
            status.history.insert(0, previous);
            status.history.truncate(history_limit.max(1) as usize);
        }
        notes.push(Note {
            warning: false,
            reason: reasons::REVISION_CHANGED,
            message: format!(
                "Revision {} for {} ServiceBuild(s){}",
                summary.revision,
                summary.services,
                previous.map_or(String::new(), |p| format!(
                    " (was {})",
                    short_revision(&p.revision)
                ))
            ),
        });
    }
    let was_finished = !new_revision && previous.is_some_and(|p| p.completed_at.is_some());
    if finished(&summary) {
        summary.completed_at = previous
            .filter(|_| was_finished)
            .and_then(|p| p.completed_at.clone())
            .or_else(|| Some(now.clone()));
        if !was_finished {
            notes.push(rollout_note(&summary));
        }
    }
    status.revision = Some(summary.revision.clone());
    status.short_revision = Some(short_revision(&summary.revision).to_owned());
    status.observed_generation = generation;
    let (reason, message, view) = conditions_of(&summary);
    summarize_conditions(
        &mut status.conditions,
        view(reason, &message),
        generation,
        now,
    );
    status.summary = Some(summary);
    (status, notes)
}

fn rollout_note(summary: &RolloutSummary) -> Note {
    let counts = format!(
        "{} changed, {} promoted, {} unchanged, {} failed, {} stalled of {}",
        summary.changed,
        summary.promoted,
        summary.unchanged,
        summary.failed,
        summary.stalled,
        summary.services
    );
    if summary.failed + summary.stalled == 0 {
        Note {
            warning: false,
            reason: reasons::ROLLOUT_COMPLETE,
            message: format!("Revision {}: {counts}", short_revision(&summary.revision)),
        }
    } else {
        let mut names: Vec<&str> = summary
            .failed_names
            .iter()
            .chain(&summary.stalled_names)
            .map(String::as_str)
            .collect();
        names.truncate(MAX_NAMES);
        Note {
            warning: true,
            reason: reasons::ROLLOUT_FAILED,
            message: format!(
                "Revision {}: {counts}; not rolled out: {}",
                short_revision(&summary.revision),
                names.join(", ")
            ),
        }
    }
}

type View = for<'a> fn(&'static str, &'a str) -> Summary<'a>;

fn conditions_of(summary: &RolloutSummary) -> (&'static str, String, View) {
    let short = short_revision(&summary.revision);
    if summary.building > 0 {
        return (
            reasons::ROLLING_OUT,
            format!(
                "revision {short}: {} of {} ServiceBuild(s) still building or promoting",
                summary.building, summary.services
            ),
            |reason, message| Summary::Progressing { reason, message },
        );
    }
    if summary.failed + summary.stalled > 0 {
        let names: Vec<&str> = summary
            .failed_names
            .iter()
            .chain(&summary.stalled_names)
            .map(String::as_str)
            .collect();
        return (
            reasons::ROLLOUT_FAILED,
            format!(
                "revision {short}: {} failed and {} stalled: {}",
                summary.failed,
                summary.stalled,
                names.join(", ")
            ),
            |reason, message| Summary::Stalled { reason, message },
        );
    }
    (
        reasons::ROLLOUT_COMPLETE,
        format!(
            "revision {short}: {} changed, {} promoted, {} unchanged of {}",
            summary.changed, summary.promoted, summary.unchanged, summary.services
        ),
        |reason, message| Summary::Ready { reason, message },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BuildStatus;
    use crate::conditions::types;

    const R1: &str = "1111111111111111111111111111111111111111";
    const R2: &str = "2222222222222222222222222222222222222222";

    fn status(revision: &str, phase: Phase, built: bool) -> ServiceBuildStatus {
        ServiceBuildStatus {
            observed_generation: Some(1),
            phase: Some(phase),
            build: Some(BuildStatus {
                revision: revision.into(),
                job_name: if built { "job".into() } else { String::new() },
                reused_from: (!built).then(|| R1.into()),
                ..BuildStatus::default()
            }),
            ..ServiceBuildStatus::default()
        }
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn ready_of(
        status: &MonorepoStatus,
    ) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        let ready = status.conditions.iter().find(|c| c.type_ == types::READY);
        ready.unwrap_or_else(|| panic!("no Ready condition: {status:?}"))
    }

    /// A follower still stalled on the Monorepo being missing is on its way, not stalled: the
    /// Monorepo summarizing it exists. Any other stall counts, whatever the revision.
    #[test]
    fn a_stall_on_the_missing_monorepo_is_not_a_stalled_follower() {
        let stalled = |reason: &str| ServiceBuildStatus {
            observed_generation: Some(1),
            phase: Some(Phase::Stalled),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: types::STALLED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: "m".into(),
                last_transition_time: at(1),
                observed_generation: Some(1),
            }],
            ..ServiceBuildStatus::default()
        };
        let (missing, invalid) = (
            stalled(reasons::MONOREPO_NOT_FOUND),
            stalled(reasons::INVALID_SPEC),
        );
        let followers = [
            Follower {
                name: "a",
                generation: Some(1),
                status: Some(&missing),
            },
            Follower {
                name: "b",
                generation: Some(1),
                status: Some(&invalid),
            },
        ];
        let summary = summarize(R2, &followers);
        assert_eq!((summary.building, summary.stalled), (1, 1));
        assert_eq!(summary.stalled_names, ["b"]);
        assert!(!finished(&summary));
    }

    #[test]
    fn a_rollout_counts_its_followers_and_completes_once() {
        let statuses = [
            ("a", status(R2, Phase::Promoted, true)),
            ("b", status(R2, Phase::Unchanged, false)),
            ("c", status(R2, Phase::Unchanged, true)),
            ("d", status(R1, Phase::Promoted, true)),
        ];
        let followers: Vec<Follower> = statuses
            .iter()
            .map(|(name, s)| Follower {
                name,
                generation: Some(1),
                status: Some(s),
            })
            .collect();
        let summary = summarize(R2, &followers);
        assert_eq!(
            (
                summary.services,
                summary.changed,
                summary.building,
                summary.promoted,
                summary.unchanged
            ),
            (4, 2, 1, 1, 2)
        );
        assert_eq!(summary.changed_names, ["a", "c"]);
        let read = MonorepoStatus::default();
        let (first, notes) = record_rollout(&read, summary, Some(1), 10, &at(1));
        assert_eq!(
            notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
            [reasons::REVISION_CHANGED]
        );
        let ready = ready_of(&first);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::ROLLING_OUT)
        );

        let done = summarize(R2, &followers[..3]);
        let (second, notes) = record_rollout(&first, done.clone(), Some(1), 10, &at(2));
        assert_eq!(
            notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
            [reasons::ROLLOUT_COMPLETE]
        );
        let ready = ready_of(&second);
        assert_eq!(ready.status, "True");
        let (third, notes) = record_rollout(&second, done, Some(1), 10, &at(3));
        assert!(notes.is_empty(), "announced once");
        assert_eq!(third, second, "nothing changed, nothing to write");

        let failed = [("e", status(R1, Phase::Failed, true))];
        let followers: Vec<Follower> = failed
            .iter()
            .map(|(name, s)| Follower {
                name,
                generation: Some(1),
                status: Some(s),
            })
            .collect();
        let (fourth, notes) =
            record_rollout(&third, summarize(R1, &followers), Some(1), 10, &at(4));
        assert_eq!(
            notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
            [reasons::REVISION_CHANGED, reasons::ROLLOUT_FAILED]
        );
        assert!(
            notes[1].message.ends_with("not rolled out: e"),
            "{}",
            notes[1].message
        );
        assert_eq!(
            fourth.history[0].revision, R2,
            "the previous revision goes to history"
        );
        let ready = ready_of(&fourth);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::ROLLOUT_FAILED)
        );
    }
}
