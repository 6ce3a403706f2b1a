//! Nomad targets: pin a task's image with check-and-set.
//!
//! The job is read with `GET /v1/job/:job_id`, the one field
//! `TaskGroups[Name==group].Tasks[Name==task].Config.image` is changed in the JSON exactly as
//! Nomad returned it (every other field, known or not, is sent back untouched), and the job is
//! registered again with `POST /v1/job/:job_id` and `EnforceIndex: true` guarded by the
//! `JobModifyIndex` that was read. If the image is already the wanted reference nothing at all
//! is sent: a register with an unchanged spec still creates an evaluation.
//!
//! When another writer changes the job between our read and our write, Nomad answers HTTP 500
//! with a body starting `Enforcing job modify index`. The job is then read again and the write
//! retried, so the other writer's change is kept. After [`MAX_ATTEMPTS`] conflicts the error is
//! an [`Error::Nomad`] whose message starts with [`CONFLICT_MESSAGE_PREFIX`]; use
//! [`is_conflict`] to tell it from other transient faults (condition reason
//! [`reasons::NOMAD_CONFLICT`], see [`Error::reason`]).
//!
//! A ServiceBuild names the address, so the client must not be turned against the cluster:
//! - the controller gets clients from [`NomadClients::client`], which refuses an address
//!   outside the admin's [`NomadAllowlist`] before anything is sent, and shares one HTTP
//!   client per (origin, CA) (`clients`);
//! - no redirect is followed (a 3xx is Stalled, [`reasons::NOMAD_REDIRECT_REFUSED`]), and the
//!   token is added to each request, marked sensitive, never to a shared client;
//! - every body is read up to a cap and no further ([`MAX_JOB_BYTES`]; over it is Stalled,
//!   [`reasons::NOMAD_ANSWER_TOO_LARGE`]), and messages quote at most a short sanitised
//!   [`excerpt`] of an answer, with the token blanked out (`answer`).

mod answer;
mod clients;
mod job;

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::api::NomadTarget;
use crate::conditions::reasons;
use crate::targets::{PinOutcome, Pinned};

pub use answer::{
    MAX_ERROR_BYTES, MAX_EXCERPT_CHARS, MAX_JOB_BYTES, MAX_REGISTER_ANSWER_BYTES, excerpt,
};
pub use clients::{MAX_CLIENTS, NomadAllowlist, NomadClients, NomadOrigin};
pub use job::{find_task_image, set_task_image};

use answer::{
    Body, read_capped, read_prefix, redacted_url, redirect_error, status_error, token_text,
    too_large_error, transport_error,
};
use job::{describe_job, job_modify_index};

/// Header that carries the Nomad ACL token.
pub const TOKEN_HEADER: &str = "X-Nomad-Token";
/// How a job-modify-index conflict answer starts (Nomad's `RegisterEnforceIndexErrPrefix`).
pub const ENFORCE_INDEX_ERROR_PREFIX: &str = "Enforcing job modify index";
/// How the message of an [`Error::Nomad`] starts when the write kept conflicting.
pub const CONFLICT_MESSAGE_PREFIX: &str = "conflict:";
/// Read-modify-write attempts before giving up on conflicts.
pub const MAX_ATTEMPTS: u32 = 5;
/// Default TCP/TLS connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of one whole request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Credentials resolved by the caller from Secrets (the controller reads the Secrets).
#[derive(Clone, Default)]
pub struct NomadAccess {
    /// ACL token, sent as `X-Nomad-Token`.
    pub token: Option<String>,
    /// PEM CA bundle trusted for https, in addition to the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for NomadAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadAccess")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .finish()
    }
}

/// The image of one task, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskImage {
    /// `Config.image` of the task.
    pub image: String,
    /// The task's driver (`docker`, `podman`, …).
    pub driver: String,
    /// The job's `JobModifyIndex` when it was read.
    pub job_modify_index: u64,
    /// The job's `Version` when it was read.
    pub version: Option<u64>,
}

