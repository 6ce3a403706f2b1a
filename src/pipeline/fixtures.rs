//! Small builders of observed state for the decide and record tables.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::set_condition;
use super::observe::{Inputs, JobState, Observed, ObservedJob, Policy, WantedBuild};
use super::outcome::{Fault, PinOutcome, Pinned, TagMove, TargetOutcome};
use crate::api::{BuildStatus, CurrentStatus, Phase, ServiceBuildSpec, ServiceBuildStatus};
use crate::conditions::types;
use crate::inputs::git::PathObject;
use crate::inputs::key::InputKey;

pub const REV: &str = "1111111111111111111111111111111111111111";
pub const OLD: &str = "2222222222222222222222222222222222222222";
pub const D1: &str = "sha256:aaaa";
pub const D2: &str = "sha256:bbbb";
pub const JOB: &str = "banana-job";
pub const TARGET: &str = "Deployment/shop/banana:app";

const POLICY: Policy = Policy {
    allow_cross_namespace_targets: false,
    forbid_build_service_account: false,
};

pub fn at(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(seconds).unwrap_or_default())
}

pub fn build(
    revision: &str,
    rebuild: Option<&str>,
    digest: Option<&str>,
    failed: bool,
) -> BuildStatus {
    BuildStatus {
        short_revision: revision[..12].into(),
        revision: revision.into(),
        rebuild: rebuild.map(Into::into),
        job_name: if revision == REV {
            JOB.into()
        } else {
            "banana-old".into()
        },
        image: Some(format!("r.example/banana:{}", &revision[..12])),
        digest: digest.map(Into::into),
        start_time: Some(at(1)),
        failure_reason: failed.then(|| "BackoffLimitExceeded".into()),
        message: failed.then(|| "exit 1".into()),
        ..BuildStatus::default()
    }
}

pub fn current(digest: &str, promoted: bool) -> CurrentStatus {
    CurrentStatus {
        digest: digest.into(),
        short_digest: digest.into(),
        revision: OLD.into(),
        promoted_at: promoted.then(|| at(2)),
        tags: vec!["latest".into()],
    }
}

/// The inputs of the wanted build, read: input key `key`, one tree.
pub fn known(key: &str) -> Inputs {
    Inputs::Known(InputKey {
        key: key.into(),
        paths: vec![("services/banana".into(), PathObject::Tree("a".repeat(40)))],
    })
}

/// A finished build of `revision` with digest `digest` and input key `key`.
pub fn keyed(revision: &str, digest: &str, key: &str) -> BuildStatus {
    BuildStatus {
        input_key: Some(key.into()),
        ..build(revision, None, Some(digest), false)
    }
}

pub fn failed() -> JobState {
    JobState::Failed {
        reason: "BackoffLimitExceeded".into(),
        message: "exit 1".into(),
    }
}

/// A ServiceBuild `banana` in `shop` at [`REV`], tag `latest`, one Deployment target.
pub struct Fixture {
    pub spec: ServiceBuildSpec,
    pub status: ServiceBuildStatus,
    pub wanted: WantedBuild,
    pub tag_claimed_by: Option<String>,
    pub inputs: Inputs,
    pub targets_checked: Option<String>,
}

impl Fixture {
    pub fn new() -> Self {
        let spec = serde_json::from_value(serde_json::json!({
            "source": {"repository": "file:///repo", "revision": REV},
            "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
            "image": {"repository": "r.example/banana", "tags": ["latest"]},
            "targets": [{"kubernetes": {"kind": "Deployment", "name": "banana", "container": "app"}}],
        }))
        .unwrap_or_else(|error| panic!("fixture spec: {error}"));
        Self {
            spec,
            status: ServiceBuildStatus::default(),
            wanted: WantedBuild {
                revision: REV.into(),
                rebuild: None,
                job_name: JOB.into(),
                image: format!("r.example/banana:{}", &REV[..12]),
                input_key: None,
            },
            tag_claimed_by: None,
            inputs: Inputs::NotRead,
            targets_checked: None,
        }
    }

    /// This replica found every target pinned to `digest` less than a resync period ago.
    pub fn targets_checked(mut self, digest: &str) -> Self {
        self.targets_checked = Some(digest.into());
        self
    }

    pub fn inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    pub fn claimed_by(mut self, other: &str) -> Self {
        self.tag_claimed_by = Some(other.into());
        self
    }

    pub fn skip_unchanged(mut self, skip: bool) -> Self {
        self.spec.build.skip_unchanged = skip;
        self
    }

    pub fn suspend(mut self) -> Self {
        self.spec.suspend = true;
        self
    }

    pub fn revision_tag(mut self, template: &str) -> Self {
        self.spec.image.revision_tag = template.into();
        self
    }

    pub fn rebuild(mut self, token: &str) -> Self {
        self.wanted.rebuild = Some(token.into());
        self
    }

    pub fn build(mut self, build: BuildStatus) -> Self {
        self.status.build = Some(build);
        self
    }

    pub fn current(mut self, current: CurrentStatus) -> Self {
        self.status.current = Some(current);
        self
    }

    pub fn status(mut self, edit: impl FnOnce(&mut ServiceBuildStatus)) -> Self {
        edit(&mut self.status);
        self
    }

    pub fn observed<'a>(&'a self, job: &'a ObservedJob) -> Observed<'a> {
        Observed {
            namespace: "shop",
            generation: Some(3),
            spec: &self.spec,
            status: &self.status,
            wanted: &self.wanted,
            job,
            policy: &POLICY,
            accepting_namespaces: &[],
            tag_claimed_by: self.tag_claimed_by.as_deref(),
            inputs: &self.inputs,
            targets_checked: self.targets_checked.as_deref(),
        }
    }
}

pub fn pin(result: Result<PinOutcome, Fault>) -> Vec<TargetOutcome> {
    vec![TargetOutcome {
        id: TARGET.into(),
        kind: "kubernetes",
        image: format!("r.example/banana@{D2}"),
        result,
    }]
}

pub fn written(previous: &str) -> Result<PinOutcome, Fault> {
    Ok(PinOutcome::Pinned(Pinned {
        previous_image: Some(previous.into()),
        ..Pinned::default()
    }))
}

pub fn moved(tag: &str) -> Vec<TagMove> {
    vec![TagMove {
        tag: tag.into(),
        previous: Some(D1.into()),
    }]
}

/// A status that already says Stalled with this reason and message.
pub fn stalled_with(reason: &str, message: &str) -> impl FnOnce(&mut ServiceBuildStatus) {
    let (reason, message) = (reason.to_owned(), message.to_owned());
    move |status| {
        status.phase = Some(Phase::Stalled);
        for type_ in [types::READY, types::STALLED] {
            set_condition(
                &mut status.conditions,
                type_,
                type_ == types::STALLED,
                &reason,
                &message,
                Some(3),
                &at(5),
            );
        }
    }
}

/// Promotion of [`D2`] recorded, not finished.
pub fn promoting() -> Fixture {
    Fixture::new()
        .build(build(REV, None, Some(D2), false))
        .current(CurrentStatus {
            revision: REV.into(),
            ..current(D2, false)
        })
        .status(|s| s.phase = Some(Phase::Promoting))
}
