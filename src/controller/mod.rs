//! The controller's Kubernetes wiring: a `kube::runtime::Controller` on ServiceBuild that owns
//! build Jobs, run only while this replica leads, stopped promptly on shutdown. One reconcile
//! (observe → decide → act → record) is in [`reconcile`].

mod by_repository;
mod cache;
mod context;
mod events;
mod monorepo;
mod observe;
mod reconcile;
mod resync;

pub use context::Context;

pub use monorepo::reconcile_monorepo;
pub use reconcile::reconcile;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Error;
use crate::act::build::BuildSettings;
use crate::act::targets::nomad::NomadAllowlist;
use crate::api::{Monorepo, ServiceBuild};
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::pipeline::observe::Policy;
use crate::telemetry::Health;

/// How often a settled ServiceBuild is looked at again, to find drifted targets.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(600);
/// Reconciles that run at once by default.
pub const DEFAULT_CONCURRENCY: u16 = 16;
/// How often a ServiceBuild stalled on something outside it (a Secret, a target) is retried.
const STALLED_RETRY: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the per-ServiceBuild maps drop the entries of ServiceBuilds that are gone.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long in-flight reconciles may run on after the controller was told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Controller-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch one namespace; all when `None`.
    pub namespace: Option<String>,
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub build: BuildSettings,
    /// Name of this controller in Events (`reportingController`).
    pub reporter: String,
    /// This replica's name in Events (`reportingInstance`), usually the pod name.
    pub instance: Option<String>,
    /// Requeue interval of settled ServiceBuilds.
    pub resync: Duration,
    /// What ServiceBuilds may reach beyond their own namespace.
    pub policy: Policy,
    /// At most this many ServiceBuilds are reconciled at once (0: no limit).
    pub concurrency: u16,
    /// How often what this replica keeps of ServiceBuilds that are gone is dropped.
    pub prune_every: Duration,
    /// The Nomad addresses targets may name; empty allows every address.
    pub nomad_allowed_addresses: NomadAllowlist,
    /// Where fetched commits are kept to read build inputs, and how many bytes at most; no
    /// directory turns input reading (and skipping unchanged builds) off.
    pub git_cache: Option<GitCacheSettings>,
}

/// The on-disk git cache that input keys are read from.
#[derive(Debug, Clone)]
pub struct GitCacheSettings {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
    /// Fetches that run at once.
    pub parallel_fetches: usize,
    /// Send git credentials over plain `http://` (tests against a loopback server only; release
    /// builds of gix refuse it anyway).
    pub allow_credentials_over_http: bool,
    /// The origins inputs may be read from; empty allows every origin.
    pub allowed_origins: crate::act::origin::Allowlist,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            insecure_registries: Vec::new(),
            build: BuildSettings {
                checkout_image: crate::DEFAULT_CHECKOUT_IMAGE.to_owned(),
            },
            reporter: "monoship".to_owned(),
            instance: None,
            resync: DEFAULT_RESYNC,
            policy: Policy::default(),
            concurrency: DEFAULT_CONCURRENCY,
            prune_every: DEFAULT_PRUNE_EVERY,
            nomad_allowed_addresses: NomadAllowlist::default(),
            git_cache: None,
        }
    }
}