/// A client for one Nomad target (one task of one job).
#[derive(Clone)]
pub struct NomadClient {
    http: reqwest::Client,
    target: NomadTarget,
    job_url: Url,
    /// Sent per request; never part of the (shared) HTTP client.
    token: Option<HeaderValue>,
    max_attempts: u32,
}

impl fmt::Debug for NomadClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadClient")
            .field("job_url", &redacted_url(&self.job_url))
            .field("group", &self.target.group)
            .field("task", &self.target.task)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The answer to a job register.
#[derive(Debug, Deserialize)]
struct RegisterResponse {
    #[serde(rename = "EvalID", default)]
    eval_id: Option<String>,
    #[serde(rename = "JobModifyIndex")]
    job_modify_index: u64,
    #[serde(rename = "Warnings", default)]
    warnings: Option<String>,
}

/// The outcome of one register attempt.
enum Register {
    Done(RegisterResponse),
    Conflict(String),
}

impl NomadClient {
    /// A client for `target` with its own HTTP client and the default timeouts; every address
    /// is allowed. The controller uses [`NomadClients::client`] instead, which shares HTTP
    /// clients and checks the allowlist.
    ///
    /// A malformed address is [`reasons::INVALID_SPEC`]; a token that is not a valid header value
    /// or a CA bundle without a usable certificate is [`reasons::INVALID_SECRET`].
    pub fn new(target: &NomadTarget, access: &NomadAccess) -> Result<Self, Error> {
        NomadClients::default().client(target, access)
    }

    /// Like [`NomadClient::new`], with explicit timeouts.
    pub fn with_timeouts(
        target: &NomadTarget,
        access: &NomadAccess,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, Error> {
        NomadClients::with_timeouts(NomadAllowlist::default(), connect_timeout, request_timeout)
            .client(target, access)
    }

    fn from_parts(
        http: reqwest::Client,
        target: &NomadTarget,
        job_url: Url,
        token: Option<HeaderValue>,
    ) -> Self {
        Self {
            http,
            target: target.clone(),
            job_url,
            token,
            max_attempts: MAX_ATTEMPTS,
        }
    }

    /// Use at most `attempts` read-modify-write rounds (at least one) on conflicts.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The target this client works on.
    pub fn target(&self) -> &NomadTarget {
        &self.target
    }

    /// Current `config.image` of the task (for observing drift), with the job's JobModifyIndex.
    pub async fn task_image(&self) -> Result<TaskImage, Error> {
        let job = self.read_job().await?;
        let index = job_modify_index(&job, &self.target.job)?;
        let (image, driver) = find_task_image(&job, &self.target)?;
        Ok(TaskImage {
            image: image.to_owned(),
            driver: driver.to_owned(),
            job_modify_index: index,
            version: job.get("Version").and_then(Value::as_u64),
        })
    }

    /// Ensure the task's image is `image` (= "repository@sha256:…").
    ///
    /// Reads the job; if the task already has `image`, returns [`PinOutcome::AlreadyPinned`]
    /// and writes nothing. Otherwise registers the job as read with only that field changed,
    /// guarded by its `JobModifyIndex`, re-reading and retrying on conflicts.
    pub async fn pin_task_image(&self, image: &str) -> Result<PinOutcome, Error> {
        let mut last_conflict = String::new();
        for attempt in 1..=self.max_attempts {
            let mut job = self.read_job().await?;
            let index = job_modify_index(&job, &self.target.job)?;
            let previous = set_task_image(&mut job, &self.target, image)?;
            let Some(previous) = previous else {
                tracing::debug!(job = %self.target.job, task = %self.target.task, image, "Nomad task already pinned");
                return Ok(PinOutcome::AlreadyPinned);
            };
            match self.register(job, index).await? {
                Register::Done(answer) => {
                    if let Some(warnings) = answer.warnings.as_deref().filter(|w| !w.is_empty()) {
                        tracing::warn!(job = %self.target.job, warnings, "Nomad warned on job register");
                    }
                    tracing::info!(
                        job = %self.target.job,
                        group = %self.target.group,
                        task = %self.target.task,
                        previous = %previous,
                        image,
                        job_modify_index = answer.job_modify_index,
                        "pinned Nomad task image"
                    );
                    return Ok(PinOutcome::Pinned(Pinned {
                        previous_image: Some(previous),
                        job_modify_index: Some(answer.job_modify_index),
                        eval_id: answer.eval_id.filter(|id| !id.is_empty()),
                    }));
                }
                Register::Conflict(body) => {
                    tracing::debug!(job = %self.target.job, attempt, answer = %body, "Nomad job changed since read; reading again");
                    last_conflict = body;
                    if attempt < self.max_attempts {
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    }
                }
            }
        }
        Err(Error::Nomad {
            job: self.target.job.clone(),
            message: format!(
                "{CONFLICT_MESSAGE_PREFIX} the job kept changing while monoship wrote it ({} attempts); last answer: {}",
                self.max_attempts, last_conflict
            ),
        })
    }

    fn describe_job(&self) -> String {
        describe_job(&self.target)
    }

    /// Sends `request` with the token (marked sensitive, so it is never logged); a 3xx answer
    /// is refused as it is never followed.
    async fn send(
        &self,
        request: RequestBuilder,
        method: &str,
        operation: &str,
    ) -> Result<Response, Error> {
        let request = match &self.token {
            Some(token) => request.header(TOKEN_HEADER, token.clone()),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&self.target, &self.job_url, method, e))?;
        if response.status().is_redirection() {
            return Err(redirect_error(
                &self.target,
                &self.job_url,
                operation,
                &response,
            ));
        }
        Ok(response)
    }

