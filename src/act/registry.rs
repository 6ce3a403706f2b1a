//! The OCI registry: resolve a tag's digest, and move a tag to a digest without uploading blobs.
//!
//! Built on `oci-client`. Its `fetch_manifest_digest` sends `HEAD /v2/<name>/manifests/<tag>`
//! with all four manifest media types in `Accept` (OCI index, OCI manifest, Docker manifest
//! list, Docker manifest v2; see `MIME_TYPES_DISTRIBUTION_MANIFEST` in oci-client 0.18) and
//! falls back to `GET` plus sha256 of the body when `Docker-Content-Digest` is missing, so the
//! digest returned is always the top-level one (the index, for a multi-arch image).
//!
//! oci-client caches credentials and tokens per registry and repository, not per credential.
//! To keep one ServiceBuild's credentials from being used for another's requests,
//! [`RegistryClient`] keeps one `oci_client::Client` per distinct [`RegistryAuth`], all built
//! from the same configuration.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};

use crate::Error;
use crate::conditions::reasons;
use crate::metrics::{Metrics, RegistryLabels};

/// Every manifest media type monoship accepts, top-level types first.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// Time allowed to open a connection to a registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed between two reads of one response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one whole operation (which may be several requests, e.g. HEAD then GET).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many distinct credentials keep a cached client.
const MAX_CLIENTS: usize = 64;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RegistryAuth {
    Anonymous,
    Basic { username: String, password: String },
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl RegistryAuth {
    /// From the bytes of a `.dockerconfigjson` (the `kubernetes.io/dockerconfigjson` Secret
    /// key): the entry for the repository's registry host.
    ///
    /// A key matches when, after removing an `http://`/`https://` prefix and any path, it equals
    /// the registry host (`host` or `host:port`, exactly). For Docker Hub, the keys `docker.io`,
    /// `index.docker.io`, `registry-1.docker.io` and `https://index.docker.io/v1/` all match.
    /// Credentials come from `username` + `password`, else from the base64 `auth` field
    /// (`username:password`). No matching entry gives [`RegistryAuth::Anonymous`].
    ///
    /// Malformed JSON or base64 gives `Error::Stalled` with `InvalidSecret`; the message never
    /// contains a secret value.
    pub fn from_docker_config_json(bytes: &[u8], repository: &str) -> Result<Self, Error> {
        let invalid = |what: String| {
            Error::stalled(
                reasons::INVALID_SECRET,
                format!("the .dockerconfigjson in the pull/push Secret is invalid: {what}"),
            )
        };
        // Parse into a Value, not a typed struct: serde's type errors quote the offending value,
        // which could be a password. Syntax errors only carry a position.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Some(root) = value.as_object() else {
            return Err(invalid("the top level is not a JSON object".into()));
        };
        let auths = match root.get("auths") {
            None | Some(serde_json::Value::Null) => return Ok(Self::Anonymous),
            Some(serde_json::Value::Object(auths)) => auths,
            Some(_) => return Err(invalid("\"auths\" is not a JSON object".into())),
        };

        let host = registry_host(repository);
        let wanted = |key: &str| {
            let key = normalize_config_key(key);
            key == host || (is_docker_hub(host) && is_docker_hub(key))
        };
        // Prefer an exact key over a normalized one, so `https://host` and `host` entries in the
        // same file resolve predictably.
        let entry = auths
            .iter()
            .find(|(key, _)| key.as_str() == host)
            .or_else(|| auths.iter().find(|(key, _)| wanted(key)));
        let Some((key, entry)) = entry else {
            return Ok(Self::Anonymous);
        };
        let Some(entry) = entry.as_object() else {
            return Err(invalid(format!(
                "the entry for {key:?} is not a JSON object"
            )));
        };
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };

        if let (Some(username), Some(password)) = (field("username"), field("password")) {
            return Ok(Self::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if let Some(encoded) = field("auth") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(encoded.trim().trim_end_matches('='))
                })
                .map_err(|_| invalid(format!("the \"auth\" field for {key:?} is not base64")))?;
            let decoded = String::from_utf8(decoded).map_err(|_| {
                invalid(format!("the \"auth\" field for {key:?} is not UTF-8 text"))
            })?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(invalid(format!(
                    "the \"auth\" field for {key:?} does not decode to username:password"
                )));
            };
            return Ok(Self::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        Err(invalid(format!(
            "the entry for {key:?} has neither username and password nor auth"
        )))
    }

    fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Self::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

