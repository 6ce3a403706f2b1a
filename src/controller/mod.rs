//! The controller's Kubernetes wiring: a `kube::runtime::Controller` on ServiceBuild that owns
//! build Jobs, run only while this replica leads, stopped promptly on shutdown. One reconcile
//! (observe → decide → act → record) is in [`reconcile`].

mod cache;
mod events;
mod observe;
mod reconcile;

pub use reconcile::reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::act::build::BuildSettings;
use crate::act::registry::RegistryClient;
use crate::act::targets::nomad::{NomadAllowlist, NomadClients};
use crate::api::ServiceBuild;
use crate::lease::Leadership;
use crate::metrics::Metrics;
use crate::pipeline::observe::Policy;
use crate::telemetry::Health;
use crate::{Error, Result};
use events::Recorder;

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
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    registry: RegistryClient,
    nomad: NomadClients,
    recorder: Recorder,
    settings: Settings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<ObjectRef<ServiceBuild>, u32>>,
    /// The resourceVersion each ServiceBuild got from this replica's last status write.
    written: Mutex<HashMap<ObjectRef<ServiceBuild>, String>>,
    /// The controller's cache of ServiceBuilds, from when it has synced until it stops.
    servicebuilds: Mutex<Option<Store<ServiceBuild>>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            registry: RegistryClient::new(settings.insecure_registries.clone())
                .with_metrics(metrics.clone()),
            nomad: NomadClients::new(settings.nomad_allowed_addresses.clone()),
            recorder: Recorder::new(
                client.clone(),
                settings.reporter.clone(),
                settings.instance.clone(),
            ),
            client,
            settings,
            leadership,
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            servicebuilds: Mutex::new(None),
        }
    }

    /// The controller's cache of ServiceBuilds, once it has synced.
    fn servicebuilds(&self) -> Option<Store<ServiceBuild>> {
        self.servicebuilds.lock().ok()?.clone()
    }

    fn set_servicebuilds(&self, store: Option<Store<ServiceBuild>>) {
        if let Ok(mut cached) = self.servicebuilds.lock() {
            *cached = store;
        }
    }

    /// The ServiceBuild to reconcile. A reconcile can be triggered (by a Job, say) before the
    /// cache has seen this replica's own last status write; acting on that older copy would
    /// redo work already recorded. When the cached copy does not carry the resourceVersion of
    /// our last write, read the object once from the API server instead.
    async fn read_your_writes(&self, sb: Arc<ServiceBuild>) -> Result<Arc<ServiceBuild>> {
        let key = ObjectRef::from_obj(sb.as_ref());
        let last = self
            .written
            .lock()
            .ok()
            .and_then(|written| written.get(&key).cloned());
        match last {
            Some(rv) if sb.resource_version().as_ref() != Some(&rv) => {
                let namespace = sb.namespace().unwrap_or_default();
                let api: Api<ServiceBuild> = Api::namespaced(self.client.clone(), &namespace);
                Ok(api.get_opt(&sb.name_any()).await?.map_or(sb, Arc::new))
            }
            _ => Ok(sb),
        }
    }

    fn remember_write(&self, sb: &ServiceBuild) {
        if let (Ok(mut written), Some(rv)) = (self.written.lock(), sb.resource_version()) {
            written.insert(ObjectRef::from_obj(sb), rv);
        }
    }

    /// Forget what this replica knew of a ServiceBuild that is going away.
    fn forget(&self, sb: &ServiceBuild) {
        let key = ObjectRef::from_obj(sb);
        if let Ok(mut written) = self.written.lock() {
            written.remove(&key);
        }
        self.forget_failures(sb);
    }

    /// Drop what this replica keeps of ServiceBuilds for which `exists` is false.
    fn prune(&self, exists: impl Fn(&ObjectRef<ServiceBuild>) -> bool) {
        if let Ok(mut written) = self.written.lock() {
            written.retain(|key, _| exists(key));
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|key, _| exists(key));
        }
        self.metrics
            .tracked
            .set(i64::try_from(self.tracked()).unwrap_or(i64::MAX));
    }

    /// How many ServiceBuilds this replica keeps something of (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let written = self.written.lock().map_or(0, |w| w.len());
        let failures = self.failures.lock().map_or(0, |f| f.len());
        written.max(failures)
    }

    /// A reconcile that succeeded starts the backoff over.
    fn forget_failures(&self, sb: &ServiceBuild) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ObjectRef::from_obj(sb));
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
        let controller = watches.controller();
        let store = controller.store();
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
        health.set_synced(false);
        info!("the controller stopped");
    }
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
    }
}
