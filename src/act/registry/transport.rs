//! One HTTP request to a registry, authorized reactively, and bounded reads of its answer.
//!
//! Reactive auth: a request goes out with what is already known about its registry. A registry
//! that never challenged gets no `Authorization` header and no `GET /v2/` ping. On a 401 the
//! `WWW-Authenticate` challenge is remembered for that registry host, and the request is sent
//! once more: with the caller's basic credentials (`Basic`), or with a token fetched from the
//! challenge's realm (`Bearer`). From then on requests to that host carry the answer up front.
//! Tokens are cached per credential, registry, and scope (which names the repository) until
//! shortly before they expire.
//!
//! Credentials and tokens go only to the host that the repository names, and (credentials) to
//! the token realm that host named. Redirects are followed only within one origin, so nothing
//! is re-sent to another origin; a cross-origin redirect reaches the caller as a 3xx answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::answer::{read_bounded, request_failure};
use super::auth::{Challenge, RegistryAuth};
use super::reference::Repository;
use super::{CONNECT_TIMEOUT, Failure, READ_TIMEOUT};
use crate::metrics::{Metrics, RegistryLabels};

/// At most this many distinct credentials are remembered (each maps to its cached tokens).
pub(super) const MAX_CLIENTS: usize = 64;
/// At most this many registry hosts have a remembered challenge.
const MAX_HOSTS: usize = 256;
/// At most this many tokens are cached, over all credentials.
const MAX_TOKENS: usize = 4096;
/// A token endpoint's answer is read up to this size.
const TOKEN_BODY_CAP: usize = 64 * 1024;
/// A token longer than this is refused (real ones are a few KiB).
const MAX_TOKEN_LENGTH: usize = 8 * 1024;
/// Same-origin redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// Without `expires_in`, a token lives 60 s (distribution's token spec).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// A cached token is dropped this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// What a request needs from a token: distribution's `repository:<name>:<actions>` scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    Pull,
    Push,
}

