//! Checks of the spec that admission cannot make (they need the namespace, or render
//! templates). A failure is a person's mistake: [`crate::Error::Stalled`] with `InvalidSpec`.

use std::collections::HashSet;

use super::observe::Policy;
use crate::api::{ACCEPT_TARGETS_ANNOTATION, ServiceBuildSpec, is_valid_tag};
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

/// Check `spec` against what the cluster admin allows: Kubernetes targets outside `namespace`
/// only in namespaces that accept them (or with `--allow-cross-namespace-targets`), and no
/// ServiceAccount for the build under `--no-build-service-account`.
pub fn check_policy(
    spec: &ServiceBuildSpec,
    namespace: &str,
    policy: &Policy,
    accepting_namespaces: &[String],
) -> Result<()> {
    for target in &spec.targets {
        let Some(k8s) = &target.kubernetes else {
            continue;
        };
        let other = k8s.namespace.as_deref().unwrap_or(namespace);
        if other == namespace
            || policy.allow_cross_namespace_targets
            || accepting_namespaces.iter().any(|n| n == other)
        {
            continue;
        }
        return Err(Error::stalled(
            reasons::CROSS_NAMESPACE_TARGET_REFUSED,
            format!(
                "target {} is in namespace {other}, outside this ServiceBuild's namespace \
                 {namespace}; a cluster admin may allow it by annotating namespace {other} with \
                 {ACCEPT_TARGETS_ANNOTATION}={namespace}, or for every namespace with the \
                 controller flag --allow-cross-namespace-targets",
                target.id(namespace)
            ),
        ));
    }
    if policy.forbid_build_service_account {
        let pod = spec.build.template.spec.as_ref();
        let account = pod
            .and_then(|p| p.service_account_name.as_deref())
            .filter(|name| *name != "default");
        let token = pod.and_then(|p| p.automount_service_account_token) == Some(true);
        if account.is_some() || token {
            let asked = match account {
                Some(name) => format!("serviceAccountName {name:?}"),
                None => "automountServiceAccountToken: true".to_owned(),
            };
            return Err(Error::stalled(
                reasons::BUILD_SERVICE_ACCOUNT_REFUSED,
                format!(
                    "build.template asks for {asked}, but this controller runs with \
                     --no-build-service-account: build pods run as the namespace's default \
                     ServiceAccount with no token; remove it from the template, or ask a \
                     cluster admin"
                ),
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

    #[test]
    fn cross_namespace_targets_need_the_admin() {
        let elsewhere = json!([{"kubernetes": {"kind": "Deployment", "name": "a", "namespace": "kube-system", "container": "c"}}]);
        let spec = spec("x", elsewhere);
        let refused = check_policy(&spec, "team-a", &Policy::default(), &[]).unwrap_err();
        assert_eq!(refused.reason(), reasons::CROSS_NAMESPACE_TARGET_REFUSED);
        let message = refused.to_string();
        assert!(
            message.contains("monoship.dev/accept-targets-from=team-a"),
            "{message}"
        );
        assert!(
            message.contains("--allow-cross-namespace-targets"),
            "{message}"
        );
        let accepting = ["kube-system".to_owned()];
        assert!(check_policy(&spec, "team-a", &Policy::default(), &accepting).is_ok());
        let open = Policy {
            allow_cross_namespace_targets: true,
            ..Policy::default()
        };
        assert!(check_policy(&spec, "team-a", &open, &[]).is_ok());
        assert!(check_policy(&spec, "kube-system", &Policy::default(), &[]).is_ok());
    }

    #[test]
    fn a_build_service_account_can_be_forbidden() {
        let forbid = Policy {
            forbid_build_service_account: true,
            ..Policy::default()
        };
        let mut spec = spec("x", json!([]));
        assert!(check_policy(&spec, "shop", &forbid, &[]).is_ok());
        let pod = spec
            .build
            .template
            .spec
            .get_or_insert_with(Default::default);
        pod.service_account_name = Some("deployer".into());
        let refused = check_policy(&spec, "shop", &forbid, &[]).unwrap_err();
        assert_eq!(refused.reason(), reasons::BUILD_SERVICE_ACCOUNT_REFUSED);
        assert!(refused.to_string().contains("\"deployer\""), "{refused}");
        assert!(check_policy(&spec, "shop", &Policy::default(), &[]).is_ok());
        let pod = spec
            .build
            .template
            .spec
            .get_or_insert_with(Default::default);
        pod.service_account_name = None;
        pod.automount_service_account_token = Some(true);
        assert!(check_policy(&spec, "shop", &forbid, &[]).is_err());
    }
}
