//! Provenance of a build's digest: the digest the build reported (its termination message)
//! checked against the one its revision tag points at. A tag is mutable (another build, a
//! re-run, a person can push to it); the report is what this build pushed. Pure.

use super::outcome::Fault;
use crate::api::DigestSource;
use crate::conditions::reasons;

/// Where the digest `tagged` (what `image` points at now) comes from, given what the build
/// `reported`: the report when both agree, the tag alone when the build reported nothing, and a
/// stall when they differ (something else pushed to the tag; nothing may be promoted).
pub fn check(reported: Option<&str>, tagged: &str, image: &str) -> Result<DigestSource, Fault> {
    match reported {
        None => Ok(DigestSource::Tag),
        Some(reported) if reported == tagged => Ok(DigestSource::Reported),
        Some(reported) => Err(Fault::stalled(
            reasons::DIGEST_MISMATCH,
            format!(
                "the build reported that it pushed {reported}, but {image} points at {tagged}, \
                 so something else pushed to that tag and nothing is promoted; find what did, \
                 then set a new value of the monoship.dev/rebuild annotation to build again"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaa";
    const B: &str = "sha256:bbbb";

    #[test]
    fn a_report_is_checked_against_the_tag() {
        assert_eq!(check(Some(A), A, "r/x:1"), Ok(DigestSource::Reported));
        assert_eq!(check(None, A, "r/x:1"), Ok(DigestSource::Tag));
        let mismatch = check(Some(A), B, "r/x:1").unwrap_err();
        assert!(mismatch.stalled);
        assert_eq!(mismatch.reason, reasons::DIGEST_MISMATCH);
        assert!(
            mismatch.message.contains(A) && mismatch.message.contains(B),
            "{}",
            mismatch.message
        );
        assert!(mismatch.message.contains("r/x:1 points at"));
    }
}
