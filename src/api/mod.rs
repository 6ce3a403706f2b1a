//! The `ServiceBuild` API (`monoship.dev/v1alpha1`).
//!
//! The CRD in `crds/servicebuild.yaml` is generated from these types by `monoship crd`. Every
//! rule a person can break is checked at admission, by a schema constraint or a CEL rule whose
//! message says what to change.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Field manager for every write monoship makes.
pub const FIELD_MANAGER: &str = "monoship";
/// Annotation whose new value asks for a rebuild of the same revision after a failure.
pub const REBUILD_ANNOTATION: &str = "monoship.dev/rebuild";
/// Annotation on `build.template` that turns off the source checkout init container.
pub const CHECKOUT_ANNOTATION: &str = "monoship.dev/checkout";
/// Label on build Jobs: the owning ServiceBuild's name.
pub const SERVICEBUILD_LABEL: &str = "monoship.dev/servicebuild";
/// Label on build Jobs: the full revision they build.
pub const REVISION_LABEL: &str = "monoship.dev/revision";

/// Length of `shortRevision`: long enough to stay unique in large monorepos.
pub const SHORT_REVISION_LEN: usize = 12;
const DEFAULT_REVISION_TAG: &str = "{shortRevision}";

/// A service of a monorepo, built at one commit and promoted by digest.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monoship.dev",
    version = "v1alpha1",
    kind = "ServiceBuild",
    plural = "servicebuilds",
    shortname = "sb",
    namespaced,
    status = "ServiceBuildStatus",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63")
        .message("a ServiceBuild name is at most 63 characters: it labels its build Jobs"),
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.build.shortRevision"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.current.shortDigest"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBuildSpec {
    /// Where the service's source lives, and at which commit.
    pub source: Source,
    /// How to build the service: a pod template run as a Kubernetes Job.
    pub build: Build,
    /// The image the build pushes, and the floating tags moved on promotion.
    pub image: Image,
    /// Workloads pinned to `repository@digest` when the digest changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, self.exists_one(u, u == t))")
        .message("targets must not list the same target twice"))]
    pub targets: Vec<Target>,
    /// Stop every action (builds, tags, target writes) until set back to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// How many entries `status.history` keeps (1 to 100).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_history_limit() -> u32 {
    10
}

/// The monorepo and the commit to build.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Git URL of the monorepo (https, ssh or file).
    #[schemars(length(min = 1, max = 2048))]
    pub repository: String,
    /// The full commit id to build: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters.
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([0-9a-f]{40}|[0-9a-f]{64})$')")
        .message("source.revision must be a full commit id: 40 or 64 lowercase hex characters, not a branch, tag or short id"))]
    pub revision: String,
    /// Repository-relative paths that are this service's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub paths: Vec<String>,
    /// Secret with git credentials: `kubernetes.io/basic-auth` or `kubernetes.io/ssh-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// The build: a pod template that builds the image and pushes it to `MONOSHIP_IMAGE`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// Pod template of the build. Its containers get `MONOSHIP_*` variables, the source in
    /// `/workspace`, and registry credentials.
    #[x_kube(validation = kube::core::Rule::new("has(self.spec) && size(self.spec.containers) > 0")
        .message("build.template.spec.containers must list at least one container"))]
    pub template: PodTemplateSpec,
    /// Deadline of the build Job, in seconds (`activeDeadlineSeconds`).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i64,
    /// Pod retries inside one build Job (`backoffLimit`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
}

fn default_timeout_seconds() -> i64 {
    3600
}

