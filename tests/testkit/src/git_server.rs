//! A real git server over smart HTTP on loopback: `git http-backend` (the CGI program that ships
//! with git) run once per request behind a small axum server, with optional basic auth, request
//! counters, and modes that misbehave on purpose (redirect everything elsewhere, never answer).
//!
//! ```no_run
//! use monoship_testkit::git_server::{GitServer, GitServerOptions};
//! let server = GitServer::start(GitServerOptions::basic_auth("robot", "s3cret"));
//! let repo = server.repo("monorepo");                       // bare, served at repo.http_url()
//! let commit = repo.commit(&[("services/banana/main.go", Some("package main\n"))], "Add banana");
//! // ... fetch `commit` from repo.http_url() ...
//! assert_eq!(server.fetches(), 1);
//! ```
//!
//! The server runs on a thread and runtime of its own, so tests may call blocking clients (gix,
//! the `git` binary) from a plain `#[test]` or from inside their own runtime. Dropping the server
//! (or [`GitServer::stop`]) closes the port: later connections are refused.
//!
//! Counting: a protocol v2 `POST .../git-upload-pack` carries one command, `command=fetch` or
//! `command=ls-refs` (read from the request body; a gzip-encoded body, which git sends only for
//! large negotiations, counts as a fetch). A protocol v0/v1 upload-pack POST (no `version=2` in
//! `Git-Protocol`) counts as a fetch. Multi-round negotiations count once per round.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::git::GitRepo;

/// Largest request body the server reads (tests push nothing; negotiations are small).
const MAX_REQUEST: usize = 64 << 20;

/// How the server behaves.
#[derive(Clone, Debug, Default)]
pub struct GitServerOptions {
    /// Demand HTTP basic auth with these credentials (`None`: anonymous).
    pub basic_auth: Option<(String, String)>,
    /// Answer every request with `302 Found` to this base URL (e.g. `http://127.0.0.1:PORT`)
    /// followed by the request's path and query, after the auth check.
    pub redirect_to: Option<String>,
    /// Accept connections and read requests, but never answer.
    pub hang: bool,
}

impl GitServerOptions {
    /// Anonymous, well-behaved.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Basic auth with one user.
    pub fn basic_auth(username: &str, password: &str) -> Self {
        Self {
            basic_auth: Some((username.to_string(), password.to_string())),
            ..Self::default()
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Whether the request carried an `Authorization` header (right or wrong).
    pub authorization: bool,
    /// The `Git-Protocol` header, if any.
    pub git_protocol: Option<String>,
    /// The request body as text (lossy, at most [`BODY_EXCERPT`] bytes; empty when it was not
    /// read: a 401, a redirect), e.g. `command=fetch ... want <id> ... have <id>`.
    pub body: String,
}

/// How much of a request body [`GitRequest::body`] keeps.
pub const BODY_EXCERPT: usize = 16 * 1024;

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    fetches: AtomicUsize,
    ls_refs: AtomicUsize,
    unauthorized: AtomicUsize,
    log: Mutex<Vec<GitRequest>>,
}

struct AppState {
    options: GitServerOptions,
    root: Arc<tempfile::TempDir>,
    counters: Arc<Counters>,
}

/// A running server; it stops on drop.
pub struct GitServer {
    address: SocketAddr,
    root: Arc<tempfile::TempDir>,
    counters: Arc<Counters>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GitServer {
    /// Start on `127.0.0.1:<free port>` with an empty project root.
    pub fn start(options: GitServerOptions) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the git server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let address = listener.local_addr().expect("git server address");
        let root = Arc::new(tempfile::tempdir().expect("git server project root"));
        let counters = Arc::new(Counters::default());
        let state = Arc::new(AppState {
            options,
            root: root.clone(),
            counters: counters.clone(),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("git server runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("tokio git listener");
                let app = axum::Router::new().fallback(answer).with_state(state);
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = shutdown_rx => {}
                }
            });
            // Drops the listener and every connection still open: the port is closed.
            runtime.shutdown_background();
        });
        Self {
            address,
            root,
            counters,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://127.0.0.1:PORT/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base_url())
    }

