//! Kubernetes workload targets: pin one container's image with server-side apply under field
//! manager `monoship`, and only when it is not already pinned. The apply also carries every
//! other image and claim monoship holds on the workload ([`claims`]), so that pins of several
//! containers (by one ServiceBuild or several) never take each other's fields away.

mod claims;

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;
use tracing::{debug, info};

use super::{Actor, PinOutcome, Pinned};
use crate::api::{FIELD_MANAGER, KubernetesTarget, WorkloadKind};
use crate::conditions::reasons;
use crate::{Error, Result};
use claims::Claims;

pub use claims::PIN_ANNOTATION_PREFIX;

/// How many times a pin reads the workload again after a concurrent write (409) before it
/// gives up with a transient error.
const ATTEMPTS: usize = 4;

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

    /// Whether both name the same container of the same workload.
    pub fn same_container(&self, other: &Workload<'_>) -> bool {
        self.namespace == other.namespace
            && self.target.kind == other.target.kind
            && self.target.name == other.target.name
            && self.target.container == other.target.container
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

fn api(client: &kube::Client, workload: &Workload<'_>) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        workload.namespace,
        &api_resource(workload.target.kind),
    )
}

/// The workload as JSON. Stalled when it does not exist.
async fn read(api: &Api<DynamicObject>, workload: &Workload<'_>) -> Result<Value> {
    let object = api.get_opt(&workload.target.name).await?.ok_or_else(|| {
        Error::stalled(
            reasons::TARGET_NOT_FOUND,
            format!("target {} does not exist", workload.describe()),
        )
    })?;
    Ok(serde_json::to_value(&object)?)
}

/// The image of the target's container in `object`. Stalled when there is no such container.
fn image_in(workload: &Workload<'_>, object: &Value) -> Result<Option<String>> {
    container_image(workload.target.kind, object, &workload.target.container).ok_or_else(|| {
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

/// The current image of the target's container. Stalled when the workload or the container
/// does not exist.
pub async fn current_image(
    client: &kube::Client,
    workload: &Workload<'_>,
) -> Result<Option<String>> {
    let object = read(&api(client, workload), workload).await?;
    image_in(workload, &object)
}

/// Pin the target's container to `image` (`repository@digest`) for the acting ServiceBuild.
///
/// Nothing is written when the container already runs `image` under this ServiceBuild's claim.
/// Stalled (`TargetClaimed`) when another ServiceBuild holds a live claim on the container. The
/// apply is conditional on the resourceVersion read, so a concurrent write makes it fail with
/// 409: the workload is read again, a few times, before a transient error.
pub async fn pin_target(
    actor: &Actor<'_>,
    workload: &Workload<'_>,
    image: &str,
) -> Result<PinOutcome> {
    let claimant = format!("{}/{}", actor.namespace, actor.sb.name_any());
    let api = api(actor.client, workload);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut attempt = 1;
    loop {
        let object = read(&api, workload).await?;
        let previous = image_in(workload, &object)?;
        let claims = Claims::read(workload, &object);
        if claims.kept_by_monoship_alone(&workload.target.container) {
            return Err(Error::stalled(
                reasons::CONTAINER_NOT_FOUND,
                format!(
                    "target {} container {:?} was removed from the workload by its other \
                     field managers (Git, say) and only monoship's own pin keeps it there: \
                     remove the target from this ServiceBuild",
                    workload.describe(),
                    workload.target.container
                ),
            ));
        }
        match claims.owner(&workload.target.container) {
            Some(owner) if owner == claimant && previous.as_deref() == Some(image) => {
                return Ok(PinOutcome::AlreadyPinned);
            }
            Some(owner) if owner != claimant => {
                if claims::is_live(actor.client, owner, workload).await? {
                    return Err(Error::stalled(
                        reasons::TARGET_CLAIMED,
                        format!(
                            "target {} container {:?} is pinned by ServiceBuild {owner}: remove \
                             the target from this ServiceBuild, or from {owner} to hand the \
                             container over",
                            workload.describe(),
                            workload.target.container
                        ),
                    ));
                }
                info!(target = %workload.describe(), %owner, "taking over a stale claim");
            }
            _ => {}
        }
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let body = claims.apply_body(workload, rv, image, &claimant)?;
        actor.leadership.ensure()?;
        match api
            .patch(&workload.target.name, &params, &Patch::Apply(body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                debug!(target = %workload.describe(), attempt, "the workload changed; reading it again");
                attempt += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        }
        if previous.as_deref() == Some(image) {
            // Only the claim was written (a pin by an older monoship, or a stale claim taken
            // over): the container ran the digest already.
            info!(target = %workload.describe(), "claimed a target that already ran the digest");
            return Ok(PinOutcome::AlreadyPinned);
        }
        return Ok(PinOutcome::Pinned(Pinned {
            previous_image: previous,
            ..Pinned::default()
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(kind: WorkloadKind) -> KubernetesTarget {
        KubernetesTarget {
            kind,
            name: "banana".into(),
            namespace: None,
            container: "app".into(),
        }
    }

    #[test]
    fn a_first_pin_sets_the_image_and_the_claim() {
        let t = target(WorkloadKind::Deployment);
        let workload = Workload::new(&t, "shop");
        let object = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "r:bootstrap"}, {"name": "sidecar", "image": "proxy:1"}]}}}});
        let body = Claims::read(&workload, &object)
            .apply_body(&workload, Some("7"), "r@sha256:aa", "shop/banana")
            .unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "banana", "namespace": "shop", "resourceVersion": "7",
                             "annotations": {"pin.monoship.dev/app": "shop/banana"}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "r@sha256:aa"}]}}}
            })
        );
    }

    #[test]
    fn cronjob_containers_live_under_the_job_template() {
        let t = target(WorkloadKind::CronJob);
        let workload = Workload::new(&t, "shop");
        let object = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "old"}]}}}}}});
        let body = Claims::read(&workload, &object)
            .apply_body(&workload, None, "r@sha256:aa", "shop/banana")
            .unwrap();
        assert_eq!(body["apiVersion"], "batch/v1");
        assert_eq!(
            body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "r@sha256:aa"
        );
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
