//! A real OCI registry (distribution 2.8, `docker-registry serve`) on loopback, with every
//! request recorded.
//!
//! Why a recording proxy instead of parsing the registry's access log: distribution writes its
//! access log line (Apache combined format on stdout, plus a logrus "response completed" line
//! on stderr) *after* the handler returns, so a client can hold the response before the line
//! exists, and reading the log right after a call races. [`TestRegistry::host`] is instead a
//! small HTTP proxy on `127.0.0.1` in front of the registry: it records `{method, path, status,
//! accept, content type}` before it returns the response to the client, so once a call has
//! returned its requests are in [`TestRegistry::requests`]. It also lets tests see the `Accept`
//! header, which the access log does not carry. The registry's own output stays available in
//! [`TestRegistry::log`] for debugging.
//!
//! The registry runs with `storage.delete.enabled: true` and `http.host` set to the proxy's URL,
//! so the `Location` headers it sends point back through the proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;

/// One request that went through the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string, e.g. `/v2/banana/manifests/latest`.
    pub path: String,
    pub query: String,
    /// The status the registry answered with (502 if the proxy could not reach it).
    pub status: u16,
    /// The media types in the `Accept` header(s), in order.
    pub accept: Vec<String>,
    pub content_type: Option<String>,
    /// Size of the request body in bytes (what the client uploaded).
    pub request_bytes: usize,
}

impl RecordedRequest {
    /// A blob upload request: POST/PATCH/PUT under `/blobs/uploads`.
    pub fn is_blob_upload(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PATCH" | "PUT")
            && self.path.contains("/blobs/uploads")
    }

    /// A manifest PUT to `/v2/<repo>/manifests/<reference>`.
    pub fn is_manifest_put(&self, repository: &str, reference: &str) -> bool {
        self.method == "PUT" && self.path == format!("/v2/{repository}/manifests/{reference}")
    }
}

type Log = Arc<Mutex<Vec<RecordedRequest>>>;

/// A running registry; the process is killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    proxy_port: u16,
    backend_port: u16,
    requests: Log,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestRegistry {
    /// Start an anonymous registry on `127.0.0.1:<free port>`. Panics if it does not come up.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// Start a registry that requires HTTP basic auth (distribution `auth.htpasswd`, bcrypt).
    pub async fn start_with_htpasswd(username: &str, password: &str) -> Self {
        Self::start_inner(Some((username, password))).await
    }

    async fn start_inner(htpasswd: Option<(&str, &str)>) -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the registry proxy");
        let proxy_port = listener.local_addr().expect("proxy address").port();

        let auth = match htpasswd {
            Some((username, password)) => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .expect("bcrypt hash")
                    .format_for_version(bcrypt::Version::TwoY);
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{username}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: monoship-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let (child, backend_port) = start_backend(dir.path(), proxy_port, &auth).await;

        let requests: Log = Arc::default();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        spawn_proxy(listener, backend_port, requests.clone(), shutdown_rx);

        // The proxy's listener is bound already: a request made now waits for it to accept.
        Self {
            child,
            dir,
            proxy_port,
            backend_port,
            requests,
            shutdown: Some(shutdown),
        }
    }

    /// `127.0.0.1:PORT` of the recording proxy; use it as the registry host.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    /// `127.0.0.1:PORT` of the registry itself, bypassing the recording.
    pub fn backend_host(&self) -> String {
        format!("127.0.0.1:{}", self.backend_port)
    }

    /// The registry's temp directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Every request since the start or the last [`reset_requests`](Self::reset_requests).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    /// Forget the requests recorded so far.
    pub fn reset_requests(&self) {
        lock(&self.requests).clear();
    }

    /// The process id of the `docker-registry` behind the proxy.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A position in the request list, for [`requests_since`](Self::requests_since).
    pub fn mark(&self) -> usize {
        lock(&self.requests).len()
    }

    /// The requests recorded after `mark` (empty if the list was reset since).
    pub fn requests_since(&self, mark: usize) -> Vec<RecordedRequest> {
        lock(&self.requests)
            .get(mark..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Blob upload requests (POST/PATCH/PUT to `/blobs/uploads`) among [`requests`](Self::requests).
    pub fn blob_uploads(&self) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.is_blob_upload())
            .count()
    }

    /// `PUT /v2/<repository>/manifests/<tag>` requests among [`requests`](Self::requests).
    pub fn manifest_puts(&self, repository: &str, tag: &str) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.is_manifest_put(repository, tag))
            .count()
    }

    /// The storage root directory of the registry.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The tags of `repository` grouped by the digest each points at, as the registry stores
    /// them (`_manifests/tags/<tag>/current/link`), digests and tags sorted.
    pub fn tags_by_digest(&self, repository: &str) -> Vec<(String, Vec<String>)> {
        let tags = self
            .storage()
            .join("docker/registry/v2/repositories")
            .join(repository)
            .join("_manifests/tags");
        let mut by_digest = std::collections::BTreeMap::<String, Vec<String>>::new();
        for entry in std::fs::read_dir(tags).into_iter().flatten().flatten() {
            let tag = entry.file_name().to_string_lossy().into_owned();
            if let Ok(link) = std::fs::read_to_string(entry.path().join("current/link")) {
                by_digest
                    .entry(link.trim().to_owned())
                    .or_default()
                    .push(tag);
            }
        }
        by_digest
            .into_iter()
            .map(|(digest, mut tags)| {
                tags.sort();
                (digest, tags)
            })
            .collect()
    }
}

