//! The image step: read the digest the build pushed, and move floating tags to a digest without
//! uploading a blob. Registry credentials come from `image.pushSecretRef`.

use tracing::info;

use super::registry::{RegistryAuth, RetagOutcome};
use super::{Acted, Actor, build, secrets, targets};
use crate::conditions::reasons;
use crate::pipeline::observe::Observed;
use crate::pipeline::outcome::{Outcome, TagMove};
use crate::{Error, Result};

/// The registry credentials of `image.pushSecretRef` (anonymous when unset).
pub async fn push_auth(actor: &Actor<'_>) -> Result<RegistryAuth> {
    let Some(secret) = &actor.sb.spec.image.push_secret_ref else {
        return Ok(RegistryAuth::Anonymous);
    };
    let (namespace, name) = (actor.namespace, secret.name.as_str());
    let secret = secrets::get(actor.client, namespace, name, "image.pushSecretRef").await?;
    let config = secrets::bytes(&secret, namespace, name, ".dockerconfigjson").map_err(|_| {
        Error::stalled(
            reasons::INVALID_SECRET,
            format!(
                "Secret {namespace}/{name} named by image.pushSecretRef has no .dockerconfigjson \
                 key: it must be of type kubernetes.io/dockerconfigjson"
            ),
        )
    })?;
    RegistryAuth::from_docker_config_json(config, &actor.sb.spec.image.repository)
}

/// The digest `repository:<revisionTag>` points at, after the build pushed to it. What the
/// build reported is held against it when recorded ([`crate::pipeline::provenance`]).
pub async fn resolve_build_digest(actor: &Actor<'_>) -> Result<Outcome> {
    let spec = &actor.sb.spec;
    let auth = push_auth(actor).await?;
    let tag = spec.revision_tag_for(&spec.source.revision);
    let tagged = actor
        .registry
        .resolve_digest(&spec.image.repository, &tag, &auth)
        .await?;
    info!(digest = %tagged, "resolved the digest of the build's tag");
    Ok(Outcome::DigestResolved { tagged })
}

/// Skip the build: give `digest` (the image of the build of `from`, whose inputs are the same)
/// the revision's tag, with one manifest PUT of the same bytes and no blob. When that image is
/// no longer in the registry, the revision is built after all.
pub async fn reuse(
    actor: &Actor<'_>,
    observed: &Observed<'_>,
    digest: &str,
    from: &str,
) -> Result<Outcome> {
    let spec = &actor.sb.spec;
    let auth = push_auth(actor).await?;
    let tag = spec.revision_tag_for(&spec.source.revision);
    actor.leadership.ensure()?;
    let retagged = actor
        .registry
        .add_tag_without_upload(&spec.image.repository, digest, &tag, &auth)
        .await;
    match retagged {
        Ok(outcome) => {
            let tagged = matches!(outcome, RetagOutcome::Moved { .. });
            info!(%digest, %tag, tagged, "skipped the build: inputs unchanged");
            Ok(Outcome::Reused { tagged })
        }
        Err(error) if error.reason() == reasons::IMAGE_NOT_FOUND => {
            let previous = observed.status.build.as_ref().map(|b| b.job_name.as_str());
            let previous = previous.filter(|name| !name.is_empty());
            let mut outcome = build::create_build_job(actor, observed.wanted, previous).await?;
            if let Outcome::JobCreated { reuse_refused, .. } = &mut outcome {
                *reuse_refused = Some(format!(
                    "the inputs are those of revision {}, but its image {}@{digest} is no longer \
                     in the registry, so this revision is built",
                    crate::api::short_revision(from),
                    spec.image.repository
                ));
            }
            Ok(outcome)
        }
        Err(error) => Err(error),
    }
}

/// Move every floating tag to `digest`, then pin every target to it. A fault stops the tags at
/// the first that fails (the targets are then not tried); every target is tried.
pub async fn promote(actor: &Actor<'_>, digest: &str) -> Acted {
    let mut tags = Vec::new();
    if let Err(error) = move_tags(actor, digest, &mut tags).await {
        return Acted {
            outcome: Outcome::Promoted {
                tags,
                targets: None,
            },
            error: Some(error),
        };
    }
    let (targets, error) = targets::pin_all(actor, digest).await;
    Acted {
        outcome: Outcome::Promoted {
            tags,
            targets: Some(targets),
        },
        error,
    }
}

/// Point each of `image.tags` at `digest` (a tag already there is not written); `moved` gets
/// every tag that moved, also when a later one fails.
async fn move_tags(actor: &Actor<'_>, digest: &str, moved: &mut Vec<TagMove>) -> Result<()> {
    let spec = &actor.sb.spec;
    if spec.image.tags.is_empty() {
        return Ok(());
    }
    let auth = push_auth(actor).await?;
    for tag in &spec.image.tags {
        actor.leadership.ensure()?;
        let outcome = actor
            .registry
            .retag_without_upload(&spec.image.repository, digest, tag, &auth)
            .await?;
        if let RetagOutcome::Moved { previous } = outcome {
            moved.push(TagMove {
                tag: tag.clone(),
                previous,
            });
        }
    }
    Ok(())
}
