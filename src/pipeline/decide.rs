//! Decide: from what was observed to the next step. Pure: no I/O, no clock.
//!
//! The state that makes this resumable lives in `status`: `status.build` says which build
//! (revision, rebuild token) is current and what digest it produced; `status.current` says which
//! digest the targets should run, and `current.promotedAt` is set only once every tag and
//! target carries it. A crash between any two steps leaves a status from which [`decide`] picks
//! the same next step again, and every step first checks whether it is already done.

use super::observe::{Inputs, JobState, Observed};
use super::validate::{check_policy, validate};
use crate::api::ServiceBuildStatus;
use crate::conditions::reasons;

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The spec is wrong in a way admission could not see: record Stalled, do nothing else.
    Stall {
        reason: &'static str,
        message: String,
    },
    /// `spec.suspend`: do nothing but show it.
    Suspend,
    /// The wanted build's inputs are being fetched: wait for them (nothing is recorded).
    AwaitInputs,
    /// The wanted build's inputs equal those of the recorded build of `from`: give its
    /// `digest` the revision's tag instead of building (a Job is created after all when the
    /// digest is no longer in the registry).
    Reuse { digest: String, from: String },
    /// The wanted build has no Job: create it, and delete any Job it supersedes.
    CreateJob,
    /// The wanted build's Job runs: record Building and wait for it.
    AwaitJob,
    /// The wanted build's Job failed: record Failed and wait for a new revision or rebuild.
    RecordFailure { reason: String, message: String },
    /// The wanted build succeeded: read the digest its revision tag points at from the
    /// registry, and hold it against the digest the build `reported`, if it reported one.
    ResolveDigest { reported: Option<String> },
    /// The build's digest is new: record it as current (and write that) before anything moves,
    /// so that a crash resumes this same promotion.
    StartPromotion { digest: String },
    /// The digest is recorded as current but not on every tag and target yet: move the tags,
    /// pin the targets, then record the promotion.
    Promote { digest: String },
    /// The build's digest is current and promoted: keep targets pinned to it (re-pin drift).
    Settle { digest: String },
    /// As [`Plan::Settle`], but this replica found every target pinned to the digest less
    /// than a resync period ago and the status shows each in sync: nothing is read until that
    /// period ends (a commit that reuses the current digest reads no target).
    Steady { digest: String },
}

impl Plan {
    /// Whether this step's status must be written before the reconcile goes on to the next.
    pub fn writes_before_next(&self) -> bool {
        matches!(self, Self::StartPromotion { .. })
    }
}

/// The next step for what was observed.
pub fn decide(observed: &Observed<'_>) -> Plan {
    decide_without_job(observed).unwrap_or_else(|| decide_by_job(observed))
}

/// The next step, when it does not depend on the wanted build's Job: an invalid spec, a
/// suspended ServiceBuild, a finished build, inputs still being read, or a reuse. `None`: the
/// Job decides. The reconcile reads the Job only then, so a skipped build costs no Job read.
/// Never looks at `observed.job`.
pub fn decide_without_job(observed: &Observed<'_>) -> Option<Plan> {
    let Observed {
        namespace,
        spec,
        status,
        ..
    } = *observed;
    let checked = validate(spec, namespace).and_then(|()| {
        check_policy(
            spec,
            namespace,
            observed.policy,
            observed.accepting_namespaces,
        )
    });
    if let Err(error) = checked {
        return Some(Plan::Stall {
            reason: error.reason(),
            message: error.to_string(),
        });
    }
    if spec.suspend {
        return Some(Plan::Suspend);
    }
    let recorded = observed
        .build_is_current()
        .then_some(status.build.as_ref())
        .flatten();
    if let Some(digest) = recorded.and_then(|b| b.digest.as_deref()) {
        // The build is finished and its digest known: promotion, or steady state.
        // Promoted means: the digest is current, its promotion finished, and every floating
        // tag the spec asks for was moved (a tag added later resumes the promotion).
        let digest = digest.to_owned();
        let current = status.current.as_ref().filter(|c| c.digest == digest);
        return Some(match current {
            None => Plan::StartPromotion { digest },
            Some(c)
                if c.promoted_at.is_some()
                    && spec.image.tags.iter().all(|t| c.tags.contains(t)) =>
            {
                if targets_checked(observed, &digest) {
                    Plan::Steady { digest }
                } else {
                    Plan::Settle { digest }
                }
            }
            Some(_) => Plan::Promote { digest },
        });
    }
    // A build whose tag was found on another digest than it reported stays stalled: only a new
    // revision or rebuild token builds again.
    if let Some(build) =
        recorded.filter(|b| b.failure_reason.as_deref() == Some(reasons::DIGEST_MISMATCH))
    {
        return Some(Plan::Stall {
            reason: reasons::DIGEST_MISMATCH,
            message: build.message.clone().unwrap_or_default(),
        });
    }
    if recorded.is_none() && observed.tag_claimed_by.is_none() {
        // The inputs decide whether a Job is wanted at all: until they are read, no Job is
        // read or created, even one already there (the fetch that ends, or fails, wakes this
        // ServiceBuild; a fetch is bounded in time).
        if matches!(observed.inputs, Inputs::Pending) {
            return Some(Plan::AwaitInputs);
        }
        // Inputs equal to a recorded build's: reuse its digest, even when a Job of this
        // revision is still there (a rollback to a revision built before).
        return reuse(observed);
    }
    None
}

