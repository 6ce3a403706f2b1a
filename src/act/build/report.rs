//! What a succeeded build reported: the digest it pushed, written by its build container (the
//! template's first) to `$MONOSHIP_DIGEST_FILE`, its `terminationMessagePath`, which the kubelet
//! copies into the pod's status (`state.terminated.message`, at most 4096 bytes), as Tekton
//! passes results. The pods are found by the Job's `batch.kubernetes.io/job-name` label.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use crate::Result;
use crate::act::registry::is_sha256_digest;

/// A kubelet keeps at most this much of a termination message.
pub const MESSAGE_LIMIT: usize = 4096;

/// The digest the build container `container` of the Job `job` reported, if it did.
pub async fn reported_digest(
    client: &Client,
    namespace: &str,
    job: &str,
    container: &str,
) -> Result<Option<String>> {
    let pods = super::pods_of_job(client, namespace, job).await?;
    Ok(digest_in_pods(&pods, container))
}

/// The digest reported by `container` of a succeeded pod among `pods`: its termination message,
/// when it exited 0 and the message is a digest.
pub fn digest_in_pods(pods: &[Pod], container: &str) -> Option<String> {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref())
        .filter(|status| status.phase.as_deref() == Some("Succeeded"))
        .flat_map(|status| status.container_statuses.iter().flatten())
        .filter(|status| status.name == container)
        .filter_map(|status| status.state.as_ref()?.terminated.as_ref())
        .filter(|terminated| terminated.exit_code == 0)
        .find_map(|terminated| parse_digest(terminated.message.as_deref()?))
}

/// A termination message that is a digest: `sha256:` and 64 lowercase hex characters, with
/// surrounding whitespace trimmed; anything else (longer than a kubelet keeps, another
/// algorithm, a reference, free text) is not a report.
pub fn parse_digest(message: &str) -> Option<String> {
    if message.len() > MESSAGE_LIMIT {
        return None;
    }
    let digest = message.trim();
    is_sha256_digest(digest).then(|| digest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_a_well_formed_sha256_digest_is_a_report() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(parse_digest(&digest), Some(digest.clone()));
        assert_eq!(parse_digest(&format!("  {digest}\n")), Some(digest.clone()));
        for bad in [
            String::new(),
            "done".to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha512:{HEX}"),
            format!("r.example/banana@sha256:{HEX}"),
            format!("sha256:{HEX}\nsha256:{HEX}"),
            format!("{digest}{}", " ".repeat(MESSAGE_LIMIT)),
        ] {
            assert_eq!(parse_digest(&bad), None, "{bad:?}");
        }
    }

    fn pod(phase: &str, container: &str, exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "banana-1-x"},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "sidecar", "image": "p", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "message": format!("sha256:{}", "f".repeat(64))}}},
                {"name": container, "image": "b", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn the_build_container_of_a_succeeded_pod_reports() {
        let digest = format!("sha256:{HEX}");
        let reported = |pods: &[Pod]| digest_in_pods(pods, "build");
        assert_eq!(
            reported(&[pod("Succeeded", "build", 0, &digest)]),
            Some(digest.clone())
        );
        assert_eq!(
            reported(&[
                pod("Failed", "build", 1, &digest),
                pod("Succeeded", "build", 0, &digest)
            ]),
            Some(digest.clone())
        );
        assert_eq!(reported(&[pod("Failed", "build", 1, &digest)]), None);
        assert_eq!(
            reported(&[pod("Succeeded", "other", 0, &digest)]),
            None,
            "not a sidecar's"
        );
        assert_eq!(reported(&[pod("Succeeded", "build", 0, "built")]), None);
        assert_eq!(reported(&[]), None);
    }
}
