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

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::api::NomadTarget;
use crate::conditions::reasons;
use crate::targets::{PinOutcome, Pinned};

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

/// Longest piece of a Nomad answer quoted in an error message.
const MAX_QUOTED_BODY: usize = 512;

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
    has_token: bool,
    max_attempts: u32,
}

impl fmt::Debug for NomadClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadClient")
            .field("job_url", &redacted_url(&self.job_url))
            .field("group", &self.target.group)
            .field("task", &self.target.task)
            .field("token", &self.has_token.then_some("<redacted>"))
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
    /// A client for `target`, with the default timeouts.
    ///
    /// A malformed address is [`reasons::INVALID_SPEC`]; a token that is not a valid header value
    /// or a CA bundle without a usable certificate is [`reasons::INVALID_SECRET`].
    pub fn new(target: &NomadTarget, access: &NomadAccess) -> Result<Self, Error> {
        Self::with_timeouts(
            target,
            access,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_REQUEST_TIMEOUT,
        )
    }

    /// Like [`NomadClient::new`], with explicit timeouts.
    pub fn with_timeouts(
        target: &NomadTarget,
        access: &NomadAccess,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, Error> {
        let job_url = job_url(target)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &access.token {
            let mut value = HeaderValue::from_str(token.trim()).map_err(|_| {
                Error::stalled(
                    reasons::INVALID_SECRET,
                    format!(
                        "the Nomad token for job {} is not a valid HTTP header value; check tokenSecretRef",
                        target.job
                    ),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .user_agent(concat!("monoship/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &access.ca_pem {
            let bad_ca = |detail: &str| {
                Error::stalled(
                    reasons::INVALID_SECRET,
                    format!(
                        "the CA bundle for Nomad job {} is not usable: {detail}; check caSecretRef (a PEM bundle)",
                        target.job
                    ),
                )
            };
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| bad_ca(&error_chain(&e)))?;
            if certs.is_empty() {
                return Err(bad_ca("no PEM certificate found"));
            }
            builder = builder.tls_certs_merge(certs);
            let http = builder.build().map_err(|e| bad_ca(&error_chain(&e)))?;
            return Ok(Self::from_parts(http, target, job_url, access));
        }
        let http = builder.build().map_err(|e| Error::Nomad {
            job: target.job.clone(),
            message: format!("building the HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Self::from_parts(http, target, job_url, access))
    }

    fn from_parts(
        http: reqwest::Client,
        target: &NomadTarget,
        job_url: Url,
        access: &NomadAccess,
    ) -> Self {
        Self {
            http,
            target: target.clone(),
            job_url,
            has_token: access.token.is_some(),
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
                self.max_attempts,
                quote(&last_conflict)
            ),
        })
    }

    fn describe_job(&self) -> String {
        describe_job(&self.target)
    }

    async fn read_job(&self) -> Result<Value, Error> {
        let response = self
            .http
            .get(self.job_url.clone())
            .send()
            .await
            .map_err(|e| self.transport_error("GET", e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error("GET", e))?;
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
            return Err(status_error(&self.target, "read", status, &body));
        }
        let job: Value = serde_json::from_str(&body).map_err(|e| Error::Nomad {
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
            .http
            .post(self.job_url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error("POST", e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error("POST", e))?;
        if status.is_success() {
            let answer = serde_json::from_str(&text).map_err(|e| Error::Nomad {
                job: self.target.job.clone(),
                message: format!("registering the job: unexpected answer: {e}"),
            })?;
            return Ok(Register::Done(answer));
        }
        if is_conflict_body(status, &text) {
            return Ok(Register::Conflict(text));
        }
        Err(status_error(&self.target, "write", status, &text))
    }

    fn transport_error(&self, method: &str, error: reqwest::Error) -> Error {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        let detail = error_chain(&error.without_url());
        let hint = if detail.contains("certificate") {
            "; if Nomad's certificate is issued by a private CA, set caSecretRef"
        } else {
            ""
        };
        Error::Nomad {
            job: self.target.job.clone(),
            message: format!(
                "{method} {} {kind}: {detail}{hint}",
                redacted_url(&self.job_url),
            ),
        }
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

/// `job "J" in namespace "N"` and `, region "R"` when set, for messages.
fn describe_job(target: &NomadTarget) -> String {
    let region = target
        .region
        .as_deref()
        .map(|r| format!(", region {r:?}"))
        .unwrap_or_default();
    format!(
        "job {:?} in namespace {:?}{region}",
        target.job,
        target.namespace.as_deref().unwrap_or("default"),
    )
}

/// `{address}/v1/job/{job}?namespace=…&region=…`, with the job id as one path segment.
fn job_url(target: &NomadTarget) -> Result<Url, Error> {
    let invalid = |detail: String| {
        Error::stalled(
            reasons::INVALID_SPEC,
            format!("nomad.address {:?} {detail}", target.address),
        )
    };
    let mut url = Url::parse(&target.address).map_err(|e| invalid(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http:// or https:// URL".into()));
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| invalid("cannot be a base URL".into()))?
        .pop_if_empty()
        .extend(["v1", "job", target.job.as_str()]);
    {
        let mut query = url.query_pairs_mut();
        if let Some(namespace) = &target.namespace {
            query.append_pair("namespace", namespace);
        }
        if let Some(region) = &target.region {
            query.append_pair("region", region);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The URL without user info, for messages.
fn redacted_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Maps a non-success answer (other than 404 on read and a conflict) to an error.
fn status_error(target: &NomadTarget, operation: &str, status: StatusCode, body: &str) -> Error {
    let job = describe_job(target);
    match status {
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
            let capability = if operation == "write" {
                "submit-job"
            } else {
                "read-job"
            };
            Error::stalled(
                reasons::NOMAD_ACCESS_DENIED,
                format!(
                    "Nomad denied access to {job} ({operation}: {}); check tokenSecretRef: the token needs the {capability} capability in that namespace",
                    quote(body)
                ),
            )
        }
        StatusCode::BAD_REQUEST => Error::stalled(
            reasons::INVALID_SPEC,
            format!("Nomad rejected the {operation} of {job}: {}", quote(body)),
        ),
        StatusCode::NOT_FOUND => Error::stalled(
            reasons::NOMAD_JOB_NOT_FOUND,
            format!("Nomad has no {job} ({operation}: {})", quote(body)),
        ),
        _ => Error::Nomad {
            job: target.job.clone(),
            message: format!("{operation} answered HTTP {status}: {}", quote(body)),
        },
    }
}

/// The job's `JobModifyIndex`.
fn job_modify_index(job: &Value, id: &str) -> Result<u64, Error> {
    job.get("JobModifyIndex")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Nomad {
            job: id.to_owned(),
            message: "the job as read has no JobModifyIndex".into(),
        })
}

/// The task object of `target` in `job`.
fn find_task<'a>(job: &'a Value, target: &NomadTarget) -> Result<&'a Value, Error> {
    let groups = job
        .get("TaskGroups")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let group = groups
        .iter()
        .find(|g| g.get("Name").and_then(Value::as_str) == Some(target.group.as_str()))
        .ok_or_else(|| {
            Error::stalled(
                reasons::NOMAD_TASK_NOT_FOUND,
                format!(
                    "Nomad {} has no task group {:?} (groups: {}); check nomad.group",
                    describe_job(target),
                    target.group,
                    names(groups)
                ),
            )
        })?;
    let tasks = group
        .get("Tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    tasks
        .iter()
        .find(|t| t.get("Name").and_then(Value::as_str) == Some(target.task.as_str()))
        .ok_or_else(|| {
            Error::stalled(
                reasons::NOMAD_TASK_NOT_FOUND,
                format!(
                    "task group {:?} of Nomad {} has no task {:?} (tasks: {}); check nomad.task",
                    target.group,
                    describe_job(target),
                    target.task,
                    names(tasks)
                ),
            )
        })
}

fn names(items: &[Value]) -> String {
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("Name").and_then(Value::as_str))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn no_image(target: &NomadTarget, driver: &str) -> Error {
    Error::stalled(
        reasons::NOMAD_NO_IMAGE,
        format!(
            "task {:?} of group {:?} in Nomad {} has no config.image (driver {driver:?}); only tasks of image drivers such as docker or podman can be pinned",
            target.task,
            target.group,
            describe_job(target)
        ),
    )
}

/// `(Config.image, Driver)` of the target's task in `job`.
pub fn find_task_image<'a>(
    job: &'a Value,
    target: &NomadTarget,
) -> Result<(&'a str, &'a str), Error> {
    let task = find_task(job, target)?;
    let driver = task.get("Driver").and_then(Value::as_str).unwrap_or("");
    let image = task
        .get("Config")
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .ok_or_else(|| no_image(target, driver))?;
    Ok((image, driver))
}

/// Sets the target task's `Config.image` in `job` to `image`, touching nothing else.
///
/// Returns the previous image, or `None` (and leaves `job` as it was) when it already was
/// `image`.
pub fn set_task_image(
    job: &mut Value,
    target: &NomadTarget,
    image: &str,
) -> Result<Option<String>, Error> {
    let (current, driver) = find_task_image(job, target)?;
    if current == image {
        return Ok(None);
    }
    let previous = current.to_owned();
    let driver = driver.to_owned();
    let slot = job
        .get_mut("TaskGroups")
        .and_then(Value::as_array_mut)
        .and_then(|groups| {
            groups
                .iter_mut()
                .find(|g| g.get("Name").and_then(Value::as_str) == Some(target.group.as_str()))
        })
        .and_then(|g| g.get_mut("Tasks"))
        .and_then(Value::as_array_mut)
        .and_then(|tasks| {
            tasks
                .iter_mut()
                .find(|t| t.get("Name").and_then(Value::as_str) == Some(target.task.as_str()))
        })
        .and_then(|t| t.get_mut("Config"))
        .and_then(|c| c.get_mut("image"))
        .ok_or_else(|| no_image(target, &driver))?;
    *slot = Value::String(image.to_owned());
    Ok(Some(previous))
}

/// A Nomad answer body, trimmed and shortened for a message.
fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(empty answer)".into();
    }
    match body.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> NomadTarget {
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

    fn job() -> Value {
        json!({
            "ID": "web",
            "Name": "web",
            "JobModifyIndex": 42,
            "Version": 3,
            "SomeFutureField": {"x": [1, 2.5, null]},
            "TaskGroups": [
                {"Name": "other", "Tasks": [{"Name": "server", "Driver": "docker", "Config": {"image": "other:1"}}]},
                {"Name": "frontend", "Count": 2, "Tasks": [
                    {"Name": "sidecar", "Driver": "exec", "Config": {"command": "/bin/true"}},
                    {"Name": "server", "Driver": "docker", "Config": {"image": "reg/web:old", "ports": ["http"]}}
                ]}
            ]
        })
    }

    #[test]
    fn finds_the_task_image_of_the_named_group_and_task() {
        let job = job();
        let (image, driver) = find_task_image(&job, &target()).unwrap();
        assert_eq!((image, driver), ("reg/web:old", "docker"));
        assert_eq!(job_modify_index(&job, "web").unwrap(), 42);
    }

    #[test]
    fn replaces_only_the_image_field() {
        let before = job();
        let mut after = before.clone();
        let previous = set_task_image(&mut after, &target(), "reg/web@sha256:abc").unwrap();
        assert_eq!(previous.as_deref(), Some("reg/web:old"));
        let mut expected = before.clone();
        expected["TaskGroups"][1]["Tasks"][1]["Config"]["image"] = json!("reg/web@sha256:abc");
        assert_eq!(after, expected);
        assert_ne!(after, before);
        // The other group's task of the same name is untouched.
        assert_eq!(after["TaskGroups"][0], before["TaskGroups"][0]);
    }

    #[test]
    fn setting_the_same_image_changes_nothing() {
        let mut job = job();
        let before = job.clone();
        assert_eq!(
            set_task_image(&mut job, &target(), "reg/web:old").unwrap(),
            None
        );
        assert_eq!(job, before);
    }

    #[test]
    fn missing_group_task_and_image_are_stalled_with_their_reasons() {
        let job = job();
        let mut t = target();
        t.group = "backend".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.to_string().contains("\"backend\""), "{e}");
        assert!(e.to_string().contains("frontend"), "{e}");

        let mut t = target();
        t.task = "worker".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.to_string().contains("\"worker\"") && e.to_string().contains("\"frontend\""));

        let mut t = target();
        t.task = "sidecar".into();
        let e = find_task_image(&job, &t).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_NO_IMAGE);
        assert!(e.to_string().contains("\"exec\""), "{e}");

        let e = find_task_image(&json!({"TaskGroups": null}), &target()).unwrap_err();
        assert_eq!(e.reason(), reasons::NOMAD_TASK_NOT_FOUND);
        assert!(e.is_stalled());
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
    fn builds_the_job_url_with_an_encoded_id_and_optional_query() {
        let mut t = target();
        t.job = "a b/c".into();
        t.address = "https://nomad.example.com:4646/prefix/".into();
        let url = job_url(&t).unwrap();
        assert_eq!(
            url.as_str(),
            "https://nomad.example.com:4646/prefix/v1/job/a%20b%2Fc?namespace=apps"
        );
        t.namespace = None;
        t.region = Some("eu".into());
        assert!(
            job_url(&t)
                .unwrap()
                .as_str()
                .ends_with("/v1/job/a%20b%2Fc?region=eu")
        );
        t.region = None;
        assert!(job_url(&t).unwrap().query().is_none());
        t.address = "not a url".into();
        assert_eq!(job_url(&t).unwrap_err().reason(), reasons::INVALID_SPEC);
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
