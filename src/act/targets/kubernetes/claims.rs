//! Who pins which container of a workload.
//!
//! Every pin is a server-side apply under the one field manager `monoship`, and a manager's
//! apply owns exactly the fields it carries: a field it owned and no longer carries is removed
//! (for a container's `image`, the API server refuses that with 422 `Required value`). So every
//! apply carries every container image monoship owns on the workload, at its current value,
//! beside the one it moves.
//!
//! Which ServiceBuild pins a container is recorded on the workload's own metadata (not the pod
//! template, whose change is a rollout) by an annotation `pin.monoship.dev/<container>` with the
//! value `<namespace>/<servicebuild>`, written in the same apply as the image. Another
//! ServiceBuild that names the same container is refused while the claim is live: while its
//! owner exists and still lists that target.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

use super::{Workload, containers_path};
use crate::api::{FIELD_MANAGER, ServiceBuild};
use crate::conditions::reasons;
use crate::{Error, Result};

/// Prefix of the annotation that names the ServiceBuild pinning a container.
pub const PIN_ANNOTATION_PREFIX: &str = "pin.monoship.dev/";

/// The annotation key for `container`. Container names are DNS labels (at most 63 characters
/// of `[a-z0-9-]`), which fit the name part of an annotation key.
pub fn claim_key(container: &str) -> Result<String> {
    let valid = !container.is_empty()
        && container.len() <= 63
        && container
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && container.starts_with(|c: char| c.is_ascii_alphanumeric())
        && container.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(Error::stalled(
            reasons::INVALID_SPEC,
            format!("container name {container:?} is not a valid Kubernetes container name"),
        ));
    }
    Ok(format!("{PIN_ANNOTATION_PREFIX}{container}"))
}

/// What monoship holds on one workload, as read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Container name → claimant (`namespace/name`), from the annotations.
    pub owners: BTreeMap<String, String>,
    /// The workload's containers in order, with their images.
    containers: Vec<(String, Option<String>)>,
    /// Containers whose `image` the `monoship` field manager owns (pins written before the
    /// annotations existed have no annotation).
    owned_images: BTreeSet<String>,
    /// Containers that only monoship's fields keep in the workload: every other owner (Git's
    /// server-side apply, say) has dropped them. They are not carried on, so they go.
    kept_by_monoship_alone: BTreeSet<String>,
}

