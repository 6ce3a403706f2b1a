//! The Monorepo controller: resolve each Monorepo's revision (`spec.revision`, or the head of
//! `spec.ref.branch` read every `interval`), and record what that revision rolled out over the
//! ServiceBuilds that follow it ([`crate::pipeline::rollout`]). It writes status only when it
//! changed: a poll that finds the same head writes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::debug;

use super::Context;
use crate::api::{FIELD_MANAGER, Monorepo, MonorepoStatus, ServiceBuild};
use crate::conditions::reasons;
use crate::inputs::fetcher;
use crate::pipeline::conditions::{Summary, summarize_conditions};
use crate::pipeline::events::Note;
use crate::pipeline::rollout::{Follower, record_rollout, summarize};
use crate::{Error, Result};

/// How often a Monorepo without a revision is looked at again.
const RETRY: Duration = Duration::from_secs(30);
/// How often a Monorepo whose followers still build is summarized again (it writes only what
/// changed).
const ROLLING_OUT_RECHECK: Duration = Duration::from_secs(2);

/// One reconcile of one Monorepo.
pub async fn reconcile_monorepo(monorepo: Arc<Monorepo>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = monorepo
        .namespace()
        .ok_or_else(|| Error::stalled(reasons::INVALID_SPEC, "a Monorepo must be namespaced"))?;
    let name = monorepo.name_any();
    let read = monorepo.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let spec = &monorepo.spec;

    // Resolve the revision; a branch is read when its interval has passed.
    let mut poll_fault = None;
    let mut next_poll = None;
    let revision = match (&spec.revision, &spec.git_ref) {
        _ if spec.suspend => read.revision.clone(),
        (Some(revision), _) => Some(revision.clone()),
        (None, Some(git_ref)) => {
            let key = ObjectRef::from_obj(monorepo.as_ref());
            let interval = Duration::from_secs(spec.interval_seconds());
            match ctx.poll_due(&key, interval) {
                Some(wait) => {
                    next_poll = Some(wait);
                    read.revision.clone()
                }
                None => {
                    next_poll = Some(interval);
                    match branch_head(&ctx, &monorepo, &namespace, &git_ref.branch).await {
                        Ok(head) => {
                            ctx.polled(key);
                            Some(head)
                        }
                        Err(message) => {
                            poll_fault = Some(message);
                            read.revision.clone()
                        }
                    }
                }
            }
        }
        (None, None) => read.revision.clone(),
    };

    let followers = followers(&ctx, &namespace, &name).await?;
    let (mut status, mut notes) = match &revision {
        Some(revision) => {
            let views: Vec<Follower> = followers
                .iter()
                .map(|sb| Follower {
                    name: sb.metadata.name.as_deref().unwrap_or_default(),
                    generation: sb.metadata.generation,
                    status: sb.status.as_ref(),
                })
                .collect();
            record_rollout(
                &read,
                summarize(revision, &views),
                monorepo.metadata.generation,
                spec.history_limit,
                &now,
            )
        }
        None => {
            let mut status = read.clone();
            let message = "resolving the revision";
            summarize_conditions(
                &mut status.conditions,
                Summary::Progressing {
                    reason: reasons::ROLLING_OUT,
                    message,
                },
                monorepo.metadata.generation,
                &now,
            );
            status.observed_generation = monorepo.metadata.generation;
            (status, Vec::new())
        }
    };
    if let Some(message) = &poll_fault {
        let known = read
            .conditions
            .iter()
            .any(|c| c.reason == reasons::REPOSITORY_UNREADABLE && c.message == *message);
        summarize_conditions(
            &mut status.conditions,
            Summary::Stalled {
                reason: reasons::REPOSITORY_UNREADABLE,
                message,
            },
            monorepo.metadata.generation,
            &now,
        );
        if !known {
            notes.push(Note {
                warning: true,
                reason: reasons::REPOSITORY_UNREADABLE,
                message: message.clone(),
            });
        }
    }
    if status != read {
        ctx.leadership.ensure()?;
        write_status(&ctx, &namespace, &name, &status).await?;
    }
    publish(&ctx, &monorepo, &status, notes).await;
    // While followers build, look again soon: a follower's change can reach this controller
    // before the cache it reads followers from has it.
    let rolling_out = status.summary.as_ref().is_some_and(|s| s.building > 0);
    let wait = match (next_poll, &revision) {
        (Some(wait), _) => Some(wait),
        (None, None) => Some(RETRY),
        (None, Some(_)) => None,
    };
    Ok(match (wait, rolling_out) {
        (Some(wait), true) => Action::requeue(wait.min(ROLLING_OUT_RECHECK)),
        (Some(wait), false) => Action::requeue(wait),
        (None, true) => Action::requeue(ROLLING_OUT_RECHECK),
        (None, false) => Action::await_change(),
    })
}

/// The ServiceBuilds of `namespace` whose `source.monorepoRef` names `name`, from the cache once
/// it has synced.
async fn followers(ctx: &Context, namespace: &str, name: &str) -> Result<Vec<Arc<ServiceBuild>>> {
    let follows = |sb: &ServiceBuild| {
        sb.metadata.namespace.as_deref() == Some(namespace)
            && sb
                .spec
                .source
                .monorepo_ref
                .as_ref()
                .is_some_and(|r| r.name == name)
    };
    if let Some(store) = ctx.servicebuilds() {
        return Ok(store.state().into_iter().filter(|sb| follows(sb)).collect());
    }
    let api: Api<ServiceBuild> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(follows)
        .map(Arc::new)
        .collect())
}

/// The commit at the head of `branch`, read with the Monorepo's credentials.
async fn branch_head(
    ctx: &Context,
    monorepo: &Monorepo,
    namespace: &str,
    branch: &str,
) -> std::result::Result<String, String> {
    let Some(fetcher) = &ctx.inputs else {
        return Err(
            "reading git is turned off (--no-input-keys): set spec.revision instead of spec.ref"
                .to_owned(),
        );
    };
    let secret = monorepo.spec.secret_ref.as_ref().map(|s| s.name.as_str());
    let credentials = super::observe::git_credentials(&ctx.client, namespace, secret).await?;
    fetcher
        .branch_head(
            fetcher::scope(namespace, secret),
            monorepo.spec.repository.clone(),
            branch.to_owned(),
            credentials,
        )
        .await
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &MonorepoStatus,
) -> Result<()> {
    let api: Api<Monorepo> = Api::namespaced(ctx.client.clone(), namespace);
    let body = json!({
        "apiVersion": "monoship.dev/v1alpha1",
        "kind": "Monorepo",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, monorepo: &Monorepo, status: &MonorepoStatus, notes: Vec<Note>) {
    let finished = notes.iter().any(|n| {
        matches!(
            n.reason,
            reasons::ROLLOUT_COMPLETE | reasons::ROLLOUT_FAILED
        )
    });
    if let (true, Some(summary)) = (finished, &status.summary) {
        ctx.metrics
            .rollout_changed_services
            .observe(f64::from(summary.changed));
    }
    ctx.publish(&monorepo.object_ref(&()), notes).await;
    debug!(monorepo = %monorepo.name_any(), "reconciled");
}

impl Context {
    /// `None` when the branch of `key` is due to be read; else how long until it is.
    fn poll_due(&self, key: &ObjectRef<Monorepo>, interval: Duration) -> Option<Duration> {
        let polled = self.polls.lock().ok()?;
        let last = polled.get(key)?;
        interval
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    pub(super) fn polled(&self, key: ObjectRef<Monorepo>) {
        if let Ok(mut polled) = self.polls.lock() {
            polled.insert(key, Instant::now());
        }
    }
}
