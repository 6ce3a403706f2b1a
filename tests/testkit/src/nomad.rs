//! A Nomad HTTP API double: enough of `/v1/job/:job_id` to test check-and-set writers.
//!
//! Built from Nomad's documented API (`api-docs/jobs.mdx`) and the register endpoint
//! (`command/agent/job_endpoint.go`, `nomad/job_endpoint.go`, `nomad/state/state_store.go`):
//!
//! - `GET /v1/job/:job_id?namespace=` answers the stored job (unknown fields kept) or 404
//!   `job not found`.
//! - `GET /v1/job/:job_id/versions` answers `{"Versions": [...newest first], "Diffs": null}`.
//! - `POST /v1/job/:job_id` registers: 400 `Job must be specified`, `Job ID hasn't been
//!   provided`, `Job ID does not match name`; with `EnforceIndex` an index mismatch is HTTP 500
//!   `text/plain` `Enforcing job modify index N: job exists with conflicting job modify index:
//!   M` (or `...: job already exists` / `...: job does not exist`). When the spec changed (all
//!   fields but `Status`, `StatusDescription`, `Stable`, `Version`, `SubmitTime`,
//!   `CreateIndex`, `ModifyIndex`, `JobModifyIndex`) the job is stored with a new raft index as
//!   `ModifyIndex` and `JobModifyIndex` and `Version + 1`. When it did not, the job is left as
//!   it was (Nomad applies no job update), but an evaluation is still created. Either way the
//!   answer is `{"EvalID", "EvalCreateIndex", "JobModifyIndex", "Warnings": "", "Index"}`.
//! - Jobs are keyed by namespace (query `namespace`, else the job's `Namespace`, else
//!   `default`) and id; the `region` query parameter is ignored (one region, `global`).
//! - With an ACL token configured, a request without it or with another one gets 403
//!   `Permission denied`.
//!
//! Test hooks: per-job counters of GETs and POSTs, the log of POST bodies, a one-shot hook run
//! right after a GET is answered (another writer), and fault injection. Every request is
//! recorded with its headers and the client's address and port (a reused connection shows as
//! the same port); the double can answer everything with a redirect, or a job GET with a body
//! far larger than any client should read (counting the bytes it produced).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Nomad's default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The region the double reports.
pub const REGION: &str = "global";

/// Fields that do not make a spec change (Nomad's `Job.SpecChanged`).
const NON_SPEC_FIELDS: [&str; 8] = [
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
];

type Hook = Box<dyn FnOnce(&mut Value) + Send>;
type RepeatedHook = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// One stored job and its history.
struct StoredJob {
    current: Value,
    /// Every version, oldest first.
    versions: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    /// Nomad's raft index: bumped on each job write and each evaluation.
    index: u64,
    evals: u64,
    token: Option<String>,
    jobs: BTreeMap<(String, String), StoredJob>,
    gets: HashMap<String, usize>,
    posts: HashMap<String, usize>,
    post_bodies: Vec<(String, Value)>,
    get_hooks: HashMap<String, Hook>,
    each_get_hooks: HashMap<String, RepeatedHook>,
    faults: VecDeque<(StatusCode, String)>,
    post_faults: VecDeque<(StatusCode, String)>,
    requests: Vec<ReceivedRequest>,
    redirect_to: Option<String>,
    oversized: Option<Oversized>,
    /// Body bytes produced for oversized answers so far (shared with the body streams).
    streamed: Arc<AtomicU64>,
}

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header, names lowercase, values lossily as text.
    pub headers: Vec<(String, String)>,
    /// The client's address and port: requests on one kept-alive connection share it.
    pub peer: SocketAddr,
}

impl ReceivedRequest {
    /// The value of `X-Nomad-Token`, if sent.
    pub fn token(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == "x-nomad-token")
            .map(|(_, value)| value.as_str())
    }
}

/// How a job GET is answered with a body too large to read whole.
#[derive(Debug, Clone, Copy)]
enum Oversized {
    /// Chunked, and it never ends.
    Endless,
    /// With `Content-Length` of this many bytes.
    Declared(u64),
}

