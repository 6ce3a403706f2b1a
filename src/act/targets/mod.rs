//! The targets step: pin every target to `repository@digest`. Each module pins one kind of
//! target idempotently: it reads the target first and writes only when the image is not
//! already `repository@digest`.

pub mod kubernetes;
pub mod nomad;

use super::{Actor, secrets};
use crate::api::{NomadTarget, Target};
use crate::conditions::reasons;
use crate::pipeline::outcome::{Fault, TargetOutcome};
use crate::{Error, Result};
use kubernetes::Workload;
use nomad::NomadAccess;

pub use crate::pipeline::outcome::{PinOutcome, Pinned};

/// `repository@digest`: the reference every target is pinned to.
pub fn pinned_reference(repository: &str, digest: &str) -> String {
    format!("{repository}@{digest}")
}

/// `kubernetes` or `nomad`.
pub fn target_kind(target: &Target) -> &'static str {
    if target.nomad.is_some() {
        "nomad"
    } else {
        "kubernetes"
    }
}

/// Pin every target of the ServiceBuild to `digest`. Each target is tried even when another
/// fails; the first error is returned beside the outcomes.
pub async fn pin_all(actor: &Actor<'_>, digest: &str) -> (Vec<TargetOutcome>, Option<Error>) {
    let image = pinned_reference(&actor.sb.spec.image.repository, digest);
    let mut outcomes = Vec::with_capacity(actor.sb.spec.targets.len());
    let mut first_error = None;
    for target in &actor.sb.spec.targets {
        let result = match pin_target(actor, target, &image).await {
            Ok(pinned) => Ok(pinned),
            Err(error) => {
                let fault = Fault::from(&error);
                first_error.get_or_insert(error);
                Err(fault)
            }
        };
        outcomes.push(TargetOutcome {
            id: target.id(actor.namespace),
            kind: target_kind(target),
            image: image.clone(),
            result,
        });
    }
    (outcomes, first_error)
}

async fn pin_target(actor: &Actor<'_>, target: &Target, image: &str) -> Result<PinOutcome> {
    actor.leadership.ensure()?;
    if let Some(k8s) = &target.kubernetes {
        let workload = Workload::new(k8s, actor.namespace);
        return kubernetes::pin_target(actor, &workload, image).await;
    }
    if let Some(nomad) = &target.nomad {
        let access = nomad_access(actor, nomad).await?;
        let client = actor.nomad.client(nomad, &access)?;
        return client.pin_task_image(image).await;
    }
    Err(Error::stalled(
        reasons::INVALID_SPEC,
        "a target must set exactly one of kubernetes or nomad",
    ))
}

/// The Nomad token and CA bundle a target names, from Secrets in the ServiceBuild's namespace.
async fn nomad_access(actor: &Actor<'_>, target: &NomadTarget) -> Result<NomadAccess> {
    let field = "a Nomad target";
    let read = |name: String, key: String| async move {
        secrets::text(actor.client, actor.namespace, &name, &key, field).await
    };
    let token = match &target.token_secret_ref {
        Some(r) => Some(read(r.name.clone(), r.key.clone().unwrap_or("token".into())).await?),
        None => None,
    };
    let ca_pem = match &target.ca_secret_ref {
        Some(r) => Some(
            read(r.name.clone(), r.key.clone().unwrap_or("ca.crt".into()))
                .await?
                .into_bytes(),
        ),
        None => None,
    };
    Ok(NomadAccess { token, ca_pem })
}
