//! A small in-memory OCI registry on loopback that can misbehave on purpose: answer a manifest
//! GET with an HTML page, an octet-stream, an endless body or a redirect; demand Bearer tokens
//! from its own token realm; echo what it was sent into error bodies. Every request is recorded
//! with its `Authorization` header, and every byte of a streamed body is counted as the server
//! hands it to the connection, so a test can see how much a client read before it hung up.
//!
//! For well-behaved behaviour against a real registry use [`crate::registry::TestRegistry`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;

use crate::oci::sha256_digest;

/// Size of each chunk of a streamed body.
pub const CHUNK: usize = 64 * 1024;

/// How `GET /v2/<name>/manifests/<reference>` answers.
#[derive(Clone, Debug)]
pub enum ManifestAnswer {
    /// From the store, like a registry (404 when absent).
    Stored,
    /// 200 with this `Content-Type` and body, whatever was asked for.
    Fixed { content_type: String, body: Vec<u8> },
    /// 200 with this `Content-Type` and a body of `total` bytes streamed in [`CHUNK`]s, one per
    /// millisecond; with a `Content-Length` header when `declare_length`, else chunked.
    Huge {
        content_type: String,
        total: usize,
        declare_length: bool,
    },
    /// 307 to this URL.
    Redirect(String),
    /// 500 with a body that quotes the request's `Authorization` header, in an error envelope.
    EchoAuthorization,
}

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Send `Docker-Content-Digest` on HEAD (and GET) answers from the store.
    pub digest_header: bool,
    pub get: ManifestAnswer,
    /// Demand Bearer tokens from `/token`, which hands them out for these basic credentials
    /// only (`None`: no auth at all).
    pub bearer: Option<(String, String)>,
    /// Demand HTTP basic auth with these credentials on `/v2/` requests (`None`: no auth).
    pub basic: Option<(String, String)>,
    /// Refuse a manifest PUT to a tag that exists, even with the same bytes, as registries
    /// with immutable tags do (400 `TAG_INVALID`).
    pub immutable_tags: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            digest_header: true,
            get: ManifestAnswer::Stored,
            bearer: None,
            basic: None,
            immutable_tags: false,
        }
    }
}

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
}

/// (repository, reference) → (content type, bytes).
type Manifests = HashMap<(String, String), (String, Vec<u8>)>;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<FakeRequest>>,
    /// (repository, reference) → (content type, bytes); a PUT stores under tag and digest.
    manifests: Mutex<Manifests>,
    /// token → scope it grants.
    tokens: Mutex<HashMap<String, String>>,
    /// Tokens handed out so far (names are never reused).
    issued: AtomicUsize,
    streamed: AtomicUsize,
    stream_dropped: AtomicBool,
    stream_finished: AtomicBool,
}

struct AppState {
    behaviour: Behaviour,
    shared: Arc<Shared>,
    base: String,
}