impl Access {
    fn scope(self, repository: &Repository) -> String {
        let actions = match self {
            Self::Pull => "pull",
            Self::Push => "pull,push",
        };
        format!("repository:{}:{actions}", repository.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    credential: u64,
    host: String,
    scope: String,
}

struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

/// Connection pool, protocol choice, and what is known about each registry's auth.
pub(super) struct Transport {
    http: Option<reqwest::Client>,
    insecure: Vec<String>,
    /// Per registry host: the challenge it answered with. Holds no secret.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Per distinct credential: a number that keys its tokens, so no credential's token is
    /// ever sent for another.
    credentials: Mutex<(HashMap<RegistryAuth, u64>, u64)>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

/// One request: what to send, to which repository, counted under which operation.
pub(super) struct Call<'a> {
    pub operation: &'static str,
    pub method: Method,
    pub repository: &'a Repository,
    /// The path after `/v2/<name>/`, e.g. `manifests/latest`.
    pub path: String,
    pub access: Access,
    pub headers: Vec<(reqwest::header::HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
    /// Where every request (token fetches included) is counted.
    pub metrics: Option<&'a Metrics>,
}

/// Count one request by operation and status (`error` when no answer came), and log it without
/// its URL or headers.
fn count(metrics: Option<&Metrics>, operation: &'static str, status: Option<StatusCode>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
    tracing::debug!(operation, %status, "registry request");
    if let Some(metrics) = metrics {
        metrics
            .registry_requests
            .get_or_create(&RegistryLabels { operation, status })
            .inc();
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Transport {
    pub fn new(insecure: Vec<String>) -> Self {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt
                .previous()
                .first()
                .is_some_and(|first| same_origin(first, attempt.url()));
            if same && attempt.previous().len() <= MAX_REDIRECTS {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(redirects)
            .user_agent(concat!("monoship/", env!("CARGO_PKG_VERSION")))
            .build()
            .inspect_err(|e| tracing::error!(error = %e, "cannot build the registry HTTP client"))
            .ok();
        Self {
            http,
            insecure,
            challenges: Mutex::default(),
            credentials: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, Failure> {
        self.http
            .as_ref()
            .ok_or_else(|| Failure::Transient("the registry HTTP client could not be built".into()))
    }

    /// `http` for hosts listed as insecure (exact `host:port`), else `https`.
    fn scheme_for(&self, host: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    /// The number that keys this credential's tokens.
    pub(super) fn credential_id(&self, auth: &RegistryAuth) -> u64 {
        let mut guard = lock(&self.credentials);
        let (ids, next) = &mut *guard;
        if let Some(id) = ids.get(auth) {
            return *id;
        }
        // Rotated secrets leave stale entries behind; start over rather than grow without
        // bound. Tokens of forgotten ids are never looked up again and age out of the cache.
        if ids.len() >= MAX_CLIENTS {
            ids.clear();
        }
        *next += 1;
        ids.insert(auth.clone(), *next);
        *next
    }

    #[cfg(test)]
    pub fn credentials_cached(&self) -> usize {
        lock(&self.credentials).0.len()
    }

    /// Send `call`, authorizing reactively (see the module docs). Returns the answer as it
    /// came, 401 included when the credentials do not do; the body is not read.
    pub async fn send(
        &self,
        call: &Call<'_>,
        auth: &RegistryAuth,
    ) -> Result<reqwest::Response, Failure> {
        let http = self.http()?;
        let host = &call.repository.host;
        let url = format!(
            "{}://{host}/v2/{}/{}",
            self.scheme_for(host),
            call.repository.name,
            call.path
        );
        let known = lock(&self.challenges).get(host).cloned();
        let mut authorization = match &known {
            Some(challenge) => self.authorize(challenge, call, auth, false).await?,
            None => None,
        };
        let mut answered_challenge = false;
        loop {
            let mut request = http.request(call.method.clone(), &url);
            for (name, value) in &call.headers {
                request = request.header(name, value);
            }
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value.clone());
            }
            if let Some(body) = &call.body {
                request = request.body(body.clone());
            }
            let response = request.send().await;
            count(
                call.metrics,
                call.operation,
                response.as_ref().ok().map(|r| r.status()),
            );
            let response = response.map_err(request_failure)?;
            if response.status() != StatusCode::UNAUTHORIZED || answered_challenge {
                return Ok(response);
            }
            let Some(challenge) = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse)
            else {
                return Ok(response);
            };
            self.remember(host, &challenge);
            let fresh = self.authorize(&challenge, call, auth, true).await?;
            // Basic credentials that were already sent, or none to send: the 401 stands.
            if fresh.is_none() || fresh == authorization {
                return Ok(response);
            }
            authorization = fresh;
            answered_challenge = true;
        }
    }

    fn remember(&self, host: &str, challenge: &Challenge) {
        let mut challenges = lock(&self.challenges);
        if challenges.get(host) == Some(challenge) {
            return;
        }
        if challenges.len() >= MAX_HOSTS {
            challenges.clear();
        }
        challenges.insert(host.to_string(), challenge.clone());
    }

    /// The `Authorization` value that answers `challenge` for `call`; `fresh` skips the token
    /// cache (the cached token was just refused).
    async fn authorize(
        &self,
        challenge: &Challenge,
        call: &Call<'_>,
        auth: &RegistryAuth,
        fresh: bool,
    ) -> Result<Option<HeaderValue>, Failure> {
        let (realm, service) = match challenge {
            Challenge::Basic => return Ok(auth.basic_header()),
            Challenge::Bearer { realm, service } => (realm, service),
        };
        let key = TokenKey {
            credential: self.credential_id(auth),
            host: call.repository.host.clone(),
            scope: call.access.scope(call.repository),
        };
        if !fresh {
            let tokens = lock(&self.tokens);
            if let Some(token) = tokens.get(&key).filter(|t| t.expires > Instant::now()) {
                return Ok(Some(token.header.clone()));
            }
        }
        let (header, lifetime) = self
            .fetch_token(realm, service.as_deref(), &key.scope, auth, call.metrics)
            .await?;
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, token| token.expires > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        if let Some(expires) = Instant::now().checked_add(lifetime.saturating_sub(TOKEN_MARGIN)) {
            tokens.insert(
                key,
                CachedToken {
                    header: header.clone(),
                    expires,
                },
            );
        }
        Ok(Some(header))
    }

    /// `GET <realm>?service=…&scope=…`, with the basic credentials if any (distribution's token
    /// auth). The realm must be https, or plain http only when its `host:port` is listed as
    /// insecure, so credentials never travel in the clear by a registry's say-so.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        auth: &RegistryAuth,
        metrics: Option<&Metrics>,
    ) -> Result<(HeaderValue, Duration), Failure> {
        let http = self.http()?;
        // The realm is the registry's text: it is named in no message.
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| Failure::Transient("the registry's token realm is not a URL".into()))?;
        let realm_host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => String::new(),
        };
        let plain_ok = url.scheme() == "http" && self.insecure.contains(&realm_host);
        if url.scheme() != "https" && !plain_ok {
            return Err(Failure::Transient(
                "the registry's token realm is not https (plain http only for a \
                 --insecure-registry host:port)"
                    .into(),
            ));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = http.get(url);
        if let Some(basic) = auth.basic_header() {
            request = request.header(AUTHORIZATION, basic);
        }
        let response = request.send().await;
        count(metrics, "token", response.as_ref().ok().map(|r| r.status()));
        let mut response = response.map_err(request_failure)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Failure::Denied(format!(
                "the token service refused the credentials (HTTP {})",
                status.as_u16()
            )));
        }
        if status != StatusCode::OK {
            return Err(Failure::Transient(format!(
                "the token service answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = read_bounded(&mut response, TOKEN_BODY_CAP)
            .await?
            .ok_or_else(|| {
                Failure::Transient(format!(
                    "the token service's answer is larger than {} KiB",
                    TOKEN_BODY_CAP / 1024
                ))
            })?;
        parse_token(&body)
    }
}

/// `{"token": …}` or `{"access_token": …}`, with `expires_in` seconds.
fn parse_token(body: &[u8]) -> Result<(HeaderValue, Duration), Failure> {
    let malformed = |what: &str| Failure::Transient(format!("the token service's answer {what}"));
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("is not JSON"))?;
    let token = ["token", "access_token"]
        .iter()
        .find_map(|k| {
            value
                .get(*k)
                .and_then(|v| v.as_str())
                .filter(|t| !t.is_empty())
        })
        .ok_or_else(|| malformed("has no token"))?;
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(malformed("has a token longer than 8 KiB"));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| malformed("has a token that is not header text"))?;
    header.set_sensitive(true);
    let seconds = value
        .get("expires_in")
        .and_then(|v| v.as_u64())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .min(24 * 3600);
    Ok((header, Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_are_sensitive() {
        let (header, lifetime) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer abc");
        assert!(header.is_sensitive());
        assert_eq!(lifetime, Duration::from_secs(300));
        let (header, lifetime) = parse_token(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer xyz");
        assert_eq!(lifetime, Duration::from_secs(DEFAULT_TOKEN_LIFETIME));
        for bad in [
            &br#"{"token":""}"#[..],
            br#"{"token":"a\nb"}"#,
            b"<html>",
            br#"{"nothing":1}"#,
        ] {
            assert!(matches!(parse_token(bad), Err(Failure::Transient(_))));
        }
        let long = format!(r#"{{"token":"{}"}}"#, "a".repeat(MAX_TOKEN_LENGTH + 1));
        assert!(parse_token(long.as_bytes()).is_err());
    }

    #[test]
    fn scopes_name_the_repository() {
        let repository = Repository::parse("ghcr.io/org/app").unwrap();
        assert_eq!(Access::Pull.scope(&repository), "repository:org/app:pull");
        assert_eq!(
            Access::Push.scope(&repository),
            "repository:org/app:pull,push"
        );
    }

    #[tokio::test]
    async fn a_plain_http_token_realm_is_refused_unless_listed_as_insecure() {
        crate::install_crypto_provider();
        let transport = Transport::new(vec!["auth.example.com:80".into()]);
        let secret = RegistryAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        for realm in ["http://other.example.com/token", "ftp://auth.example.com/t"] {
            match transport
                .fetch_token(realm, None, "repository:a:pull", &secret, None)
                .await
            {
                Err(Failure::Transient(message)) => {
                    assert!(message.contains("not https"), "{message}");
                    assert!(!message.contains("hunter2"), "{message}");
                }
                other => panic!("{realm}: expected a refusal, got {other:?}"),
            }
        }
        assert!(matches!(
            transport
                .fetch_token("not a url", None, "s", &secret, None)
                .await,
            Err(Failure::Transient(_))
        ));
    }

    #[test]
    fn credentials_are_kept_per_credential_and_bounded() {
        let transport = Transport::new(vec![]);
        let basic = |p: &str| RegistryAuth::Basic {
            username: "u".into(),
            password: p.into(),
        };
        let anonymous = transport.credential_id(&RegistryAuth::Anonymous);
        assert_eq!(transport.credential_id(&RegistryAuth::Anonymous), anonymous);
        let a = transport.credential_id(&basic("1"));
        assert_ne!(a, anonymous);
        assert_eq!(transport.credentials_cached(), 2);
        for i in 0..=MAX_CLIENTS {
            transport.credential_id(&basic(&i.to_string()));
        }
        assert!(transport.credentials_cached() <= MAX_CLIENTS);
    }
}
