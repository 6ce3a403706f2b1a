//! The reading half of observe: what a reconcile needs from the API server besides the
//! ServiceBuild and its Job (which the watches and [`crate::act::build::find_job`] give).
//! The other ServiceBuilds of a namespace come from the controller's cache.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use super::Context;
use crate::Result;
use crate::act::build::push_reference;
use crate::api::{ACCEPT_TARGETS_ANNOTATION, ServiceBuild, ServiceBuildSpec};
use std::sync::Arc;

use crate::act::secrets;
use crate::api::Monorepo;
use crate::conditions::reasons;
use crate::inputs::fetcher;
use crate::inputs::git::Credentials;
use crate::pipeline::observe::{self, Inputs, Policy, TagClaim, WantedBuild};
use crate::pipeline::outcome::Fault;

/// The namespaces, other than `namespace`, that the spec's Kubernetes targets are in and that
/// accept targets from `namespace` by their `monoship.dev/accept-targets-from` annotation.
///
/// Only Namespace objects are read, never the targets themselves, and a Namespace that cannot
/// be read (missing, or forbidden to this controller) simply does not accept: so whether
/// anything exists in a namespace a ServiceBuild may not reach never shows in its status.
/// Nothing is read when the policy allows every namespace, or when the controller watches one
/// namespace (it has no rights elsewhere).
pub async fn accepting_namespaces(
    client: &Client,
    spec: &ServiceBuildSpec,
    namespace: &str,
    policy: &Policy,
    watching_one_namespace: bool,
) -> Vec<String> {
    if policy.allow_cross_namespace_targets || watching_one_namespace {
        return Vec::new();
    }
    let others: BTreeSet<&str> = spec
        .targets
        .iter()
        .filter_map(|t| t.kubernetes.as_ref())
        .filter_map(|k| k.namespace.as_deref())
        .filter(|n| *n != namespace)
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    let mut accepting = Vec::new();
    for other in others {
        match api.get_opt(other).await {
            Ok(Some(found))
                if accepts(
                    found.annotations().get(ACCEPT_TARGETS_ANNOTATION),
                    namespace,
                ) =>
            {
                accepting.push(other.to_owned());
            }
            Ok(_) => {}
            Err(error) => debug!(namespace = other, %error, "could not read a target namespace"),
        }
    }
    accepting
}

/// The older ServiceBuild of `namespace` that pushes to the same `repository:revisionTag` as
/// `sb`, if any. The others are read from the controller's cache (no API call), found by their
/// repository; a reconcile run without one (outside the controller) lists the namespace.
pub async fn tag_claimant(
    ctx: &Context,
    sb: &ServiceBuild,
    namespace: &str,
    wanted: &WantedBuild,
) -> Result<Option<String>> {
    // Only a ServiceBuild pushing to the same repository can push to the same reference: the
    // others are not looked at (at 3000 ServiceBuilds, rendering every tag on every reconcile
    // took a third of the controller's CPU; at 10,000, even copying the cache's list of them
    // made each commit quadratic).
    let rival = |o: &ServiceBuild| {
        o.metadata.namespace.as_deref() == Some(namespace)
            && o.metadata.deletion_timestamp.is_none()
            && o.spec.image.repository == sb.spec.image.repository
    };
    let others: Vec<std::sync::Arc<ServiceBuild>> = match ctx.servicebuilds() {
        Some(store) => ctx
            .by_repository
            .names(namespace, &sb.spec.image.repository)
            .iter()
            .filter_map(|name| store.get(&ObjectRef::new(name).within(namespace)))
            .filter(|o| rival(o))
            .collect(),
        None => {
            let api: Api<ServiceBuild> = Api::namespaced(ctx.client.clone(), namespace);
            let listed = api.list(&Default::default()).await?;
            let rivals = listed.items.into_iter().filter(|o| rival(o));
            rivals.map(std::sync::Arc::new).collect()
        }
    };
    let created = |o: &ServiceBuild| {
        o.metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second())
    };
    let images: Vec<(String, i64, String)> = others
        .iter()
        .map(|o| (o.name_any(), created(o), push_reference(o)))
        .collect();
    let name = sb.name_any();
    let me = TagClaim {
        name: &name,
        created: created(sb),
        image: &wanted.image,
    };
    let claims = images.iter().map(|(name, created, image)| TagClaim {
        name,
        created: *created,
        image,
    });
    Ok(observe::tag_claimant(&me, claims).map(str::to_owned))
}