/// A running fake; the server stops on drop.
pub struct FakeRegistry {
    host: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeRegistry {
    /// Start on `127.0.0.1:<free port>`, in the caller's runtime. The listening socket's send
    /// buffer is small (64 KiB), so what the server has handed to the connection is close to
    /// what the client has read.
    pub async fn start(behaviour: Behaviour) -> Self {
        crate::registry::install_crypto_provider();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_send_buffer_size(CHUNK as u32)
            .expect("small send buffer");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind the fake registry");
        let listener = socket.listen(64).expect("listen");
        let host = listener.local_addr().expect("address").to_string();
        let shared = Arc::new(Shared::default());
        let state = Arc::new(AppState {
            behaviour,
            shared: shared.clone(),
            base: format!("http://{host}"),
        });
        let app = axum::Router::new().fallback(answer).with_state(state);
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        Self {
            host,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// Store a manifest under `tag` and its digest; returns the digest.
    pub fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        content_type: &str,
        body: &[u8],
    ) -> String {
        let digest = sha256_digest(body);
        let mut manifests = lock(&self.shared.manifests);
        for reference in [tag, digest.as_str()] {
            manifests.insert(
                (repository.to_string(), reference.to_string()),
                (content_type.to_string(), body.to_vec()),
            );
        }
        digest
    }

    /// The manifest bytes stored under `reference`, if any.
    pub fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>> {
        lock(&self.shared.manifests)
            .get(&(repository.to_string(), reference.to_string()))
            .map(|(_, body)| body.clone())
    }

    /// Forget every token handed out, as a registry does when they expire or are revoked.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    pub fn requests(&self) -> Vec<FakeRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn reset_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Bytes of [`ManifestAnswer::Huge`] bodies handed to connections so far.
    pub fn streamed_bytes(&self) -> usize {
        self.shared.streamed.load(Ordering::SeqCst)
    }

    /// Whether a huge body was streamed to its end.
    pub fn stream_finished(&self) -> bool {
        self.shared.stream_finished.load(Ordering::SeqCst)
    }

    /// Wait (up to 10 s) until the server has dropped the huge body it was streaming, which
    /// happens when the client hung up (or the body ended). Returns whether it did.
    pub async fn wait_stream_dropped(&self) -> bool {
        for _ in 0..1000 {
            if self.shared.stream_dropped.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Marks the stream as dropped when the body (and so this guard) goes away.
struct DropFlag(Arc<Shared>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.stream_dropped.store(true, Ordering::SeqCst);
    }
}

fn respond(status: StatusCode, headers: &[(header::HeaderName, String)], body: Body) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(body).unwrap_or_default()
}

async fn answer(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let response = route(&state, &parts.method, &path, &query, &parts.headers, body).await;
    lock(&state.shared.requests).push(FakeRequest {
        method: parts.method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        authorization,
    });
    response
}

async fn route(
    state: &AppState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if path == "/token" {
        return token(state, query, headers);
    }
    let Some((repository, reference)) = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.split_once("/manifests/"))
    else {
        return respond(StatusCode::NOT_FOUND, &[], Body::empty());
    };
    let push = *method == Method::PUT;
    if let Some((username, password)) = &state.behaviour.basic
        && !is_basic(headers, username, password)
    {
        return respond(
            StatusCode::UNAUTHORIZED,
            &[(
                header::WWW_AUTHENTICATE,
                r#"Basic realm="fake-registry""#.into(),
            )],
            Body::empty(),
        );
    }
    if let Some(denied) = check_bearer(state, repository, push, headers) {
        return denied;
    }
    let key = (repository.to_string(), reference.to_string());
    if push {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let digest = sha256_digest(&body);
        let mut manifests = lock(&state.shared.manifests);
        if state.behaviour.immutable_tags && manifests.contains_key(&key) {
            let envelope = serde_json::json!({"errors": [
                {"code": "TAG_INVALID", "message": format!("tag {reference} is immutable")}
            ]});
            return respond(
                StatusCode::BAD_REQUEST,
                &[(header::CONTENT_TYPE, "application/json".into())],
                Body::from(envelope.to_string()),
            );
        }
        manifests.insert(key, (content_type.clone(), body.to_vec()));
        manifests.insert(
            (repository.to_string(), digest.clone()),
            (content_type, body.to_vec()),
        );
        return respond(
            StatusCode::CREATED,
            &[(
                header::HeaderName::from_static("docker-content-digest"),
                digest,
            )],
            Body::empty(),
        );
    }
    if *method == Method::GET {
        match &state.behaviour.get {
            ManifestAnswer::Stored => {}
            ManifestAnswer::Fixed { content_type, body } => {
                return respond(
                    StatusCode::OK,
                    &[(header::CONTENT_TYPE, content_type.clone())],
                    Body::from(body.clone()),
                );
            }
            ManifestAnswer::Huge {
                content_type,
                total,
                declare_length,
            } => return huge(state, content_type, *total, *declare_length),
            ManifestAnswer::Redirect(url) => {
                return respond(
                    StatusCode::TEMPORARY_REDIRECT,
                    &[(header::LOCATION, url.clone())],
                    Body::empty(),
                );
            }
            ManifestAnswer::EchoAuthorization => {
                let echoed = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let envelope = serde_json::json!({"errors": [
                    {"code": echoed, "message": format!("you sent {echoed}")}
                ]});
                return respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[(header::CONTENT_TYPE, "application/json".into())],
                    Body::from(envelope.to_string()),
                );
            }
        }
    }
    let stored = lock(&state.shared.manifests).get(&key).cloned();
    let Some((content_type, bytes)) = stored else {
        let envelope = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        return respond(StatusCode::NOT_FOUND, &[], Body::from(envelope));
    };
    let mut answer_headers = vec![
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_LENGTH, bytes.len().to_string()),
    ];
    if state.behaviour.digest_header {
        answer_headers.push((
            header::HeaderName::from_static("docker-content-digest"),
            sha256_digest(&bytes),
        ));
    }
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    respond(StatusCode::OK, &answer_headers, body)
}

