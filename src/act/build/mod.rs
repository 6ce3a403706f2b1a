//! The build step: find the wanted build's Job, or create it after checking what it references,
//! deleting the Jobs it supersedes. The Job's spec is built by the pure functions in [`job`];
//! [`report`] reads the digest a succeeded build reported.

pub mod diagnose;
mod job;
pub mod report;

pub use job::*;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use tracing::{debug, info};

use super::targets::kubernetes::{self, Workload};
use super::{Actor, image, secrets};
use crate::api::{SERVICEBUILD_LABEL, ServiceBuild};
use crate::conditions::reasons;
use crate::pipeline::observe::JobState;
use crate::pipeline::observe::WantedBuild;
use crate::pipeline::outcome::Outcome;
use crate::{Error, Result};

fn jobs(client: &Client, namespace: &str) -> Api<Job> {
    Api::namespaced(client.clone(), namespace)
}

/// The pods of the Job `job`, by the label the Job controller puts on them.
pub async fn pods_of_job(client: &Client, namespace: &str, job: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The Job named `name`, if it exists. A Job of that name that `sb` does not own is not its
/// build: that is a stall (the name is taken), never a result to act on.
pub async fn find_job(
    client: &Client,
    namespace: &str,
    name: &str,
    sb: &ServiceBuild,
) -> Result<Option<Job>> {
    let found = jobs(client, namespace).get_opt(name).await?;
    match found {
        Some(job) if !owned_by(&job, sb) => Err(Error::stalled(
            reasons::JOB_NOT_OWNED,
            format!(
                "Job {namespace}/{name} exists but is not owned by this ServiceBuild; monoship \
                 never acts on it. Delete it, or set a new value of the monoship.dev/rebuild \
                 annotation to build under another name"
            ),
        )),
        found => Ok(found),
    }
}

/// Create the wanted build's Job (a Job already there counts as created), after checking that
/// everything it references exists and deleting the Jobs it supersedes. `previous` is the Job
/// of the last recorded build, which is kept when it has finished.
pub async fn create_build_job(
    actor: &Actor<'_>,
    wanted: &WantedBuild,
    previous: Option<&str>,
) -> Result<Outcome> {
    check_references(actor).await?;
    let job = build_job(actor.sb, wanted, actor.build)?;
    let name = job.name_any();
    actor.leadership.ensure()?;
    let superseded = supersede_jobs(actor, &name, previous).await?;
    let api = jobs(actor.client, actor.namespace);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => info!(job = %name, "created build Job"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Only a Job this ServiceBuild owns is its build; never adopt another's result.
            find_job(actor.client, actor.namespace, &name, actor.sb).await?;
            debug!(job = %name, "build Job already exists")
        }
        Err(error) => return Err(error.into()),
    }
    Ok(Outcome::JobCreated {
        superseded,
        reuse_refused: None,
    })
}

/// Everything the build and the promotion reference must exist before a Job is created.
async fn check_references(actor: &Actor<'_>) -> Result<()> {
    let spec = &actor.sb.spec;
    if spec.image.push_secret_ref.is_some() {
        image::push_auth(actor).await?;
    }
    if let Some(secret) = &spec.source.secret_ref {
        secrets::get(
            actor.client,
            actor.namespace,
            &secret.name,
            "source.secretRef",
        )
        .await?;
    }
    for target in &spec.targets {
        if let Some(k8s) = &target.kubernetes {
            kubernetes::current_image(actor.client, &Workload::new(k8s, actor.namespace)).await?;
        }
    }
    Ok(())
}

/// Delete the Jobs of this ServiceBuild that the wanted build supersedes: any still running,
/// and finished ones other than `previous`. Returns the names of the running ones deleted.
async fn supersede_jobs(
    actor: &Actor<'_>,
    wanted: &str,
    previous: Option<&str>,
) -> Result<Vec<String>> {
    let api = jobs(actor.client, actor.namespace);
    let selector = format!("{SERVICEBUILD_LABEL}={}", actor.sb.name_any());
    let found = api.list(&ListParams::default().labels(&selector)).await?;
    let mut superseded = Vec::new();
    for job in found {
        let name = job.name_any();
        if name == wanted || !owned_by(&job, actor.sb) {
            continue;
        }
        let running = job_state(Some(&job)) == JobState::Running;
        if !running && previous == Some(name.as_str()) {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        if running {
            superseded.push(name);
        }
    }
    Ok(superseded)
}

fn owned_by(job: &Job, sb: &ServiceBuild) -> bool {
    let uid = sb.uid();
    job.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}
