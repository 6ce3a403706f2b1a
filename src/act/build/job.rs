//! The build Job's spec: one per (revision, rebuild token), with a deterministic name, so that a
//! restart finds the Job it created instead of creating another. Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PodSpec, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::{
    CHECKOUT_ANNOTATION, REBUILD_ANNOTATION, REVISION_LABEL, SERVICEBUILD_LABEL, ServiceBuild,
    ServiceBuildStatus, short_revision,
};
use crate::conditions::reasons;
use crate::pipeline::observe::{JobState, ObservedJob, WantedBuild};
use crate::{Error, Result};

/// Where the source is checked out in every build container.
pub const WORKSPACE: &str = "/workspace";
const WORKSPACE_VOLUME: &str = "monoship-workspace";
const PUSH_SECRET_VOLUME: &str = "monoship-push-secret";
const PUSH_SECRET_DIR: &str = "/monoship/docker";
const GIT_SECRET_VOLUME: &str = "monoship-git-credentials";
const GIT_SECRET_DIR: &str = "/monoship/git";
const CHECKOUT_CONTAINER: &str = "monoship-checkout";
const MAX_NAME: usize = 63;
const HASH_LEN: usize = 10;

/// The variable naming the file the build container writes the digest it pushed to: its
/// `terminationMessagePath`, so that the digest reaches the pod's status.
pub const DIGEST_FILE_ENV: &str = "MONOSHIP_DIGEST_FILE";
/// The variable holding the build's input key (`sha256:…`), when its inputs were read. A build
/// that labels its image with it (`dev.monoship.inputs`) lets the key be checked on an image
/// found later.
pub const INPUT_KEY_ENV: &str = "MONOSHIP_INPUT_KEY";
/// The annotation of a build Job with its input key.
pub const INPUT_KEY_ANNOTATION: &str = "monoship.dev/input-key";
/// Kubernetes' default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// A container's `terminationMessagePath`, or the Kubernetes default.
pub fn termination_message_path(container: &Container) -> &str {
    container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH)
}

/// Controller-wide settings of build Jobs.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Image of the init container that fetches the source (needs `git` and `sh`).
    pub checkout_image: String,
}

/// The deterministic name of a build Job: the ServiceBuild's name, cut to fit, and a short hash
/// of the ServiceBuild's uid, the revision, the rebuild token and the Job it replaces; at most 63
/// characters. The uid keeps two ServiceBuilds with a long shared prefix building one commit
/// apart; the replaced Job keeps a rebuild with an old token from meeting that token's old Job.
pub fn job_name(
    servicebuild: &str,
    uid: &str,
    revision: &str,
    rebuild: Option<&str>,
    replaces: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    for part in [uid, revision] {
        hasher.update(part.as_bytes());
        hasher.update(b"\0");
    }
    if let Some(token) = rebuild {
        hasher.update(b"rebuild\0");
        hasher.update(token.as_bytes());
        hasher.update(b"\0");
    }
    if let Some(job) = replaces {
        hasher.update(b"replaces\0");
        hasher.update(job.as_bytes());
    }
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(HASH_LEN)
        .collect();
    let room = MAX_NAME - HASH_LEN - 1;
    let prefix = servicebuild
        .get(..room.min(servicebuild.len()))
        .unwrap_or(servicebuild)
        .trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

/// The image reference the build pushes to: `repository:<rendered revisionTag>`.
pub fn push_reference(sb: &ServiceBuild) -> String {
    format!(
        "{}:{}",
        sb.spec.image.repository,
        sb.spec.revision_tag_for(&sb.spec.source.revision)
    )
}

/// The build the ServiceBuild asks for now, given its status as read.
///
/// A value of the `monoship.dev/rebuild` annotation other than the last one handled
/// (`status.lastHandledRebuild`) asks for a new build of the revision now. Otherwise the
/// recorded build of the revision is the wanted one, whatever the annotation says (removing it
/// changes nothing); a revision not built yet gets a build of its own.
pub fn wanted_build(sb: &ServiceBuild, status: &ServiceBuildStatus) -> WantedBuild {
    let revision = sb.spec.source.revision.clone();
    let image = push_reference(sb);
    let uid = sb.uid().unwrap_or_else(|| sb.name_any());
    let recorded = status.build.as_ref().filter(|b| b.revision == revision);
    let requested = sb
        .annotations()
        .get(REBUILD_ANNOTATION)
        .filter(|token| status.last_handled_rebuild.as_ref() != Some(*token));
    if let Some(token) = requested {
        let replaces = recorded.map(|b| b.job_name.as_str());
        return WantedBuild {
            job_name: job_name(&sb.name_any(), &uid, &revision, Some(token), replaces),
            rebuild: Some(token.clone()),
            revision,
            image,
            input_key: None,
        };
    }
    match recorded {
        Some(build) => WantedBuild {
            job_name: build.job_name.clone(),
            rebuild: build.rebuild.clone(),
            revision,
            image,
            input_key: None,
        },
        None => WantedBuild {
            job_name: job_name(&sb.name_any(), &uid, &revision, None, None),
            rebuild: None,
            revision,
            image,
            input_key: None,
        },
    }
}

/// A Job as the pipeline observes it: its state and its start and completion times.
pub fn observe_job(job: Option<&Job>) -> ObservedJob {
    let status = job.and_then(|j| j.status.as_ref());
    let state = job_state(job);
    ObservedJob {
        waiting_for_pod: state == JobState::Running
            && job.is_some_and(super::diagnose::has_no_ready_pod),
        state,
        started: status.and_then(|s| s.start_time.clone()),
        completed: status.and_then(|s| s.completion_time.clone()),
        stuck: None,
        reported_digest: None,
    }
}

/// The state of a Job, read the way the Job controller reports it.
pub fn job_state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Missing;
    };
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let is_true = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if is_true("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(failed) = is_true("Failed") {
        return JobState::Failed {
            reason: failed.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
            message: failed
                .message
                .clone()
                .unwrap_or_else(|| "the build Job failed".to_owned()),
        };
    }
    JobState::Running
}

