//! Kubernetes workload targets: pin one container's image with server-side apply of that one
//! field, under field manager `monoship`, and only when it is not already pinned.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::{PinOutcome, Pinned};
use crate::api::{FIELD_MANAGER, KubernetesTarget, WorkloadKind};
use crate::conditions::reasons;
use crate::{Error, Result};

/// A Kubernetes target, with its namespace resolved.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub target: &'a KubernetesTarget,
    pub namespace: &'a str,
}

impl<'a> Workload<'a> {
    /// `default_namespace` is the ServiceBuild's namespace.
    pub fn new(target: &'a KubernetesTarget, default_namespace: &'a str) -> Self {
        Self {
            target,
            namespace: target.namespace.as_deref().unwrap_or(default_namespace),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {}/{}",
            self.target.kind.as_str(),
            self.namespace,
            self.target.name
        )
    }
}

fn api_resource(kind: WorkloadKind) -> ApiResource {
    let (group, plural) = match kind {
        WorkloadKind::Deployment => ("apps", "deployments"),
        WorkloadKind::StatefulSet => ("apps", "statefulsets"),
        WorkloadKind::DaemonSet => ("apps", "daemonsets"),
        WorkloadKind::CronJob => ("batch", "cronjobs"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind.as_str()), plural)
}

/// Path from the object root to the pod template's `containers`.
fn containers_path(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::CronJob => &[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "spec",
            "containers",
        ],
        _ => &["spec", "template", "spec", "containers"],
    }
}

/// The image of the target's container as the object has it now.
pub fn container_image(
    kind: WorkloadKind,
    object: &Value,
    container: &str,
) -> Option<Option<String>> {
    let mut node = object;
    for key in containers_path(kind) {
        node = node.get(key)?;
    }
    node.as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .map(|c| c.get("image").and_then(Value::as_str).map(str::to_owned))
}

/// The server-side apply body that sets only the container's image.
pub fn apply_body(workload: &Workload<'_>, image: &str) -> Value {
    let resource = api_resource(workload.target.kind);
    let mut node = json!([{ "name": workload.target.container, "image": image }]);
    for key in containers_path(workload.target.kind).iter().rev() {
        node = json!({ *key: node });
    }
    if let Value::Object(map) = &mut node {
        map.insert("apiVersion".into(), json!(resource.api_version));
        map.insert("kind".into(), json!(resource.kind));
        map.insert(
            "metadata".into(),
            json!({ "name": workload.target.name, "namespace": workload.namespace }),
        );
    }
    node
}

fn api(client: &kube::Client, workload: &Workload<'_>) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        workload.namespace,
        &api_resource(workload.target.kind),
    )
}

/// The current image of the target's container. Stalled when the workload or the container
/// does not exist.
pub async fn current_image(
    client: &kube::Client,
    workload: &Workload<'_>,
) -> Result<Option<String>> {
    let object = api(client, workload)
        .get_opt(&workload.target.name)
        .await?
        .ok_or_else(|| {
            Error::stalled(
                reasons::TARGET_NOT_FOUND,
                format!("target {} does not exist", workload.describe()),
            )
        })?;
    let object = serde_json::to_value(&object)?;
    container_image(workload.target.kind, &object, &workload.target.container).ok_or_else(|| {
        Error::stalled(
            reasons::CONTAINER_NOT_FOUND,
            format!(
                "target {} has no container named {:?}",
                workload.describe(),
                workload.target.container
            ),
        )
    })
}

/// Pin the target's container to `image` (`repository@digest`), unless it already is.
pub async fn pin_target(
    client: &kube::Client,
    workload: &Workload<'_>,
    image: &str,
) -> Result<PinOutcome> {
    let previous = current_image(client, workload).await?;
    if previous.as_deref() == Some(image) {
        return Ok(PinOutcome::AlreadyPinned);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api(client, workload)
        .patch(
            &workload.target.name,
            &params,
            &Patch::Apply(apply_body(workload, image)),
        )
        .await?;
    Ok(PinOutcome::Pinned(Pinned {
        previous_image: previous,
        ..Pinned::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: WorkloadKind) -> KubernetesTarget {
        KubernetesTarget {
            kind,
            name: "banana".into(),
            namespace: None,
            container: "app".into(),
        }
    }

    #[test]
    fn apply_body_sets_only_the_container_image() {
        let t = target(WorkloadKind::Deployment);
        let body = apply_body(&Workload::new(&t, "shop"), "r@sha256:aa");
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "banana", "namespace": "shop"},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "r@sha256:aa"}]}}}
            })
        );
    }

    #[test]
    fn cronjob_containers_live_under_the_job_template() {
        let t = target(WorkloadKind::CronJob);
        let body = apply_body(&Workload::new(&t, "shop"), "r@sha256:aa");
        assert_eq!(body["apiVersion"], "batch/v1");
        assert_eq!(
            body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "r@sha256:aa"
        );
        let object = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "old"}]}}}}}});
        assert_eq!(
            container_image(WorkloadKind::CronJob, &object, "app"),
            Some(Some("old".into()))
        );
        assert_eq!(
            container_image(WorkloadKind::CronJob, &object, "other"),
            None
        );
        assert_eq!(
            container_image(WorkloadKind::Deployment, &object, "app"),
            None
        );
    }
}
