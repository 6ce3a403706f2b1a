//! Record, one step at a time: what the table does not show (timestamps, history, a pod
//! that cannot run, provenance).

use super::*;
use crate::api::{BuildStatus, CurrentStatus, DigestSource, HistoryEntry, Phase};
use crate::pipeline::fixtures::*;
use crate::pipeline::observe::{JobState, ObservedJob};
use crate::pipeline::outcome::PinOutcome;

const NOW: i64 = 100;

/// A running Job whose pod cannot run: a cause in the spec stalls, anything else is shown while
/// Kubernetes retries; either is announced once.
#[test]
fn a_build_job_without_a_pod_says_why() {
    let refused = Fault::stalled(reasons::BUILD_POD_REJECTED, "violates PodSecurity");
    let pulling = Fault::transient(reasons::BUILD_POD_PENDING, "ImagePullBackOff");
    let building = || {
        Fixture::new()
            .build(build(REV, None, None, false))
            .status(|s| s.phase = Some(Phase::Building))
    };
    let cases = [
        (building(), &refused, Phase::Stalled, ("Stalled", "True"), 1),
        (
            building(),
            &pulling,
            Phase::Building,
            ("Reconciling", "True"),
            1,
        ),
    ];
    for (fixture, stuck, phase, (type_, status), events) in cases {
        let job = ObservedJob {
            state: JobState::Running,
            waiting_for_pod: true,
            stuck: Some(stuck.clone()),
            ..ObservedJob::default()
        };
        let first = record(
            &fixture.observed(&job),
            &Plan::AwaitJob,
            &Outcome::Nothing,
            None,
            &at(NOW),
        );
        assert_eq!(first.status.phase, Some(phase));
        let condition = first
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("the condition");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            (status, stuck.reason)
        );
        assert_eq!(first.events.len(), events, "{:?}", first.events);
        assert!(first.events[0].warning && first.events[0].message == stuck.message);
        let again = Fixture {
            status: first.status.clone(),
            ..Fixture::new()
        };
        let second = record(
            &again.observed(&job),
            &Plan::AwaitJob,
            &Outcome::Nothing,
            None,
            &at(NOW + 20),
        );
        assert!(
            second.events.is_empty(),
            "announced once: {:?}",
            second.events
        );
        assert_eq!(second.status, first.status);
    }
}

/// Where a digest comes from is recorded with it; a mismatch records no digest and says both.
#[test]
fn a_digest_is_recorded_with_its_provenance() {
    let fixture = Fixture::new().build(build(REV, None, None, false));
    let job = ObservedJob {
        state: JobState::Succeeded,
        completed: Some(at(50)),
        ..ObservedJob::default()
    };
    let resolved = |reported: Option<&str>| {
        let plan = Plan::ResolveDigest {
            reported: reported.map(Into::into),
        };
        let outcome = Outcome::DigestResolved { tagged: D2.into() };
        let recorded = record(&fixture.observed(&job), &plan, &outcome, None, &at(NOW));
        (
            recorded.status.build.expect("build"),
            recorded.status.conditions,
        )
    };
    let (reported, _) = resolved(Some(D2));
    assert_eq!(reported.digest.as_deref(), Some(D2));
    assert_eq!(reported.digest_source, Some(DigestSource::Reported));
    assert_eq!(reported.completion_time, Some(at(50)));
    let (tagged, conditions) = resolved(None);
    assert_eq!(tagged.digest_source, Some(DigestSource::Tag));
    let built = conditions
        .iter()
        .find(|c| c.type_ == types::BUILT)
        .expect("Built");
    assert!(
        built.message.contains("reported no digest"),
        "{}",
        built.message
    );
    let (mismatch, conditions) = resolved(Some(D1));
    assert_eq!((mismatch.digest, mismatch.digest_source), (None, None));
    assert_eq!(mismatch.failure_reason.as_deref(), Some("DigestMismatch"));
    let stalled = conditions
        .iter()
        .find(|c| c.type_ == types::STALLED)
        .expect("Stalled");
    assert!(
        stalled.message.contains(D1) && stalled.message.contains(D2),
        "{}",
        stalled.message
    );
}

