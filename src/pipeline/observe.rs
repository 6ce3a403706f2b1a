//! Observe: what one reconcile looks at, as plain data. The controller gathers it (the
//! ServiceBuild, its build Job); [`super::decide`] and [`super::record`] read it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::outcome::Fault;
use crate::api::{ServiceBuildSpec, ServiceBuildStatus};
use crate::inputs::key::InputKey;

/// The state of the build Job for the wanted build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum JobState {
    /// No Job with the wanted name exists (or it was not looked for: the build is finished).
    #[default]
    Missing,
    /// The Job exists and has not finished.
    Running,
    /// The Job completed successfully.
    Succeeded,
    /// The Job failed; `reason` and `message` come from its `Failed` condition.
    Failed { reason: String, message: String },
}

/// The build Job of the wanted build, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedJob {
    pub state: JobState,
    /// `status.startTime` of the Job.
    pub started: Option<Time>,
    /// `status.completionTime` of the Job.
    pub completed: Option<Time>,
    /// The Job runs but has no ready pod yet.
    pub waiting_for_pod: bool,
    /// Why it has none, when its Events or pods say (a refused pod, an image pull).
    pub stuck: Option<Fault>,
    /// The digest its build container reported (its termination message), read once the Job
    /// succeeded; `None` when it reported none.
    pub reported_digest: Option<String>,
}

impl ObservedJob {
    /// No Job (not there, or not looked for).
    pub fn missing() -> Self {
        Self::default()
    }
}

/// The build the spec and the rebuild annotation ask for now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedBuild {
    /// `spec.source.revision`.
    pub revision: String,
    /// Value of the `monoship.dev/rebuild` annotation.
    pub rebuild: Option<String>,
    /// The deterministic name of its build Job.
    pub job_name: String,
    /// Where the build pushes: `repository:<revisionTag>`.
    pub image: String,
    /// The revision's input key, once its inputs were read: the build gets it as
    /// `MONOSHIP_INPUT_KEY`.
    pub input_key: Option<String>,
}

/// What is known of the wanted build's inputs (see [`crate::inputs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Inputs {
    /// Not read: the build is recorded already, or nothing asked.
    #[default]
    NotRead,
    /// The revision is being fetched; the build waits for it.
    Pending,
    /// Read: the input key and what it was computed from.
    Known(InputKey),
    /// Could not be read: the build runs, and this sentence says why.
    Unreadable(String),
}

/// What a cluster admin allows ServiceBuilds beyond their own namespace (controller flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-cross-namespace-targets`: Kubernetes targets in any namespace.
    pub allow_cross_namespace_targets: bool,
    /// `--no-build-service-account`: refuse build templates that ask for a ServiceAccount or
    /// its token.
    pub forbid_build_service_account: bool,
}

/// Everything [`super::decide::decide`] and [`super::record::record`] look at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The ServiceBuild's namespace: the default of Kubernetes targets.
    pub namespace: &'a str,
    /// `metadata.generation`, recorded as `observedGeneration`.
    pub generation: Option<i64>,
    pub spec: &'a ServiceBuildSpec,
    /// The status as read, or as the previous step of this reconcile recorded it.
    pub status: &'a ServiceBuildStatus,
    pub wanted: &'a WantedBuild,
    pub job: &'a ObservedJob,
    pub policy: &'a Policy,
    /// Other namespaces that accept Kubernetes targets from this ServiceBuild's namespace
    /// (their `monoship.dev/accept-targets-from` annotation names it).
    pub accepting_namespaces: &'a [String],
    /// An older ServiceBuild of the namespace that pushes to the same `repository:revisionTag`
    /// (see [`tag_claimant`]), looked for while this build is not finished.
    pub tag_claimed_by: Option<&'a str>,
    /// The wanted build's inputs, read while it is not recorded yet.
    pub inputs: &'a Inputs,
    /// The digest this replica found every target pinned to less than a resync period ago,
    /// with the targets and image repository the spec names now; `None` once a check is due.
    pub targets_checked: Option<&'a str>,
}

impl Observed<'_> {
    /// Whether `status.build` describes the wanted build (same revision, same rebuild token).
    pub fn build_is_current(&self) -> bool {
        build_is_current(self.status, self.wanted)
    }
}

/// Whether `status.build` describes `wanted` (same revision, same rebuild token).
pub fn build_is_current(status: &ServiceBuildStatus, wanted: &WantedBuild) -> bool {
    status
        .build
        .as_ref()
        .is_some_and(|b| b.revision == wanted.revision && b.rebuild == wanted.rebuild)
}

/// Whether the wanted build is finished and its digest known, so its Job no longer matters.
pub fn build_is_finished(status: &ServiceBuildStatus, wanted: &WantedBuild) -> bool {
    build_is_current(status, wanted) && status.build.as_ref().is_some_and(|b| b.digest.is_some())
}

/// A ServiceBuild's claim on the image reference its build pushes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagClaim<'a> {
    pub name: &'a str,
    /// `metadata.creationTimestamp`, in seconds.
    pub created: i64,
    /// `repository:<rendered revisionTag>`.
    pub image: &'a str,
}

/// The name of the oldest ServiceBuild among `others` (of one namespace) that pushes to the same
/// image reference as `me` and is older than it: two builds must not push to one tag, and the
/// older claim wins (same second: the smaller name).
pub fn tag_claimant<'a>(
    me: &TagClaim<'_>,
    others: impl IntoIterator<Item = TagClaim<'a>>,
) -> Option<&'a str> {
    others
        .into_iter()
        .filter(|o| o.image == me.image && o.name != me.name)
        .filter(|o| (o.created, o.name) < (me.created, me.name))
        .min_by(|a, b| (a.created, a.name).cmp(&(b.created, b.name)))
        .map(|o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_claim_on_a_tag_wins() {
        let claim = |name, created, image| TagClaim {
            name,
            created,
            image,
        };
        let me = claim("b", 10, "r/x:1");
        let others = || {
            vec![
                claim("a", 5, "r/x:1"),
                claim("c", 2, "r/x:2"),
                claim("d", 20, "r/x:1"),
            ]
        };
        assert_eq!(tag_claimant(&me, others()), Some("a"));
        assert_eq!(
            tag_claimant(&claim("a", 5, "r/x:1"), others()),
            None,
            "a is older"
        );
        assert_eq!(tag_claimant(&claim("d", 20, "r/x:1"), others()), Some("a"));
        // The same second: the smaller name wins.
        assert_eq!(tag_claimant(&claim("z", 5, "r/x:1"), others()), Some("a"));
        assert_eq!(tag_claimant(&claim("0", 5, "r/x:1"), others()), None);
        assert_eq!(tag_claimant(&claim("b", 10, "r/y:1"), others()), None);
    }
}
