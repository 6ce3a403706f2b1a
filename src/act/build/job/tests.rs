//! The build Job's spec.
use super::*;
use serde_json::json;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn servicebuild(template: serde_json::Value) -> ServiceBuild {
    let mut sb: ServiceBuild = serde_json::from_value(json!({
        "apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
        "metadata": {"name": "banana", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "source": {"repository": "https://git.example/mono.git", "revision": REV,
                       "secretRef": {"name": "git-creds"}},
            "build": {"template": template, "timeoutSeconds": 600, "backoffLimit": 2},
            "image": {"repository": "registry.example/shop/banana", "pushSecretRef": {"name": "push"}}
        }
    }))
    .unwrap();
    sb.metadata.uid = Some("u-1".into());
    sb
}

fn wanted(sb: &ServiceBuild) -> WantedBuild {
    wanted_build(sb, &ServiceBuildStatus::default())
}

fn settings() -> BuildSettings {
    BuildSettings {
        checkout_image: "alpine/git:test".into(),
    }
}

fn env_of(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn job_names_are_deterministic_short_and_distinct() {
    let name = |sb: &str, uid: &str, rev: &str, token: Option<&str>, replaces: Option<&str>| {
        job_name(sb, uid, rev, token, replaces)
    };
    let a = name("banana", "u-1", REV, None, None);
    assert_eq!(a, name("banana", "u-1", REV, None, None));
    // Another ServiceBuild of the same name prefix (another uid) builds under another name.
    assert_ne!(a, name("banana", "u-2", REV, None, None));
    // A rebuild with a token already used once replaces another Job: another name.
    let again = name("banana", "u-1", REV, Some("1"), Some("banana-aaaa"));
    assert_ne!(
        again,
        name("banana", "u-1", REV, Some("1"), Some("banana-bbbb"))
    );
    assert!(a.starts_with("banana-") && a.len() == "banana-".len() + HASH_LEN);
    assert_ne!(a, name("banana", "u-1", &REV.replace('0', "f"), None, None));
    assert_ne!(a, name("banana", "u-1", REV, Some("1"), None));
    let long = name(&"x".repeat(80), "u-1", REV, None, None);
    assert!(long.len() <= 63, "{long}");
    let dashed = name(&format!("{}-y", "x".repeat(51)), "u-1", REV, None, None);
    assert!(!dashed.contains("--"), "{dashed}");
}

#[test]
fn the_job_carries_owner_labels_limits_env_and_mounts() {
    let sb = servicebuild(json!({"spec": {"containers": [
        {"name": "build", "image": "builder", "env": [{"name": "MONOSHIP_IMAGE", "value": "user-set"}]}
    ]}}));
    let job = build_job(&sb, &wanted(&sb), &settings()).unwrap();
    let meta = &job.metadata;
    assert_eq!(
        meta.name.as_deref(),
        Some(job_name("banana", "u-1", REV, None, None).as_str())
    );
    assert_eq!(meta.labels.as_ref().unwrap()[SERVICEBUILD_LABEL], "banana");
    assert_eq!(meta.labels.as_ref().unwrap()[REVISION_LABEL], REV);
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
    let spec = job.spec.unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(600));
    assert_eq!(spec.backoff_limit, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));

    let build = &pod.containers[0];
    let env = env_of(build);
    assert_eq!(
        env["MONOSHIP_IMAGE"],
        format!("registry.example/shop/banana:{}", &REV[..12])
    );
    assert_eq!(env["MONOSHIP_REVISION"], REV);
    assert_eq!(env["MONOSHIP_SHORT_REVISION"], &REV[..12]);
    assert_eq!(env["MONOSHIP_SERVICE"], "banana");
    assert_eq!(
        env["MONOSHIP_SOURCE_REPOSITORY"],
        "https://git.example/mono.git"
    );
    assert_eq!(env["DOCKER_CONFIG"], PUSH_SECRET_DIR);
    assert_eq!(
        env["REGISTRY_AUTH_FILE"],
        format!("{PUSH_SECRET_DIR}/config.json")
    );
    assert_eq!(
        build
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter(|e| e.name == "MONOSHIP_IMAGE")
            .count(),
        1
    );
    assert_eq!(build.working_dir.as_deref(), Some(WORKSPACE));
    let mounts: Vec<_> = build
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, [WORKSPACE, PUSH_SECRET_DIR]);

    let init = &pod.init_containers.unwrap()[0];
    assert_eq!(init.name, CHECKOUT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some("alpine/git:test"));
    let init_mounts: Vec<_> = init
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(init_mounts, [WORKSPACE, GIT_SECRET_DIR]);
    let volumes = pod.volumes.unwrap();
    let push = volumes
        .iter()
        .find(|v| v.name == PUSH_SECRET_VOLUME)
        .unwrap();
    assert_eq!(
        push.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("push")
    );
}

/// The build container (the template's first) gets `MONOSHIP_DIGEST_FILE`, equal to its
/// `terminationMessagePath` (the Kubernetes default when unset); other containers do not.
#[test]
fn the_build_container_reports_its_digest_through_its_termination_message() {
    let sb = servicebuild(json!({"spec": {"containers": [
        {"name": "build", "image": "builder", "env": [{"name": "MONOSHIP_DIGEST_FILE", "value": "/x"}]},
        {"name": "sidecar", "image": "proxy"}
    ]}}));
    let pod = build_job(&sb, &wanted(&sb), &settings())
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        env_of(&pod.containers[0])["MONOSHIP_DIGEST_FILE"],
        "/dev/termination-log"
    );
    assert_eq!(
        pod.containers[0].termination_message_path, None,
        "the template's, untouched"
    );
    assert!(!env_of(&pod.containers[1]).contains_key("MONOSHIP_DIGEST_FILE"));
    assert!(!env_of(&pod.init_containers.unwrap()[0]).contains_key("MONOSHIP_DIGEST_FILE"));

    let sb = servicebuild(
        json!({"spec": {"containers": [{"name": "build", "image": "builder",
        "terminationMessagePath": "/tmp/digest", "terminationMessagePolicy": "FallbackToLogsOnError"}]}}),
    );
    let pod = build_job(&sb, &wanted(&sb), &settings())
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let build = &pod.containers[0];
    assert_eq!(env_of(build)["MONOSHIP_DIGEST_FILE"], "/tmp/digest");
    assert_eq!(
        build.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
}