/// The client's address, from either listener.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Records every request, then answers redirects and oversized job reads when asked to.
async fn intercept(
    State(shared): State<Shared>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let (redirect, oversized, streamed) = {
        let mut inner = shared.lock();
        inner.requests.push(ReceivedRequest {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            peer,
        });
        (
            inner.redirect_to.clone(),
            inner.oversized,
            inner.streamed.clone(),
        )
    };
    if let Some(base) = redirect {
        let location = format!("{}{}", base.trim_end_matches('/'), request.uri());
        return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    }
    let path = request.uri().path();
    let job_get = request.method() == Method::GET
        && path.starts_with("/v1/job/")
        && !path.ends_with("/versions");
    match oversized {
        Some(mode) if job_get => oversized_response(mode, streamed),
        _ => next.run(request).await,
    }
}

/// A job whose `Meta.pad` goes on for `mode`, counting every byte produced into `streamed`.
fn oversized_response(mode: Oversized, streamed: Arc<AtomicU64>) -> Response {
    const CHUNK: usize = 64 << 10;
    let limit = match mode {
        Oversized::Endless => u64::MAX,
        Oversized::Declared(length) => length,
    };
    let head = Bytes::from_static(br#"{"ID":"web","Meta":{"pad":""#);
    let chunks = futures::stream::unfold(0u64, move |sent| {
        let streamed = streamed.clone();
        let head = head.clone();
        async move {
            if sent >= limit {
                return None;
            }
            let chunk = if sent == 0 {
                head
            } else {
                let size = usize::try_from((limit - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
                Bytes::from(vec![b'a'; size])
            };
            let size = chunk.len() as u64;
            streamed.fetch_add(size, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(chunk), sent + size))
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Oversized::Declared(length) = mode {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    }
    response
}

/// The outcome of a register, as Nomad answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterAnswer {
    pub eval_id: String,
    pub eval_create_index: u64,
    pub job_modify_index: u64,
    /// Whether a new job version was stored.
    pub new_version: bool,
}

impl Inner {
    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Stores `job` as Nomad's state store would, and creates an evaluation.
    fn register(&mut self, namespace: &str, mut job: Value) -> RegisterAnswer {
        let id = job
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let key = (namespace.to_owned(), id);
        let existing = self.jobs.get(&key).map(|j| j.current.clone());
        let changed = existing
            .as_ref()
            .is_none_or(|existing| spec(existing) != spec(&job));
        let job_modify_index = if changed {
            let index = self.next_index();
            let (create_index, version) = match &existing {
                Some(e) => (
                    e.get("CreateIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(index),
                    e.get("Version").and_then(Value::as_u64).unwrap_or(0) + 1,
                ),
                None => (index, 0),
            };
            if let Some(obj) = job.as_object_mut() {
                obj.insert("Namespace".into(), json!(namespace));
                obj.entry("Region").or_insert_with(|| json!(REGION));
                obj.insert("CreateIndex".into(), json!(create_index));
                obj.insert("ModifyIndex".into(), json!(index));
                obj.insert("JobModifyIndex".into(), json!(index));
                obj.insert("Version".into(), json!(version));
                obj.insert("Stable".into(), json!(false));
                obj.insert("Status".into(), json!("running"));
                obj.entry("StatusDescription").or_insert_with(|| json!(""));
                obj.insert(
                    "SubmitTime".into(),
                    json!(1_700_000_000_000_000_000u64 + index),
                );
            }
            let stored = self.jobs.entry(key).or_insert_with(|| StoredJob {
                current: Value::Null,
                versions: Vec::new(),
            });
            stored.current = job.clone();
            stored.versions.push(job);
            index
        } else {
            existing
                .as_ref()
                .and_then(|e| e.get("JobModifyIndex"))
                .and_then(Value::as_u64)
                .unwrap_or_default()
        };
        self.evals += 1;
        let eval_create_index = self.next_index();
        RegisterAnswer {
            eval_id: format!("00000000-0000-4000-8000-{:012x}", self.evals),
            eval_create_index,
            job_modify_index,
            new_version: changed,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.token {
            None => true,
            Some(token) => headers
                .get("X-Nomad-Token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == token),
        }
    }
}

/// The job without the fields that do not count as a spec change.
fn spec(job: &Value) -> Value {
    let mut job = job.clone();
    if let Some(obj) = job.as_object_mut() {
        for field in NON_SPEC_FIELDS {
            obj.remove(field);
        }
    }
    job
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn json_response(value: &Value) -> Response {
    (StatusCode::OK, axum::Json(value.clone())).into_response()
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn namespace_of(query: &HashMap<String, String>) -> String {
    query
        .get("namespace")
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

async fn get_job(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = shared.lock();
    *inner.gets.entry(id.clone()).or_default() += 1;
    if let Some((status, body)) = inner.faults.pop_front() {
        return text(status, body);
    }
    if !inner.authorized(&headers) {
        return text(StatusCode::FORBIDDEN, "Permission denied");
    }
    let namespace = namespace_of(&query);
    let key = (namespace.clone(), id.clone());
    let Some(job) = inner.jobs.get(&key).map(|j| j.current.clone()) else {
        return text(StatusCode::NOT_FOUND, "job not found");
    };
    let response = json_response(&job);
    // Another writer, right after our read.
    if let Some(hook) = inner.get_hooks.remove(&id) {
        let mut changed = job.clone();
        hook(&mut changed);
        inner.register(&namespace, changed);
    }
    if let Some(hook) = inner.each_get_hooks.get(&id).cloned() {
        let mut changed = inner
            .jobs
            .get(&key)
            .map(|j| j.current.clone())
            .unwrap_or(job);
        hook(&mut changed);
        inner.register(&namespace, changed);
    }
    response
}

async fn get_versions(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut inner = shared.lock();
    if let Some((status, body)) = inner.faults.pop_front() {
        return text(status, body);
    }
    if !inner.authorized(&headers) {
        return text(StatusCode::FORBIDDEN, "Permission denied");
    }
    let key = (namespace_of(&query), id);
    match inner.jobs.get(&key) {
        None => text(StatusCode::NOT_FOUND, "job versions not found"),
        Some(stored) => {
            let versions: Vec<Value> = stored.versions.iter().rev().cloned().collect();
            json_response(&json!({ "Versions": versions, "Diffs": null }))
        }
    }
}

async fn post_job(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = shared.lock();
    *inner.posts.entry(id.clone()).or_default() += 1;
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    inner
        .post_bodies
        .push((id.clone(), parsed.as_ref().cloned().unwrap_or(Value::Null)));
    if let Some((status, body)) = inner.faults.pop_front() {
        return text(status, body);
    }
    if let Some((status, body)) = inner.post_faults.pop_front() {
        return text(status, body);
    }
    if !inner.authorized(&headers) {
        return text(StatusCode::FORBIDDEN, "Permission denied");
    }
    let request = match parsed {
        Ok(Value::Object(request)) => request,
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Request decode failed: not an object",
            );
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    let job = match request.get("Job") {
        Some(job @ Value::Object(_)) => job.clone(),
        _ => return text(StatusCode::BAD_REQUEST, "Job must be specified"),
    };
    let Some(job_id) = job.get("ID").and_then(Value::as_str) else {
        return text(StatusCode::BAD_REQUEST, "Job ID hasn't been provided");
    };
    if job_id != id {
        return text(StatusCode::BAD_REQUEST, "Job ID does not match name");
    }
    let namespace = job
        .get("Namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| namespace_of(&query));
    let existing_index = inner.jobs.get(&(namespace.clone(), id.clone())).map(|j| {
        j.current
            .get("JobModifyIndex")
            .and_then(Value::as_u64)
            .unwrap_or_default()
    });
    let enforce = request
        .get("EnforceIndex")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if enforce {
        let jmi = request
            .get("JobModifyIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let prefix = "Enforcing job modify index";
        match existing_index {
            Some(_) if jmi == 0 => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{prefix} 0: job already exists"),
                );
            }
            Some(current) if jmi != current => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{prefix} {jmi}: job exists with conflicting job modify index: {current}"
                    ),
                );
            }
            None if jmi != 0 => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{prefix} {jmi}: job does not exist"),
                );
            }
            _ => {}
        }
    }
    let answer = inner.register(&namespace, job);
    json_response(&json!({
        "EvalID": answer.eval_id,
        "EvalCreateIndex": answer.eval_create_index,
        "JobModifyIndex": answer.job_modify_index,
        "Warnings": "",
        "Index": answer.eval_create_index,
        "LastContact": 0,
        "KnownLeader": true,
    }))
}

/// A running Nomad API double on `127.0.0.1`.
pub struct NomadDouble {
    shared: Shared,
    addr: SocketAddr,
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl NomadDouble {
    /// Starts a double without ACLs.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_inner(None).await
    }

    /// Starts a double that requires `token` in `X-Nomad-Token`.
    pub async fn start_with_token(token: &str) -> std::io::Result<Self> {
        Self::start_inner(Some(token.to_owned())).await
    }

    /// Starts a double serving https with a certificate for `127.0.0.1` and `localhost`
    /// issued by [`TEST_CA_PEM`]; requires `token` when given. Install a rustls crypto
    /// provider first.
    pub async fn start_tls(token: Option<&str>) -> std::io::Result<Self> {
        let config = tls_config()?;
        Self::serve(token.map(str::to_owned), Some(config)).await
    }

    async fn start_inner(token: Option<String>) -> std::io::Result<Self> {
        Self::serve(token, None).await
    }

    async fn serve(
        token: Option<String>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            token,
            index: 10,
            ..Inner::default()
        })));
        let app = Router::new()
            .route("/v1/job/{id}", get(get_job).post(post_job))
            .route("/v1/job/{id}/versions", get(get_versions))
            .layer(middleware::from_fn_with_state(shared.clone(), intercept))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = rx.await;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            None => tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<Peer>();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            }),
            Some(config) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                };
                let app = app.into_make_service_with_connect_info::<Peer>();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                })
            }
        };
        Ok(Self {
            shared,
            addr,
            scheme,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Self::start_tls`]).
    pub fn address(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stores `job` (a Nomad job JSON with at least `ID`) as a register without
    /// `EnforceIndex` would, and returns it as stored.
    pub fn insert_job(&self, namespace: &str, job: Value) -> Value {
        let id = job
            .get("ID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut inner = self.shared.lock();
        inner.register(namespace, job);
        inner
            .jobs
            .get(&(namespace.to_owned(), id))
            .map(|j| j.current.clone())
            .unwrap_or(Value::Null)
    }

    /// Seeds a realistic docker-driver service job in the default namespace and returns it
    /// as stored.
    pub fn seed_docker_job(
        &self,
        id: &str,
        group: &str,
        task: &str,
        image: &str,
        meta: &[(&str, &str)],
    ) -> Value {
        self.insert_job(
            DEFAULT_NAMESPACE,
            docker_job(DEFAULT_NAMESPACE, id, group, task, image, meta),
        )
    }

    /// The job as stored now.
    pub fn job(&self, namespace: &str, id: &str) -> Option<Value> {
        self.shared
            .lock()
            .jobs
            .get(&(namespace.to_owned(), id.to_owned()))
            .map(|j| j.current.clone())
    }

    /// The job's `Version` now.
    pub fn version(&self, namespace: &str, id: &str) -> Option<u64> {
        self.job(namespace, id)
            .and_then(|j| j.get("Version").and_then(Value::as_u64))
    }

    /// Every stored version of the job, oldest first.
    pub fn versions(&self, namespace: &str, id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .jobs
            .get(&(namespace.to_owned(), id.to_owned()))
            .map(|j| j.versions.clone())
            .unwrap_or_default()
    }

    /// GET requests received for the job id (any outcome).
    pub fn gets(&self, id: &str) -> usize {
        self.shared.lock().gets.get(id).copied().unwrap_or(0)
    }

    /// POST requests received for the job id (any outcome).
    pub fn posts(&self, id: &str) -> usize {
        self.shared.lock().posts.get(id).copied().unwrap_or(0)
    }

    /// The bodies of the POSTs for the job id, in order (`null` when not JSON).
    pub fn post_bodies(&self, id: &str) -> Vec<Value> {
        self.shared
            .lock()
            .post_bodies
            .iter()
            .filter(|(job, _)| job == id)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The number of evaluations created so far.
    pub fn evaluations(&self) -> u64 {
        self.shared.lock().evals
    }

    /// Runs `hook` once, right after the next GET of job `id` is answered, on the stored job,
    /// and stores the result as another writer's register would (a spec change bumps
    /// `JobModifyIndex` and `Version`).
    pub fn on_next_get(&self, id: &str, hook: impl FnOnce(&mut Value) + Send + 'static) {
        self.shared
            .lock()
            .get_hooks
            .insert(id.to_owned(), Box::new(hook));
    }

    /// Runs `hook` right after every GET of job `id` is answered, like [`Self::on_next_get`].
    pub fn on_each_get(&self, id: &str, hook: impl Fn(&mut Value) + Send + Sync + 'static) {
        self.shared
            .lock()
            .each_get_hooks
            .insert(id.to_owned(), Arc::new(hook));
    }

    /// The next `count` POSTs are answered `status` with the text `body`.
    pub fn fail_next_posts(&self, count: usize, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut inner = self.shared.lock();
        for _ in 0..count {
            inner.post_faults.push_back((status, body.to_owned()));
        }
    }

    /// The next `count` requests (any route) are answered `status` with the text `body`.
    pub fn fail_next(&self, count: usize, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut inner = self.shared.lock();
        for _ in 0..count {
            inner.faults.push_back((status, body.to_owned()));
        }
    }

    /// Every request received so far (any route, any outcome), in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().requests.clone()
    }

    /// From now on every request is answered `302 Found` with `Location` = `base` followed by
    /// the request's path and query.
    pub fn redirect_all_to(&self, base: &str) {
        self.shared.lock().redirect_to = Some(base.to_owned());
    }

    /// From now on every job GET is answered 200 with a JSON body that never ends.
    pub fn serve_endless_jobs(&self) {
        self.shared.lock().oversized = Some(Oversized::Endless);
    }

    /// From now on every job GET is answered 200 with `Content-Length: length` and that many
    /// bytes, sent as fast as the client reads them.
    pub fn serve_jobs_of_length(&self, length: u64) {
        self.shared.lock().oversized = Some(Oversized::Declared(length));
    }

    /// Body bytes produced so far for the answers of [`Self::serve_endless_jobs`] and
    /// [`Self::serve_jobs_of_length`] (what the server handed to the connection; at most the
    /// socket buffers more than what the client read).
    pub fn streamed_bytes(&self) -> u64 {
        self.shared.lock().streamed.load(Ordering::SeqCst)
    }

    /// Stops serving; later connections are refused.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NomadDouble {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The CA that issued the https double's certificate (PEM), for `NomadAccess::ca_pem`.
pub const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBjDCCATOgAwIBAgIUaUeBp+aN1oGRv5nBmGroSlw6LngwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQbW9ub3NoaXAgdGVzdCBDQTAgFw0yNjExMjUwNDQyMjZaGA8y
MTI2MTEwMTA0NDIyNlowGzEZMBcGA1UEAwwQbW9ub3NoaXAgdGVzdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABPJUdRFPkKPyupJqwEr/RNbYILbhG0aRe6u6
HrjvQXhjC4t7kJaVOxyMLA5fgiSUN/AMuJNG5hkwIAqMYk+GXJCjUzBRMB0GA1Ud
DgQWBBQMNL2njWI2lvDnFxaPJ09DnoA/PzAfBgNVHSMEGDAWgBQMNL2njWI2lvDn
FxaPJ09DnoA/PzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIDY7
vXeEXdyjk8V0kTYPHvceCfYskjTPagHP0k74bxOPAiA2cc46Cx18PGyrX/vbXVQ2
YckWvHkFOL34FB4i8OoU4w==
-----END CERTIFICATE-----
";

/// The https double's certificate, for `127.0.0.1` and `localhost`, issued by [`TEST_CA_PEM`].
const SERVER_CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBwDCCAWagAwIBAgIUBYn2rKQFN4WLHdzSHZBkSKO0aHAwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQbW9ub3NoaXAgdGVzdCBDQTAgFw0yNjExMjUwNDQyMzVaGA8y
MTI2MTEwMTA0NDIzNVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAEVqNUacOE1RKvogXLJ+Nk3uzqLxFoE8yGZQnStLqhSRGY
bzPkcue9YRB1hZ9fc6CwuuRlMjfxpfUdzPAH1UYwrKOBjDCBiTAaBgNVHREEEzAR
hwR/AAABgglsb2NhbGhvc3QwCQYDVR0TBAIwADALBgNVHQ8EBAMCB4AwEwYDVR0l
BAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYEFOIO5U6BFbza5u+OwaZYJF7YIPxkMB8G
A1UdIwQYMBaAFAw0vaeNYjaW8OcXFo8nT0OegD8/MAoGCCqGSM49BAMCA0gAMEUC
IEBt74kCgafVot0OkjKEmnw3P91aGAsPd7fOXmKySvKZAiEA78G1BU/NbzIEIBwT
dvE4PI0pQD8RC0fv5nAfouSzC+Y=
-----END CERTIFICATE-----
";

/// The https double's private key (test only).
const SERVER_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7qjOZXPhBtrO+0dt
ZotGd3k1FXk9wKE4BiQ0TUf/C9qhRANCAARWo1Rpw4TVEq+iBcsn42Te7OovEWgT
zIZlCdK0uqFJEZhvM+Ry571hEHWFn19zoLC65GUyN/Gl9R3M8AfVRjCs
-----END PRIVATE KEY-----
";

fn tls_config() -> std::io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes()).map_err(|e| invalid(&e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and completes TLS handshakes (failed handshakes are dropped).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                Err(e) => tracing::debug!("TLS handshake from {addr} failed: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A realistic Nomad service job with one group running one docker task.
pub fn docker_job(
    namespace: &str,
    id: &str,
    group: &str,
    task: &str,
    image: &str,
    meta: &[(&str, &str)],
) -> Value {
    let meta: serde_json::Map<String, Value> = meta
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let update = json!({
        "AutoPromote": false,
        "AutoRevert": false,
        "Canary": 0,
        "HealthCheck": "checks",
        "HealthyDeadline": 300_000_000_000u64,
        "MaxParallel": 1,
        "MinHealthyTime": 10_000_000_000u64,
        "ProgressDeadline": 600_000_000_000u64,
        "Stagger": 30_000_000_000u64
    });
    let task = json!({
        "Artifacts": null,
        "Config": {
            "image": image,
            "ports": ["http"],
            "args": ["--listen", ":8080"]
        },
        "Constraints": null,
        "Driver": "docker",
        "Env": {"RUST_LOG": "info"},
        "KillSignal": "",
        "KillTimeout": 5_000_000_000u64,
        "Leader": false,
        "LogConfig": {"Disabled": false, "MaxFileSizeMB": 10, "MaxFiles": 10},
        "Meta": null,
        "Name": task,
        "Resources": {
            "CPU": 100,
            "Cores": 0,
            "Devices": null,
            "DiskMB": 0,
            "IOPS": 0,
            "MemoryMB": 128,
            "MemoryMaxMB": 0,
            "Networks": null
        },
        "Services": null,
        "ShutdownDelay": 0,
        "Templates": null,
        "User": "",
        "Vault": null
    });
    let group = json!({
        "Affinities": null,
        "Constraints": null,
        "Count": 2,
        "EphemeralDisk": {"Migrate": false, "SizeMB": 300, "Sticky": false},
        "Meta": null,
        "Name": group,
        "Networks": [{
            "CIDR": "",
            "DNS": null,
            "Device": "",
            "DynamicPorts": [{"HostNetwork": "default", "Label": "http", "To": 8080, "Value": 0}],
            "IP": "",
            "MBits": 0,
            "Mode": "bridge",
            "ReservedPorts": null
        }],
        "ReschedulePolicy": {
            "Attempts": 0,
            "Delay": 30_000_000_000u64,
            "DelayFunction": "exponential",
            "Interval": 0,
            "MaxDelay": 3_600_000_000_000u64,
            "Unlimited": true
        },
        "RestartPolicy": {
            "Attempts": 2,
            "Delay": 15_000_000_000u64,
            "Interval": 1_800_000_000_000u64,
            "Mode": "fail",
            "RenderTemplates": false
        },
        "Services": [{
            "Name": format!("{id}-{group}"),
            "PortLabel": "http",
            "Provider": "consul",
            "Tags": ["http"],
            "Checks": [{
                "Name": "alive",
                "Type": "http",
                "Path": "/healthz",
                "Interval": 10_000_000_000u64,
                "Timeout": 2_000_000_000u64
            }]
        }],
        "Tasks": [task],
        "Update": update,
        "Volumes": null
    });
    json!({
        "Affinities": null,
        "AllAtOnce": false,
        "Constraints": null,
        "ConsulNamespace": "",
        "Datacenters": ["dc1"],
        "DispatchIdempotencyToken": "",
        "Dispatched": false,
        "ID": id,
        "Meta": meta,
        "Multiregion": null,
        "Name": id,
        "Namespace": namespace,
        "NodePool": "default",
        "NomadTokenID": "",
        "ParameterizedJob": null,
        "ParentID": "",
        "Payload": null,
        "Periodic": null,
        "Priority": 50,
        "Region": REGION,
        "Spreads": null,
        "Stop": false,
        "Type": "service",
        "Update": update,
        "VaultNamespace": "",
        "Version": 0,
        "TaskGroups": [group]
    })
}
