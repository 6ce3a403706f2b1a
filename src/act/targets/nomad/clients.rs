//! Which Nomad addresses monoship may reach, and one shared HTTP client per address and CA.
//!
//! An admin may restrict the Nomad addresses that ServiceBuilds can name
//! ([`NomadAllowlist`], flag `--nomad-allowed-addresses`): an address is allowed when its
//! scheme, host and port (the port defaulted from the scheme) equal those of an entry. An
//! empty list allows every address. A refused address is [`reasons::NOMAD_ADDRESS_REFUSED`]
//! before any request is sent.
//!
//! [`NomadClients`] keeps a bounded set of HTTP clients keyed by (origin, CA bundle), so a TLS
//! client is built once per Nomad cluster, not on every reconcile. The token is never part of
//! a shared client: it is sent per request by [`NomadClient`], so two ServiceBuilds with
//! different tokens for one address share connections but never each other's token. No
//! client follows redirects: a token stays with the origin it was configured for.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header::HeaderValue;
use sha2::{Digest, Sha256};

use super::job::job_url;
use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, NomadAccess, NomadClient};
use crate::Error;
use crate::api::NomadTarget;
use crate::conditions::reasons;

/// How many HTTP clients (distinct origin and CA pairs) are kept; the least recently used one
/// is dropped beyond that.
pub const MAX_CLIENTS: usize = 64;

pub use crate::act::origin::{Allowlist as NomadAllowlist, Origin as NomadOrigin};

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    origin: NomadOrigin,
    /// SHA-256 of the CA bundle, when there is one.
    ca: Option<[u8; 32]>,
}

#[derive(Default)]
struct Cache {
    tick: u64,
    clients: HashMap<ClientKey, (reqwest::Client, u64)>,
}

/// Builds [`NomadClient`]s for targets, checking the allowlist and sharing one HTTP client per
/// (origin, CA). Cheap to share; one per controller.
pub struct NomadClients {
    allowlist: NomadAllowlist,
    connect_timeout: Duration,
    request_timeout: Duration,
    cache: Mutex<Cache>,
}

impl fmt::Debug for NomadClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NomadClients")
            .field("allowlist", &self.allowlist)
            .field("clients", &self.len())
            .finish()
    }
}

impl Default for NomadClients {
    fn default() -> Self {
        Self::new(NomadAllowlist::default())
    }
}

