//! Why a build Job has no running pod. When the API server refuses the Job's pod (Pod Security
//! admission, a quota, a missing ServiceAccount), the Job just has no pod: the reason is only in
//! a `FailedCreate` Event on the Job. When the pod exists but cannot start (an image pull), the
//! reason is in its container statuses. Both are read here and classified: a cause in the spec
//! is Stalled, anything else is shown while the Job controller keeps trying.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::Result;
use crate::conditions::reasons;
use crate::pipeline::outcome::Fault;

/// How long a Job may go without a ready pod before its Events and pods are looked at.
pub const GRACE_SECONDS: i64 = 15;

/// Whether the Job has no ready pod yet (it has not finished).
pub fn has_no_ready_pod(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.ready).unwrap_or(0) == 0
}

/// Why the Job has no running pod, if its Events or pods say.
pub async fn why_no_pod(client: &Client, namespace: &str, job: &Job) -> Result<Option<Fault>> {
    let name = job.name_any();
    let pods = super::pods_of_job(client, namespace, &name).await?;
    if let Some(fault) = pods.iter().find_map(pod_problem) {
        return Ok(Some(fault));
    }
    let Some(uid) = job.uid() else {
        return Ok(None);
    };
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.uid={uid},reason=FailedCreate");
    let found = events.list(&ListParams::default().fields(&fields)).await?;
    let newest = found
        .items
        .iter()
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    Ok(newest
        .and_then(|e| e.message.as_deref())
        .map(|m| failed_create(&name, m)))
}

/// A `FailedCreate` Event's message (`Error creating: pods "x" is forbidden: ...`), classified.
pub fn failed_create(job: &str, message: &str) -> Fault {
    let cause = message
        .strip_prefix("Error creating: ")
        .unwrap_or(message)
        .trim();
    let cause = at_most(cause, 1024);
    let quota = cause.contains("exceeded quota");
    let text = format!("the Job controller cannot create the pod of build Job {job}: {cause}");
    if quota {
        Fault::transient(reasons::BUILD_POD_PENDING, text)
    } else {
        Fault::stalled(
            reasons::BUILD_POD_REJECTED,
            format!(
                "{text}. Fix build.template, then set a new value of the monoship.dev/rebuild \
                 annotation to build again"
            ),
        )
    }
}

/// A build pod that exists but cannot start its containers.
pub fn pod_problem(pod: &Pod) -> Option<Fault> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in statuses {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let detail = waiting.message.as_deref().unwrap_or(reason);
        let detail = at_most(detail, 512);
        let text = format!(
            "build pod {} cannot start container {} ({reason}): {detail}",
            pod.name_any(),
            container.name
        );
        match reason {
            "ErrImagePull" | "ImagePullBackOff" => {
                return Some(Fault::transient(reasons::BUILD_POD_PENDING, text));
            }
            "InvalidImageName" | "CreateContainerConfigError" | "CreateContainerError" => {
                return Some(Fault::stalled(reasons::BUILD_POD_REJECTED, text));
            }
            _ => {}
        }
    }
    None
}

/// At most `limit` bytes of `text`, cut at a character boundary.
pub(crate) fn at_most(text: &str, limit: usize) -> &str {
    let end = text
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= limit)
        .last()
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_security_refusals_stall_and_quotas_wait() {
        let forbidden = failed_create(
            "banana-1",
            r#"Error creating: pods "banana-1-x7k2p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "build" must set securityContext.allowPrivilegeEscalation=false)"#,
        );
        assert!(forbidden.stalled);
        assert_eq!(forbidden.reason, reasons::BUILD_POD_REJECTED);
        assert!(
            forbidden
                .message
                .contains(r#"violates PodSecurity "restricted:latest""#)
        );
        assert!(forbidden.message.contains("monoship.dev/rebuild"));
        let quota = failed_create(
            "banana-1",
            r#"Error creating: pods "banana-1-x" is forbidden: exceeded quota: builds, requested: cpu=2, used: cpu=8, limited: cpu=8"#,
        );
        assert!(!quota.stalled);
        assert_eq!(quota.reason, reasons::BUILD_POD_PENDING);
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        assert_eq!(at_most("abc", 10), "abc");
        assert_eq!(at_most("aé", 2), "a");
        assert_eq!(at_most("aé", 3), "aé");
        let long = "é".repeat(2000);
        let message = failed_create("banana-1", &long).message;
        assert!(message.len() < 1400, "{}", message.len());
    }

    #[test]
    fn image_pulls_wait_and_bad_names_stall() {
        let pod = |reason: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "banana-1-x"},
                "status": {"containerStatuses": [{"name": "build", "image": "nope", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": "pull access denied"}}}]}
            }))
            .unwrap()
        };
        let pulling = pod_problem(&pod("ImagePullBackOff")).unwrap();
        assert!(!pulling.stalled && pulling.message.contains("pull access denied"));
        assert!(pod_problem(&pod("InvalidImageName")).unwrap().stalled);
        assert!(pod_problem(&pod("ContainerCreating")).is_none());
    }
}
