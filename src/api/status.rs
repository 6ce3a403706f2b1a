//! The ServiceBuild status: what monoship observed and did.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What monoship observed and did, for `kubectl get` and `describe`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBuildStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the ServiceBuild is in its cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus) and `Built`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The build of the latest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildStatus>,
    /// The digest the targets should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentStatus>,
    /// Each target's pin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
    /// The last value of the `monoship.dev/rebuild` annotation that started a build; another
    /// value starts one again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rebuild: Option<String>,
    /// Recent builds, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Phases of a ServiceBuild.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing has started yet.
    Pending,
    /// The build Job of the revision runs.
    Building,
    /// A new digest is being moved to tags and targets.
    Promoting,
    /// The revision's digest is new and every tag and target carries it.
    Promoted,
    /// The revision's digest equals the current one: nothing moved.
    Unchanged,
    /// The build failed; it is retried when the revision or the rebuild annotation changes.
    Failed,
    /// The spec or something it references is wrong; a person has to change it.
    Stalled,
    /// `spec.suspend` is true.
    Suspended,
}

/// The build of one revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    pub revision: String,
    /// The first 12 characters of `revision`.
    pub short_revision: String,
    /// Value of the rebuild annotation this build answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<String>,
    /// The build Job; empty when the build was skipped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_name: String,
    /// The input key of the revision (`sha256:…`, see the README): equal keys build equal
    /// images. Unset when the inputs could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_key: Option<String>,
    /// What the inputs were compared with: why the build ran, or which build it reuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_message: Option<String>,
    /// When the build was skipped: the revision whose build's digest it reuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Reference the build pushed, `repository:tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Digest of the image the build pushed, known once the build succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where `digest` comes from: `Reported` by the build (its termination message) and equal
    /// to what the revision tag points at, or read from the `Tag` alone (the build reported
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_source: Option<DigestSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The Job's reason, when the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a build's digest comes from.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestSource {
    /// The build reported it through its termination message (`$MONOSHIP_DIGEST_FILE`), and
    /// the revision tag pointed at it when monoship checked.
    Reported,
    /// The build reported nothing: the digest is the one the revision tag pointed at.
    Tag,
    /// No build ran: the inputs equal those of the build of `reusedFrom`, whose digest was
    /// found in the registry and given this revision's tag.
    Reused,
}

/// The promoted digest: what every target should point at.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CurrentStatus {
    pub digest: String,
    /// `sha256:` and the first 12 hex characters.
    pub short_digest: String,
    /// Revision whose build first produced this digest.
    pub revision: String,
    /// When tags and targets all carried the digest; unset while promotion runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,
    /// The floating tags moved to this digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The pin of one target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// `Kind/namespace/name:container`, or `nomad:namespace/job/group/task at address`
    /// (and ` region R` when set).
    pub target: String,
    /// Digest the target was last seen or written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub in_sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Nomad: `JobModifyIndex` after monoship's last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_modify_index: Option<u64>,
    /// Nomad: evaluation created by monoship's last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_id: Option<String>,
}

/// One past build.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub revision: String,
    pub digest: String,
    /// Whether this build moved tags and targets (false: the digest was unchanged).
    pub promoted: bool,
    /// The build's input key, when its inputs were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_key: Option<String>,
    /// The build was skipped: its digest is an earlier build's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    pub at: Time,
}