#[test]
fn templates_can_opt_out_of_checkout_and_ask_for_a_token() {
    let sb = servicebuild(json!({
        "metadata": {"annotations": {CHECKOUT_ANNOTATION: "false"}},
        "spec": {"automountServiceAccountToken": true, "containers": [{"name": "build"}]}
    }));
    let pod = build_job(&sb, &wanted(&sb), &settings())
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(pod.init_containers.unwrap_or_default().is_empty());
    assert_eq!(pod.automount_service_account_token, Some(true));
}

#[test]
fn a_template_without_containers_is_a_stalled_error() {
    let sb = servicebuild(json!({"spec": {"containers": []}}));
    let error = build_job(&sb, &wanted(&sb), &settings()).unwrap_err();
    assert_eq!(error.reason(), reasons::INVALID_SPEC);
}

#[test]
fn job_state_follows_the_job_conditions() {
    let job = |conditions: serde_json::Value| -> Job {
        serde_json::from_value(json!({"status": {"conditions": conditions}})).unwrap()
    };
    assert_eq!(job_state(None), JobState::Missing);
    assert_eq!(job_state(Some(&job(json!([])))), JobState::Running);
    assert_eq!(
        job_state(Some(&job(json!([{"type": "Complete", "status": "True"}])))),
        JobState::Succeeded
    );
    assert_eq!(
        job_state(Some(&job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}])
        ))),
        JobState::Failed {
            reason: "DeadlineExceeded".into(),
            message: "too slow".into()
        }
    );
    assert_eq!(
        job_state(Some(&job(json!([{"type": "Failed", "status": "False"}])))),
        JobState::Running
    );
}

/// The checks of the `restricted` Pod Security Standard (Kubernetes 1.36) that a pod spec can
/// fail, one message each.
fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    for (flag, name) in [
        (pod.host_network, "hostNetwork"),
        (pod.host_pid, "hostPID"),
        (pod.host_ipc, "hostIPC"),
    ] {
        if flag == Some(true) {
            found.push(format!("{name} is true"));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        let allowed = volume.config_map.is_some()
            || volume.csi.is_some()
            || volume.downward_api.is_some()
            || volume.empty_dir.is_some()
            || volume.ephemeral.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.projected.is_some()
            || volume.secret.is_some();
        if !allowed {
            found.push(format!("volume {} has a restricted type", volume.name));
        }
    }
    let pod_context = pod.security_context.clone().unwrap_or_default();
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for container in containers {
        let name = &container.name;
        let context = container.security_context.clone().unwrap_or_default();
        if context.privileged == Some(true) {
            found.push(format!("{name}: privileged"));
        }
        if context.allow_privilege_escalation != Some(false) {
            found.push(format!("{name}: allowPrivilegeEscalation != false"));
        }
        let capabilities = context.capabilities.clone().unwrap_or_default();
        if !capabilities.drop.iter().flatten().any(|c| c == "ALL") {
            found.push(format!("{name}: capabilities.drop lacks ALL"));
        }
        if capabilities
            .add
            .iter()
            .flatten()
            .any(|c| c != "NET_BIND_SERVICE")
        {
            found.push(format!("{name}: adds capabilities"));
        }
        let non_root = context.run_as_non_root.or(pod_context.run_as_non_root);
        if non_root != Some(true) {
            found.push(format!("{name}: runAsNonRoot != true"));
        }
        if context.run_as_user.or(pod_context.run_as_user) == Some(0) {
            found.push(format!("{name}: runAsUser = 0"));
        }
        let seccomp = context
            .seccomp_profile
            .clone()
            .or(pod_context.seccomp_profile.clone())
            .map(|p| p.type_);
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("{name}: seccompProfile.type is {seccomp:?}"));
        }
        for port in container.ports.iter().flatten() {
            if port.host_port.is_some_and(|p| p != 0) {
                found.push(format!("{name}: hostPort"));
            }
        }
    }
    found
}

#[test]
fn a_compliant_template_yields_a_restricted_pod() {
    let sb = servicebuild(json!({"spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "build", "image": "builder", "securityContext": {
            "runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
        }}]
    }}));
    let pod = build_job(&sb, &wanted(&sb), &settings())
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    // The checkout container is compliant on its own, whatever the pod says.
    let checkout = &pod.init_containers.as_ref().unwrap()[0];
    let alone = PodSpec {
        containers: vec![checkout.clone()],
        ..PodSpec::default()
    };
    assert_eq!(restricted_violations(&alone), Vec::<String>::new());
    let context = checkout.security_context.as_ref().unwrap();
    assert_eq!(context.run_as_user, Some(CHECKOUT_USER));

    // The checker is not vacuous: a template that is not compliant is caught.
    let loose = servicebuild(json!({"spec": {"containers": [{"name": "build"}]}}));
    let pod = build_job(&loose, &wanted(&loose), &settings())
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let violations = restricted_violations(&pod);
    assert!(
        violations.iter().all(|v| v.starts_with("build:")) && violations.len() == 4,
        "{violations:?}"
    );
}