fn huge(state: &AppState, content_type: &str, total: usize, declare_length: bool) -> Response {
    let shared = state.shared.clone();
    let guard = DropFlag(shared.clone());
    let chunk = Bytes::from(vec![b' '; CHUNK]);
    let stream = futures::stream::unfold((0usize, guard), move |(sent, guard)| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                guard.0.stream_finished.store(true, Ordering::SeqCst);
                return None;
            }
            // Paced, so a client that reads as fast as it can keeps the socket buffers empty
            // and what was sent is close to what was read.
            if sent > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let size = CHUNK.min(total - sent);
            guard.0.streamed.fetch_add(size, Ordering::SeqCst);
            Some((
                Ok::<_, std::io::Error>(chunk.slice(..size)),
                (sent + size, guard),
            ))
        }
    });
    let mut headers = vec![(header::CONTENT_TYPE, content_type.to_string())];
    if declare_length {
        headers.push((header::CONTENT_LENGTH, total.to_string()));
    }
    respond(StatusCode::OK, &headers, Body::from_stream(stream))
}

/// `None` when the request may go on; else the 401 with the challenge.
fn check_bearer(
    state: &AppState,
    repository: &str,
    push: bool,
    headers: &HeaderMap,
) -> Option<Response> {
    state.behaviour.bearer.as_ref()?;
    let actions = if push { "pull,push" } else { "pull" };
    let granted = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| lock(&state.shared.tokens).get(token).cloned());
    let allowed = granted.is_some_and(|scope| {
        scope == format!("repository:{repository}:pull,push")
            || (!push && scope == format!("repository:{repository}:pull"))
    });
    if allowed {
        return None;
    }
    let challenge = format!(
        r#"Bearer realm="{}/token",service="fake-registry",scope="repository:{repository}:{actions}""#,
        state.base
    );
    Some(respond(
        StatusCode::UNAUTHORIZED,
        &[(header::WWW_AUTHENTICATE, challenge)],
        Body::from(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#),
    ))
}

/// `GET /token?service=…&scope=…` with basic credentials: a token for that scope.
fn token(state: &AppState, query: &str, headers: &HeaderMap) -> Response {
    let Some((username, password)) = &state.behaviour.bearer else {
        return respond(StatusCode::NOT_FOUND, &[], Body::empty());
    };
    if !is_basic(headers, username, password) {
        return respond(StatusCode::UNAUTHORIZED, &[], Body::empty());
    }
    let scope = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "scope")
        .map(|(_, value)| {
            value
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
        .unwrap_or_default();
    let token = format!(
        "token-{}",
        state.shared.issued.fetch_add(1, Ordering::SeqCst) + 1
    );
    lock(&state.shared.tokens).insert(token.clone(), scope);
    let body = serde_json::json!({"token": token, "expires_in": 300});
    respond(
        StatusCode::OK,
        &[(header::CONTENT_TYPE, "application/json".into())],
        Body::from(body.to_string()),
    )
}

/// Whether `headers` carry `Authorization: Basic` for exactly these credentials.
fn is_basic(headers: &HeaderMap, username: &str, password: &str) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    );
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        == Some(expected.as_bytes())
}