/// Whether an annotation value (namespaces, comma-separated, or `*`) names `namespace`.
pub fn accepts(annotation: Option<&String>, namespace: &str) -> bool {
    annotation.is_some_and(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|n| n == "*" || n == namespace)
    })
}

/// The inputs of the wanted build, from the background fetcher (`NotRead` when input reading is
/// off). Credentials come from `source.secretRef`, read only when a fetch must start.
pub async fn read_inputs(ctx: &Context, sb: &ServiceBuild, namespace: &str) -> Inputs {
    let Some(fetcher) = &ctx.inputs else {
        return Inputs::NotRead;
    };
    let secret = sb.spec.source.secret_ref.as_ref().map(|s| s.name.as_str());
    let scope = fetcher::scope(namespace, secret);
    let waiter = (namespace.to_owned(), sb.name_any());
    let credentials = git_credentials(&ctx.client, namespace, secret);
    fetcher.inputs(&sb.spec, scope, waiter, credentials).await
}

/// Basic-auth credentials from a `kubernetes.io/basic-auth` Secret (`username`, `password`).
/// The controller reads git over http(s) only: an ssh-auth Secret means the inputs cannot be
/// read (the build, which clones with ssh, still runs).
pub(super) async fn git_credentials(
    client: &Client,
    namespace: &str,
    secret: Option<&str>,
) -> std::result::Result<Option<Credentials>, String> {
    let Some(name) = secret else {
        return Ok(None);
    };
    let secret = secrets::get(client, namespace, name, "source.secretRef")
        .await
        .map_err(|error| error.to_string())?;
    let field = |key: &str| {
        secrets::bytes(&secret, namespace, name, key)
            .ok()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        _ if field("ssh-privatekey").is_some() => Err(format!(
            "Secret {namespace}/{name} holds an ssh key; monoship reads inputs over https with \
             basic auth only"
        )),
        _ => Err(format!(
            "Secret {namespace}/{name} named by source.secretRef has no username and password \
             (kubernetes.io/basic-auth)"
        )),
    }
}

/// A ServiceBuild as the pipeline sees it.
pub enum Followed {
    /// Ready to reconcile: a follower of a Monorepo carries the Monorepo's repository,
    /// revision and Secret in its source.
    Ready(Arc<ServiceBuild>),
    /// The Monorepo has no revision yet; its status change wakes the follower.
    Waiting,
    /// The Monorepo does not exist.
    Missing(Fault),
}

/// Resolve `source.monorepoRef`, from the controller's cache of Monorepos (or one read when it
/// has not synced). A suspended Monorepo hands out the revision it last resolved.
pub async fn follow_monorepo(
    ctx: &Context,
    sb: Arc<ServiceBuild>,
    namespace: &str,
) -> Result<Followed> {
    let Some(reference) = sb.spec.source.monorepo_ref.clone() else {
        return Ok(Followed::Ready(sb));
    };
    let monorepo = match ctx.monorepo(namespace, &reference.name) {
        Some(cached) => Some(cached),
        None => Api::<Monorepo>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&reference.name)
            .await?
            .map(Arc::new),
    };
    let Some(monorepo) = monorepo else {
        return Ok(Followed::Missing(Fault::stalled(
            reasons::MONOREPO_NOT_FOUND,
            format!(
                "source.monorepoRef names Monorepo {namespace}/{}, which does not exist; \
                 create it, or name another",
                reference.name
            ),
        )));
    };
    let resolved = monorepo.status.as_ref().and_then(|s| s.revision.clone());
    let revision = match (&monorepo.spec.revision, monorepo.spec.suspend) {
        (Some(revision), false) => Some(revision.clone()),
        _ => resolved,
    };
    let Some(revision) = revision else {
        return Ok(Followed::Waiting);
    };
    let mut followed = (*sb).clone();
    let source = &mut followed.spec.source;
    source.repository = monorepo.spec.repository.clone();
    source.revision = revision;
    source.secret_ref = monorepo.spec.secret_ref.clone();
    Ok(Followed::Ready(Arc::new(followed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_namespaces_or_all() {
        let value = |s: &str| Some(s.to_owned());
        assert!(accepts(value("team-a").as_ref(), "team-a"));
        assert!(accepts(value("team-b, team-a").as_ref(), "team-a"));
        assert!(accepts(value("*").as_ref(), "team-a"));
        assert!(!accepts(value("team-ab").as_ref(), "team-a"));
        assert!(!accepts(value("").as_ref(), "team-a"));
        assert!(!accepts(None, "team-a"));
    }
}