/// Run the controller until `shutdown` is cancelled. It reconciles only while `leadership`
/// says this replica leads; when the Lease is lost, the controller stops and waits to lead
/// again.
pub async fn run(
    client: Client,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) {
    let watches = cache::Watches::new(&client, settings.namespace.as_deref());
    let monorepos = match &settings.namespace {
        Some(ns) => Api::<Monorepo>::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let context = Arc::new(Context::new(client, settings, leadership.clone(), metrics));
    loop {
        let mut waiting = leadership.clone();
        // Biased: after a shutdown both branches are ready, and the controller must not start
        // again (a restarted one waits forever for caches that will never sync).
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = waiting.wait_for(true) => {}
        }
        info!("leading: starting the controller");
        // Another replica led in between: every target is read again on its first reconcile.
        context.target_checks.retain(|_| false);
        // The ServiceBuild watch also tells the Monorepo controller which follower changed: one
        // watch of ServiceBuilds, not one per controller.
        let (followers_changed, follower_changes) = futures::channel::mpsc::unbounded();
        let observe = {
            let context = context.clone();
            move |event: &watcher::Event<ServiceBuild>| {
                context.by_repository.observe(event);
                if let watcher::Event::Apply(sb) | watcher::Event::InitApply(sb) = event {
                    context.seen(sb);
                }
                if let Some(monorepo) = cache::followed(event) {
                    // Unbounded: the Monorepo controller reads as fast as the watch delivers,
                    // and runs exactly as long as this stream.
                    let _ = followers_changed.unbounded_send(monorepo);
                }
            }
        };
        let controller = watches.controller(observe);
        let controller = match &context.inputs {
            // A fetch that ends wakes the ServiceBuilds that waited for it.
            Some(fetcher) => controller.reconcile_on(woken(fetcher.subscribe())),
            None => controller,
        };
        let store = controller.store();
        // A Monorepo that appears or moves wakes the ServiceBuilds that follow it.
        let controller = {
            let store = store.clone();
            controller.watches(
                monorepos.clone(),
                watcher::Config::default(),
                move |mr: Monorepo| followers_of(&store, &mr),
            )
        };
        // The Monorepo controller: each follower's change updates its Monorepo's rollout.
        let monorepo_controller = Controller::new(monorepos.clone(), watcher::Config::default())
            .reconcile_on(follower_changes);
        let monorepo_store = monorepo_controller.store();
        let pruning = {
            let (store, context) = (store.clone(), context.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(context.settings.prune_every).await;
                    context.prune(|key| store.get(key).is_some());
                }
            })
        };
        let synced = {
            let (health, context) = (health.clone(), context.clone());
            tokio::spawn(async move {
                // kube-runtime's readiness future keeps only its last poller's waker, and the
                // controller's own runner waits on it too: poll again until it reports ready.
                loop {
                    match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                        .await
                    {
                        Ok(Ok(())) => {
                            debug!("caches synced");
                            context.set_servicebuilds(Some(store.clone()));
                            health.set_synced(true);
                            // Until the Monorepos are cached, followers read theirs.
                            if monorepo_store.wait_until_ready().await.is_ok() {
                                context.set_monorepos(Some(monorepo_store.clone()));
                            }
                            break;
                        }
                        Ok(Err(error)) => {
                            debug!(%error, "the cache will never sync");
                            break;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let config =
            kube::runtime::controller::Config::default().concurrency(context.settings.concurrency);
        let running = controller
            .with_config(config)
            .graceful_shutdown_on(stopping(shutdown.clone(), leadership.clone()))
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => debug!(servicebuild = %object, "reconciled"),
                    Err(error) => debug!(%error, "reconcile did not complete"),
                }
            });
        let monorepos_running = monorepo_controller
            .graceful_shutdown_on(stopping(shutdown.clone(), leadership.clone()))
            .run(reconcile_monorepo, monorepo_error_policy, context.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    debug!(%error, "a Monorepo reconcile did not complete");
                }
            });
        let running = async {
            tokio::join!(running, monorepos_running);
        };
        // In-flight reconciles get a grace period to finish; after it they are dropped, which is
        // safe because every step is idempotent. (kube-runtime's graceful shutdown also waits
        // for its cache to be ready, which may never happen once stopping has begun.)
        let grace = async {
            stopping(shutdown.clone(), leadership.clone()).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = running => {}
            () = grace => warn!(?SHUTDOWN_GRACE, "reconciles did not finish in time; dropped them"),
        }
        synced.abort();
        pruning.abort();
        context.set_servicebuilds(None);
        context.set_monorepos(None);
        health.set_synced(false);
        info!("the controller stopped");
    }
}

/// The ServiceBuilds that follow `monorepo`, from the controller's cache.
fn followers_of(store: &Store<ServiceBuild>, monorepo: &Monorepo) -> Vec<ObjectRef<ServiceBuild>> {
    let (Some(namespace), name) = (monorepo.namespace(), monorepo.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|sb| sb.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|sb| {
            sb.spec
                .source
                .monorepo_ref
                .as_ref()
                .is_some_and(|r| r.name == name)
        })
        .map(|sb| ObjectRef::from_obj(sb.as_ref()))
        .collect()
}

