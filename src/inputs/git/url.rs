//! Repository URLs and revisions as given: checked, keyed, and redacted for messages.

use gix::ObjectId;
use sha2::{Digest, Sha256};

use super::{GitError, GitErrorKind};

/// A repository URL that inputs may be read from.
#[derive(Debug, Clone)]
pub(crate) struct RepoUrl {
    /// As given (it carries no credentials).
    pub text: String,
    pub url: gix::Url,
}

impl RepoUrl {
    pub(super) fn parse(text: &str) -> Result<Self, GitError> {
        // Echoed in errors before the check for credentials below: without any user info.
        let repository = &redacted(text);
        let url = gix::url::parse(text.as_bytes()).map_err(|_| {
            GitError::new(
                GitErrorKind::Invalid,
                format!("{repository:?} is not a git repository URL"),
            )
        })?;
        use gix::url::Scheme;
        match url.scheme {
            Scheme::Https | Scheme::Http | Scheme::File => {}
            Scheme::Ssh => {
                return Err(GitError::new(
                    GitErrorKind::Unsupported,
                    format!(
                        "inputs cannot be read over ssh ({repository}); use an https URL with \
                         basic-auth credentials"
                    ),
                ));
            }
            ref other => {
                return Err(GitError::new(
                    GitErrorKind::Unsupported,
                    format!(
                        "inputs cannot be read over {} ({repository}); use an https URL",
                        other.as_str()
                    ),
                ));
            }
        }
        if url.user().is_some() || url.password().is_some() {
            return Err(GitError::new(
                GitErrorKind::Invalid,
                "the repository URL carries a user name or password; put credentials in a \
                 basic-auth Secret instead",
            ));
        }
        Ok(Self {
            text: text.to_string(),
            url,
        })
    }

    pub(super) fn is_plain_http(&self) -> bool {
        self.url.scheme == gix::url::Scheme::Http
    }

    /// The directory name for this URL read in `scope`: hex sha256 of the scope and the URL
    /// as given.
    pub(super) fn key(&self, scope: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update(b"\0");
        hasher.update(self.text.as_bytes());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `text` without the user info of a URL (`https://user:token@host/x` → `https://host/x`, and
/// `user@host:path` → `host:path`).
fn redacted(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{}", &rest[at + 1..]),
        None => rest[at + 1..].to_string(),
    }
}

pub(super) fn parse_revision(revision: &str) -> Result<ObjectId, GitError> {
    let full = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    match ObjectId::from_hex(revision.as_bytes()) {
        Ok(id) if full => Ok(id),
        _ => Err(GitError::new(
            GitErrorKind::Invalid,
            format!("revision {revision:?} is not a full commit id (40 hex digits)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_never_reaches_an_error() {
        assert_eq!(
            redacted("https://u:tok@h.example/x@y"),
            "https://h.example/x@y"
        );
        assert_eq!(redacted("https://h.example/x"), "https://h.example/x");
        assert_eq!(redacted("git@h.example:shop/x.git"), "h.example:shop/x.git");
        for url in [
            "ssh://u:s3cr3t@h.example/x.git",
            "https://u:s3cr3t@h.example:99999/x.git",
            "https://s3cr3t@h.example/x.git",
            "git://u:s3cr3t@h.example/x.git",
        ] {
            let error = RepoUrl::parse(url).expect_err(url);
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn revisions_are_full_commit_ids() {
        assert!(parse_revision(&"a".repeat(40)).is_ok());
        for revision in ["HEAD", "abc123", &"A".repeat(41), &"g".repeat(40), ""] {
            let error = parse_revision(revision).expect_err(revision);
            assert_eq!(error.kind(), GitErrorKind::Invalid);
        }
    }
}
