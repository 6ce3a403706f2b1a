//! Credentials: what a `.dockerconfigjson` holds for a registry, and how a registry asks for
//! them (`WWW-Authenticate`).

use std::fmt;

use base64::Engine as _;
use reqwest::header::HeaderValue;

use crate::Error;
use crate::conditions::reasons;

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

    /// The `Authorization: Basic` header for these credentials; none when anonymous. Marked
    /// sensitive, so it never shows in a Debug print.
    pub(super) fn basic_header(&self) -> Option<HeaderValue> {
        let Self::Basic { username, password } = self else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
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

/// What a registry asked for in its `WWW-Authenticate` answer to a 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// HTTP basic auth on the registry itself.
    Basic,
    /// Fetch a token from `realm` (distribution's token auth), then send it as a Bearer token.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// The first Bearer or Basic challenge in a `WWW-Authenticate` value (RFC 7235 syntax).
    pub fn parse(header: &str) -> Option<Self> {
        let challenges = http_auth::parse_challenges(header).ok()?;
        challenges.iter().find_map(|challenge| {
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.to_unescaped())
            };
            if challenge.scheme.eq_ignore_ascii_case("bearer") {
                Some(Self::Bearer {
                    realm: param("realm")?,
                    service: param("service"),
                })
            } else if challenge.scheme.eq_ignore_ascii_case("basic") {
                Some(Self::Basic)
            } else {
                None
            }
        })
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
    fn basic_header_is_sensitive() {
        let header = basic("me", "hunter2").basic_header().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(
            header.to_str().unwrap(),
            format!("Basic {}", b64("me:hunter2"))
        );
        assert!(RegistryAuth::Anonymous.basic_header().is_none());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="monoship-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Negotiate, bearer realm="https://r/t""#),
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: None
            })
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("garbage \u{1}"), None);
    }
}
