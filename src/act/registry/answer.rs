//! Reading a registry's answer: bounded, classified, and turned into an [`Error`] without
//! quoting what the registry said.

use base64::Engine as _;

use super::{Failure, OPERATION_TIMEOUT, RegistryAuth};
use crate::Error;
use crate::conditions::reasons;

/// An error answer's body is read up to this size (to find distribution's error codes).
const ERROR_BODY_CAP: usize = 16 * 1024;

/// A request that got no answer. reqwest's Display names the URL, which holds no secret here,
/// but the caller's message names the reference anyway.
pub(super) fn request_failure(error: reqwest::Error) -> Failure {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Failure::Transient(format!("{kind}: {}", error.without_url()))
}

/// The body, or `None` when it is larger than `cap`. A `Content-Length` over the cap is
/// refused before any of the body is read; otherwise reading stops at the first chunk past the
/// cap. Either way the response is dropped unread, which closes its connection.
pub(super) async fn read_bounded(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, Failure> {
    let declared = response.content_length().unwrap_or(0);
    if declared > cap as u64 {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(request_failure)? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A failed answer, classified by status; distribution's known error codes are named, never
/// the free-text message or anything else from the body, which a hostile registry could fill
/// with what it was sent.
pub(super) async fn failure(mut response: reqwest::Response) -> Failure {
    let status = response.status();
    let body = read_bounded(&mut response, ERROR_BODY_CAP)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let codes = error_codes(&body);
    let message = if codes.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {} {}", status.as_u16(), codes.join(", "))
    };
    match status.as_u16() {
        401 | 403 => Failure::Denied(message),
        404 => Failure::NotFound(message),
        300..=399 => Failure::Transient(format!(
            "{message}: a redirect to another origin, which monoship does not follow"
        )),
        _ => Failure::Transient(message),
    }
}

/// The error codes of distribution-spec (and distribution's own), the only text of an error
/// body that is ever quoted.
const KNOWN_CODES: [&str; 20] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "UNKNOWN",
    "UNAVAILABLE",
    "RANGE_INVALID",
    "PAGINATION_NUMBER_INVALID",
];

/// The known `code`s of a distribution error envelope `{"errors":[{"code":"…"}]}`.
fn error_codes(body: &[u8]) -> Vec<&'static str> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut codes: Vec<&'static str> = value
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("code").and_then(|c| c.as_str()))
        .filter_map(|c| KNOWN_CODES.into_iter().find(|known| *known == c))
        .collect();
    codes.dedup();
    codes
}

/// A Content-Type for a message: named when it is a common one, else only described, so that
/// a registry cannot put what it was sent into a message through it.
pub(super) fn describe_content_type(content_type: &str) -> String {
    const COMMON: [&str; 8] = [
        "text/html",
        "text/plain",
        "text/xml",
        "application/json",
        "application/xml",
        "application/octet-stream",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ];
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match COMMON.iter().find(|c| c.eq_ignore_ascii_case(essence)) {
        Some(common) => format!("Content-Type {common}"),
        None if essence.is_empty() => "no Content-Type".into(),
        None => "an unexpected Content-Type".into(),
    }
}

/// Defence in depth: no message leaves this module with the caller's password, or its basic
/// credentials encoded, in it, whatever a registry sent back.
pub(super) fn redacted(error: Error, auth: &RegistryAuth) -> Error {
    let RegistryAuth::Basic { username, password } = auth else {
        return error;
    };
    if password.is_empty() {
        return error;
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let clean = |message: String| {
        message
            .replace(&encoded, "<redacted>")
            .replace(password.as_str(), "<redacted>")
    };
    match error {
        Error::Stalled { reason, message } => Error::Stalled {
            reason,
            message: clean(message),
        },
        Error::Registry {
            operation,
            reference,
            message,
        } => Error::Registry {
            operation,
            reference,
            message: clean(message),
        },
        other => other,
    }
}

pub(super) fn into_error(
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

/// `call`, given at most [`OPERATION_TIMEOUT`].
pub(super) async fn timed<T>(call: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(OPERATION_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

pub(super) fn timed_out() -> Failure {
    Failure::Transient(format!("timed out after {}s", OPERATION_TIMEOUT.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_only_when_they_look_like_codes() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"secret echo"},{"code":"Basic aHVudGVyMg=="},{"code":"HUNTER_TWO"}]}"#;
        assert_eq!(error_codes(body), vec!["MANIFEST_UNKNOWN"]);
        assert!(error_codes(b"<html>").is_empty());
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
    fn content_types_are_named_only_when_common() {
        assert_eq!(
            describe_content_type("text/html; charset=utf-8"),
            "Content-Type text/html"
        );
        assert_eq!(describe_content_type(""), "no Content-Type");
        assert_eq!(
            describe_content_type("Basic cm9ib3Q6dDBwczNjcmV0"),
            "an unexpected Content-Type"
        );
    }

    #[test]
    fn messages_are_redacted() {
        let auth = RegistryAuth::Basic {
            username: "robot".into(),
            password: "t0ps3cret".into(),
        };
        let error = Error::Registry {
            operation: "resolve",
            reference: "r:t".into(),
            message: "echo t0ps3cret and cm9ib3Q6dDBwczNjcmV0".into(),
        };
        let message = redacted(error, &auth).to_string();
        assert_eq!(
            message,
            "registry resolve r:t: echo <redacted> and <redacted>"
        );
    }
}