/// Whether settling `digest` needs no target read: this replica found every target pinned to
/// it less than a resync period ago ([`Observed::targets_checked`]), and the status still
/// shows each target of the spec in sync at it.
fn targets_checked(observed: &Observed<'_>, digest: &str) -> bool {
    let Observed {
        namespace,
        spec,
        status,
        ..
    } = *observed;
    observed.targets_checked == Some(digest)
        && spec.targets.len() == status.targets.len()
        && spec.targets.iter().all(|target| {
            let id = target.id(namespace);
            status
                .targets
                .iter()
                .any(|t| t.target == id && t.in_sync && t.digest.as_deref() == Some(digest))
        })
}

/// The next step, read from the wanted build's Job, when [`decide_without_job`] gave none.
pub fn decide_by_job(observed: &Observed<'_>) -> Plan {
    let Observed {
        namespace,
        status,
        job,
        ..
    } = *observed;
    let recorded = observed
        .build_is_current()
        .then_some(status.build.as_ref())
        .flatten();
    match &job.state {
        JobState::Succeeded => Plan::ResolveDigest {
            reported: job.reported_digest.clone(),
        },
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
                None => match observed.tag_claimed_by {
                    // Two builds must not push to one tag: the older ServiceBuild keeps it.
                    Some(other) => Plan::Stall {
                        reason: reasons::IMAGE_TAG_CLAIMED,
                        message: format!(
                            "ServiceBuild {namespace}/{other}, created earlier, also pushes to \
                             {}; two builds must not push to one tag, so this one does not \
                             build: give it another image.repository or image.revisionTag",
                            observed.wanted.image
                        ),
                    },
                    None => build_or_reuse(observed),
                },
            }
        }
    }
}

/// The wanted build is not recorded and has no Job: build it, or reuse the digest of a recorded
/// build with the same input key. The rebuild annotation and `build.skipUnchanged: false`
/// always build; inputs that could not be read build too (never skip on doubt). Either way the
/// inputs were waited for ([`decide_without_job`]), so that the build knows its key.
fn build_or_reuse(observed: &Observed<'_>) -> Plan {
    match observed.inputs {
        Inputs::Pending => Plan::AwaitInputs,
        _ => reuse(observed).unwrap_or(Plan::CreateJob),
    }
}

/// Reuse the digest of a recorded build with the same input key, unless the rebuild annotation
/// or `build.skipUnchanged: false` asks for a build.
fn reuse(observed: &Observed<'_>) -> Option<Plan> {
    let Inputs::Known(key) = observed.inputs else {
        return None;
    };
    if observed.wanted.rebuild.is_some() || !observed.spec.build.skip_unchanged {
        return None;
    }
    reusable(observed.status, &key.key).map(|(digest, from)| Plan::Reuse { digest, from })
}