/// The image repository, the tag the build pushes, and the tags monoship moves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// `registry[:port]/path`, with no tag and no digest: monoship adds those.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(
        validation = kube::core::Rule::new("!self.contains('@')")
            .message("image.repository must not contain a digest (@sha256:...): monoship pins digests itself"),
        validation = kube::core::Rule::new("!self.matches(':[^/]*$')")
            .message("image.repository must not contain a tag: list floating tags in image.tags"),
        validation = kube::core::Rule::new("self.matches('^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?$')")
            .message("image.repository must be lowercase registry/path, like registry.example.com/team/service")
    )]
    pub repository: String,
    /// Floating tags moved to the new digest on promotion, like `latest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, t.matches('^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$'))")
        .message("image.tags entries must be valid tags: letters, digits, '_', '.', '-', at most 128 characters, not starting with '.' or '-'"))]
    pub tags: Vec<String>,
    /// Tag the build pushes to. `{revision}` and `{shortRevision}` are replaced.
    #[serde(default = "default_revision_tag")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([A-Za-z0-9_.-]|\\\\{revision\\\\}|\\\\{shortRevision\\\\})+$')")
        .message("image.revisionTag may contain only tag characters and the placeholders {revision} and {shortRevision}"))]
    pub revision_tag: String,
    /// A `kubernetes.io/dockerconfigjson` Secret: mounted into the build and used for the
    /// registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret_ref: Option<LocalObjectReference>,
}

fn default_revision_tag() -> String {
    DEFAULT_REVISION_TAG.to_owned()
}

/// A reference to a Secret in the ServiceBuild's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the ServiceBuild's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret; each reference documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Where a promoted digest goes: exactly one of `kubernetes` or `nomad`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.kubernetes) ? 1 : 0) + (has(self.nomad) ? 1 : 0) == 1")
    .message("each target must set exactly one of kubernetes or nomad"))]
pub struct Target {
    /// A container of a Kubernetes workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// A task of a Nomad job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomad: Option<NomadTarget>,
}

/// Kinds of Kubernetes workload monoship can pin.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::CronJob => "CronJob",
        }
    }
}

/// One container of one Kubernetes workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesTarget {
    /// Deployment, StatefulSet, DaemonSet or CronJob.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the workload; defaults to the ServiceBuild's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name of the container whose image is pinned.
    #[schemars(length(min = 1, max = 253))]
    pub container: String,
}

/// One task of one Nomad job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NomadTarget {
    /// Nomad HTTP API address, like `https://nomad.example.com:4646`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("nomad.address must be an http:// or https:// URL"))]
    pub address: String,
    /// Nomad namespace; Nomad's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub namespace: Option<String>,
    /// Nomad region; the agent's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub region: Option<String>,
    /// Job ID.
    #[schemars(length(min = 1, max = 253))]
    pub job: String,
    /// Task group.
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
    /// Task whose `config.image` is pinned.
    #[schemars(length(min = 1, max = 253))]
    pub task: String,
    /// Secret key holding the ACL token (key defaults to `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyReference>,
    /// Secret key holding the PEM CA bundle for https (key defaults to `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyReference>,
}

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
    pub job_name: String,
    /// Reference the build pushed, `repository:tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Digest resolved from the registry once the build succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
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
    /// `Kind/namespace/name:container`, or `nomad:job/group/task`.
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
    pub at: Time,
}

impl ServiceBuildSpec {
    /// The tag the build pushes for `revision`.
    pub fn revision_tag_for(&self, revision: &str) -> String {
        render_revision_tag(&self.image.revision_tag, revision)
    }
}

impl Target {
    /// A stable, readable identity of the target, used in status and Events.
    /// `default_namespace` is the ServiceBuild's namespace.
    pub fn id(&self, default_namespace: &str) -> String {
        match (&self.kubernetes, &self.nomad) {
            (Some(k), _) => format!(
                "{}/{}/{}:{}",
                k.kind.as_str(),
                k.namespace.as_deref().unwrap_or(default_namespace),
                k.name,
                k.container
            ),
            (None, Some(n)) => format!(
                "nomad:{}/{}/{}/{}",
                n.namespace.as_deref().unwrap_or("default"),
                n.job,
                n.group,
                n.task
            ),
            (None, None) => "invalid:empty-target".to_owned(),
        }
    }
}

/// `{revision}` and `{shortRevision}` replaced in a `revisionTag` template.
pub fn render_revision_tag(template: &str, revision: &str) -> String {
    template
        .replace("{revision}", revision)
        .replace("{shortRevision}", short_revision(revision))
}

/// The first [`SHORT_REVISION_LEN`] characters of a revision.
pub fn short_revision(revision: &str) -> &str {
    revision.get(..SHORT_REVISION_LEN).unwrap_or(revision)
}

