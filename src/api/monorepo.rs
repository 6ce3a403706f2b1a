//! The `Monorepo` resource: one object per monorepo whose revision every ServiceBuild that
//! follows it (`spec.source.monorepoRef`) builds, and whose status answers "what did this commit
//! roll out?".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// A monorepo, at the revision GitOps sets or at the head of a branch.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monoship.dev",
    version = "v1alpha1",
    kind = "Monorepo",
    plural = "monorepos",
    shortname = "mr",
    namespaced,
    status = "MonorepoStatus",
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.shortRevision"}"#,
    printcolumn = r#"{"name":"Services","type":"integer","jsonPath":".status.summary.services"}"#,
    printcolumn = r#"{"name":"Changed","type":"integer","jsonPath":".status.summary.changed"}"#,
    printcolumn = r#"{"name":"Promoted","type":"integer","jsonPath":".status.summary.promoted"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.summary.failed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.revision) != has(self.ref)")
    .message("set exactly one of spec.revision (a commit GitOps sets) or spec.ref.branch (a branch monoship follows)"))]
pub struct MonorepoSpec {
    /// Git URL of the monorepo (https or file; the builds may also use ssh).
    #[schemars(length(min = 1, max = 2048))]
    pub repository: String,
    /// Secret with git credentials: `kubernetes.io/basic-auth` (or `ssh-auth`, for the builds
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// The commit every following ServiceBuild builds: 40 or 64 lowercase hex characters. One
    /// line per merge for GitOps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([0-9a-f]{40}|[0-9a-f]{64})$')")
        .message("spec.revision must be a full commit id: 40 or 64 lowercase hex characters"))]
    pub revision: Option<String>,
    /// A branch whose head monoship follows, polled every `interval`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,
    /// How often the branch head is read (`ref` only), like `1m` or `30s`; at least 10s.
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+(s|m|h)$')")
        .message("spec.interval must be a number of seconds, minutes or hours, like 30s or 1m"))]
    pub interval: String,
    /// Stop following the branch and hand no new revision to the ServiceBuilds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// How many revisions `status.history` keeps (1 to 100).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_interval() -> String {
    "1m".to_owned()
}

fn default_history_limit() -> u32 {
    10
}

/// A branch to follow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// Branch name, like `main`.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = kube::core::Rule::new("!self.startsWith('refs/') && !self.contains('..') && !self.contains(' ')")
        .message("ref.branch is a branch name like main, without refs/heads/"))]
    pub branch: String,
}

impl MonorepoSpec {
    /// The interval in seconds (at least 10).
    pub fn interval_seconds(&self) -> u64 {
        let (number, unit) = self
            .interval
            .split_at(self.interval.len().saturating_sub(1));
        let number: u64 = number.parse().unwrap_or(60);
        let seconds = match unit {
            "h" => number.saturating_mul(3600),
            "m" => number.saturating_mul(60),
            _ => number,
        };
        seconds.max(10)
    }
}

/// What the Monorepo's current revision rolled out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonorepoStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision the following ServiceBuilds build: `spec.revision`, or the branch head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_revision: Option<String>,
    /// When the branch head was last read (`ref` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_polled: Option<Time>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The rollout of the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RolloutSummary>,
    /// Earlier revisions and what they rolled out, newest first, at most `historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RolloutSummary>,
}

/// What one revision rolled out, over the ServiceBuilds that follow the Monorepo.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    pub revision: String,
    /// ServiceBuilds that follow the Monorepo.
    pub services: u32,
    /// Whose inputs changed at this revision (they were built).
    pub changed: u32,
    /// Still building or promoting.
    pub building: u32,
    /// Built, with a new digest, now on every target.
    pub promoted: u32,
    /// Nothing moved: the build was skipped, or its digest was already current.
    pub unchanged: u32,
    pub failed: u32,
    pub stalled: u32,
    /// Names of the ServiceBuilds whose inputs changed, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub changed_names: Vec<String>,
    /// Names of the failed ServiceBuilds, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub failed_names: Vec<String>,
    /// Names of the stalled ServiceBuilds, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub stalled_names: Vec<String>,
    /// When every ServiceBuild had settled on the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}
