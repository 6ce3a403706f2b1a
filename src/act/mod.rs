//! Act: the side effects of a reconcile, one small module each.
//!
//! - [`build`]: the build Job (find it; create it, after checking what it references, and delete
//!   the Jobs it supersedes).
//! - [`image`]: the pushed image's digest, and floating tags moved to it without uploading a
//!   blob (through [`registry`]).
//! - [`targets`]: every target pinned to `repository@digest` ([`targets::kubernetes`],
//!   [`targets::nomad`]).
//!
//! Each step reads first and writes only what is not already so, checks the leader Lease
//! before every write, and returns a typed [`Outcome`]; none of them changes status. Secret
//! lookups live with the step that uses them ([`secrets`] reads them).

pub mod build;
pub mod image;
pub mod origin;
pub mod registry;
pub mod secrets;
pub mod targets;

use kube::Client;

use crate::api::ServiceBuild;
use crate::lease::Leadership;
use crate::pipeline::decide::Plan;
use crate::pipeline::observe::Observed;
use crate::pipeline::outcome::Outcome;
use crate::{Error, Result};
use build::BuildSettings;
use registry::RegistryClient;
use targets::nomad::NomadClients;

/// What the acting steps of one reconcile work with.
pub struct Actor<'a> {
    pub client: &'a Client,
    pub registry: &'a RegistryClient,
    pub nomad: &'a NomadClients,
    pub leadership: &'a Leadership,
    pub build: &'a BuildSettings,
    /// The ServiceBuild being reconciled, and its namespace.
    pub sb: &'a ServiceBuild,
    pub namespace: &'a str,
}

/// What a step did, and why it stopped if it did. A step may have done part of its work before
/// a fault: the outcome holds that part.
#[derive(Debug, Default)]
pub struct Acted {
    pub outcome: Outcome,
    pub error: Option<Error>,
}

impl From<Result<Outcome>> for Acted {
    fn from(result: Result<Outcome>) -> Self {
        match result {
            Ok(outcome) => Self {
                outcome,
                error: None,
            },
            Err(error) => Self {
                outcome: Outcome::Nothing,
                error: Some(error),
            },
        }
    }
}

impl Actor<'_> {
    /// Carry out `plan`. Plans that are only recorded (a stall, a failure, the start of a
    /// promotion, a steady state whose targets were checked recently) act on nothing.
    pub async fn act(&self, plan: &Plan, observed: &Observed<'_>) -> Acted {
        match plan {
            Plan::Stall { .. }
            | Plan::Suspend
            | Plan::AwaitJob
            | Plan::AwaitInputs
            | Plan::RecordFailure { .. }
            | Plan::StartPromotion { .. }
            | Plan::Steady { .. } => Acted::default(),
            Plan::CreateJob => {
                let previous = observed.status.build.as_ref().map(|b| b.job_name.as_str());
                let previous = previous.filter(|name| !name.is_empty());
                build::create_build_job(self, observed.wanted, previous)
                    .await
                    .into()
            }
            Plan::Reuse { digest, from } => image::reuse(self, observed, digest, from).await.into(),
            Plan::ResolveDigest { .. } => image::resolve_build_digest(self).await.into(),
            Plan::Promote { digest } => image::promote(self, digest).await,
            Plan::Settle { digest } => {
                let (targets, error) = targets::pin_all(self, digest).await;
                Acted {
                    outcome: Outcome::Settled { targets },
                    error,
                }
            }
        }
    }
}