/// The build Job of the wanted build.
pub fn build_job(sb: &ServiceBuild, wanted: &WantedBuild, settings: &BuildSettings) -> Result<Job> {
    let name = sb.name_any();
    let namespace = sb.namespace().unwrap_or_default();
    let spec = &sb.spec;
    let revision = &spec.source.revision;
    let owner = sb.controller_owner_ref(&()).ok_or_else(|| {
        Error::stalled(
            reasons::INVALID_SPEC,
            "the ServiceBuild has no uid yet; it cannot own a build Job",
        )
    })?;
    let job_name = wanted.job_name.clone();

    let mut labels = BTreeMap::new();
    labels.insert(SERVICEBUILD_LABEL.to_owned(), name.clone());
    labels.insert(REVISION_LABEL.to_owned(), label_value(revision));
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION_LABEL.to_owned(), revision.clone());

    let mut template = spec.build.template.clone();
    let checkout = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CHECKOUT_ANNOTATION))
        .is_none_or(|v| v != "false");
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels.clone());
    let pod = template.spec.get_or_insert_with(PodSpec::default);
    if pod.containers.is_empty() {
        return Err(Error::stalled(
            reasons::INVALID_SPEC,
            "build.template.spec.containers must list at least one container",
        ));
    }
    pod.restart_policy = Some("Never".to_owned());
    if pod.automount_service_account_token.is_none() {
        pod.automount_service_account_token = Some(false);
    }

    let mut env = build_env(sb);
    if let Some(key) = &wanted.input_key {
        env.push(env_var(INPUT_KEY_ENV, key));
        annotations.insert(INPUT_KEY_ANNOTATION.to_owned(), key.clone());
    }
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: WORKSPACE_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let mut mounts = vec![VolumeMount {
        name: WORKSPACE_VOLUME.to_owned(),
        mount_path: WORKSPACE.to_owned(),
        ..VolumeMount::default()
    }];
    let mut env_all = env.clone();
    if let Some(secret) = &spec.image.push_secret_ref {
        volumes.push(Volume {
            name: PUSH_SECRET_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".to_owned(),
                    path: "config.json".to_owned(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: PUSH_SECRET_VOLUME.to_owned(),
            mount_path: PUSH_SECRET_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        env_all.push(env_var("DOCKER_CONFIG", PUSH_SECRET_DIR));
        env_all.push(env_var(
            "REGISTRY_AUTH_FILE",
            &format!("{PUSH_SECRET_DIR}/config.json"),
        ));
    }
    for container in pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
    {
        prepare_container(container, &env_all, &mounts);
    }
    if let Some(build) = pod.containers.first_mut() {
        // The build reports the digest it pushed through its termination message.
        let path = termination_message_path(build).to_owned();
        let env = build.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != DIGEST_FILE_ENV);
        env.push(env_var(DIGEST_FILE_ENV, &path));
    }

    if checkout {
        let mut checkout_mounts = vec![mounts[0].clone()];
        if let Some(secret) = &spec.source.secret_ref {
            volumes.push(Volume {
                name: GIT_SECRET_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.name.clone()),
                    // Readable by the checkout container's non-root user; only it mounts them.
                    default_mode: Some(0o444),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            checkout_mounts.push(VolumeMount {
                name: GIT_SECRET_VOLUME.to_owned(),
                mount_path: GIT_SECRET_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        let mut checkout_env = env.clone();
        checkout_env.push(env_var("MONOSHIP_GIT_CREDENTIALS", GIT_SECRET_DIR));
        checkout_env.push(env_var("HOME", "/tmp"));
        let container = Container {
            name: CHECKOUT_CONTAINER.to_owned(),
            image: Some(settings.checkout_image.clone()),
            command: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                CHECKOUT_SCRIPT.to_owned(),
            ]),
            env: Some(checkout_env),
            volume_mounts: Some(checkout_mounts),
            working_dir: Some(WORKSPACE.to_owned()),
            security_context: Some(restricted_security_context()),
            ..Container::default()
        };
        pod.init_containers
            .get_or_insert_with(Vec::new)
            .insert(0, container);
    }

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(spec.build.timeout_seconds),
            backoff_limit: Some(spec.build.backoff_limit),
            template,
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Fetches exactly one commit, shallow, into `$MONOSHIP_WORKSPACE`, with the credentials of
/// `source.secretRef` when mounted: `username`/`password` (basic-auth) or `ssh-privatekey`.
const CHECKOUT_SCRIPT: &str = r#"set -eu
# Files the build container can write, whatever user it runs as.
umask 0000
cd "${MONOSHIP_WORKSPACE:-/workspace}"
creds="${MONOSHIP_GIT_CREDENTIALS:-/monoship/git}"
if [ -f "$creds/ssh-privatekey" ]; then
  cp "$creds/ssh-privatekey" /tmp/monoship-ssh-key && chmod 600 /tmp/monoship-ssh-key
  export GIT_SSH_COMMAND="ssh -i /tmp/monoship-ssh-key -o StrictHostKeyChecking=accept-new"
fi
if [ -f "$creds/password" ]; then
  export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=credential.helper
  export GIT_CONFIG_VALUE_0='!f() { echo "username=$(cat "$MONOSHIP_GIT_CREDENTIALS/username" 2>/dev/null || echo git)"; echo "password=$(cat "$MONOSHIP_GIT_CREDENTIALS/password")"; }; f'
fi
git init -q .
git fetch -q --depth 1 --no-tags "$MONOSHIP_SOURCE_REPOSITORY" "$MONOSHIP_REVISION"
git -c advice.detachedHead=false checkout -q FETCH_HEAD
test "$(git rev-parse HEAD)" = "$MONOSHIP_REVISION"
echo "checked out $MONOSHIP_REVISION"
"#;

/// The user the checkout container runs as (not root: the `restricted` Pod Security Standard).
pub const CHECKOUT_USER: i64 = 65532;

/// What the `restricted` Pod Security Standard asks of every container: no privilege
/// escalation, every capability dropped, a non-root user, the runtime's default seccomp profile.
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        run_as_non_root: Some(true),
        run_as_user: Some(CHECKOUT_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The `MONOSHIP_*` variables every build container gets.
pub fn build_env(sb: &ServiceBuild) -> Vec<EnvVar> {
    let revision = &sb.spec.source.revision;
    vec![
        env_var("MONOSHIP_SERVICE", &sb.name_any()),
        env_var("MONOSHIP_SOURCE_REPOSITORY", &sb.spec.source.repository),
        env_var("MONOSHIP_REVISION", revision),
        env_var("MONOSHIP_SHORT_REVISION", short_revision(revision)),
        env_var("MONOSHIP_IMAGE", &push_reference(sb)),
        env_var("MONOSHIP_WORKSPACE", WORKSPACE),
    ]
}

fn prepare_container(container: &mut Container, env: &[EnvVar], mounts: &[VolumeMount]) {
    let own = container.env.get_or_insert_with(Vec::new);
    own.retain(|e| !env.iter().any(|ours| ours.name == e.name));
    own.extend(env.iter().cloned());
    let own_mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    for mount in mounts {
        if !own_mounts
            .iter()
            .any(|m| m.mount_path == mount.mount_path || m.name == mount.name)
        {
            own_mounts.push(mount.clone());
        }
    }
    if container.working_dir.is_none() {
        container.working_dir = Some(WORKSPACE.to_owned());
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// Label values are at most 63 characters; a SHA-256 revision has 64.
fn label_value(value: &str) -> String {
    value.get(..63).unwrap_or(value).to_owned()
}

#[cfg(test)]
mod tests;