#[test]
fn a_repeated_step_records_the_same_status_and_no_event() {
    let fixture = Fixture::new()
        .build(build(REV, None, Some(D1), false))
        .current(current(D1, true));
    let job = ObservedJob::missing();
    let plan = Plan::Settle { digest: D1.into() };
    let outcome = Outcome::Settled {
        targets: pin(Ok(PinOutcome::AlreadyPinned)),
    };
    let first = record(&fixture.observed(&job), &plan, &outcome, None, &at(NOW));
    let again = Fixture {
        status: first.status.clone(),
        ..Fixture::new()
    };
    let second = record(&again.observed(&job), &plan, &outcome, None, &at(NOW + 60));
    assert_eq!(
        second.status, first.status,
        "timestamps move only on transitions"
    );
    assert!(second.events.is_empty(), "{:?}", second.events);
}

#[test]
fn a_promotion_records_history_and_the_promotion_time() {
    let job = ObservedJob::missing();
    let fixture = promoting();
    let recorded = record(
        &fixture.observed(&job),
        &Plan::Promote { digest: D2.into() },
        &Outcome::Promoted {
            tags: vec![],
            targets: Some(pin(written("old"))),
        },
        None,
        &at(NOW),
    );
    let current = recorded.status.current.expect("current");
    assert_eq!(current.promoted_at, Some(at(NOW)));
    assert_eq!(current.tags, ["latest"]);
    let history = &recorded.status.history[0];
    assert_eq!((history.revision.as_str(), history.promoted), (REV, true));
    let target = &recorded.status.targets[0];
    assert!(target.in_sync && target.message.is_none());
    assert_eq!(target.updated_at, Some(at(NOW)));
}

#[test]
fn a_build_started_by_a_running_job_keeps_the_job_start_time() {
    let job = ObservedJob {
        state: JobState::Running,
        started: Some(at(42)),
        ..ObservedJob::default()
    };
    let fixture = Fixture::new();
    let recorded = record(
        &fixture.observed(&job),
        &Plan::AwaitJob,
        &Outcome::Nothing,
        None,
        &at(NOW),
    );
    let build = recorded.status.build.expect("build");
    assert_eq!(build.start_time, Some(at(42)));
    assert_eq!(
        (build.job_name.as_str(), build.revision.as_str()),
        (JOB, REV)
    );
}

#[test]
fn history_is_bounded_and_not_repeated() {
    let mut status = ServiceBuildStatus::default();
    for i in 0..5 {
        let entry = HistoryEntry {
            revision: format!("r{i}"),
            digest: "d".into(),
            promoted: false,
            input_key: None,
            skipped: false,
            at: at(i),
        };
        record_history(&mut status, entry.clone(), 3);
        record_history(&mut status, entry, 3);
    }
    let revisions: Vec<_> = status.history.iter().map(|h| h.revision.as_str()).collect();
    assert_eq!(revisions, ["r4", "r3", "r2"]);
}

