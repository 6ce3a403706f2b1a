//! Checks of the spec that admission cannot make (they need the namespace, or render
//! templates). A failure is a person's mistake: [`crate::Error::Stalled`] with `InvalidSpec`.

use std::collections::HashSet;

use crate::api::{ServiceBuildSpec, is_valid_tag};
use crate::conditions::reasons;
use crate::{Error, Result};

/// Check `spec` of a ServiceBuild in `namespace`.
pub fn validate(spec: &ServiceBuildSpec, namespace: &str) -> Result<()> {
    let tag = spec.revision_tag_for(&spec.source.revision);
    if !is_valid_tag(&tag) {
        return Err(Error::stalled(
            reasons::INVALID_SPEC,
            format!(
                "image.revisionTag {:?} renders to {tag:?}, which is not a valid tag \
                 (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')",
                spec.image.revision_tag
            ),
        ));
    }
    let mut seen = HashSet::new();
    for target in &spec.targets {
        if target.kubernetes.is_some() == target.nomad.is_some() {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                "each target must set exactly one of kubernetes or nomad",
            ));
        }
        let id = target.id(namespace);
        if !seen.insert(id.clone()) {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                format!("targets name {id} twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(revision_tag: &str, targets: serde_json::Value) -> ServiceBuildSpec {
        serde_json::from_value(json!({
            "source": {"repository": "file:///repo", "revision": "1".repeat(40)},
            "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
            "image": {"repository": "r.example/banana", "revisionTag": revision_tag},
            "targets": targets,
        }))
        .unwrap()
    }

    #[test]
    fn rendered_tags_and_duplicate_targets_are_refused() {
        let deployment =
            json!({"kubernetes": {"kind": "Deployment", "name": "a", "container": "c"}});
        assert!(validate(&spec("{shortRevision}", json!([deployment])), "shop").is_ok());
        let long = "{revision}".repeat(4);
        let error = validate(&spec(&long, json!([])), "shop").unwrap_err();
        assert_eq!(error.reason(), reasons::INVALID_SPEC);
        let explicit = json!({"kubernetes": {"kind": "Deployment", "name": "a", "namespace": "shop", "container": "c"}});
        let error = validate(&spec("x", json!([deployment, explicit])), "shop").unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
        assert!(validate(&spec("x", json!([{}])), "shop").is_err());
    }
}