    /// `GIT_PROJECT_ROOT`: served repositories live here as `<name>.git`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Create a bare repository `<name>.git` in the project root (no commits yet).
    pub fn repo(&self, name: &str) -> GitRepo {
        GitRepo::create(self.root.path(), name, Some(self.url(name)))
    }

    /// Every request so far.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Upload-pack fetch commands served (see the module docs).
    pub fn fetches(&self) -> usize {
        self.counters.fetches.load(Ordering::SeqCst)
    }

    /// Protocol v2 `ls-refs` commands served.
    pub fn ls_refs(&self) -> usize {
        self.counters.ls_refs.load(Ordering::SeqCst)
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> usize {
        self.counters.unauthorized.load(Ordering::SeqCst)
    }

    /// Requests that carried an `Authorization` header.
    pub fn with_authorization(&self) -> usize {
        lock(&self.counters.log)
            .iter()
            .filter(|request| request.authorization)
            .count()
    }

    /// The request log, in order of arrival of the answers.
    pub fn log(&self) -> Vec<GitRequest> {
        lock(&self.counters.log).clone()
    }

    /// Stop answering: the port is closed when this returns.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A URL on a loopback port nobody listens on (bound a moment ago, then closed).
pub fn url_unreachable(name: &str) -> String {
    format!(
        "http://127.0.0.1:{}/{name}.git",
        crate::registry::free_port()
    )
}

async fn answer(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let counters = &state.counters;
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let header_text = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let git_protocol = header_text(HeaderName::from_static("git-protocol"));
    let authorization = header_text(header::AUTHORIZATION);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let record = |status: StatusCode, body: &[u8]| {
        let body = &body[..body.len().min(BODY_EXCERPT)];
        lock(&counters.log).push(GitRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            status: status.as_u16(),
            authorization: authorization.is_some(),
            git_protocol: git_protocol.clone(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    };

    if state.options.hang {
        std::future::pending::<()>().await;
    }
    let mut remote_user = None;
    if let Some((username, password)) = &state.options.basic_auth {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        if authorization.as_deref() != Some(expected.as_str()) {
            counters.unauthorized.fetch_add(1, Ordering::SeqCst);
            record(StatusCode::UNAUTHORIZED, b"");
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")
                .body(Body::from("authentication required\n"))
                .unwrap_or_default();
        }
        remote_user = Some(username.clone());
    }
    if let Some(base) = &state.options.redirect_to {
        let location = match parts.uri.path_and_query() {
            Some(pq) => format!("{base}{}", pq.as_str()),
            None => format!("{base}{path}"),
        };
        record(StatusCode::FOUND, b"");
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_default();
    }

    let body = match axum::body::to_bytes(body, MAX_REQUEST).await {
        Ok(body) => body,
        Err(error) => {
            record(StatusCode::PAYLOAD_TOO_LARGE, b"");
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {error}"),
            );
        }
    };
    if parts.method == axum::http::Method::POST && path.ends_with("/git-upload-pack") {
        let v2 = git_protocol
            .as_deref()
            .is_some_and(|p| p.contains("version=2"));
        let gzip = header_text(header::CONTENT_ENCODING).is_some_and(|e| e.contains("gzip"));
        let says = |command: &[u8]| body.windows(command.len()).any(|w| w == command);
        if v2 && !gzip && says(b"command=ls-refs") {
            counters.ls_refs.fetch_add(1, Ordering::SeqCst);
        } else if !v2 || gzip || says(b"command=fetch") {
            counters.fetches.fetch_add(1, Ordering::SeqCst);
        }
    }

    let cgi = Cgi {
        root: state.root.path(),
        method: parts.method.as_str(),
        path: &path,
        query: &query,
        content_type: header_text(header::CONTENT_TYPE),
        content_encoding: header_text(header::CONTENT_ENCODING),
        git_protocol: git_protocol.clone(),
        remote_user,
    };
    let response = match cgi.run(body.clone()).await {
        Ok(response) => response,
        Err(message) => plain(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    record(response.status(), &body);
    response
}

fn plain(status: StatusCode, message: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(message))
        .unwrap_or_default()
}

/// `git` as a path: a program named by a bare name under a cleared environment that sets
/// `PATH` is started by `fork`, which copies the page tables of this (test or bench) process on
/// every request; a path lets the standard library spawn it without that copy.
fn git_program() -> &'static Path {
    static GIT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    GIT.get_or_init(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("git"))
            .find(|path| path.is_file())
            .unwrap_or_else(|| "git".into())
    })
}

/// One `git http-backend` run.
struct Cgi<'a> {
    root: &'a Path,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    content_type: Option<String>,
    content_encoding: Option<String>,
    git_protocol: Option<String>,
    remote_user: Option<String>,
}

