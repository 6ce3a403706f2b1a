//! An in-process stand-in for kube-apiserver.
//!
//! [`ApiServer::start`] binds `127.0.0.1:0`, serves the Kubernetes REST API for a table of
//! resources (see [`builtin_resources`]) and hands out real [`kube::Client`]s pointed at it,
//! so `kube::Api`, `watcher`, `reflector` and `Controller` run unchanged. Objects are stored as
//! JSON; the server also counts requests, logs writes and can inject faults.
//!
//! See `tests/testkit/README.md` for what is implemented and what is knowingly left out.

mod apply;
mod http;
mod selector;
mod store;
mod validate;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

pub use store::{ApiError, ResourceDef, builtin_resources};

/// Settings for [`ApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// How many watch events are retained for resuming watches (older → 410 Expired).
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Refuse (404) to create namespaced objects in namespaces that were not created first, as
    /// kube-apiserver's NamespaceLifecycle admission does. Off by default for convenience.
    pub require_namespaces: bool,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(2),
            require_namespaces: false,
        }
    }
}

/// Requests are counted by verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
/// `delete`, `deletecollection`), plural resource name and subresource (empty for none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
}

/// One write request (create, update, patch, delete, deletecollection), successful or not.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub field_manager: Option<String>,
    /// The request's `User-Agent` header, verbatim: tells apart clients that share a field
    /// manager (e.g. two replicas of one controller).
    pub user_agent: Option<String>,
    /// `merge`, `json`, `strategic` or `apply` for patches.
    pub patch_type: Option<String>,
    /// HTTP status code of the answer.
    pub code: u16,
    /// Whether stored state changed (false for no-op patches and failed requests).
    pub changed: bool,
}

/// Write requests on a resource and how many of them changed stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    pub requests: usize,
    pub changed: usize,
}

/// Make matching requests fail (with `status`) or wait (`delay`) — the next `times` of them.
/// `None` filters match anything; `subresource: Some("")` matches only the main resource.
/// A rule with a delay and no status delays, then serves.
#[derive(Debug, Clone, Default)]
pub struct FaultRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Only requests whose `User-Agent` is exactly this (one replica of several).
    pub user_agent: Option<String>,
    pub times: usize,
    /// Let this many matching requests through before the rule starts to act.
    pub after: usize,
    pub status: Option<u16>,
    pub delay: Option<Duration>,
}

impl FaultRule {
    /// Fail the next matching `verb` on `resource` once with HTTP 500.
    pub fn new(verb: &str, resource: &str) -> Self {
        Self {
            verb: Some(verb.to_string()),
            resource: Some(resource.to_string()),
            times: 1,
            status: Some(500),
            ..Self::default()
        }
    }
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }
    pub fn status(mut self, code: u16) -> Self {
        self.status = Some(code);
        self
    }
    /// Delay instead of failing (clears the status; call `status` afterwards to do both).
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self.status = None;
        self
    }
    pub fn subresource(mut self, s: &str) -> Self {
        self.subresource = Some(s.to_string());
        self
    }
    pub fn namespace(mut self, s: &str) -> Self {
        self.namespace = Some(s.to_string());
        self
    }
    pub fn name(mut self, s: &str) -> Self {
        self.name = Some(s.to_string());
        self
    }
    /// Act only on requests whose `User-Agent` header is exactly `agent`.
    pub fn user_agent(mut self, agent: &str) -> Self {
        self.user_agent = Some(agent.to_string());
        self
    }
    /// Serve the first `n` matching requests normally; act on the ones after.
    pub fn after(mut self, n: usize) -> Self {
        self.after = n;
        self
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    counters: BTreeMap<RequestKey, u64>,
    writes: Vec<WriteRecord>,
}

