//! Strict parsing of what a ServiceBuild names: a repository (`host[:port]/path`, no tag, no
//! digest), a tag, a sha256 digest. The grammar is distribution's `reference` package; a name
//! that does not match is the ServiceBuild's mistake (`Stalled` `InvalidSpec`), never a request.

use crate::Error;
use crate::conditions::reasons;

use super::registry_host;

/// distribution's `NameTotalLengthMax`.
const MAX_NAME_LENGTH: usize = 255;

/// A repository, split into where to send requests and what to put in the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Repository {
    /// `host[:port]` that requests go to (`registry-1.docker.io` for Docker Hub).
    pub host: String,
    /// The repository path in `/v2/<name>/...` (`library/nginx` for `nginx`).
    pub name: String,
    /// The repository as the ServiceBuild wrote it, for messages.
    pub written: String,
}

impl Repository {
    pub fn parse(repository: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::stalled(
                reasons::INVALID_SPEC,
                format!("{repository:?} is not a valid image repository: {why}"),
            )
        };
        if repository.len() > MAX_NAME_LENGTH {
            return Err(invalid("it is longer than 255 characters"));
        }
        let host = registry_host(repository);
        let path = match repository.split_once('/') {
            Some((first, rest)) if first == host => rest,
            _ => repository,
        };
        if host != "docker.io" && !valid_domain(host) {
            return Err(invalid(&format!("{host:?} is not a registry host[:port]")));
        }
        if !path.split('/').all(valid_component) {
            return Err(invalid(
                "each path component must be lowercase letters and digits, separated by \
                 '.', '_', '__' or dashes (no tag, no digest)",
            ));
        }
        let (host, name) = if matches!(host, "docker.io" | "index.docker.io") {
            let name = if path.contains('/') {
                path.to_string()
            } else {
                format!("library/{path}")
            };
            ("registry-1.docker.io".to_string(), name)
        } else {
            (host.to_string(), path.to_string())
        };
        Ok(Self {
            host,
            name,
            written: repository.to_string(),
        })
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(super) fn check_tag(repository: &str, tag: &str) -> Result<(), Error> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= 128
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::stalled(
            reasons::INVALID_SPEC,
            format!(
                "{tag:?} is not a valid tag for {repository} (letters, digits, '_', '.', '-'; \
                 at most 128; not starting with '.' or '-')"
            ),
        ))
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(component: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if !(bytes.first().is_some_and(alnum) && bytes.last().is_some_and(alnum)) {
        return false;
    }
    bytes
        .split(alnum)
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|b| *b == b'-')
        })
}

/// `host[:port]`: DNS labels (letters, digits, inner dashes) separated by dots, or a bracketed
/// IPv6 address; an optional decimal port.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, rest)) => {
                if address.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match rest {
                    "" => return true,
                    _ => match rest.strip_prefix(':') {
                        Some(port) => ("", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        },
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    port_ok && (domain.starts_with('[') || host.split('.').all(label_ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(repository: &str) -> (String, String) {
        let r = Repository::parse(repository).unwrap();
        (r.host, r.name)
    }

    fn invalid(repository: &str) -> bool {
        matches!(
            Repository::parse(repository),
            Err(Error::Stalled { reason, .. }) if reason == reasons::INVALID_SPEC
        )
    }

    #[test]
    fn repositories() {
        let pair = |h: &str, n: &str| (h.to_string(), n.to_string());
        assert_eq!(
            parsed("127.0.0.1:5000/shop/banana"),
            pair("127.0.0.1:5000", "shop/banana")
        );
        assert_eq!(parsed("ghcr.io/org/app"), pair("ghcr.io", "org/app"));
        assert_eq!(
            parsed("localhost/a_b__c-d--e.f"),
            pair("localhost", "a_b__c-d--e.f")
        );
        assert_eq!(
            parsed("nginx"),
            pair("registry-1.docker.io", "library/nginx")
        );
        assert_eq!(
            parsed("docker.io/me/app"),
            pair("registry-1.docker.io", "me/app")
        );
        assert_eq!(parsed("[::1]:5000/app"), pair("[::1]:5000", "app"));
        for bad in [
            "UPPER CASE/app",
            "ghcr.io/org/App",
            "ghcr.io/org/app:tag",
            "ghcr.io/org/app@sha256:abc",
            "ghcr.io//app",
            "ghcr.io/app/",
            "ghcr.io/-app",
            "ghcr.io/a..b",
            "ghcr.io/a___b",
            "reg.example.com:port/app",
            "reg.example.com:/app",
            "-reg.example.com/app",
            "[zz]:1/app",
            "",
        ] {
            assert!(invalid(bad), "{bad:?} accepted");
        }
        assert!(invalid(&format!("ghcr.io/{}", "a".repeat(300))));
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b.C_9", &"a".repeat(128)] {
            assert!(check_tag("r", good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"a".repeat(129)] {
            assert!(check_tag("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_shape() {
        let hex = "a".repeat(64);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        assert!(!is_sha256_digest(&format!("sha512:{hex}")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
    }
}