/// The registry host of a repository such as `registry.example.com:5000/team/app`: the part
/// before the first `/` if it contains `.` or `:` or is `localhost`, else `docker.io`.
pub fn registry_host(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://host:port/v1/` → `host:port`.
fn normalize_config_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// What [`RegistryClient::retag_without_upload`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetagOutcome {
    /// The tag already pointed at the digest; nothing was written.
    AlreadyTagged,
    /// The tag now points at the digest. `previous` is the digest it pointed at before, if any.
    Moved { previous: Option<String> },
}

/// A registry client; cheap to clone, meant to be shared.
#[derive(Clone)]
pub struct RegistryClient {
    insecure: Arc<Vec<String>>,
    clients: Arc<Mutex<HashMap<RegistryAuth, oci_client::Client>>>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// How a failed registry call is classified before it becomes an [`Error`].
enum Failure {
    Denied(String),
    NotFound(String),
    Transient(String),
}

impl RegistryClient {
    /// `insecure`: exact `host:port` entries that use plain HTTP (`ClientProtocol::HttpsExcept`).
    pub fn new(insecure: Vec<String>) -> Self {
        // oci-client and kube use rustls without a default provider; installing it twice is
        // harmless (the second call returns Err).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            insecure: Arc::new(insecure),
            clients: Arc::default(),
            metrics: None,
        }
    }

