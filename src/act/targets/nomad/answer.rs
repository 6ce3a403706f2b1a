//! Reading Nomad's answers safely: bodies are read up to a fixed cap and no further, and what
//! a message quotes of a remote answer is a short excerpt with control characters removed and
//! the token blanked out.

use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Response, StatusCode, Url};

use super::clients::NomadOrigin;
use super::job::describe_job;
use crate::Error;
use crate::api::NomadTarget;
use crate::conditions::reasons;

/// The most of a job (`GET /v1/job/:job_id`) that is read.
pub const MAX_JOB_BYTES: usize = 4 << 20;
/// The most of a register answer that is read (it is a few small fields).
pub const MAX_REGISTER_ANSWER_BYTES: usize = 64 << 10;
/// The most of an error answer that is read (only an excerpt is shown).
pub const MAX_ERROR_BYTES: usize = 4 << 10;
/// The longest excerpt of a remote answer in a message, in characters.
pub const MAX_EXCERPT_CHARS: usize = 200;

/// A body read up to a cap.
pub(super) enum Body {
    Complete(Vec<u8>),
    /// The answer is longer than the cap; reading stopped there.
    TooLarge,
}

/// Reads `response`'s body, stopping as soon as it exceeds `cap` bytes (a declared
/// `Content-Length` over the cap is refused before any of the body is read).
pub(super) async fn read_capped(mut response: Response, cap: usize) -> reqwest::Result<Body> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(Body::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Body::Complete(body))
}

/// The first `cap` bytes at most of `response`'s body; a body that cannot be read is empty.
pub(super) async fn read_prefix(mut response: Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    body
}

/// A short, single-line excerpt of a remote answer for a message: invalid UTF-8 replaced,
/// `secret` blanked out, control characters turned into spaces, runs of whitespace
/// collapsed, at most [`MAX_EXCERPT_CHARS`] characters.
pub fn excerpt(body: &[u8], secret: Option<&str>) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if let Some(secret) = secret.map(str::trim).filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    let mut out = String::new();
    let mut chars = 0;
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        for c in (!out.is_empty())
            .then_some(' ')
            .into_iter()
            .chain(word.chars())
        {
            if chars == MAX_EXCERPT_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    if out.is_empty() {
        "(empty answer)".into()
    } else {
        out
    }
}

/// The token as text, for blanking it out of excerpts.
pub(super) fn token_text(token: Option<&HeaderValue>) -> Option<&str> {
    token.and_then(|t| t.to_str().ok())
}

/// Maps a non-success answer (other than 404 on read and a conflict) to an error; `excerpt`
/// is already sanitised.
pub(super) fn status_error(
    target: &NomadTarget,
    operation: &str,
    status: StatusCode,
    excerpt: &str,
) -> Error {
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
                    "Nomad denied access to {job} ({operation}: {excerpt}); check tokenSecretRef: the token needs the {capability} capability in that namespace"
                ),
            )
        }
        StatusCode::BAD_REQUEST => Error::stalled(
            reasons::INVALID_SPEC,
            format!("Nomad rejected the {operation} of {job}: {excerpt}"),
        ),
        StatusCode::NOT_FOUND => Error::stalled(
            reasons::NOMAD_JOB_NOT_FOUND,
            format!("Nomad has no {job} ({operation}: {excerpt})"),
        ),
        _ => Error::Nomad {
            job: target.job.clone(),
            message: format!("{operation} answered HTTP {status}: {excerpt}"),
        },
    }
}

/// A redirect is refused, not followed: the token must stay with `nomad.address`. It is
/// Stalled: the address answers the same way on every retry until a person changes it (an
/// http:// address behind an https redirect, a moved API, or a server that should not get
/// the token).
pub(super) fn redirect_error(
    target: &NomadTarget,
    url: &Url,
    operation: &str,
    response: &Response,
) -> Error {
    let to = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url.join(l).ok())
        .and_then(|l| NomadOrigin::of(&l))
        .map_or_else(|| "an unusable location".to_owned(), |o| o.to_string());
    let from = NomadOrigin::of(url).map_or_else(String::new, |o| o.to_string());
    Error::stalled(
        reasons::NOMAD_REDIRECT_REFUSED,
        format!(
            "Nomad at {from} answered the {operation} of {} with HTTP {}, a redirect to {to}; monoship follows no redirects, so that the token goes only to nomad.address: set nomad.address to the address that serves the Nomad API",
            describe_job(target),
            response.status().as_u16(),
        ),
    )
}

/// An answer over its cap. Stalled: a job that large (or a server that is not Nomad) stays so
/// until a person acts.
pub(super) fn too_large_error(target: &NomadTarget, operation: &str, cap: usize) -> Error {
    Error::stalled(
        reasons::NOMAD_ANSWER_TOO_LARGE,
        format!(
            "Nomad's answer to the {operation} of {} is larger than {} KiB, the most monoship reads; check that nomad.address is a Nomad API",
            describe_job(target),
            cap >> 10,
        ),
    )
}

/// A request that got no answer: transient.
pub(super) fn transport_error(
    target: &NomadTarget,
    url: &Url,
    method: &str,
    error: reqwest::Error,
) -> Error {
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
        job: target.job.clone(),
        message: format!("{method} {} {kind}: {detail}{hint}", redacted_url(url)),
    }
}

/// The URL without user info, for messages.
pub(super) fn redacted_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// An error with its sources, `a: b: c`.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

    #[test]
    fn excerpts_are_short_single_line_and_never_hold_the_token() {
        let body = b"permission denied for token s3cr3t\r\n\x1b[31mred\x07\tand more\n";
        let text = excerpt(body, Some(" s3cr3t "));
        assert_eq!(
            text,
            "permission denied for token <redacted> [31mred and more"
        );
        assert!(!text.contains('\n') && !text.chars().any(char::is_control));

        let long = "x".repeat(10_000);
        let text = excerpt(long.as_bytes(), None);
        assert_eq!(text.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(text.ends_with('…'));
        assert_eq!(excerpt(b"  \n\t ", None), "(empty answer)");
        assert_eq!(excerpt(&[0xff, b'o', b'k'], None), "\u{fffd}ok");
    }
}