/// A Monorepo reconcile that failed is retried with a fixed delay.
fn monorepo_error_policy(_: Arc<Monorepo>, error: &Error, _: Arc<Context>) -> Action {
    warn!(%error, "Monorepo reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The ServiceBuilds named on the fetcher's wake-up channel. A receiver that fell behind misses
/// some: those find their commit at their next requeue.
fn woken(
    receiver: tokio::sync::broadcast::Receiver<crate::inputs::fetcher::Waiter>,
) -> impl futures::Stream<Item = ObjectRef<ServiceBuild>> + Send + 'static {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok((namespace, name)) => {
                    let object = ObjectRef::new(&name).within(&namespace);
                    return Some((object, receiver));
                }
                Err(RecvError::Lagged(missed)) => {
                    debug!(
                        missed,
                        "wake-ups missed; those ServiceBuilds wait for their requeue"
                    )
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// Completes when the controller must stop: on shutdown, or when this replica stops leading.
async fn stopping(shutdown: CancellationToken, mut leadership: Leadership) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = leadership.wait_for(false) => {}
    }
}

/// Transient faults are retried with exponential backoff per ServiceBuild.
pub fn error_policy(sb: Arc<ServiceBuild>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx.failures.lock().map_or(1, |mut failures| {
        let n = failures
            .entry(ObjectRef::from_obj(sb.as_ref()))
            .or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    let delay = Duration::from_millis(500)
        .saturating_mul(1 << attempts.min(10))
        .min(MAX_BACKOFF);
    warn!(%error, attempts, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servicebuild(name: &str) -> Arc<ServiceBuild> {
        let mut sb: ServiceBuild = serde_json::from_value(serde_json::json!({
            "apiVersion": "monoship.dev/v1alpha1", "kind": "ServiceBuild",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7"},
            "spec": {
                "source": {"repository": "file:///r", "revision": "1".repeat(40)},
                "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
                "image": {"repository": "r.example/x"}
            }
        }))
        .unwrap();
        sb.metadata.resource_version = Some("7".into());
        Arc::new(sb)
    }

    /// A reconcile reads the ServiceBuild from the API server only while the watch has not yet
    /// delivered this replica's last write of it; a later change by someone else does not make
    /// every reconcile read it again.
    #[tokio::test]
    async fn the_cache_is_trusted_again_once_the_watch_delivered_our_write() {
        crate::install_crypto_provider();
        // Nothing listens there: a read from the API server fails.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let context = Context::new(
            Client::try_from(config).unwrap(),
            Settings::default(),
            Leadership::always(),
            Arc::new(Metrics::default()),
        );
        let written = servicebuild("banana");
        let mut later = (*written).clone();
        later.metadata.resource_version = Some("9".into());
        let later = Arc::new(later);

        context.remember_write(&written);
        assert!(
            context.read_your_writes(later.clone()).await.is_err(),
            "read"
        );
        context.seen(&later);
        assert!(
            context.read_your_writes(later.clone()).await.is_err(),
            "still read"
        );
        context.seen(&written);
        let read = context.read_your_writes(later.clone()).await.unwrap();
        assert!(Arc::ptr_eq(&read, &later), "the cached copy, not a read");
        assert_eq!(context.tracked(), 0);
    }

    /// What the context keeps per ServiceBuild (its last write, its backoff) goes with it.
    #[tokio::test]
    async fn the_maps_forget_servicebuilds_that_are_gone() {
        crate::install_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let context = Arc::new(Context::new(
            client,
            Settings::default(),
            Leadership::always(),
            Arc::new(Metrics::default()),
        ));
        let (kept, gone) = (servicebuild("kept"), servicebuild("gone"));
        for sb in [&kept, &gone] {
            context.remember_write(sb);
            error_policy(sb.clone(), &Error::NotLeader, context.clone());
        }
        assert_eq!(context.tracked(), 2);
        let alive = ObjectRef::from_obj(kept.as_ref());
        context.prune(|key| *key == alive);
        assert_eq!(context.tracked(), 1);
        context.forget(&kept);
        assert_eq!(context.tracked(), 0);

        // A Monorepo's last branch poll goes with the Monorepo.
        let (store, mut writer) = kube::runtime::reflector::store::<Monorepo>();
        let monorepo = |name: &str| -> Monorepo {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "monoship.dev/v1alpha1", "kind": "Monorepo",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"repository": "https://git.example/shop.git", "ref": {"branch": "main"}}
            }))
            .unwrap()
        };
        let (kept, gone) = (monorepo("kept"), monorepo("gone"));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(kept.clone()));
        context.set_monorepos(Some(store));
        context.polled(ObjectRef::from_obj(&kept));
        context.polled(ObjectRef::from_obj(&gone));
        context.prune(|_| true);
        let polls = context.polls.lock().unwrap();
        assert_eq!(
            polls.keys().cloned().collect::<Vec<_>>(),
            [ObjectRef::from_obj(&kept)]
        );
    }
}