pub(crate) struct Shared {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) faults: Mutex<Vec<FaultRule>>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) shutdown: tokio_watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Install the rustls crypto provider kube's TLS stack expects (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running fake API server. Dropping it stops serving.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: tokio_watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Start with default settings. Panics if no local port can be bound.
    pub async fn start() -> Self {
        Self::start_with(ApiServerConfig::default()).await
    }

    pub async fn start_with(config: ApiServerConfig) -> Self {
        install_crypto_provider();
        let (tx, rx) = tokio_watch::channel(false);
        let mut store = store::Store::new(config.history_limit);
        store.require_namespaces = config.require_namespaces;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            stats: Mutex::new(Stats::default()),
            faults: Mutex::new(Vec::new()),
            bookmark_interval: config.bookmark_interval,
            shutdown: rx.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of listener");
        let app = http::router(shared.clone());
        let mut stop = rx;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Self {
            shared,
            addr,
            shutdown: tx,
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A fresh client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        install_crypto_provider();
        let url = self.url().parse().expect("server URL is a valid URI");
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("build kube client")
    }

    /// A fresh client whose requests carry `User-Agent: user_agent`, so that its writes can be
    /// told apart in [`ApiServer::writes`] ([`WriteRecord::user_agent`]).
    pub fn client_as(&self, user_agent: &str) -> kube::Client {
        install_crypto_provider();
        let url = self.url().parse().expect("server URL is a valid URI");
        let mut config = kube::Config::new(url);
        let value = user_agent.parse().expect("a valid header value");
        config.headers.push((axum::http::header::USER_AGENT, value));
        kube::Client::try_from(config).expect("build kube client")
    }

    /// Add a resource to the served table (replacing one with the same group/version/plural).
    pub fn register(&self, def: ResourceDef) {
        lock(&self.shared.store).register(def);
    }

    /// Request counts so far.
    pub fn counters(&self) -> BTreeMap<RequestKey, u64> {
        lock(&self.shared.stats).counters.clone()
    }

    /// Number of `verb` requests on `resource` (any subresource).
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        lock(&self.shared.stats)
            .counters
            .iter()
            .filter(|(k, _)| k.verb == verb && k.resource == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// The write log.
    pub fn writes(&self) -> Vec<WriteRecord> {
        lock(&self.shared.stats).writes.clone()
    }

    /// Write requests on `resource` (including failed and no-op ones).
    pub fn write_requests(&self, resource: &str) -> usize {
        lock(&self.shared.stats)
            .writes
            .iter()
            .filter(|w| w.resource == resource)
            .count()
    }

    /// Write requests on `resource` that changed stored state.
    pub fn changing_writes(&self, resource: &str) -> usize {
        lock(&self.shared.stats)
            .writes
            .iter()
            .filter(|w| w.resource == resource && w.changed)
            .count()
    }

    /// Both write counts for `resource` at once.
    pub fn count_writes(&self, resource: &str) -> WriteCounts {
        WriteCounts {
            requests: self.write_requests(resource),
            changed: self.changing_writes(resource),
        }
    }

    /// Clear request counters and the write log.
    pub fn reset_counters(&self) {
        *lock(&self.shared.stats) = Stats::default();
    }

    pub fn inject_fault(&self, rule: FaultRule) {
        lock(&self.shared.faults).push(rule);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv
    }

    /// Keep only the last `n` watch events; watches from older versions get 410 Expired.
    pub fn set_history_limit(&self, n: usize) {
        lock(&self.shared.store).set_history_limit(n);
    }

    /// Drop all watch history (every resume from an older version gets 410 Expired).
    pub fn compact_history(&self) {
        lock(&self.shared.store).compact();
    }

    fn def_for(&self, group: &str, plural: &str) -> Option<ResourceDef> {
        lock(&self.shared.store)
            .resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    /// Read an object directly (group `""` for core).
    pub fn get_object(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let def = self.def_for(group, plural)?;
        let object = lock(&self.shared.store).get(&def, namespace, name).ok()?;
        Some(object.value().clone())
    }

    /// List objects directly (all namespaces when `namespace` is `None`).
    pub fn list_objects(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(def) = self.def_for(group, plural) else {
            return Vec::new();
        };
        let objects = lock(&self.shared.store).list(&def, namespace, &Default::default());
        objects.iter().map(|o| o.value().clone()).collect()
    }

    /// Create an object directly, as a POST would (emits a watch event; not counted).
    pub fn create_object(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let def = self
            .def_for(group, plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("unknown resource {plural}")))?;
        let object = lock(&self.shared.store).create(&def, namespace, object, None)?;
        Ok(object.value().clone())
    }

    /// Typed read of an object, e.g. `server.get::<Job>(Some("ns"), "name")`.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let v = self.get_object(&K::group(&()), &K::plural(&()), namespace, name)?;
        serde_json::from_value(v).ok()
    }

    /// Typed direct create; the namespace is taken from the object.
    pub fn seed<K>(&self, object: &K) -> Result<Value, ApiError>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let mut v = serde_json::to_value(object)
            .map_err(|e| ApiError::bad_request(format!("cannot serialize object: {e}")))?;
        v["apiVersion"] = Value::String(K::api_version(&()).to_string());
        v["kind"] = Value::String(K::kind(&()).to_string());
        let ns = object.meta().namespace.clone();
        self.create_object(&K::group(&()), &K::plural(&()), ns.as_deref(), v)
    }

    /// Stop serving and wait (briefly) for the server task to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("fake apiserver did not shut down within 5s");
                abort.abort();
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