/// `sha256:` plus 12 hex characters, for printer columns.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.get(..19).unwrap_or(digest).to_owned(),
    }
}

/// Whether `tag` is a valid OCI tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: ServiceBuildSpec = serde_json::from_value(json!({
            "source": {"repository": "https://g/m.git", "revision": REV},
            "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
            "image": {"repository": "r.example/s"}
        }))
        .unwrap();
        assert_eq!(spec.history_limit, 10);
        assert_eq!(spec.image.revision_tag, "{shortRevision}");
        assert_eq!(spec.build.timeout_seconds, 3600);
        assert_eq!(spec.build.backoff_limit, 0);
        assert!(!spec.suspend && spec.targets.is_empty() && spec.image.tags.is_empty());
    }

    #[test]
    fn spec_and_status_round_trip() {
        let spec = json!({
            "source": {"repository": "https://g/m.git", "revision": REV, "paths": ["services/banana"],
                       "secretRef": {"name": "git"}},
            "build": {"template": {"spec": {"containers": [{"name": "b", "image": "i"}]}},
                      "timeoutSeconds": 60, "backoffLimit": 1},
            "image": {"repository": "r.example/s", "tags": ["latest"], "revisionTag": "git-{revision}",
                      "pushSecretRef": {"name": "push"}},
            "targets": [
                {"kubernetes": {"kind": "StatefulSet", "name": "s", "namespace": "n", "container": "c"}},
                {"nomad": {"address": "http://n:4646", "namespace": "ns", "region": "eu", "job": "j",
                           "group": "g", "task": "t", "tokenSecretRef": {"name": "tok", "key": "k"},
                           "caSecretRef": {"name": "ca"}}}
            ],
            "suspend": true,
            "historyLimit": 3
        });
        let parsed: ServiceBuildSpec = serde_json::from_value(spec.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);

        let status = json!({
            "observedGeneration": 2,
            "phase": "Unchanged",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Unchanged", "message": "m",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}],
            "build": {"revision": REV, "shortRevision": &REV[..12], "jobName": "s-1", "digest": "sha256:ab",
                      "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z"},
            "current": {"digest": "sha256:ab", "shortDigest": "sha256:ab", "revision": REV,
                        "promotedAt": "2026-01-01T00:02:00Z"},
            "targets": [{"target": "Deployment/n/s:c", "digest": "sha256:ab", "inSync": true,
                         "jobModifyIndex": 7, "evalId": "e"}],
            "history": [{"revision": REV, "digest": "sha256:ab", "promoted": false, "at": "2026-01-01T00:02:00Z"}]
        });
        let parsed: ServiceBuildStatus = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(parsed.phase, Some(Phase::Unchanged));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), status);
    }

    #[test]
    fn revision_tags_are_rendered() {
        assert_eq!(render_revision_tag("{shortRevision}", REV), "0123456789ab");
        assert_eq!(
            render_revision_tag("git-{revision}", REV),
            format!("git-{REV}")
        );
        assert_eq!(
            render_revision_tag("v1-{shortRevision}-{shortRevision}", REV),
            "v1-0123456789ab-0123456789ab"
        );
        assert_eq!(render_revision_tag("fixed", REV), "fixed");
        assert!(is_valid_tag(&render_revision_tag("git-{revision}", REV)));
        assert!(!is_valid_tag(&render_revision_tag(
            "{revision}{revision}{revision}{revision}",
            REV
        )));
        assert!(
            !is_valid_tag("-x") && !is_valid_tag(".x") && !is_valid_tag("") && !is_valid_tag("a/b")
        );
    }

    #[test]
    fn ids_and_short_forms() {
        let target: Target = serde_json::from_value(json!(
            {"kubernetes": {"kind": "CronJob", "name": "s", "container": "c"}}))
        .unwrap();
        assert_eq!(target.id("shop"), "CronJob/shop/s:c");
        let nomad: Target = serde_json::from_value(json!(
            {"nomad": {"address": "http://n", "job": "j", "group": "g", "task": "t"}}))
        .unwrap();
        assert_eq!(nomad.id("shop"), "nomad:default/j/g/t");
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
        assert_eq!(short_revision("abc"), "abc");
    }
}
