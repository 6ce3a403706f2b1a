//! The `ServiceBuild` API (`monoship.dev/v1alpha1`).
//!
//! The CRD in `crds/servicebuild.yaml` is generated from these types by `monoship crd`. Every
//! rule a person can break is checked at admission, by a schema constraint or a CEL rule whose
//! message says what to change.

mod monorepo;
mod spec;
mod status;

pub use monorepo::*;
pub use spec::*;
pub use status::*;

/// Field manager for every write monoship makes.
pub const FIELD_MANAGER: &str = "monoship";
/// Annotation whose new value asks for a rebuild of the same revision after a failure.
pub const REBUILD_ANNOTATION: &str = "monoship.dev/rebuild";
/// Annotation on `build.template` that turns off the source checkout init container.
pub const CHECKOUT_ANNOTATION: &str = "monoship.dev/checkout";
/// Annotation on a namespace: the namespaces (comma-separated, or `*`) whose ServiceBuilds may
/// pin Kubernetes targets in it. Set by a cluster admin.
pub const ACCEPT_TARGETS_ANNOTATION: &str = "monoship.dev/accept-targets-from";
/// Label on build Jobs: the owning ServiceBuild's name.
pub const SERVICEBUILD_LABEL: &str = "monoship.dev/servicebuild";
/// Label on build Jobs: the full revision they build.
pub const REVISION_LABEL: &str = "monoship.dev/revision";

/// Length of `shortRevision`: long enough to stay unique in large monorepos.
pub const SHORT_REVISION_LEN: usize = 12;
const DEFAULT_REVISION_TAG: &str = "{shortRevision}";

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
            (None, Some(n)) => {
                let region = n
                    .region
                    .as_deref()
                    .map(|r| format!(" region {r}"))
                    .unwrap_or_default();
                format!(
                    "nomad:{}/{}/{}/{} at {}{region}",
                    n.namespace.as_deref().unwrap_or("default"),
                    n.job,
                    n.group,
                    n.task,
                    n.address.trim_end_matches('/'),
                )
            }
            (None, None) => "invalid:empty-target".to_owned(),
        }
    }
}

/// Both CRDs as one YAML stream (`monoship crd`), as `cat crds/*.yaml` gives them: each
/// document starts with `---`, Monorepo first.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "{}{}",
        crd_yaml(CrdKind::Monorepo)?,
        crd_yaml(CrdKind::ServiceBuild)?
    ))
}

/// One of the CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdKind {
    ServiceBuild,
    Monorepo,
}

/// One CRD as a YAML document that starts with `---` (`crds/<kind>.yaml`).
pub fn crd_yaml(kind: CrdKind) -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let yaml = match kind {
        CrdKind::ServiceBuild => serde_yaml::to_string(&ServiceBuild::crd())?,
        CrdKind::Monorepo => serde_yaml::to_string(&Monorepo::crd())?,
    };
    Ok(format!("---\n{yaml}"))
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
        assert_eq!(nomad.id("shop"), "nomad:default/j/g/t at http://n");
        // The same job in another region, or on another cluster, is another target.
        let mut elsewhere = nomad.clone();
        if let Some(n) = &mut elsewhere.nomad {
            n.region = Some("eu".into());
        }
        assert_eq!(
            elsewhere.id("shop"),
            "nomad:default/j/g/t at http://n region eu"
        );
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
        assert_eq!(short_revision("abc"), "abc");
    }
}
