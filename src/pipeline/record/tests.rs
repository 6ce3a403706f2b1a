//! The record table: for every plan, what status and Events a step records.

use super::*;
use crate::api::Phase;
use crate::pipeline::fixtures::*;
use crate::pipeline::observe::{Inputs, JobState, ObservedJob};
use crate::pipeline::outcome::PinOutcome;

const NOW: i64 = 100;

struct Row {
    name: &'static str,
    fixture: Fixture,
    job: JobState,
    plan: Plan,
    outcome: Outcome,
    fault: Option<Fault>,
    phase: Option<Phase>,
    /// Every condition as (type, status, reason), in order.
    conditions: Vec<(&'static str, &'static str, &'static str)>,
    /// The Events' reasons, in order.
    events: Vec<&'static str>,
}

fn row(name: &'static str, fixture: Fixture, plan: Plan, outcome: Outcome) -> Row {
    Row {
        name,
        fixture,
        job: JobState::Missing,
        plan,
        outcome,
        fault: None,
        phase: None,
        conditions: vec![],
        events: vec![],
    }
}

impl Row {
    fn job(mut self, job: JobState) -> Self {
        self.job = job;
        self
    }
    fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
    fn expect(
        mut self,
        phase: Phase,
        conditions: &[(&'static str, &'static str, &'static str)],
        events: &[&'static str],
    ) -> Self {
        self.phase = Some(phase);
        self.conditions = conditions.to_vec();
        self.events = events.to_vec();
        self
    }
}

const READY: &str = types::READY;
const RECONCILING: &str = types::RECONCILING;
const STALLED: &str = types::STALLED;
const BUILT: &str = types::BUILT;

#[test]
fn record_table() {
    let d2 = || D2.to_owned();
    let resolve = |reported: Option<&str>| Plan::ResolveDigest {
        reported: reported.map(Into::into),
    };
    let building = || {
        Fixture::new()
            .build(build(REV, None, None, false))
            .status(|s| s.phase = Some(Phase::Building))
    };
    let transient = Fault::transient(reasons::KUBERNETES_API_ERROR, "the API server answered 500");
    let rows = vec![
        row(
            "an invalid spec stalls and says so once",
            Fixture::new(),
            Plan::Stall {
                reason: reasons::INVALID_SPEC,
                message: "targets name X twice".into(),
            },
            Outcome::Nothing,
        )
        .expect(
            Phase::Stalled,
            &[
                (READY, "False", "InvalidSpec"),
                (STALLED, "True", "InvalidSpec"),
            ],
            &["InvalidSpec"],
        ),
        row(
            "the same stall again announces nothing",
            Fixture::new().status(stalled_with("InvalidSpec", "targets name X twice")),
            Plan::Stall {
                reason: reasons::INVALID_SPEC,
                message: "targets name X twice".into(),
            },
            Outcome::Nothing,
        )
        .expect(
            Phase::Stalled,
            &[
                (READY, "False", "InvalidSpec"),
                (STALLED, "True", "InvalidSpec"),
            ],
            &[],
        ),
        row("suspended", Fixture::new(), Plan::Suspend, Outcome::Nothing).expect(
            Phase::Suspended,
            &[(READY, "False", "Suspended")],
            &[],
        ),
        row(
            "a created Job starts the build and deletes the one it supersedes",
            Fixture::new().build(build(OLD, None, None, false)),
            Plan::CreateJob,
            Outcome::JobCreated {
                superseded: vec!["banana-old".into()],
                reuse_refused: None,
            },
        )
        .expect(
            Phase::Building,
            &[
                (BUILT, "False", "Building"),
                (READY, "False", "Building"),
                (RECONCILING, "True", "Building"),
            ],
            &["BuildStarted", "BuildSuperseded"],
        ),
        row(
            "waiting for inputs records nothing",
            Fixture::new().inputs(Inputs::Pending),
            Plan::AwaitInputs,
            Outcome::Nothing,
        ),
        row(
            "unreadable inputs: the build starts and a warning says why",
            Fixture::new().inputs(Inputs::Unreadable("the server answered 401".into())),
            Plan::CreateJob,
            Outcome::JobCreated {
                superseded: vec![],
                reuse_refused: None,
            },
        )
        .expect(
            Phase::Building,
            &[
                (BUILT, "False", "Building"),
                (READY, "False", "Building"),
                (RECONCILING, "True", "Building"),
            ],
            &["BuildStarted", "InputsUnreadable"],
        ),
        row(
            "a skipped build reuses the digest, with no Job and one Event",
            Fixture::new()
                .build(keyed(OLD, D1, "k1"))
                .current(current(D1, true))
                .status(|s| s.phase = Some(Phase::Promoted))
                .inputs(known("k1")),
            Plan::Reuse {
                digest: D1.into(),
                from: OLD.into(),
            },
            Outcome::Reused { tagged: true },
        )
        .expect(
            Phase::Promoting,
            &[(BUILT, "True", "BuildSkipped")],
            &["BuildSkipped"],
        ),
        row(
            "a digest to reuse that is gone: the build starts",
            Fixture::new()
                .build(keyed(OLD, D1, "k1"))
                .inputs(known("k1")),
            Plan::Reuse {
                digest: D1.into(),
                from: OLD.into(),
            },
            Outcome::JobCreated {
                superseded: vec![],
                reuse_refused: Some("gone".into()),
            },
        )
        .expect(
            Phase::Building,
            &[
                (BUILT, "False", "Building"),
                (READY, "False", "Building"),
                (RECONCILING, "True", "Building"),
            ],
            &["BuildStarted"],
        ),
        row(
            "a Job that cannot be created for a missing Secret stalls, and no build starts",
            Fixture::new(),
            Plan::CreateJob,
            Outcome::Nothing,
        )
        .fault(Fault::stalled(
            reasons::SECRET_NOT_FOUND,
            "Secret shop/push does not exist",
        ))
        .expect(
            Phase::Stalled,
            &[
                (READY, "False", "SecretNotFound"),
                (STALLED, "True", "SecretNotFound"),
            ],
            &["SecretNotFound"],
        ),
        row(
            "a running Job already recorded records nothing new",
            Fixture::new()
                .build(build(REV, None, None, false))
                .status(|s| s.phase = Some(Phase::Building)),
            Plan::AwaitJob,
            Outcome::Nothing,
        )
        .job(JobState::Running)
        .expect(
            Phase::Building,
            &[
                (READY, "False", "Building"),
                (RECONCILING, "True", "Building"),
            ],
            &[],
        ),
        row(
            "a failed Job is a stalled build",
            Fixture::new().build(build(REV, None, None, false)),
            Plan::RecordFailure {
                reason: "BackoffLimitExceeded".into(),
                message: "exit 1".into(),
            },
            Outcome::Nothing,
        )
        .job(failed())
        .expect(
            Phase::Failed,
            &[
                (BUILT, "False", "BuildFailed"),
                (READY, "False", "BuildFailed"),
                (STALLED, "True", "BuildFailed"),
            ],
            &["BuildFailed"],
        ),
        row(
            "a reported digest the tag points at finishes the build",
            building(),
            resolve(Some(D2)),
            Outcome::DigestResolved { tagged: d2() },
        )
        .job(JobState::Succeeded)
        .expect(
            Phase::Building,
            &[(BUILT, "True", "BuildSucceeded")],
            &["DigestResolved"],
        ),
        row(
            "a build that reported nothing is finished by its tag",
            building(),
            resolve(None),
            Outcome::DigestResolved { tagged: d2() },
        )
        .job(JobState::Succeeded)
        .expect(
            Phase::Building,
            &[(BUILT, "True", "BuildSucceeded")],
            &["DigestResolved"],
        ),
        row(
            "a tag on another digest than reported stalls, and nothing is built",
            building(),
            resolve(Some(D1)),
            Outcome::DigestResolved { tagged: d2() },
        )
        .job(JobState::Succeeded)
        .expect(
            Phase::Stalled,
            &[
                (BUILT, "False", "DigestMismatch"),
                (READY, "False", "DigestMismatch"),
                (STALLED, "True", "DigestMismatch"),
            ],
            &["DigestMismatch"],
        ),
        row(
            "a registry fault while resolving is retried and shown on Ready",
            Fixture::new()
                .build(build(REV, None, None, false))
                .status(|s| s.phase = Some(Phase::Building)),
            resolve(None),
            Outcome::Nothing,
        )
        .job(JobState::Succeeded)
        .fault(Fault::transient(
            reasons::REGISTRY_ERROR,
            "registry resolve r.example/banana:111111111111: HTTP 502",
        ))
        .expect(
            Phase::Building,
            &[
                (READY, "False", "RegistryError"),
                (RECONCILING, "True", "RegistryError"),
            ],
            &[],
        ),
        row(
            "a new digest is recorded before anything moves",
            Fixture::new()
                .build(build(REV, None, Some(D2), false))
                .current(current(D1, true))
                .status(|s| s.phase = Some(Phase::Building)),
            Plan::StartPromotion { digest: d2() },
            Outcome::Nothing,
        )
        .expect(
            Phase::Promoting,
            &[
                (READY, "False", "Promoting"),
                (RECONCILING, "True", "Promoting"),
            ],
            &[],
        ),
        row(
            "tags moved and targets pinned: promoted",
            promoting(),
            Plan::Promote { digest: d2() },
            Outcome::Promoted {
                tags: moved("latest"),
                targets: Some(pin(written("old"))),
            },
        )
        .expect(
            Phase::Promoted,
            &[(READY, "True", "Promoted")],
            &["Promoted", "TagMoved", "TargetPinned"],
        ),
        row(
            "a target write that fails is retried; the promotion stays open",
            promoting(),
            Plan::Promote { digest: d2() },
            Outcome::Promoted {
                tags: moved("latest"),
                targets: Some(pin(Err(transient.clone()))),
            },
        )
        .fault(transient.clone())
        .expect(
            Phase::Promoting,
            &[
                (READY, "False", "KubernetesAPIError"),
                (RECONCILING, "True", "KubernetesAPIError"),
            ],
            &["TagMoved"],
        ),
        row(
            "a target that is gone stalls the promotion",
            promoting(),
            Plan::Promote { digest: d2() },
            Outcome::Promoted {
                tags: vec![],
                targets: Some(pin(Err(Fault::stalled(
                    reasons::TARGET_NOT_FOUND,
                    "target Deployment shop/banana does not exist",
                )))),
            },
        )
        .fault(Fault::stalled(
            reasons::TARGET_NOT_FOUND,
            "target Deployment shop/banana does not exist",
        ))
        .expect(
            Phase::Stalled,
            &[
                (READY, "False", "TargetNotFound"),
                (STALLED, "True", "TargetNotFound"),
            ],
            &["TargetNotFound"],
        ),
        row(
            "a tag added after the promotion is caught up without a new promotion",
            Fixture::new()
                .build(build(REV, None, Some(D2), false))
                .current(CurrentStatus {
                    revision: REV.into(),
                    tags: vec![],
                    ..current(D2, true)
                })
                .status(|s| s.phase = Some(Phase::Promoted)),
            Plan::Promote { digest: d2() },
            Outcome::Promoted {
                tags: moved("latest"),
                targets: Some(pin(Ok(PinOutcome::AlreadyPinned))),
            },
        )
        .expect(
            Phase::Promoted,
            &[(READY, "True", "Promoted")],
            &["TagMoved"],
        ),
        row(
            "same digest as the current one: unchanged, nothing moved",
            Fixture::new()
                .build(build(REV, None, Some(D1), false))
                .current(current(D1, true))
                .status(|s| s.phase = Some(Phase::Building)),
            Plan::Settle { digest: D1.into() },
            Outcome::Settled {
                targets: pin(Ok(PinOutcome::AlreadyPinned)),
            },
        )
        .expect(
            Phase::Unchanged,
            &[(READY, "True", "Unchanged")],
            &["Unchanged"],
        ),
        row(
            "a drifted target is re-pinned and reported",
            Fixture::new()
                .build(build(REV, None, Some(D2), false))
                .current(CurrentStatus {
                    revision: REV.into(),
                    ..current(D2, true)
                })
                .status(|s| s.phase = Some(Phase::Promoted)),
            Plan::Settle { digest: d2() },
            Outcome::Settled {
                targets: pin(written("example.org/hotfix:1")),
            },
        )
        .expect(
            Phase::Promoted,
            &[(READY, "True", "Promoted")],
            &["TargetDrifted", "TargetPinned"],
        ),
    ];
    let plans: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| std::mem::discriminant(&r.plan))
        .map(|d| format!("{d:?}"))
        .collect();
    assert_eq!(plans.len(), 11, "every plan has a row");
    for row in rows {
        let job = ObservedJob {
            state: row.job.clone(),
            ..ObservedJob::default()
        };
        let observed = row.fixture.observed(&job);
        let recorded = record(
            &observed,
            &row.plan,
            &row.outcome,
            row.fault.as_ref(),
            &at(NOW),
        );
        let name = row.name;
        assert_eq!(recorded.status.phase, row.phase, "{name}: phase");
        let conditions: Vec<_> = recorded
            .status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(conditions, row.conditions, "{name}: conditions");
        let events: Vec<_> = recorded.events.iter().map(|e| e.reason).collect();
        assert_eq!(events, row.events, "{name}: events");
        assert!(
            recorded
                .status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3)),
            "{name}: every condition names the generation it describes"
        );
    }
}
