//! Origins (scheme, host and port) and the admin's allowlists of them: where ServiceBuilds may
//! make monoship send requests (`--nomad-allowed-addresses`, `--git-allowed-origins`).

use std::fmt;
use std::str::FromStr;

use reqwest::Url;

/// The scheme, host and port of a URL: what an allowlist compares and what a token or a
/// password is bound to. Written `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an `http`/`https` URL with a host; `None` otherwise.
    pub fn of(url: &Url) -> Option<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl FromStr for Origin {
    type Err = String;

    /// `http(s)://host[:port]`, nothing else: no path, query, fragment or user info.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let wrong = |detail: &str| {
            format!("{text:?} is not an address like https://host.example.com:4646: {detail}")
        };
        let url = Url::parse(text).map_err(|e| wrong(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(wrong("it must not carry user info"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(wrong("it must be scheme, host and port only"));
        }
        Self::of(&url).ok_or_else(|| wrong("it must be an http:// or https:// URL with a host"))
    }
}

/// The origins ServiceBuilds may make monoship send requests to (Nomad addresses, git
/// repositories). Empty: every origin is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Origin>);

impl Allowlist {
    pub fn new(origins: Vec<Origin>) -> Self {
        Self(origins)
    }

    /// Parses every entry (see [`Origin`]); empty entries are skipped.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(AsRef::as_ref)
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether any address is allowed (no entries).
    pub fn allows_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, origin: &Origin) -> bool {
        self.allows_all() || self.0.contains(origin)
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&entries.join(", "))
    }
}