    /// Count every registry call in `metrics`, by operation and status.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Classify one call's result and count it.
    fn outcome<T>(
        &self,
        operation: &'static str,
        result: Result<oci_client::errors::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Failure> {
        let (status, result) = outcome(result);
        match status {
            Some(status) => tracing::debug!(operation, status, "registry call"),
            None => tracing::debug!(operation, status = "error", "registry call"),
        }
        if let Some(metrics) = &self.metrics {
            let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
            metrics
                .registry_requests
                .get_or_create(&RegistryLabels { operation, status })
                .inc();
        }
        result
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.to_vec()),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            platform_resolver: None,
            ..ClientConfig::default()
        }
    }

    /// The oci-client for these credentials (see the module docs for why there is one each).
    fn client(&self, auth: &RegistryAuth) -> oci_client::Client {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Rotated secrets leave stale entries behind; start over rather than grow without bound.
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(auth) {
            clients.clear();
        }
        clients
            .entry(auth.clone())
            .or_insert_with(|| oci_client::Client::new(self.config()))
            .clone()
    }

    /// Digest of `repository:tag` via `HEAD /v2/<name>/manifests/<tag>` with the full Accept
    /// list, GET + sha256 fallback when `Docker-Content-Digest` is missing. Returns the
    /// top-level digest `sha256:…`.
    pub async fn resolve_digest(
        &self,
        repository: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<String, Error> {
        let reference = parse_reference(&format!("{repository}:{tag}"))?;
        let client = self.client(auth);
        match self.head_digest(&client, &reference, auth).await {
            Ok(digest) => Ok(digest),
            Err(Failure::NotFound(_)) => Err(Error::stalled(
                reasons::IMAGE_NOT_FOUND,
                format!(
                    "the build reported success but {repository}:{tag} does not exist in the \
                     registry; check that the build pushes to $MONOSHIP_IMAGE"
                ),
            )),
            Err(failure) => Err(into_error(failure, "resolve", repository, tag)),
        }
    }

    async fn head_digest(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<String, Failure> {
        let result = timed(client.fetch_manifest_digest(reference, &auth.to_oci())).await;
        let digest = self.outcome("resolve", result)?;
        if !is_sha256_digest(&digest) {
            return Err(Failure::Transient(format!(
                "the registry answered with a malformed digest {digest:?}"
            )));
        }
        Ok(digest)
    }

    /// Point `tag` at `digest` without uploading blobs: resolve the tag; if it already points at
    /// `digest`, do nothing. Else GET the manifest by digest (raw bytes), read its `mediaType`
    /// from the body, and PUT the identical bytes to `/manifests/<tag>` with that Content-Type.
    /// A missing tag counts as "not yet tagged".
    pub async fn retag_without_upload(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<RetagOutcome, Error> {
        if !is_sha256_digest(digest) {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                format!("{digest:?} is not a sha256 digest (sha256: and 64 hex digits)"),
            ));
        }
        let tag_ref = parse_reference(&format!("{repository}:{tag}"))?;
        let digest_ref = parse_reference(&format!("{repository}@{digest}"))?;
        let client = self.client(auth);
        let oci_auth = auth.to_oci();

        let previous = match self.head_digest(&client, &tag_ref, auth).await {
            Ok(current) if current == digest => return Ok(RetagOutcome::AlreadyTagged),
            Ok(current) => Some(current),
            Err(Failure::NotFound(_)) => None,
            Err(failure) => return Err(into_error(failure, "resolve", repository, tag)),
        };

        let result = timed(client.pull_manifest_raw(&digest_ref, &oci_auth, &MANIFEST_MEDIA_TYPES));
        let (body, _) = match self.outcome("get_manifest", result.await) {
            Ok(pulled) => pulled,
            Err(Failure::NotFound(_)) => {
                return Err(Error::stalled(
                    reasons::IMAGE_NOT_FOUND,
                    format!("{repository}@{digest} does not exist in the registry"),
                ));
            }
            Err(failure) => return Err(into_error(failure, "get manifest", repository, digest)),
        };
        let media_type = manifest_media_type(&body).ok_or_else(|| Error::Registry {
            operation: "get manifest",
            reference: format!("{repository}@{digest}"),
            message: "the manifest has no recognizable media type".into(),
        })?;
        let content_type =
            reqwest::header::HeaderValue::from_str(&media_type).map_err(|_| Error::Registry {
                operation: "get manifest",
                reference: format!("{repository}@{digest}"),
                message: "the manifest's mediaType is not a valid header value".into(),
            })?;

        // No separate `auth(Push)` call: the PUT fetches a push-scoped token itself (oci-client
        // authorizes each request for its operation), and on registries that issue no tokens a
        // separate call would only add a `GET /v2/` round trip.
        let result = timed(client.push_manifest_raw(&tag_ref, body, content_type)).await;
        self.outcome("put_manifest", result)
            .map_err(|failure| into_error(failure, "put manifest", repository, tag))?;
        Ok(RetagOutcome::Moved { previous })
    }
}

fn parse_reference(reference: &str) -> Result<Reference, Error> {
    reference.parse::<Reference>().map_err(|e| {
        Error::stalled(
            reasons::INVALID_SPEC,
            format!("{reference:?} is not a valid image reference: {e}"),
        )
    })
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The manifest's `mediaType`; for OCI manifests that omit it, inferred from the shape.
fn manifest_media_type(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(media_type) = value.get("mediaType").and_then(|v| v.as_str()) {
        return Some(media_type.to_string());
    }
    if value.get("manifests").is_some() {
        Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string())
    } else if value.get("config").is_some() {
        Some(OCI_IMAGE_MEDIA_TYPE.to_string())
    } else {
        None
    }
}

async fn timed<T>(
    call: impl Future<Output = oci_client::errors::Result<T>>,
) -> Result<oci_client::errors::Result<T>, tokio::time::error::Elapsed> {
    tokio::time::timeout(OPERATION_TIMEOUT, call).await
}

