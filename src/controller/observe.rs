//! The reading half of observe: what a reconcile needs from the API server besides the
//! ServiceBuild and its Job (which the watches and [`crate::act::build::find_job`] give).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use crate::api::{ACCEPT_TARGETS_ANNOTATION, ServiceBuildSpec};
use crate::pipeline::observe::Policy;

/// The namespaces, other than `namespace`, that the spec's Kubernetes targets are in and that
/// accept targets from `namespace` by their `monoship.dev/accept-targets-from` annotation.
///
/// Only Namespace objects are read, never the targets themselves, and a Namespace that cannot
/// be read (missing, or forbidden to this controller) simply does not accept: so whether
/// anything exists in a namespace a ServiceBuild may not reach never shows in its status.
/// Nothing is read when the policy allows every namespace, or when the controller watches one
/// namespace (it has no rights elsewhere).
pub async fn accepting_namespaces(
    client: &Client,
    spec: &ServiceBuildSpec,
    namespace: &str,
    policy: &Policy,
    watching_one_namespace: bool,
) -> Vec<String> {
    if policy.allow_cross_namespace_targets || watching_one_namespace {
        return Vec::new();
    }
    let others: BTreeSet<&str> = spec
        .targets
        .iter()
        .filter_map(|t| t.kubernetes.as_ref())
        .filter_map(|k| k.namespace.as_deref())
        .filter(|n| *n != namespace)
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    let mut accepting = Vec::new();
    for other in others {
        match api.get_opt(other).await {
            Ok(Some(found))
                if accepts(
                    found.annotations().get(ACCEPT_TARGETS_ANNOTATION),
                    namespace,
                ) =>
            {
                accepting.push(other.to_owned());
            }
            Ok(_) => {}
            Err(error) => debug!(namespace = other, %error, "could not read a target namespace"),
        }
    }
    accepting
}

/// Whether an annotation value (namespaces, comma-separated, or `*`) names `namespace`.
pub fn accepts(annotation: Option<&String>, namespace: &str) -> bool {
    annotation.is_some_and(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|n| n == "*" || n == namespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_namespaces_or_all() {
        let value = |s: &str| Some(s.to_owned());
        assert!(accepts(value("team-a").as_ref(), "team-a"));
        assert!(accepts(value("team-b, team-a").as_ref(), "team-a"));
        assert!(accepts(value("*").as_ref(), "team-a"));
        assert!(!accepts(value("team-ab").as_ref(), "team-a"));
        assert!(!accepts(value("").as_ref(), "team-a"));
        assert!(!accepts(None, "team-a"));
    }
}
