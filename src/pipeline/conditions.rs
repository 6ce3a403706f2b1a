//! Conditions of a ServiceBuild: `Ready`, `Reconciling` and `Stalled` (kstatus) and `Built`.
//! Part of [`super::record`]; a condition's `lastTransitionTime` moves only when its status
//! changes, so a repeated reconcile produces an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::ServiceBuildStatus;
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
    summarize_conditions(&mut status.conditions, summary, generation, now);
    status.observed_generation = generation;
}

/// Set the kstatus conditions `Ready`, `Reconciling` and `Stalled` of any resource from a
/// summary.
pub fn summarize_conditions(
    conditions: &mut Vec<Condition>,
    summary: Summary<'_>,
    generation: Option<i64>,
    now: &Time,
) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