/// Start `docker-registry` on a free port with its storage and log in `dir`, and wait until it
/// answers. The port was free a moment before the registry binds it; another process that takes
/// it in between makes the registry exit ("address already in use"), and it starts again on
/// another port.
async fn start_backend(dir: &std::path::Path, proxy_port: u16, auth: &str) -> (Child, u16) {
    const ATTEMPTS: usize = 5;
    let root = dir.join("storage");
    let log_path = dir.join("registry.log");
    for attempt in 1..=ATTEMPTS {
        let backend_port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{backend_port}\n  host: http://127.0.0.1:{proxy_port}\n\
             {auth}",
            root = root.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(&log_path).expect("registry log file");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (apt-get install -y docker-registry)");
        let url = format!("http://127.0.0.1:{backend_port}/v2/");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("address already in use") && attempt < ATTEMPTS {
                    break;
                }
                panic!("docker-registry exited with {status}:\n{log}");
            }
            // 200 anonymous, 401 with auth: either way the registry answers.
            if let Ok(response) = client.get(&url).send().await
                && (response.status() == StatusCode::OK
                    || response.status() == StatusCode::UNAUTHORIZED)
            {
                return (child, backend_port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("docker-registry did not answer GET /v2/ within 10s:\n{log}");
        }
    }
    panic!(
        "docker-registry found no free port in {ATTEMPTS} attempts:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    )
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Install rustls' ring provider for the process (kube and reqwest are built without
/// a default one). Harmless to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

#[derive(Clone)]
struct ProxyState {
    backend_port: u16,
    client: reqwest::Client,
    requests: Log,
}

/// The proxy runs on its own thread and runtime, so a test that blocks its own runtime (for
/// example by running skopeo synchronously against the proxy) cannot stall it.
fn spawn_proxy(
    listener: std::net::TcpListener,
    backend_port: u16,
    requests: Log,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("tokio proxy listener");
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("proxy http client");
            let state = ProxyState {
                backend_port,
                client,
                requests,
            };
            let app = axum::Router::new().fallback(forward).with_state(state);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown.await;
                })
                .await;
        });
    });
}

const HOP_BY_HOP: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::CONTENT_LENGTH,
];

/// Forward one request and record it. The work runs in its own task: when a client goes away
/// mid-request (a controller killed in a test), the registry may still act on the request, and
/// the log must still show it.
async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    match tokio::spawn(forward_and_record(state, request)).await {
        Ok(response) => response,
        Err(error) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("registry proxy: {error}")))
            .unwrap_or_default(),
    }
}

async fn forward_and_record(state: ProxyState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let accept = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_head = parts.method == Method::HEAD;
    let mut request_bytes = 0;

    let result = async {
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        request_bytes = body.len();
        let url = match parts.uri.path_and_query() {
            Some(pq) => format!("http://127.0.0.1:{}{}", state.backend_port, pq.as_str()),
            None => format!("http://127.0.0.1:{}/", state.backend_port),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let response = state
            .client
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, headers, body))
    }
    .await;

    let (status, headers, body) = match result {
        Ok(answer) => answer,
        Err(message) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            bytes_of(format!("registry proxy: {message}")),
        ),
    };
    lock(&state.requests).push(RecordedRequest {
        method: parts.method.to_string(),
        path,
        query,
        status: status.as_u16(),
        accept,
        content_type,
        request_bytes,
    });

    let mut builder = Response::builder().status(status);
    for (name, value) in &headers {
        // A HEAD answer keeps the registry's Content-Length (the size of the GET body).
        if !HOP_BY_HOP.contains(name) || (is_head && name == header::CONTENT_LENGTH) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn bytes_of(s: String) -> axum::body::Bytes {
    axum::body::Bytes::from(s)
}