impl Cgi<'_> {
    async fn run(self, body: Bytes) -> Result<Response, String> {
        let mut command = tokio::process::Command::new(git_program());
        command
            .arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_PROJECT_ROOT", self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", self.method)
            .env("PATH_INFO", self.path)
            .env("QUERY_STRING", self.query)
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let optional = [
            ("CONTENT_TYPE", &self.content_type),
            ("HTTP_CONTENT_ENCODING", &self.content_encoding),
            ("GIT_PROTOCOL", &self.git_protocol),
            ("REMOTE_USER", &self.remote_user),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("git http-backend: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("git http-backend: no stdin")?;
        let mut stdout = child.stdout.take().ok_or("git http-backend: no stdout")?;
        let mut stderr = child.stderr.take().ok_or("git http-backend: no stderr")?;
        // Feed stdin and drain stderr beside reading stdout, so no pipe fills up.
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
        let stderr_task = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });

        // CGI headers end at the first empty line (`\r\n\r\n` or `\n\n`).
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let body_start = loop {
            if let Some(end) = header_end(&head) {
                break end;
            }
            let n = stdout
                .read(&mut chunk)
                .await
                .map_err(|e| format!("git http-backend: {e}"))?;
            if n == 0 {
                let status = child.wait().await.map_err(|e| e.to_string())?;
                let stderr = stderr_task.await.unwrap_or_default();
                return Err(format!(
                    "git http-backend ended ({status}) before its headers: {stderr}"
                ));
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let rest = head.split_off(body_start.1);
        head.truncate(body_start.0);
        let mut builder = Response::builder();
        let mut headers = HeaderMap::new();
        for line in String::from_utf8_lossy(&head).lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code = value.split(' ').next().unwrap_or("200");
                let status = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                builder = builder.status(status);
            } else if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        if let Some(map) = builder.headers_mut() {
            map.extend(headers);
        }

        // Stream the rest of stdout as the body; the child is reaped when it ends.
        let start = (Bytes::from(rest), stdout, child, chunk);
        let stream = futures::stream::unfold(Some(start), |state| async move {
            let (first, mut stdout, mut child, mut chunk) = state?;
            if !first.is_empty() {
                return Some((Ok(first), Some((Bytes::new(), stdout, child, chunk))));
            }
            match stdout.read(&mut chunk).await {
                Ok(0) => {
                    let _ = child.wait().await;
                    None
                }
                Ok(n) => {
                    let bytes = Bytes::copy_from_slice(&chunk[..n]);
                    Some((Ok(bytes), Some((Bytes::new(), stdout, child, chunk))))
                }
                // The error ends the body; the child is killed on drop.
                Err(error) => Some((Err(error), None)),
            }
        });
        tokio::spawn(async move {
            let stderr = stderr_task.await.unwrap_or_default();
            if !stderr.trim().is_empty() {
                tracing::debug!(%stderr, "git http-backend");
            }
        });
        builder
            .body(Body::from_stream(stream))
            .map_err(|e| format!("git http-backend response: {e}"))
    }
}

/// Where the CGI headers end: (end of the headers, start of the body).
fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