/// The digest and revision of a recorded build with input key `key`: the latest build first,
/// then the history, newest first.
pub fn reusable(status: &ServiceBuildStatus, key: &str) -> Option<(String, String)> {
    let latest = status
        .build
        .as_ref()
        .filter(|b| b.input_key.as_deref() == Some(key) && b.failure_reason.is_none());
    if let Some((build, digest)) = latest.and_then(|b| b.digest.as_ref().map(|d| (b, d))) {
        return Some((digest.clone(), build.revision.clone()));
    }
    status
        .history
        .iter()
        .find(|h| h.input_key.as_deref() == Some(key))
        .map(|h| (h.digest.clone(), h.revision.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BuildStatus, CurrentStatus};
    use crate::pipeline::fixtures::*;
    use crate::pipeline::observe::ObservedJob;

    /// Each row: what was observed, and the step that must follow.
    #[test]
    fn decision_table() {
        use JobState::*;
        let start = |d: &str| Plan::StartPromotion { digest: d.into() };
        let promote = |d: &str| Plan::Promote { digest: d.into() };
        let settle = |d: &str| Plan::Settle { digest: d.into() };
        let record_failure = Plan::RecordFailure {
            reason: "BackoffLimitExceeded".into(),
            message: "exit 1".into(),
        };
        let resolve = |reported: Option<&str>| Plan::ResolveDigest {
            reported: reported.map(Into::into),
        };
        let mismatch = || crate::api::BuildStatus {
            failure_reason: Some("DigestMismatch".into()),
            message: Some("reported A, tag at B".into()),
            ..build(REV, None, None, false)
        };
        let reuse = |d: &str, from: &str| Plan::Reuse {
            digest: d.into(),
            from: from.into(),
        };
        let entry = |key: &str| crate::api::HistoryEntry {
            revision: "3".repeat(40),
            digest: D1.into(),
            promoted: true,
            input_key: Some(key.into()),
            skipped: false,
            at: at(1),
        };
        let steady = |d: &str| Plan::Steady { digest: d.into() };
        // The status after a check that found the one target pinned to `digest`.
        let in_sync = |digest: &str, in_sync: bool| {
            let target = crate::api::TargetStatus {
                target: TARGET.into(),
                digest: Some(digest.into()),
                in_sync,
                ..crate::api::TargetStatus::default()
            };
            Fixture::new()
                .build(build(REV, None, Some(D1), false))
                .current(current(D1, true))
                .status(|s| s.targets = vec![target])
        };
        let no_latest = || CurrentStatus {
            tags: vec![],
            ..current(D1, true)
        };
        type Row<'a> = (&'a str, Fixture, JobState, Plan);
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("an unrenderable revisionTag stalls", Fixture::new().revision_tag("{revision}{revision}{revision}{revision}"), Succeeded,
                Plan::Stall { reason: "InvalidSpec", message: format!("image.revisionTag \"{0}\" renders to \"{1}\", which is not a valid tag (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')", "{revision}".repeat(4), REV.repeat(4)) }),
            ("suspended does nothing, whatever else", Fixture::new().suspend(), Succeeded, Plan::Suspend),
            ("new object: build", Fixture::new(), Missing, Plan::CreateJob),
            ("new revision: build", Fixture::new().build(build(OLD, None, Some(D1), false)).current(current(D1, true)), Missing, Plan::CreateJob),
            ("job created, status not yet", Fixture::new(), Running, Plan::AwaitJob),
            ("job runs", Fixture::new().build(build(REV, None, None, false)), Running, Plan::AwaitJob),
            ("job failed", Fixture::new().build(build(REV, None, None, false)), failed(), record_failure.clone()),
            ("failure recorded, job gone: stays failed", Fixture::new().build(build(REV, None, None, true)), Missing, record_failure.clone()),
            ("failure recorded, new rebuild token: build", Fixture::new().build(build(REV, None, None, true)).rebuild("2"), Missing, Plan::CreateJob),
            ("same revision, same token as failed: no retry", Fixture::new().build(build(REV, Some("2"), None, true)).rebuild("2"), Missing, record_failure.clone()),
            ("job succeeded: resolve", Fixture::new().build(build(REV, None, None, false)), Succeeded, resolve(None)),
            ("job succeeded before status caught up", Fixture::new().build(build(OLD, None, Some(D1), false)).current(current(D1, true)), Succeeded, resolve(None)),
            ("an older ServiceBuild pushes to the same tag: no Job", Fixture::new().claimed_by("apple"), Missing,
                Plan::Stall { reason: "ImageTagClaimed", message: format!("ServiceBuild shop/apple, created earlier, also pushes to r.example/banana:{}; two builds must not push to one tag, so this one does not build: give it another image.repository or image.revisionTag", &REV[..12]) }),
            ("a claimed tag does not stop a build already running", Fixture::new().build(build(REV, None, None, false)).claimed_by("apple"), Running, Plan::AwaitJob),
            ("a digest mismatch stays stalled, the Job no longer read", Fixture::new().build(mismatch()), Succeeded,
                Plan::Stall { reason: "DigestMismatch", message: "reported A, tag at B".into() }),
            ("a digest mismatch, new rebuild token: build", Fixture::new().build(mismatch()).rebuild("2"), Missing, Plan::CreateJob),
            ("first digest: record it before anything moves", Fixture::new().build(build(REV, None, Some(D1), false)), Missing, start(D1)),
            ("new digest: record it before anything moves", Fixture::new().build(build(REV, None, Some(D2), false)).current(current(D1, true)), Missing, start(D2)),
            ("new digest recorded: promote", Fixture::new().build(build(REV, None, Some(D2), false)).current(current(D2, false)), Missing, promote(D2)),
            ("same digest, promoted: settle (unchanged)", Fixture::new().build(build(REV, None, Some(D1), false)).current(current(D1, true)), Missing, settle(D1)),
            ("same digest, targets found pinned within the period: steady, nothing read", in_sync(D1, true).targets_checked(D1), Missing, steady(D1)),
            ("targets checked at another digest: settle", in_sync(D1, true).targets_checked(D2), Missing, settle(D1)),
            ("targets checked, but the status shows one out of sync: settle", in_sync(D1, false).targets_checked(D1), Missing, settle(D1)),
            ("targets checked, but the status has another digest: settle", in_sync(D2, true).targets_checked(D1), Missing, settle(D1)),
            ("targets checked, but a target was added since: settle", in_sync(D1, true).targets_checked(D1).status(|s| s.targets[0].target = "Deployment/shop/other:app".into()), Missing, settle(D1)),
            ("a check is due (none within the period): settle", in_sync(D1, true), Missing, settle(D1)),
            ("targets checked, promotion not finished: promote", in_sync(D1, true).targets_checked(D1).current(current(D1, false)), Missing, promote(D1)),
            ("promotion interrupted: resume", Fixture::new().build(build(REV, None, Some(D1), false)).current(current(D1, false)), Missing, promote(D1)),
            ("a tag added after promotion: resume", Fixture::new().build(build(REV, None, Some(D1), false)).current(no_latest()), Missing, promote(D1)),
            ("digest known: the job no longer matters", Fixture::new().build(build(REV, None, Some(D1), false)).current(current(D1, true)), failed(), settle(D1)),
            ("inputs being fetched: wait, record nothing", Fixture::new().inputs(Inputs::Pending), Missing, Plan::AwaitInputs),
            ("inputs unreadable: build, never skip on doubt", Fixture::new().inputs(Inputs::Unreadable("401".into())), Missing, Plan::CreateJob),
            ("inputs of the last build: reuse its digest", Fixture::new().build(keyed(OLD, D1, "k1")).current(current(D1, true)).inputs(known("k1")), Missing, reuse(D1, OLD)),
            ("inputs of an older build: reuse (a rollback)", Fixture::new().build(keyed(OLD, D2, "k2")).current(current(D2, true)).status(|s| s.history = vec![entry("k1")]).inputs(known("k1")), Missing, reuse(D1, "3333333333333333333333333333333333333333")),
            ("new inputs: build", Fixture::new().build(keyed(OLD, D1, "k1")).current(current(D1, true)).inputs(known("k2")), Missing, Plan::CreateJob),
            ("same inputs, rebuild token: build", Fixture::new().build(keyed(OLD, D1, "k1")).rebuild("2").inputs(known("k1")), Missing, Plan::CreateJob),
            ("same inputs, skipping off: build", Fixture::new().build(keyed(OLD, D1, "k1")).skip_unchanged(false).inputs(known("k1")), Missing, Plan::CreateJob),
            ("same inputs as a failed build: build", Fixture::new().build(BuildStatus { input_key: Some("k1".into()), ..build(OLD, None, None, true) }).inputs(known("k1")), Missing, Plan::CreateJob),
            ("inputs being fetched, Job already there: the inputs first, the Job unread", Fixture::new().inputs(Inputs::Pending), Running, Plan::AwaitInputs),
            ("inputs of an older build, its Job still there: reuse", Fixture::new().build(keyed(OLD, D2, "k2")).current(current(D2, true)).status(|s| s.history = vec![entry("k1")]).inputs(known("k1")), Succeeded, reuse(D1, "3333333333333333333333333333333333333333")),
            ("inputs being fetched, tag claimed: stall first", Fixture::new().claimed_by("apple").inputs(Inputs::Pending), Missing,
                Plan::Stall { reason: "ImageTagClaimed", message: format!("ServiceBuild shop/apple, created earlier, also pushes to r.example/banana:{}; two builds must not push to one tag, so this one does not build: give it another image.repository or image.revisionTag", &REV[..12]) }),
            ("old build's digest is never promoted", Fixture::new().build(build(OLD, None, Some(D2), false)).current(current(D1, true)), Running, Plan::AwaitJob),
        ];
        for (name, fixture, state, expected) in rows {
            let job = ObservedJob {
                state,
                ..ObservedJob::default()
            };
            let plan = decide(&fixture.observed(&job));
            assert_eq!(plan, expected, "{name}");
            // What needs no Job is decided the same whatever the Job is, so the reconcile
            // may leave it unread.
            let without = decide_without_job(&fixture.observed(&ObservedJob::missing()));
            assert_eq!(
                decide_without_job(&fixture.observed(&job)),
                without,
                "{name}"
            );
            if let Some(without) = without {
                assert_eq!(without, plan, "{name}");
            }
        }
        let reported = ObservedJob {
            state: Succeeded,
            reported_digest: Some(D1.into()),
            ..ObservedJob::default()
        };
        let fixture = Fixture::new().build(build(REV, None, None, false));
        assert_eq!(
            decide(&fixture.observed(&reported)),
            resolve(Some(D1)),
            "what the build reported goes with the resolution"
        );
    }
}
