//! The OCI registry: resolve a tag's digest, and move a tag to a digest without uploading blobs.
//!
//! A small distribution client of our own on reqwest (no oci-client): each operation sends only
//! the requests it needs, and every answer is checked before it is believed.
//!
//! - Resolve: `HEAD /v2/<name>/manifests/<tag>` with all four manifest media types in `Accept`
//!   (OCI index, OCI manifest, Docker manifest list, Docker manifest v2), so the digest is the
//!   top-level one (the index, for a multi-arch image). The digest comes from a well-formed
//!   `Docker-Content-Digest` (`sha256:` and 64 lowercase hex); without one, from the sha256 of a
//!   `GET` body that is a manifest (see below).
//! - Move a tag: resolve it; if it already points at the digest, stop. Else `GET` the manifest
//!   by digest, check that its sha256 is that digest, and `PUT` the identical bytes to
//!   `/manifests/<tag>` with the `Content-Type` it came with. No blob is uploaded.
//! - The bytes of a manifest read or written lately are kept (by credential, repository and
//!   digest; bounded in bytes and age, see `manifests`), so tagging the same image again, as
//!   every commit that leaves a service's inputs unchanged does, needs no `GET`. A registry
//!   that refuses kept bytes gets them read afresh.
//! - Add a tag that is almost never there yet (a skipped build's revision tag): the same `GET`
//!   and `PUT`, and the check only when the `PUT` is refused (a registry with immutable tags
//!   refuses to write a tag again, even with the same bytes): if the tag already points at the
//!   digest, it is done. Writing the same bytes to a tag again changes nothing, so the
//!   operation stays idempotent, at two requests instead of three.
//! - A manifest body is believed only when its `Content-Type` is one of the four media types,
//!   it is at most 4 MiB (read no further than that; a larger `Content-Length` is refused
//!   unread), and it is a JSON object of the matching shape with `schemaVersion` 2.
//! - Auth is reactive (see `transport`): a registry that never challenges costs no extra
//!   request; Basic and Bearer (token realm) challenges are answered and remembered.
//!
//! An answer that is not a manifest (an HTML page, an octet-stream, an oversized body) is a
//! transient `Error::Registry`, not `Stalled`: the ServiceBuild is not what is wrong, and
//! nothing the user changes in it would heal it; a proxy's error page or a registry being
//! repaired heals by itself, and a retry (with the controller's backoff) costs at most one
//! bounded read. The message names what came back, so a person can see a wrong host.

mod answer;
mod auth;
mod manifest;
mod manifests;
mod reference;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

pub use auth::{RegistryAuth, registry_host};
pub use manifest::MANIFEST_MEDIA_TYPES;

use crate::Error;
use crate::conditions::reasons;
use crate::metrics::Metrics;
use answer::{
    describe_content_type, failure, into_error, read_bounded, redacted, timed, timed_out,
};
use manifest::{ACCEPT_MANIFESTS, MANIFEST_BODY_CAP, media_type_of, sha256_digest, shape_problem};
use manifests::ManifestCache;
pub use reference::is_sha256_digest;
use reference::{Repository, check_tag};
use transport::{Access, Call, Transport};

/// Time allowed to open a connection to a registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed between two reads of one response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one whole operation (which may be several requests, e.g. HEAD then GET).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// What [`RegistryClient::retag_without_upload`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetagOutcome {
    /// The tag already pointed at the digest; nothing was written.
    AlreadyTagged,
    /// The tag now points at the digest. `previous` is the digest it pointed at before, if any.
    Moved { previous: Option<String> },
}

/// A registry client; cheap to clone, meant to be shared. One connection pool for every
/// registry; tokens are kept per credential, so one ServiceBuild's credentials are never used
/// for another's requests.
#[derive(Clone)]
pub struct RegistryClient {
    transport: Arc<Transport>,
    manifests: Arc<ManifestCache>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

/// How a failed registry call is classified before it becomes an [`Error`].
#[derive(Debug)]
enum Failure {
    Denied(String),
    NotFound(String),
    Transient(String),
}

/// A manifest as a registry served it, checked.
struct Fetched {
    body: Vec<u8>,
    media_type: &'static str,
    digest: String,
}

impl RegistryClient {
    /// `insecure`: exact `host:port` entries that use plain HTTP.
    pub fn new(insecure: Vec<String>) -> Self {
        // reqwest and kube use rustls without a default provider; installing it twice is
        // harmless (the second call returns Err).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            transport: Arc::new(Transport::new(insecure)),
            manifests: Arc::default(),
            metrics: None,
        }
    }