    /// A sanitised excerpt of an error answer (its first [`MAX_ERROR_BYTES`] at most).
    async fn error_excerpt(&self, response: Response) -> String {
        let body = read_prefix(response, MAX_ERROR_BYTES).await;
        excerpt(&body, token_text(self.token.as_ref()))
    }

    /// The body of a successful answer, at most `cap` bytes.
    async fn success_body(
        &self,
        response: Response,
        method: &str,
        operation: &str,
        cap: usize,
    ) -> Result<Vec<u8>, Error> {
        match read_capped(response, cap)
            .await
            .map_err(|e| transport_error(&self.target, &self.job_url, method, e))?
        {
            Body::Complete(body) => Ok(body),
            Body::TooLarge => Err(too_large_error(&self.target, operation, cap)),
        }
    }

    async fn read_job(&self) -> Result<Value, Error> {
        let response = self
            .send(self.http.get(self.job_url.clone()), "GET", "read")
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::stalled(
                reasons::NOMAD_JOB_NOT_FOUND,
                format!(
                    "Nomad has no {}; check nomad.job, nomad.namespace and nomad.region",
                    self.describe_job()
                ),
            ));
        }
        if !status.is_success() {
            let excerpt = self.error_excerpt(response).await;
            return Err(status_error(&self.target, "read", status, &excerpt));
        }
        let body = self
            .success_body(response, "GET", "read", MAX_JOB_BYTES)
            .await?;
        let job: Value = serde_json::from_slice(&body).map_err(|e| Error::Nomad {
            job: self.target.job.clone(),
            message: format!("reading the job: the answer is not JSON: {e}"),
        })?;
        if !job.is_object() {
            return Err(Error::Nomad {
                job: self.target.job.clone(),
                message: "reading the job: the answer is not a JSON object".into(),
            });
        }
        Ok(job)
    }

    async fn register(&self, job: Value, index: u64) -> Result<Register, Error> {
        let body = serde_json::json!({
            "Job": job,
            "EnforceIndex": true,
            "JobModifyIndex": index,
        });
        let response = self
            .send(
                self.http.post(self.job_url.clone()).json(&body),
                "POST",
                "write",
            )
            .await?;
        let status = response.status();
        if status.is_success() {
            let text = self
                .success_body(response, "POST", "write", MAX_REGISTER_ANSWER_BYTES)
                .await?;
            let answer = serde_json::from_slice(&text).map_err(|e| Error::Nomad {
                job: self.target.job.clone(),
                message: format!("registering the job: unexpected answer: {e}"),
            })?;
            return Ok(Register::Done(answer));
        }
        let body = read_prefix(response, MAX_ERROR_BYTES).await;
        let excerpt = excerpt(&body, token_text(self.token.as_ref()));
        if is_conflict_body(status, &String::from_utf8_lossy(&body)) {
            return Ok(Register::Conflict(excerpt));
        }
        Err(status_error(&self.target, "write", status, &excerpt))
    }
}