/// Classify one call's result: the HTTP status it implies (none when no answer came), and the
/// value or the failure.
fn outcome<T>(
    result: Result<oci_client::errors::Result<T>, tokio::time::error::Elapsed>,
) -> (Option<u16>, Result<T, Failure>) {
    match result {
        Ok(Ok(value)) => (Some(200), Ok(value)),
        Ok(Err(error)) => {
            let (status, failure) = classify(error);
            (status, Err(failure))
        }
        Err(_) => (
            None,
            Err(Failure::Transient(format!(
                "timed out after {}s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        ),
    }
}

fn classify(error: OciDistributionError) -> (Option<u16>, Failure) {
    match error {
        OciDistributionError::UnauthorizedError { .. } => {
            (Some(401), Failure::Denied("401 Unauthorized".into()))
        }
        OciDistributionError::AuthenticationFailure(_) => {
            (Some(401), Failure::Denied("authentication failed".into()))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let message = envelope.to_string();
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(OciErrorCode::Unauthorized) => (Some(401), Failure::Denied(message)),
                Some(OciErrorCode::Denied) => (Some(403), Failure::Denied(message)),
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound,
                ) => (Some(404), Failure::NotFound(message)),
                Some(OciErrorCode::Toomanyrequests) => (Some(429), Failure::Transient(message)),
                _ => (Some(400), Failure::Transient(message)),
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let message = format!("HTTP {code}: {}", truncate(&message));
            let failure = match code {
                401 | 403 => Failure::Denied(message),
                404 => Failure::NotFound(message),
                _ => Failure::Transient(message),
            };
            (Some(code), failure)
        }
        OciDistributionError::RequestError(e) => {
            let status = e.status().map(|s| s.as_u16());
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            // reqwest's Display names the URL; our own reference is in the Error anyway.
            (
                status,
                Failure::Transient(format!("{kind}: {}", e.without_url())),
            )
        }
        other => (None, Failure::Transient(other.to_string())),
    }
}

fn truncate(message: &str) -> &str {
    let message = message.trim();
    match message.char_indices().nth(200) {
        Some((end, _)) => &message[..end],
        None => message,
    }
}

fn into_error(
    failure: Failure,
    operation: &'static str,
    repository: &str,
    reference: &str,
) -> Error {
    let separator = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let reference = format!("{repository}{separator}{reference}");
    match failure {
        Failure::Denied(message) => Error::stalled(
            reasons::REGISTRY_ACCESS_DENIED,
            format!(
                "the registry denied {operation} {reference} ({message}); check \
                 image.pushSecretRef"
            ),
        ),
        Failure::NotFound(message) | Failure::Transient(message) => Error::Registry {
            operation,
            reference,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> RegistryAuth {
        RegistryAuth::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn parse(json: &str, repository: &str) -> Result<RegistryAuth, Error> {
        RegistryAuth::from_docker_config_json(json.as_bytes(), repository)
    }

    #[test]
    fn host_of_repository() {
        assert_eq!(registry_host("127.0.0.1:5000/banana"), "127.0.0.1:5000");
        assert_eq!(registry_host("ghcr.io/org/app"), "ghcr.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_host("library/nginx"), "docker.io");
        assert_eq!(registry_host("nginx"), "docker.io");
        assert_eq!(registry_host("team/app/sub"), "docker.io");
    }

    #[test]
    fn username_and_password_by_exact_host() {
        let json = r#"{"auths":{"reg.example.com:5000":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            parse(json, "reg.example.com:5000/app").unwrap(),
            basic("u", "p")
        );
        // Another port is another registry.
        assert_eq!(
            parse(json, "reg.example.com/app").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn key_with_scheme_and_path() {
        let json = r#"{"auths":{"https://reg.example.com/v2/":{"username":"u","password":"p"}}}"#;
        assert_eq!(parse(json, "reg.example.com/app").unwrap(), basic("u", "p"));
        let json = r#"{"auths":{"http://reg.example.com:80":{"auth":"dTpw"}}}"#;
        assert_eq!(
            parse(json, "reg.example.com:80/app").unwrap(),
            basic("u", "p")
        );
    }

    #[test]
    fn exact_key_wins_over_normalized() {
        let json = format!(
            r#"{{"auths":{{"https://ghcr.io":{{"auth":"{}"}},"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("a:1"),
            b64("b:2")
        );
        assert_eq!(parse(&json, "ghcr.io/org/app").unwrap(), basic("b", "2"));
    }

    #[test]
    fn base64_auth_field() {
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("me:s3:cr:et")
        );
        // The password may contain colons; only the first one separates.
        assert_eq!(
            parse(&json, "ghcr.io/org/app").unwrap(),
            basic("me", "s3:cr:et")
        );
        // Unpadded base64 is accepted too.
        let unpadded = b64("ab:c").trim_end_matches('=').to_string();
        let json = format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{unpadded}"}}}}}}"#);
        assert_eq!(parse(&json, "ghcr.io/x").unwrap(), basic("ab", "c"));
    }

    #[test]
    fn username_password_preferred_over_auth() {
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"username":"u","password":"p","auth":"{}"}}}}}}"#,
            b64("other:x")
        );
        assert_eq!(parse(&json, "ghcr.io/x").unwrap(), basic("u", "p"));
    }

    #[test]
    fn docker_hub_aliases() {
        for key in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
            "registry-1.docker.io",
        ] {
            let json = format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64("hub:pw"));
            assert_eq!(
                parse(&json, "library/nginx").unwrap(),
                basic("hub", "pw"),
                "{key}"
            );
            assert_eq!(parse(&json, "nginx").unwrap(), basic("hub", "pw"), "{key}");
            assert_eq!(
                parse(&json, "docker.io/me/app").unwrap(),
                basic("hub", "pw")
            );
            assert_eq!(
                parse(&json, "ghcr.io/me/app").unwrap(),
                RegistryAuth::Anonymous
            );
        }
    }

    #[test]
    fn no_entry_is_anonymous() {
        assert_eq!(
            parse(r#"{"auths":{}}"#, "ghcr.io/x").unwrap(),
            RegistryAuth::Anonymous
        );
        assert_eq!(
            parse(r#"{}"#, "ghcr.io/x").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    fn assert_invalid(result: Result<RegistryAuth, Error>, secret: &str) {
        match result {
            Err(Error::Stalled { reason, message }) => {
                assert_eq!(reason, reasons::INVALID_SECRET);
                assert!(
                    !message.contains(secret),
                    "message leaks a secret: {message}"
                );
            }
            other => panic!("expected InvalidSecret, got {other:?}"),
        }
    }

    #[test]
    fn malformed_input_is_invalid_secret_without_leaking() {
        assert_invalid(
            parse(r#"{"auths":{"ghcr.io":{"password":"hunter2""#, "ghcr.io/x"),
            "hunter2",
        );
        assert_invalid(parse("[]", "ghcr.io/x"), "hunter2");
        assert_invalid(parse(r#"{"auths":["hunter2"]}"#, "ghcr.io/x"), "hunter2");
        assert_invalid(
            parse(r#"{"auths":{"ghcr.io":"hunter2"}}"#, "ghcr.io/x"),
            "hunter2",
        );
        assert_invalid(
            parse(r#"{"auths":{"ghcr.io":{"auth":"hunter2!!"}}}"#, "ghcr.io/x"),
            "hunter2",
        );
        let no_colon = b64("hunter2");
        assert_invalid(
            parse(
                &format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{no_colon}"}}}}}}"#),
                "ghcr.io/x",
            ),
            "hunter2",
        );
        assert_invalid(
            parse(
                r#"{"auths":{"ghcr.io":{"username":"hunter2"}}}"#,
                "ghcr.io/x",
            ),
            "hunter2",
        );
        assert_invalid(parse("\u{0}\u{1}", "ghcr.io/x"), "hunter2");
    }

    #[test]
    fn debug_redacts_password() {
        let printed = format!("{:?}", basic("me", "hunter2"));
        assert!(
            printed.contains("me") && !printed.contains("hunter2"),
            "{printed}"
        );
    }

    #[test]
    fn digest_shape() {
        let hex = "a".repeat(64);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        assert!(!is_sha256_digest(&format!("sha512:{hex}")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
    }

    #[test]
    fn media_type_from_body() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type(index).as_deref(),
            Some(OCI_IMAGE_INDEX_MEDIA_TYPE)
        );
        let bare_oci = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_media_type(bare_oci).as_deref(),
            Some(OCI_IMAGE_MEDIA_TYPE)
        );
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            manifest_media_type(bare_index).as_deref(),
            Some(OCI_IMAGE_INDEX_MEDIA_TYPE)
        );
        assert_eq!(manifest_media_type(b"not json"), None);
    }

    #[test]
    fn accept_list_is_complete() {
        for media_type in [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ] {
            assert!(MANIFEST_MEDIA_TYPES.contains(&media_type), "{media_type}");
        }
    }

    fn class(error: OciDistributionError) -> (Option<u16>, &'static str) {
        let (status, failure) = classify(error);
        let kind = match failure {
            Failure::Denied(_) => "denied",
            Failure::NotFound(_) => "not found",
            Failure::Transient(_) => "transient",
        };
        (status, kind)
    }

    fn envelope(code: &str) -> OciDistributionError {
        let json = format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#);
        OciDistributionError::RegistryError {
            envelope: serde_json::from_str(&json).unwrap(),
            url: "http://r/v2/x/manifests/t".into(),
        }
    }

    fn server(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://r/v2/x/manifests/t".into(),
            message: "boom".into(),
        }
    }

    #[test]
    fn errors_are_classified_by_status_and_code() {
        let unauthorized = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert_eq!(class(unauthorized), (Some(401), "denied"));
        assert_eq!(class(envelope("DENIED")), (Some(403), "denied"));
        assert_eq!(class(envelope("UNAUTHORIZED")), (Some(401), "denied"));
        assert_eq!(
            class(envelope("MANIFEST_UNKNOWN")),
            (Some(404), "not found")
        );
        assert_eq!(class(envelope("NAME_UNKNOWN")), (Some(404), "not found"));
        assert_eq!(class(envelope("TOOMANYREQUESTS")), (Some(429), "transient"));
        assert_eq!(class(server(403)), (Some(403), "denied"));
        assert_eq!(class(server(404)), (Some(404), "not found"));
        assert_eq!(class(server(500)), (Some(500), "transient"));
        assert_eq!(class(server(503)), (Some(503), "transient"));
    }

    #[test]
    fn denied_names_the_repository_operation_and_secret_ref() {
        let error = into_error(
            Failure::Denied("401".into()),
            "put manifest",
            "reg.example.com/app",
            "live",
        );
        assert_eq!(error.reason(), reasons::REGISTRY_ACCESS_DENIED);
        let message = error.to_string();
        assert!(
            message.contains("put manifest reg.example.com/app:live"),
            "{message}"
        );
        assert!(message.contains("image.pushSecretRef"), "{message}");
        let error = into_error(
            Failure::Transient("HTTP 502".into()),
            "resolve",
            "reg.example.com/app",
            "live",
        );
        assert!(!error.is_stalled());
        assert_eq!(error.reason(), reasons::REGISTRY_ERROR);
    }

    #[test]
    fn clients_are_kept_per_credential_and_bounded() {
        let registry = RegistryClient::new(vec![]);
        let _ = registry.client(&RegistryAuth::Anonymous);
        let _ = registry.client(&RegistryAuth::Anonymous);
        let _ = registry.client(&basic("a", "1"));
        assert_eq!(registry.clients.lock().unwrap().len(), 2);
        for i in 0..=MAX_CLIENTS {
            let _ = registry.client(&basic("u", &i.to_string()));
        }
        assert!(registry.clients.lock().unwrap().len() <= MAX_CLIENTS);
    }

    #[test]
    fn invalid_reference_is_invalid_spec() {
        match parse_reference("UPPER CASE/app:tag") {
            Err(Error::Stalled { reason, .. }) => assert_eq!(reason, reasons::INVALID_SPEC),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }
}
