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
        // Promoted means: the digest is current, its promotion finished, and every floating
        // tag the spec asks for was moved (a tag added later resumes the promotion).
        let promoted = status.current.as_ref().is_some_and(|c| {
            c.digest == digest
                && c.promoted_at.is_some()
                && spec.image.tags.iter().all(|t| c.tags.contains(t))
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BuildStatus, CurrentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const REV: &str = "1111111111111111111111111111111111111111";
    const OLD: &str = "2222222222222222222222222222222222222222";
    const D1: &str = "sha256:aaaa";
    const D2: &str = "sha256:bbbb";

    fn spec(suspend: bool) -> ServiceBuildSpec {
        serde_json::from_value(serde_json::json!({
            "source": {"repository": "file:///repo", "revision": REV},
            "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
            "image": {"repository": "r.example/banana", "tags": ["latest"]},
            "suspend": suspend,
        }))
        .unwrap()
    }

    fn build(
        revision: &str,
        rebuild: Option<&str>,
        digest: Option<&str>,
        failed: bool,
    ) -> BuildStatus {
        BuildStatus {
            revision: revision.into(),
            rebuild: rebuild.map(Into::into),
            job_name: "job".into(),
            digest: digest.map(Into::into),
            failure_reason: failed.then(|| "BackoffLimitExceeded".into()),
            message: failed.then(|| "exit 1".into()),
            ..BuildStatus::default()
        }
    }

    fn current(digest: &str, promoted: bool) -> CurrentStatus {
        CurrentStatus {
            digest: digest.into(),
            short_digest: digest.into(),
            revision: OLD.into(),
            promoted_at: promoted.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            tags: vec!["latest".into()],
        }
    }

    fn status(build: Option<BuildStatus>, current: Option<CurrentStatus>) -> ServiceBuildStatus {
        ServiceBuildStatus {
            build,
            current,
            ..ServiceBuildStatus::default()
        }
    }

    fn failed() -> JobState {
        JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "exit 1".into(),
        }
    }

    /// Each row: what was observed, and the step that must follow.
    #[test]
    fn decision_table() {
        use JobState::*;
        let promote = |d: &str| Plan::Promote { digest: d.into() };
        let settle = |d: &str| Plan::Settle { digest: d.into() };
        let record_failure = Plan::RecordFailure {
            reason: "BackoffLimitExceeded".into(),
            message: "exit 1".into(),
        };
        type Row<'a> = (
            &'a str,
            bool,
            ServiceBuildStatus,
            Option<&'a str>,
            JobState,
            Plan,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("suspended does nothing, whatever else", true, status(None, None), None, Succeeded, Plan::Suspend),
            ("new object: build", false, status(None, None), None, Missing, Plan::CreateJob),
            ("new revision: build", false, status(Some(build(OLD, None, Some(D1), false)), Some(current(D1, true))), None, Missing, Plan::CreateJob),
            ("job created, status not yet", false, status(None, None), None, Running, Plan::AwaitJob),
            ("job runs", false, status(Some(build(REV, None, None, false)), None), None, Running, Plan::AwaitJob),
            ("job failed", false, status(Some(build(REV, None, None, false)), None), None, failed(), record_failure.clone()),
            ("failure recorded, job gone: stays failed", false, status(Some(build(REV, None, None, true)), None), None, Missing, record_failure.clone()),
            ("failure recorded, new rebuild token: build", false, status(Some(build(REV, None, None, true)), None), Some("2"), Missing, Plan::CreateJob),
            ("same revision, same token as failed: no retry", false, status(Some(build(REV, Some("2"), None, true)), None), Some("2"), Missing, record_failure.clone()),
            ("job succeeded: resolve", false, status(Some(build(REV, None, None, false)), None), None, Succeeded, Plan::ResolveDigest),
            ("job succeeded before status caught up", false, status(Some(build(OLD, None, Some(D1), false)), Some(current(D1, true))), None, Succeeded, Plan::ResolveDigest),
            ("first digest: promote", false, status(Some(build(REV, None, Some(D1), false)), None), None, Missing, promote(D1)),
            ("new digest: promote", false, status(Some(build(REV, None, Some(D2), false)), Some(current(D1, true))), None, Missing, promote(D2)),
            ("same digest, promoted: settle (unchanged)", false, status(Some(build(REV, None, Some(D1), false)), Some(current(D1, true))), None, Missing, settle(D1)),
            ("promotion interrupted: resume", false, status(Some(build(REV, None, Some(D1), false)), Some(current(D1, false))), None, Missing, promote(D1)),
            ("a tag added after promotion: resume", false, status(Some(build(REV, None, Some(D1), false)), Some(CurrentStatus { tags: vec![], ..current(D1, true) })), None, Missing, promote(D1)),
            ("digest known: the job no longer matters", false, status(Some(build(REV, None, Some(D1), false)), Some(current(D1, true))), None, failed(), settle(D1)),
            ("old build's digest is never promoted", false, status(Some(build(OLD, None, Some(D2), false)), Some(current(D1, true))), None, Running, Plan::AwaitJob),
        ];
        for (name, suspend, status, rebuild, job, expected) in rows {
            let spec = spec(suspend);
            let plan = decide(Observed {
                spec: &spec,
                status: &status,
                rebuild,
                job: &job,
            });
            assert_eq!(plan, expected, "{name}");
        }
    }
}