impl NomadClients {
    /// With the default timeouts.
    pub fn new(allowlist: NomadAllowlist) -> Self {
        Self::with_timeouts(allowlist, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    pub fn with_timeouts(
        allowlist: NomadAllowlist,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Self {
            allowlist,
            connect_timeout,
            request_timeout,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// A client for `target` with `access`.
    ///
    /// A malformed address is [`reasons::INVALID_SPEC`]; one outside the allowlist is
    /// [`reasons::NOMAD_ADDRESS_REFUSED`]; a token that is not a valid header value or a CA
    /// bundle without a usable certificate is [`reasons::INVALID_SECRET`]. Nothing is sent.
    pub fn client(&self, target: &NomadTarget, access: &NomadAccess) -> Result<NomadClient, Error> {
        let url = job_url(target)?;
        let origin = NomadOrigin::of(&url).ok_or_else(|| {
            Error::stalled(
                reasons::INVALID_SPEC,
                format!("nomad.address {:?} has no host", target.address),
            )
        })?;
        if !self.allowlist.allows(&origin) {
            return Err(Error::stalled(
                reasons::NOMAD_ADDRESS_REFUSED,
                format!(
                    "nomad.address {origin} is not one of the Nomad addresses this monoship may reach ({}); use one of them, or ask the cluster admin to add it to --nomad-allowed-addresses",
                    self.allowlist
                ),
            ));
        }
        let token = match &access.token {
            Some(token) => {
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
                Some(value)
            }
            None => None,
        };
        let key = ClientKey {
            origin,
            ca: access
                .ca_pem
                .as_deref()
                .map(|pem| Sha256::digest(pem).into()),
        };
        let http = match self.cached(&key) {
            Some(http) => http,
            None => {
                let http = self.build(target, access)?;
                self.store(key, http.clone());
                http
            }
        };
        Ok(NomadClient::from_parts(http, target, url, token))
    }

    /// How many HTTP clients are kept now.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, key: &ClientKey) -> Option<reqwest::Client> {
        let mut cache = self.lock();
        cache.tick += 1;
        let tick = cache.tick;
        cache.clients.get_mut(key).map(|(http, used)| {
            *used = tick;
            http.clone()
        })
    }

    fn store(&self, key: ClientKey, http: reqwest::Client) {
        let mut cache = self.lock();
        if cache.clients.len() >= MAX_CLIENTS && !cache.clients.contains_key(&key) {
            let oldest = cache
                .clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                cache.clients.remove(&oldest);
            }
        }
        cache.tick += 1;
        let tick = cache.tick;
        cache.clients.insert(key, (http, tick));
    }

    /// An HTTP client that follows no redirect and trusts the target's CA besides the
    /// platform's roots. It carries no token.
    fn build(&self, target: &NomadTarget, access: &NomadAccess) -> Result<reqwest::Client, Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .user_agent(concat!("monoship/", env!("CARGO_PKG_VERSION")));
        let bad_ca = |detail: &str| {
            Error::stalled(
                reasons::INVALID_SECRET,
                format!(
                    "the CA bundle for Nomad job {} is not usable: {detail}; check caSecretRef (a PEM bundle)",
                    target.job
                ),
            )
        };
        if let Some(pem) = &access.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bad_ca(&super::answer::error_chain(&e)))?;
            if certs.is_empty() {
                return Err(bad_ca("no PEM certificate found"));
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder.build().map_err(|e| {
            if access.ca_pem.is_some() {
                bad_ca(&super::answer::error_chain(&e))
            } else {
                Error::Nomad {
                    job: target.job.clone(),
                    message: format!(
                        "building the HTTP client: {}",
                        super::answer::error_chain(&e)
                    ),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str) -> NomadTarget {
        NomadTarget {
            address: address.into(),
            ..crate::targets::nomad::tests::target()
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port_with_the_default_port_filled_in() {
        let a: NomadOrigin = "https://Nomad.Example.com".parse().unwrap();
        let b: NomadOrigin = "https://nomad.example.com:443/".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://nomad.example.com:443");
        let http: NomadOrigin = "http://nomad.example.com:443".parse().unwrap();
        assert_ne!(a, http);
        let v6: NomadOrigin = "http://[::1]:4646".parse().unwrap();
        assert_eq!(v6.to_string(), "http://[::1]:4646");
        for wrong in [
            "nomad.example.com:4646",
            "ftp://nomad.example.com",
            "https://nomad.example.com/v1",
            "https://user:pw@nomad.example.com",
            "https://nomad.example.com/?x=1",
            "",
        ] {
            assert!(wrong.parse::<NomadOrigin>().is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_allowlist_refuses_other_origins_before_anything_is_built() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let list = NomadAllowlist::parse(&["https://nomad.example.com:4646", " "]).unwrap();
        let clients = NomadClients::new(list);
        let access = NomadAccess::default();
        assert!(
            clients
                .client(&target("https://nomad.example.com:4646/prefix"), &access)
                .is_ok()
        );
        for refused in [
            "http://nomad.example.com:4646",
            "https://nomad.example.com:4647",
            "https://nomad.example.com",
            "https://other.example.com:4646",
            "https://nomad.example.com.evil.test:4646",
        ] {
            let e = clients.client(&target(refused), &access).unwrap_err();
            assert_eq!(e.reason(), reasons::NOMAD_ADDRESS_REFUSED, "{refused}");
            assert!(e.is_stalled());
            assert!(
                e.to_string().contains("https://nomad.example.com:4646"),
                "{e}"
            );
        }
        assert_eq!(clients.len(), 1, "refused targets built no client");
        assert!(NomadAllowlist::parse(&["nomad:4646"]).is_err());
        assert!(NomadAllowlist::default().allows(&"http://any:1".parse().unwrap()));
    }

    #[test]
    fn clients_are_shared_per_origin_and_ca_and_bounded() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let clients = NomadClients::default();
        let token = |t: &str| NomadAccess {
            token: Some(t.into()),
            ca_pem: None,
        };
        clients
            .client(&target("http://127.0.0.1:4646"), &token("one"))
            .unwrap();
        clients
            .client(&target("http://127.0.0.1:4646/"), &token("two"))
            .unwrap();
        assert_eq!(
            clients.len(),
            1,
            "one client for one origin, whatever the token"
        );
        let with_ca = NomadAccess {
            token: Some("one".into()),
            ca_pem: Some(monoship_testkit::nomad::TEST_CA_PEM.as_bytes().to_vec()),
        };
        for _ in 0..2 {
            clients
                .client(&target("http://127.0.0.1:4646"), &with_ca)
                .unwrap();
        }
        assert_eq!(clients.len(), 2, "another CA is another client, once");
        let bad_ca = NomadAccess {
            token: None,
            ca_pem: Some(b"not a certificate".to_vec()),
        };
        let e = clients
            .client(&target("http://127.0.0.1:4646"), &bad_ca)
            .unwrap_err();
        assert_eq!(e.reason(), reasons::INVALID_SECRET);
        assert_eq!(clients.len(), 2, "an unusable CA is not kept");
        clients
            .client(&target("http://127.0.0.1:4647"), &token("one"))
            .unwrap();
        assert_eq!(clients.len(), 3);
        for port in 0..(MAX_CLIENTS as u16 + 10) {
            clients
                .client(
                    &target(&format!("http://127.0.0.1:{}", 5000 + port)),
                    &token("x"),
                )
                .unwrap();
        }
        assert_eq!(clients.len(), MAX_CLIENTS);
    }
}
