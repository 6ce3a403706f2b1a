//! The harness itself: clients, RBAC through a ServiceAccount token, and the stand-in kubelet
//! running a Job to completion under the real Job controller.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use monoship_testkit::envtest::kubelet::{Kubelet, KubeletOptions};
use serde_json::json;

async fn job_condition(jobs: &Api<Job>, name: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = jobs.get(name).await.unwrap();
        let done = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            })
            .map(|c| c.type_.clone());
        if let Some(done) = done {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Job {name} did not finish: {:#?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn admin_and_service_account_clients_see_rbac() {
    let env = envtest!();
    let admin = env.client().await;
    let namespace = env.namespace(&admin, "harness", &[]).await;
    Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("the admin lists namespaces");
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let nobody = env.service_account_client(&namespace, "nobody").await;
    let denied = Api::<Pod>::namespaced(nobody, &namespace)
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without a role may not list pods");
    match denied {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{namespace}:nobody")),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403, got {other}"),
    }
}

/// The real Job controller creates the pod, the stand-in kubelet binds and runs it and writes
/// its status (with the termination message), and the Job completes or fails.
#[tokio::test]
async fn kubelet_runs_job_pods_and_the_job_controller_finishes_the_jobs() {
    let env = envtest!();
    let admin = env.client().await;
    let begin = std::time::Instant::now();
    let namespace = env.namespace(&admin, "kubelet", &[]).await;
    eprintln!(
        "a namespace with its default ServiceAccount in {:.1} s",
        begin.elapsed().as_secs_f64()
    );
    let kubelet = Kubelet::start(admin.clone(), &namespace, KubeletOptions::default()).await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    let message_dir = tempfile::tempdir().unwrap();
    for (name, script) in [
        ("ok", "echo sha256:abc > \"$0\"".to_owned()),
        ("fails", "echo broken >&2; exit 3".to_owned()),
    ] {
        let message = message_dir.path().join(name);
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "init", "image": "x", "command": ["sh", "-c", "test -d \"$MONOSHIP_WORKSPACE\""]}],
                "containers": [{"name": "main", "image": "x", "command": ["sh", "-c", script, message],
                                "terminationMessagePath": message,
                                "terminationMessagePolicy": "FallbackToLogsOnError"}]
            }}}
        }))
        .unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
    }
    assert_eq!(job_condition(&jobs, "ok").await, "Complete");
    assert_eq!(job_condition(&jobs, "fails").await, "Failed");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    for (job, phase, code, text) in [
        ("ok", "Succeeded", 0, "sha256:abc\n"),
        ("fails", "Failed", 3, "broken"),
    ] {
        let list = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1, "one pod for Job {job}");
        let pod = &list.items[0];
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(kubelet.node())
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some(phase));
        let init = &status.init_container_statuses.as_ref().unwrap()[0];
        let init = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (init.exit_code, init.reason.as_deref()),
            (0, Some("Completed"))
        );
        let main = &status.container_statuses.as_ref().unwrap()[0];
        let main = main.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(main.exit_code, code);
        assert_eq!(main.message.as_deref(), Some(text));
    }
    assert_eq!(kubelet.runs(), 2);
    let rss = env.rss_kib();
    eprintln!(
        "envtest start-up {:.1} s, RSS {:?} KiB",
        env.startup.as_secs_f64(),
        rss
    );
}

/// Deleting a running Job (as monoship does when a newer revision supersedes a build): the
/// garbage collector marks its pod for deletion, the kubelet kills the process and confirms,
/// and the pod is gone.
#[tokio::test]
async fn kubelet_kills_and_removes_a_deleted_pod() {
    let env = envtest!();
    let admin = env.client().await;
    let namespace = env.namespace(&admin, "deleted", &[]).await;
    let _kubelet = Kubelet::start(admin.clone(), &namespace, KubeletOptions::default()).await;
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("started");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "long"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x",
                            "command": ["sh", "-c", "echo $$ > \"$0\"; exec sleep 600", started]}]
        }}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &namespace);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&started)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "the pod never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    jobs.delete("long", &kube::api::DeleteParams::background())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = pods.list(&ListParams::default()).await.unwrap().items;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods left: {:#?}",
            left.iter()
                .map(|p| (&p.metadata.name, &p.metadata.deletion_timestamp))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = std::fs::read_to_string(&started).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let running = stat
        .split_whitespace()
        .nth(2)
        .is_some_and(|state| state != "Z");
    assert!(!running, "the process {} still runs: {stat}", pid.trim());
}