/// Whether `error` is a write that kept conflicting with other writers (condition reason
/// [`reasons::NOMAD_CONFLICT`]). Such an error is transient: retry later.
pub fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Nomad { message, .. } if message.starts_with(CONFLICT_MESSAGE_PREFIX))
}

/// Whether an answer to a register with `EnforceIndex` is Nomad's index conflict (HTTP 500,
/// body starting `Enforcing job modify index`, as the Nomad CLI checks).
pub fn is_conflict_body(status: StatusCode, body: &str) -> bool {
    status == StatusCode::INTERNAL_SERVER_ERROR
        && body.trim_start().starts_with(ENFORCE_INDEX_ERROR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target every unit test of this module starts from.
    pub(super) fn target() -> NomadTarget {
        NomadTarget {
            address: "http://127.0.0.1:4646".into(),
            namespace: Some("apps".into()),
            region: None,
            job: "web".into(),
            group: "frontend".into(),
            task: "server".into(),
            token_secret_ref: None,
            ca_secret_ref: None,
        }
    }

    #[test]
    fn recognises_the_enforce_index_conflict() {
        let body =
            "Enforcing job modify index 42: job exists with conflicting job modify index: 57";
        assert!(is_conflict_body(StatusCode::INTERNAL_SERVER_ERROR, body));
        assert!(is_conflict_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Enforcing job modify index 42: job does not exist"
        ));
        assert!(!is_conflict_body(StatusCode::BAD_REQUEST, body));
        assert!(!is_conflict_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rpc error: No cluster leader"
        ));
    }

    #[test]
    fn maps_statuses_to_errors() {
        let t = target();
        let e = status_error(&t, "read", StatusCode::FORBIDDEN, "Permission denied");
        assert_eq!(e.reason(), reasons::NOMAD_ACCESS_DENIED);
        assert!(e.to_string().contains("tokenSecretRef") && e.to_string().contains("\"web\""));
        let e = status_error(
            &t,
            "write",
            StatusCode::BAD_REQUEST,
            "Job ID does not match name",
        );
        assert_eq!(e.reason(), reasons::INVALID_SPEC);
        assert!(e.to_string().contains("Job ID does not match name"));
        let e = status_error(&t, "read", StatusCode::BAD_GATEWAY, "");
        assert!(!e.is_stalled());
        assert_eq!(e.reason(), reasons::NOMAD_ERROR);
        assert!(!is_conflict(&e));
        let conflict = Error::Nomad {
            job: "web".into(),
            message: format!("{CONFLICT_MESSAGE_PREFIX} x"),
        };
        assert!(is_conflict(&conflict));
        assert_eq!(conflict.reason(), reasons::NOMAD_CONFLICT);
        assert_eq!(e.reason(), reasons::NOMAD_ERROR);
    }

    #[test]
    fn debug_output_redacts_the_token_and_bad_ca_is_stalled() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let access = NomadAccess {
            token: Some("s3cr3t-token-value".into()),
            ca_pem: None,
        };
        let client = NomadClient::new(&target(), &access).unwrap();
        let text = format!("{access:?} {client:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");

        let access = NomadAccess {
            token: None,
            ca_pem: Some(b"not a certificate".to_vec()),
        };
        let e = NomadClient::new(&target(), &access).unwrap_err();
        assert_eq!(e.reason(), reasons::INVALID_SECRET);
        assert!(e.to_string().contains("caSecretRef"), "{e}");
    }
}