/// A skipped build: no Job, the reused digest recorded with where it comes from, then settled
/// as Unchanged with a history entry that says it was skipped.
#[test]
fn a_skipped_build_is_recorded_then_settles_unchanged() {
    let fixture = Fixture::new()
        .build(keyed(OLD, D1, "k1"))
        .current(current(D1, true))
        .status(|s| s.phase = Some(Phase::Promoted))
        .inputs(known("k1"));
    let job = ObservedJob::missing();
    let plan = Plan::Reuse {
        digest: D1.into(),
        from: OLD.into(),
    };
    let reused = record(
        &fixture.observed(&job),
        &plan,
        &Outcome::Reused { tagged: true },
        None,
        &at(NOW),
    );
    let build = reused.status.build.clone().unwrap();
    assert_eq!(build.revision, REV);
    assert_eq!(build.job_name, "", "no Job");
    assert_eq!(build.digest.as_deref(), Some(D1));
    assert_eq!(build.digest_source, Some(crate::api::DigestSource::Reused));
    assert_eq!(build.reused_from.as_deref(), Some(OLD));
    assert_eq!(build.input_key.as_deref(), Some("k1"));
    let message = build.inputs_message.unwrap();
    assert!(
        message.starts_with("inputs unchanged since revision 222222222222: services/banana (tree aaaaaaaaaaaa), the build template and the image repository; reusing sha256:aaaa"),
        "{message}"
    );
    assert_eq!(reused.events[0].reason, reasons::BUILD_SKIPPED);
    assert!(
        reused.events[0]
            .message
            .contains("services/banana (tree aaaaaaaaaaaa)")
    );

    let mut next = fixture;
    next.status = reused.status;
    let settle = Plan::Settle { digest: D1.into() };
    let settled = record(
        &next.observed(&job),
        &settle,
        &Outcome::Settled {
            targets: pin(Ok(PinOutcome::AlreadyPinned)),
        },
        None,
        &at(NOW + 1),
    );
    assert_eq!(settled.status.phase, Some(Phase::Unchanged));
    let head = &settled.status.history[0];
    assert_eq!(
        (head.revision.as_str(), head.promoted, head.skipped),
        (REV, false, true)
    );
    assert_eq!(head.input_key.as_deref(), Some("k1"));
    let ready = settled
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("reuses sha256:aaaa"),
        "{}",
        ready.message
    );
    assert_eq!(
        settled.events,
        [],
        "no DigestResolved and no Unchanged for a skipped build: BuildSkipped said it"
    );
    // Steady (every target found pinned within the period) records the same, the target
    // entries left as they were.
    let steady = Plan::Steady { digest: D1.into() };
    let steady = record(
        &next.observed(&job),
        &steady,
        &Outcome::Nothing,
        None,
        &at(NOW + 1),
    );
    assert_eq!(steady.status.targets, next.status.targets);
    assert_eq!(
        crate::api::ServiceBuildStatus {
            targets: settled.status.targets.clone(),
            ..steady.status
        },
        settled.status
    );
    assert_eq!(steady.events, []);
}

/// A rollback by reuse: the ServiceBuild whose own promotion moved the digest back stays
/// Promoted on every settle; one whose digest never moved is Unchanged, even at the revision
/// that first promoted it.
#[test]
fn a_reused_build_is_promoted_only_by_its_own_promotion() {
    let reused = BuildStatus {
        reused_from: Some(OLD.into()),
        digest_source: Some(DigestSource::Reused),
        job_name: String::new(),
        ..keyed(REV, D1, "k1")
    };
    let entry = |revision: &str, promoted: bool| HistoryEntry {
        revision: revision.into(),
        digest: D1.into(),
        promoted,
        input_key: Some("k1".into()),
        skipped: true,
        at: at(5),
    };
    let current = CurrentStatus {
        revision: REV.into(),
        ..current(D1, true)
    };
    let job = ObservedJob::missing();
    let settle = |history: Vec<HistoryEntry>| {
        let fixture = Fixture::new()
            .build(reused.clone())
            .current(current.clone())
            .status(|s| s.history = history);
        record(
            &fixture.observed(&job),
            &Plan::Settle { digest: D1.into() },
            &Outcome::Settled {
                targets: pin(Ok(PinOutcome::AlreadyPinned)),
            },
            None,
            &at(NOW),
        )
        .status
    };
    let rolled_back = settle(vec![entry(REV, true)]);
    assert_eq!(rolled_back.phase, Some(Phase::Promoted));
    assert_eq!(rolled_back.history.len(), 1, "nothing added");
    let untouched = settle(vec![entry(OLD, false)]);
    assert_eq!(untouched.phase, Some(Phase::Unchanged));
    assert_eq!(
        (
            untouched.history[0].revision.as_str(),
            untouched.history[0].promoted
        ),
        (REV, false)
    );
}