    /// Count every registry request in `metrics`, by operation and status.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn call<'a>(
        &'a self,
        operation: &'static str,
        method: Method,
        repository: &'a Repository,
        reference: &str,
        access: Access,
    ) -> Call<'a> {
        let accept = HeaderValue::from_static(ACCEPT_MANIFESTS);
        Call {
            operation,
            method,
            repository,
            path: format!("manifests/{reference}"),
            access,
            headers: vec![(ACCEPT, accept)],
            body: None,
            metrics: self.metrics.as_deref(),
        }
    }

    /// Digest of `repository:tag`; see the module docs.
    pub async fn resolve_digest(
        &self,
        repository: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<String, Error> {
        let parsed = Repository::parse(repository)?;
        check_tag(repository, tag)?;
        let result = match timed(self.digest_of(&parsed, tag, auth)).await {
            Ok(digest) => Ok(digest),
            Err(Failure::NotFound(_)) => Err(Error::stalled(
                reasons::IMAGE_NOT_FOUND,
                format!(
                    "the build reported success but {repository}:{tag} does not exist in the \
                     registry; check that the build pushes to $MONOSHIP_IMAGE"
                ),
            )),
            Err(failure) => Err(into_error(failure, "resolve", repository, tag)),
        };
        result.map_err(|error| redacted(error, auth))
    }

    /// HEAD, and GET only when the HEAD carries no well-formed digest.
    async fn digest_of(
        &self,
        repository: &Repository,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<String, Failure> {
        let call = self.call("resolve", Method::HEAD, repository, reference, Access::Pull);
        let response = self.transport.send(&call, auth).await?;
        if response.status() != StatusCode::OK {
            return Err(failure(response).await);
        }
        match header_digest(response.headers()) {
            Some(digest) => Ok(digest),
            None => Ok(self
                .fetch_manifest(repository, reference, auth)
                .await?
                .digest),
        }
    }

    /// GET a manifest and check it (see the module docs).
    async fn fetch_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<Fetched, Failure> {
        let call = self.call(
            "get_manifest",
            Method::GET,
            repository,
            reference,
            Access::Pull,
        );
        let mut response = self.transport.send(&call, auth).await?;
        if response.status() != StatusCode::OK {
            return Err(failure(response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(media_type) = media_type_of(content_type) else {
            return Err(Failure::Transient(format!(
                "the registry answered with {}, which is not a manifest media type (is this \
                 host a registry?)",
                describe_content_type(content_type)
            )));
        };
        let header_digest = header_digest(response.headers());
        let body = read_bounded(&mut response, MANIFEST_BODY_CAP)
            .await?
            .ok_or_else(|| {
                Failure::Transient(format!(
                    "the registry's manifest is larger than {} MiB, the most a registry stores; \
                     it was not read",
                    MANIFEST_BODY_CAP / (1024 * 1024)
                ))
            })?;
        if let Some(problem) = shape_problem(media_type, &body) {
            return Err(Failure::Transient(format!(
                "the registry's {media_type} body {problem}"
            )));
        }
        let digest = sha256_digest(&body);
        if let Some(header) = header_digest
            && header != digest
        {
            return Err(Failure::Transient(format!(
                "the registry's Docker-Content-Digest {header} is not the body's sha256 {digest}"
            )));
        }
        Ok(Fetched {
            body,
            media_type,
            digest,
        })
    }

    /// Point `tag` at `digest` without uploading blobs (see the module docs). A missing tag
    /// counts as "not yet tagged".
    pub async fn retag_without_upload(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<RetagOutcome, Error> {
        self.tag(repository, digest, tag, auth, Check::First).await
    }

    /// Give `digest` a `tag` it almost certainly does not have yet, without uploading blobs:
    /// the tag is checked only when the registry refuses the write (see the module docs).
    /// `Moved` says the tag was written; its `previous` is unknown (`None`).
    pub async fn add_tag_without_upload(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<RetagOutcome, Error> {
        self.tag(repository, digest, tag, auth, Check::WhenRefused)
            .await
    }

    async fn tag(
        &self,
        repository: &str,
        digest: &str,
        tag: &str,
        auth: &RegistryAuth,
        check: Check,
    ) -> Result<RetagOutcome, Error> {
        if !is_sha256_digest(digest) {
            return Err(Error::stalled(
                reasons::INVALID_SPEC,
                format!("{digest:?} is not a sha256 digest (sha256: and 64 hex digits)"),
            ));
        }
        let parsed = Repository::parse(repository)?;
        check_tag(repository, tag)?;
        let retag = self.retag(&parsed, digest, tag, auth, check);
        let result = match tokio::time::timeout(OPERATION_TIMEOUT, retag).await {
            Ok(outcome) => outcome,
            Err(_) => Err(into_error(timed_out(), "retag", repository, tag)),
        };
        result.map_err(|error| redacted(error, auth))
    }

    /// What `tag` points at now: `Some(digest)`, or `None` when it does not exist.
    async fn tagged(
        &self,
        repository: &Repository,
        tag: &str,
        auth: &RegistryAuth,
    ) -> Result<Option<String>, Error> {
        match self.digest_of(repository, tag, auth).await {
            Ok(current) => Ok(Some(current)),
            Err(Failure::NotFound(_)) => Ok(None),
            Err(failure) => Err(into_error(
                failure,
                "resolve",
                repository.written.as_str(),
                tag,
            )),
        }
    }

    async fn retag(
        &self,
        repository: &Repository,
        digest: &str,
        tag: &str,
        auth: &RegistryAuth,
        check: Check,
    ) -> Result<RetagOutcome, Error> {
        let written = repository.written.as_str();
        let previous = match check {
            Check::First => match self.tagged(repository, tag, auth).await? {
                Some(current) if current == digest => return Ok(RetagOutcome::AlreadyTagged),
                previous => previous,
            },
            Check::WhenRefused => None,
        };

        let key = manifests::Key {
            credential: self.transport.credential_id(auth),
            host: repository.host.clone(),
            name: repository.name.clone(),
            digest: digest.to_owned(),
        };
        // Kept bytes first; once more with bytes read afresh if the registry refuses them.
        let mut kept = self.manifests.get(&key);
        loop {
            let from_cache = kept.is_some();
            let manifest = match kept.take() {
                Some(manifest) => manifest,
                None => {
                    let manifest = self.manifest_by_digest(repository, digest, auth).await?;
                    self.manifests.put(key.clone(), manifest.clone());
                    manifest
                }
            };
            let mut call = self.call("put_manifest", Method::PUT, repository, tag, Access::Push);
            call.headers = vec![(CONTENT_TYPE, HeaderValue::from_static(manifest.media_type))];
            call.body = Some(manifest.body.clone());
            let response = self
                .transport
                .send(&call, auth)
                .await
                .map_err(|failure| into_error(failure, "put manifest", written, tag))?;
            if !response.status().is_success() {
                let refused = into_error(failure(response).await, "put manifest", written, tag);
                // A registry that keeps tags immutable refuses even the same bytes: the tag may
                // be there already, from an earlier attempt.
                if check == Check::WhenRefused
                    && self
                        .tagged(repository, tag, auth)
                        .await
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(digest)
                {
                    return Ok(RetagOutcome::AlreadyTagged);
                }
                if from_cache {
                    // Perhaps the image is gone: read it again, and learn so if it is.
                    self.manifests.forget(&key);
                    continue;
                }
                return Err(refused);
            }
            if let Some(stored) = header_digest(response.headers())
                && stored != digest
            {
                self.manifests.forget(&key);
                let message = format!("the registry stored the manifest as {stored}");
                return Err(into_error(
                    Failure::Transient(message),
                    "put manifest",
                    written,
                    tag,
                ));
            }
            return Ok(RetagOutcome::Moved { previous });
        }
    }

    /// GET the manifest `digest` names, as a tag write sends it: its sha256 must be `digest`.
    async fn manifest_by_digest(
        &self,
        repository: &Repository,
        digest: &str,
        auth: &RegistryAuth,
    ) -> Result<Arc<manifests::Manifest>, Error> {
        let written = repository.written.as_str();
        match self.fetch_manifest(repository, digest, auth).await {
            Ok(fetched) if fetched.digest == digest => Ok(Arc::new(manifests::Manifest {
                body: fetched.body,
                media_type: fetched.media_type,
            })),
            Ok(fetched) => {
                let message = format!(
                    "the registry served a manifest whose sha256 is {}",
                    fetched.digest
                );
                Err(into_error(
                    Failure::Transient(message),
                    "get manifest",
                    written,
                    digest,
                ))
            }
            Err(Failure::NotFound(_)) => Err(Error::stalled(
                reasons::IMAGE_NOT_FOUND,
                format!("{written}@{digest} does not exist in the registry"),
            )),
            Err(failure) => Err(into_error(failure, "get manifest", written, digest)),
        }
    }
}

/// When a tag write checks whether the tag already points at the digest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Before anything else: for floating tags, which usually exist.
    First,
    /// Only when the registry refuses the write: for tags that usually do not exist yet.
    WhenRefused,
}

/// A well-formed `Docker-Content-Digest`; anything else counts as absent.
fn header_digest(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(HeaderName::from_static(DOCKER_CONTENT_DIGEST))?;
    let digest = value.to_str().ok()?.trim();
    is_sha256_digest(digest).then(|| digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_digest_is_taken_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_digest(&headers), None);
        let good = format!("sha256:{}", "a".repeat(64));
        headers.insert(DOCKER_CONTENT_DIGEST, good.parse().unwrap());
        assert_eq!(header_digest(&headers), Some(good));
        for bad in ["sha256:abc", "sha512:aa", "<html>"] {
            headers.insert(DOCKER_CONTENT_DIGEST, bad.parse().unwrap());
            assert_eq!(header_digest(&headers), None, "{bad}");
        }
    }

    #[test]
    fn invalid_references_are_invalid_spec_before_any_request() {
        let client = RegistryClient::new(vec![]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let anonymous = RegistryAuth::Anonymous;
        let digest = format!("sha256:{}", "a".repeat(64));
        for result in [
            runtime.block_on(client.resolve_digest("UPPER CASE/app", "tag", &anonymous)),
            runtime.block_on(client.resolve_digest("ghcr.io/app", "bad tag", &anonymous)),
        ] {
            match result {
                Err(Error::Stalled { reason, .. }) => assert_eq!(reason, reasons::INVALID_SPEC),
                other => panic!("expected InvalidSpec, got {other:?}"),
            }
        }
        match runtime.block_on(client.retag_without_upload("ghcr.io/a:b", &digest, "t", &anonymous))
        {
            Err(Error::Stalled { reason, .. }) => assert_eq!(reason, reasons::INVALID_SPEC),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }
}
