//! What every reconcile shares: the clients, the Event recorder, the caches this replica keeps
//! (last status writes, backoff counts, target checks, the ServiceBuild and Monorepo stores,
//! branch polls) and the git input fetcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::events::Recorder;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::Settings;
use super::by_repository::ByRepository;
use super::resync::TargetChecks;
use crate::Result;
use crate::act::registry::RegistryClient;
use crate::act::targets::nomad::NomadClients;
use crate::api::{Monorepo, ServiceBuild};
use crate::inputs::fetcher::Fetcher;
use crate::inputs::git::GitCache;
use crate::lease::Leadership;
use crate::metrics::Metrics;

/// What every reconcile shares.
pub struct Context {
    pub(super) client: Client,
    pub(super) registry: RegistryClient,
    pub(super) nomad: NomadClients,
    pub(super) recorder: Recorder,
    pub(super) settings: Settings,
    pub(super) leadership: Leadership,
    pub(super) metrics: Arc<Metrics>,
    pub(super) failures: Mutex<HashMap<ObjectRef<ServiceBuild>, u32>>,
    /// The resourceVersion each ServiceBuild got from this replica's last status write.
    pub(super) written: Mutex<HashMap<ObjectRef<ServiceBuild>, String>>,
    /// The controller's cache of ServiceBuilds, from when it has synced until it stops.
    pub(super) servicebuilds: Mutex<Option<Store<ServiceBuild>>>,
    /// The names in that cache by namespace and image repository.
    pub(super) by_repository: Arc<ByRepository>,
    /// Background fetches of the commits whose inputs builds compare.
    pub(super) inputs: Option<Arc<Fetcher>>,
    /// The controller's cache of Monorepos, from when it has synced until it stops.
    pub(super) monorepos: Mutex<Option<Store<Monorepo>>>,
    /// When each Monorepo's branch was last read (one entry per Monorepo with a `ref`).
    pub(super) polls: Mutex<HashMap<ObjectRef<Monorepo>, std::time::Instant>>,
    /// When each settled ServiceBuild's targets were last found pinned.
    pub(super) target_checks: TargetChecks,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Self {
        let inputs = settings.git_cache.as_ref().and_then(|git| {
            match GitCache::new(git.dir.clone(), git.max_bytes) {
                Ok(cache) => Some(Arc::new(Fetcher::new(
                    cache.allow_credentials_over_http(git.allow_credentials_over_http),
                    git.parallel_fetches,
                    git.allowed_origins.clone(),
                ))),
                Err(error) => {
                    warn!(%error, "the git cache cannot be used: builds are never skipped");
                    None
                }
            }
        });
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
            by_repository: Arc::default(),
            inputs,
            monorepos: Mutex::new(None),
            polls: Mutex::new(HashMap::new()),
            target_checks: TargetChecks::default(),
        }
    }

    /// Fetches that went to the network for build inputs.
    pub fn git_fetches(&self) -> u64 {
        self.inputs.as_ref().map_or(0, |f| f.fetches())
    }

    /// The controller's cache of ServiceBuilds, once it has synced.
    pub(super) fn servicebuilds(&self) -> Option<Store<ServiceBuild>> {
        self.servicebuilds.lock().ok()?.clone()
    }

    /// A Monorepo from the controller's cache, once it has synced.
    pub(super) fn monorepo(&self, namespace: &str, name: &str) -> Option<Arc<Monorepo>> {
        let store = self.monorepos.lock().ok()?.clone()?;
        store.get(&ObjectRef::new(name).within(namespace))
    }

    pub(super) fn set_monorepos(&self, store: Option<Store<Monorepo>>) {
        if let Ok(mut cached) = self.monorepos.lock() {
            *cached = store;
        }
    }

    pub(super) fn set_servicebuilds(&self, store: Option<Store<ServiceBuild>>) {
        if let Ok(mut cached) = self.servicebuilds.lock() {
            *cached = store;
        }
    }

    /// The ServiceBuild to reconcile. A reconcile can be triggered (by a Job, say) before the
    /// cache has seen this replica's own last status write; acting on that older copy would
    /// redo work already recorded. When the cached copy does not carry the resourceVersion of
    /// our last write, read the object once from the API server instead.
    pub(super) async fn read_your_writes(
        &self,
        sb: Arc<ServiceBuild>,
    ) -> Result<Arc<ServiceBuild>> {
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
                let read = api
                    .get_opt(&sb.name_any())
                    .await?
                    .map_or(sb.clone(), Arc::new);
                // The cached copy is the object as read now, so it holds our write: trust the
                // cache again (the watch may have delivered our write before we noted it).
                if read.resource_version() == sb.resource_version()
                    && let Ok(mut written) = self.written.lock()
                {
                    written.remove(&key);
                }
                Ok(read)
            }
            _ => Ok(sb),
        }
    }

    /// The watch delivered `sb`: once it carries the resourceVersion of this replica's last
    /// write, the cache has caught up with that write, and reconciles read from it again
    /// (without this, every later change by someone else, a revision patch say, cost each
    /// reconcile one more read of the ServiceBuild).
    pub(super) fn seen(&self, sb: &ServiceBuild) {
        let Some(rv) = sb.metadata.resource_version.as_ref() else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            let key = ObjectRef::from_obj(sb);
            if written.get(&key) == Some(rv) {
                written.remove(&key);
            }
        }
    }

    pub(super) fn remember_write(&self, sb: &ServiceBuild) {
        if let (Ok(mut written), Some(rv)) = (self.written.lock(), sb.resource_version()) {
            written.insert(ObjectRef::from_obj(sb), rv);
        }
    }

    /// Publish Events on the object `reference` names, each counted in the metrics it feeds.
    pub(super) async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        notes: Vec<crate::pipeline::events::Note>,
    ) {
        for note in notes {
            self.metrics.count(note.reason);
            if let Err(error) = self.recorder.publish(&note, reference).await {
                warn!(%error, "could not publish an Event");
            }
        }
    }

    /// Forget what this replica knew of a ServiceBuild that is going away.
    pub(super) fn forget(&self, sb: &ServiceBuild) {
        let key = ObjectRef::from_obj(sb);
        if let Ok(mut written) = self.written.lock() {
            written.remove(&key);
        }
        self.target_checks.forget(sb);
        self.forget_failures(sb);
    }

    /// Drop what this replica keeps of ServiceBuilds for which `exists` is false, and of
    /// Monorepos its store no longer has.
    pub(super) fn prune(&self, exists: impl Fn(&ObjectRef<ServiceBuild>) -> bool) {
        if let Ok(mut written) = self.written.lock() {
            written.retain(|key, _| exists(key));
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|key, _| exists(key));
        }
        self.target_checks.retain(&exists);
        // Branch polls of Monorepos that are gone.
        let monorepos = self.monorepos.lock().ok().and_then(|m| m.clone());
        if let (Some(store), Ok(mut polls)) = (monorepos, self.polls.lock()) {
            polls.retain(|key, _| store.get(key).is_some());
        }
        self.metrics
            .tracked
            .set(i64::try_from(self.tracked()).unwrap_or(i64::MAX));
    }

    /// How many ServiceBuilds this replica keeps something of (for tests and metrics).
    pub fn tracked(&self) -> usize {
        let written = self.written.lock().map_or(0, |w| w.len());
        let failures = self.failures.lock().map_or(0, |f| f.len());
        written.max(failures).max(self.target_checks.len())
    }

    /// A reconcile that succeeded starts the backoff over.
    pub(super) fn forget_failures(&self, sb: &ServiceBuild) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ObjectRef::from_obj(sb));
        }
    }
}