impl Claims {
    /// Read the claims from a workload object (as JSON).
    pub fn read(workload: &Workload<'_>, object: &Value) -> Self {
        let mut node = Some(object);
        for key in containers_path(workload.target.kind) {
            node = node.and_then(|n| n.get(key));
        }
        let containers = node
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| {
                        let name = c.get("name")?.as_str()?.to_owned();
                        let image = c.get("image").and_then(Value::as_str).map(str::to_owned);
                        Some((name, image))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let owners = object
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|annotations| {
                annotations
                    .iter()
                    .filter_map(|(key, value)| {
                        let container = key.strip_prefix(PIN_ANNOTATION_PREFIX)?;
                        Some((container.to_owned(), value.as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let holders = Holders::read(workload, object);
        Self {
            owners,
            containers,
            kept_by_monoship_alone: holders
                .monoship
                .difference(&holders.others)
                .cloned()
                .collect(),
            owned_images: holders.monoship_images,
        }
    }

    /// Whether `container` is in the workload only because monoship's own fields keep it.
    pub fn kept_by_monoship_alone(&self, container: &str) -> bool {
        self.kept_by_monoship_alone.contains(container)
    }

    /// The claimant of `container`, if any.
    pub fn owner(&self, container: &str) -> Option<&str> {
        self.owners.get(container).map(String::as_str)
    }

    /// The server-side apply body that pins `container` to `image` for `claimant`, and carries
    /// every other container image and claim monoship holds at its current value. A claim on a
    /// container the workload no longer has is left out, so its annotation goes.
    /// `resource_version` makes the apply fail with 409 if the workload changed since it was read.
    pub fn apply_body(
        &self,
        workload: &Workload<'_>,
        resource_version: Option<&str>,
        image: &str,
        claimant: &str,
    ) -> Result<Value> {
        let ours = workload.target.container.as_str();
        let mut annotations = Map::new();
        let mut containers = Vec::new();
        for (name, current) in &self.containers {
            if name != ours && self.kept_by_monoship_alone(name) {
                continue;
            }
            let claimed = self.owners.get(name);
            if let Some(owner) = claimed {
                annotations.insert(claim_key(name)?, json!(owner));
            }
            if name == ours {
                annotations.insert(claim_key(name)?, json!(claimant));
                containers.push(json!({"name": name, "image": image}));
            } else if let Some(current) = current
                && (claimed.is_some() || self.owned_images.contains(name))
            {
                containers.push(json!({"name": name, "image": current}));
            }
        }
        let mut node = json!(containers);
        for key in containers_path(workload.target.kind).iter().rev() {
            node = json!({ *key: node });
        }
        let resource = super::api_resource(workload.target.kind);
        let mut metadata = json!({
            "name": workload.target.name,
            "namespace": workload.namespace,
            "annotations": annotations,
        });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        if let Value::Object(map) = &mut node {
            map.insert("apiVersion".into(), json!(resource.api_version));
            map.insert("kind".into(), json!(resource.kind));
            map.insert("metadata".into(), metadata);
        }
        Ok(node)
    }
}

/// Who holds which containers of a workload, from `metadata.managedFields`.
#[derive(Debug, Default)]
struct Holders {
    /// Containers with fields in the `monoship` manager's Apply entry.
    monoship: BTreeSet<String>,
    /// Of those, the containers whose `image` it owns.
    monoship_images: BTreeSet<String>,
    /// Containers with fields in any other entry.
    others: BTreeSet<String>,
}

impl Holders {
    fn read(workload: &Workload<'_>, object: &Value) -> Self {
        let mut holders = Self::default();
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
            let ours = field("manager") == FIELD_MANAGER
                && field("operation") == "Apply"
                && field("subresource").is_empty();
            let mut node = entry.get("fieldsV1");
            for key in containers_path(workload.target.kind) {
                node = node.and_then(|n| n.get(format!("f:{key}")));
            }
            let items = node.and_then(Value::as_object).into_iter().flatten();
            for (key, fields) in items {
                let Some(name) = key
                    .strip_prefix("k:")
                    .and_then(|k| serde_json::from_str::<Value>(k).ok())
                    .and_then(|k| k.get("name").and_then(Value::as_str).map(str::to_owned))
                else {
                    continue;
                };
                if !ours {
                    holders.others.insert(name);
                    continue;
                }
                if fields.get("f:image").is_some() {
                    holders.monoship_images.insert(name.clone());
                }
                holders.monoship.insert(name);
            }
        }
        holders
    }
}

/// Whether `claimant`'s claim on the workload's container is live: the ServiceBuild exists,
/// is not being deleted, and still lists that target. A claim monoship may not check (403 on
/// the ServiceBuild) counts as live.
pub async fn is_live(
    client: &kube::Client,
    claimant: &str,
    workload: &Workload<'_>,
) -> Result<bool> {
    let Some((namespace, name)) = claimant
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
    else {
        return Ok(false);
    };
    let api: Api<ServiceBuild> = Api::namespaced(client.clone(), namespace);
    let owner = match api.get_opt(name).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return Ok(false),
        Err(kube::Error::Api(status)) if status.code == 403 => return Ok(true),
        Err(error) => return Err(error.into()),
    };
    if owner.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    let namespace = owner.namespace().unwrap_or_else(|| namespace.to_owned());
    Ok(owner
        .spec
        .targets
        .iter()
        .filter_map(|t| t.kubernetes.as_ref())
        .any(|k| Workload::new(k, &namespace).same_container(workload)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KubernetesTarget, WorkloadKind};

    fn target(container: &str) -> KubernetesTarget {
        KubernetesTarget {
            kind: WorkloadKind::Deployment,
            name: "banana".into(),
            namespace: None,
            container: container.into(),
        }
    }

    /// A `FieldsV1` entry of `manager` holding `fields` of each named container.
    fn entry(manager: &str, operation: &str, containers: &[(&str, Value)]) -> Value {
        let items: Map<String, Value> = containers
            .iter()
            .map(|(name, fields)| (format!("k:{{\"name\":\"{name}\"}}"), fields.clone()))
            .collect();
        json!({"manager": manager, "operation": operation,
               "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": items}}}}})
    }

    #[test]
    fn the_apply_carries_every_claim_and_owned_image_at_its_current_value() {
        let t = target("sidecar");
        let workload = Workload::new(&t, "shop");
        let name_and_image = json!({".": {}, "f:image": {}, "f:name": {}});
        let name = json!({".": {}, "f:name": {}});
        // `app` claimed by banana; `gone` claimed but no longer a container; `log` pinned by
        // an older monoship (image owned, no annotation); `dropped` removed from Git's
        // manifest and kept only by monoship's fields.
        let object = json!({
            "metadata": {
                "name": "banana",
                "annotations": {"pin.monoship.dev/app": "shop/banana", "pin.monoship.dev/gone": "shop/x",
                                "pin.monoship.dev/dropped": "shop/y", "other": "kept out"},
                "managedFields": [
                    entry("monoship", "Apply", &[("app", name_and_image.clone()),
                        ("log", name_and_image.clone()), ("dropped", name_and_image.clone())]),
                    entry("git", "Apply", &[("app", name.clone()), ("sidecar", name_and_image),
                        ("log", name)]),
                ]
            },
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "r@sha256:aa"},
                {"name": "sidecar", "image": "proxy:1"},
                {"name": "log", "image": "log:1"},
                {"name": "dropped", "image": "old@sha256:cc"}
            ]}}}
        });
        let claims = Claims::read(&workload, &object);
        assert_eq!(claims.owner("app"), Some("shop/banana"));
        assert!(claims.kept_by_monoship_alone("dropped"));
        assert!(!claims.kept_by_monoship_alone("app") && !claims.kept_by_monoship_alone("log"));
        let body = claims
            .apply_body(&workload, Some("42"), "r@sha256:bb", "shop/orange")
            .unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "banana", "namespace": "shop", "resourceVersion": "42",
                    "annotations": {"pin.monoship.dev/app": "shop/banana",
                                    "pin.monoship.dev/sidecar": "shop/orange"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "r@sha256:aa"},
                    {"name": "sidecar", "image": "r@sha256:bb"},
                    {"name": "log", "image": "log:1"}
                ]}}}
            })
        );
    }

    #[test]
    fn claim_keys_are_valid_annotation_names() {
        assert_eq!(claim_key("app").unwrap(), "pin.monoship.dev/app");
        assert!(claim_key(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", "a/b", &"a".repeat(64)] {
            assert!(claim_key(bad).unwrap_err().is_stalled(), "{bad:?}");
        }
    }
}
