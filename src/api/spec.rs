//! The ServiceBuild spec: what a person declares.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_REVISION_TAG, ServiceBuildStatus};

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

/// The monorepo and the commit to build: `repository` and `revision`, or a `monorepoRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.monorepoRef) ? !has(self.repository) && !has(self.revision) && !has(self.secretRef) : has(self.repository) && has(self.revision)")
    .message("set either source.monorepoRef (the Monorepo gives the repository, revision and credentials), or source.repository and source.revision"))]
pub struct Source {
    /// Git URL of the monorepo (https, ssh or file). Unset with `monorepoRef`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 2048))]
    pub repository: String,
    /// The full commit id to build: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters. Unset
    /// with `monorepoRef`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^([0-9a-f]{40}|[0-9a-f]{64})$')")
        .message("source.revision must be a full commit id: 40 or 64 lowercase hex characters, not a branch, tag or short id"))]
    pub revision: String,
    /// Repository-relative paths (directories or files) that are this service's inputs: its
    /// own directory and whatever it shares. The input key is computed over their git object
    /// ids; with no paths, the whole tree is the input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, !p.startsWith('/') && !p.matches('(^|/)[.][.]?(/|$)') || p == '.')")
        .message("source.paths entries must be relative to the repository root, without '.' or '..' segments (use '.' for the whole tree)"))]
    pub paths: Vec<String>,
    /// Secret with git credentials: `kubernetes.io/basic-auth` or `kubernetes.io/ssh-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// A Monorepo of this namespace whose revision (and repository and credentials) this
    /// ServiceBuild follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monorepo_ref: Option<MonorepoReference>,
}

/// A Monorepo in the ServiceBuild's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MonorepoReference {
    /// Name of the Monorepo.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The build: a pod template that builds the image and pushes it to `MONOSHIP_IMAGE`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// Pod template of the build. Its containers get `MONOSHIP_*` variables, the source in
    /// `/workspace`, and registry credentials.
    #[schemars(schema_with = "pod_template_schema")]
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
    /// Skip the build when the inputs (`source.paths` at the revision, the template and the
    /// image repository) equal those of a recorded build whose image is still in the registry:
    /// that image gets the revision's tag instead. Set to false for builds that are not a
    /// function of their inputs.
    #[serde(default = "default_skip_unchanged", skip_serializing_if = "is_true")]
    pub skip_unchanged: bool,
}

fn default_skip_unchanged() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
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

/// The schema of `build.template`: a PodTemplateSpec, validated where monoship relies on it
/// (a `spec` with named containers) and otherwise kept as written. Embedding the whole
/// PodTemplateSpec schema would make the CRD about 364 KB of JSON, over the 262,144 bytes that
/// `kubectl apply` may store in its last-applied annotation; the API server validates the pod
/// itself when the build Job is created, as it does for Tekton Tasks and Argo Workflows.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let container = serde_json::json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 63},
            "image": {"type": "string", "maxLength": 4096},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    let schema = serde_json::json!({
        "description": "A PodTemplateSpec (metadata and spec), as in a Job's template.",
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "required": ["containers"],
                "properties": {
                    "containers": {"type": "array", "maxItems": 64, "items": container},
                    "initContainers": {"type": "array", "maxItems": 64, "items": container},
                    "serviceAccountName": {"type": "string", "maxLength": 253},
                    "automountServiceAccountToken": {"type": "boolean"},
                },
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
    });
    match schema {
        serde_json::Value::Object(map) => schemars::Schema::from(map),
        _ => schemars::Schema::default(),
    }
}
