//! One shallow fetch of one commit by id with gix, bounded in time and bytes, with credentials
//! for the repository's own origin only.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use gix::ObjectId;
use gix::credentials::helper::Action;
use gix::credentials::protocol::Outcome;
use gix::protocol::transport::client::blocking_io::http;
use gix::refspec::parse::Operation;

use super::watch::{Shared, Watch};
use super::{Credentials, GitError, GitErrorKind, RepoUrl, store};
use crate::act::build::diagnose::at_most;

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The whole fetch, and each HTTP request in it.
    pub timeout: Duration,
    /// Pack bytes received; more interrupts the fetch ([`GitErrorKind::Refused`]).
    pub max_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_bytes: 1 << 30,
        }
    }
}

/// A refspec whose only purpose is its `ls-refs` prefix: a fetch of an id alone would list
/// every ref of the server; with this prefix it lists none (no server has this ref).
const LS_REFS_FILTER: &str = "refs/monoship/none";

/// Bytes of the reason in an error sentence.
const MAX_REASON: usize = 512;

/// Fetch commit `id` of `url` into `repo` at depth 1 and pin it under `refs/monoship/<id>`.
pub(super) fn fetch(
    repo: &gix::Repository,
    url: &RepoUrl,
    id: ObjectId,
    credentials: Option<&Credentials>,
    limits: FetchLimits,
) -> Result<(), GitError> {
    let watch = Watch::start(limits)?;
    let result = run(repo, url, id, credentials, limits, &watch);
    watch.stop();
    let at = format!("fetching commit {id} from {}", url.text);
    result.map_err(|error| classify(&error, &at, url, limits, &watch))
}

/// The commit at the head of `branch` of `url`, asked of the server (`ls-refs` for that one
/// ref); nothing is fetched.
pub(super) fn branch_head(
    repo: &gix::Repository,
    url: &RepoUrl,
    branch: &str,
    credentials: Option<&Credentials>,
    limits: FetchLimits,
) -> Result<ObjectId, GitError> {
    let watch = Watch::start(limits)?;
    let wanted = format!("refs/heads/{branch}");
    let result = connect(repo, url, credentials, limits, &watch, |connection| {
        let options = gix::remote::ref_map::Options {
            prefix_from_spec_as_filter_on_remote: true,
            handshake_parameters: Vec::new(),
            extra_refspecs: vec![
                gix::refspec::parse(wanted.as_str().into(), Operation::Fetch)?.to_owned(),
            ],
        };
        let (map, _) = connection.ref_map(watch.progress(), options)?;
        Ok(map.remote_refs.iter().find_map(|r| match r {
            gix::protocol::handshake::Ref::Direct {
                full_ref_name,
                object,
            } if full_ref_name == wanted.as_str() => Some(*object),
            gix::protocol::handshake::Ref::Peeled {
                full_ref_name,
                object,
                ..
            } if full_ref_name == wanted.as_str() => Some(*object),
            _ => None,
        }))
    });
    watch.stop();
    let at = format!("reading branch {branch} of {}", url.text);
    match result {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(GitError::new(
            GitErrorKind::NotFound,
            format!("{at}: the server has no such branch"),
        )),
        Err(error) => Err(classify(&error, &at, url, limits, &watch)),
    }
}

/// Connect to `url` with credentials for its own origin only and the time limits, and hand the
/// connection to `then`.
fn connect<T>(
    repo: &gix::Repository,
    url: &RepoUrl,
    credentials: Option<&Credentials>,
    limits: FetchLimits,
    watch: &Watch,
    then: impl FnOnce(
        gix::remote::Connection<
            '_,
            '_,
            '_,
            Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
        >,
    ) -> gix::Result<T>,
) -> gix::Result<T> {
    let remote = repo
        .remote_at(url.url.clone())?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut connection = remote.connect(gix::remote::Direction::Fetch)?;
    let origin = Origin::of(&url.url);
    let identity = credentials.map(|c| gix::sec::identity::Account {
        username: c.username.clone(),
        password: c.password.clone(),
        oauth_refresh_token: None,
    });
    let shared = watch.shared.clone();
    connection
        .set_credentials(move |action| Ok(answer(action, &origin, identity.as_ref(), &shared)));
    if let Some(options) = transport_options(repo, url, limits)? {
        connection.set_transport_options(options);
    }
    then(connection)
}

fn run(
    repo: &gix::Repository,
    url: &RepoUrl,
    id: ObjectId,
    credentials: Option<&Credentials>,
    limits: FetchLimits,
    watch: &Watch,
) -> gix::Result<()> {
    connect(repo, url, credentials, limits, watch, |connection| {
        receive(connection, id, watch)
    })
}

fn receive(
    connection: gix::remote::Connection<
        '_,
        '_,
        '_,
        Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    >,
    id: ObjectId,
    watch: &Watch,
) -> gix::Result<()> {
    let pin = format!("{id}:{}", store::pin(id));
    let options = gix::remote::ref_map::Options {
        prefix_from_spec_as_filter_on_remote: true,
        handshake_parameters: Vec::new(),
        extra_refspecs: vec![
            gix::refspec::parse(pin.as_str().into(), Operation::Fetch)?.to_owned(),
            gix::refspec::parse(LS_REFS_FILTER.into(), Operation::Fetch)?.to_owned(),
        ],
    };
    connection
        .prepare_fetch(watch.progress(), options)?
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN))
        .with_write_packed_refs_only(true)
        .receive(watch.progress(), &watch.shared.interrupt)?;
    Ok(())
}

/// Scheme, host and port of a URL.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: gix::url::Scheme,
    host: Option<String>,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &gix::Url) -> Self {
        Self {
            scheme: url.scheme.clone(),
            host: url.host().map(str::to_ascii_lowercase),
            port: url.port_or_default(),
        }
    }
}

/// What the credential helper was asked, for the error sentence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Asked {
    #[default]
    Not,
    /// By the repository's origin, with no credentials to give.
    WithoutCredentials,
    /// By another origin (after a redirect): nothing given.
    ByOtherOrigin(String),
    /// By the repository's origin: given.
    Given,
}

/// The credential helper: the identity, only for a request to the repository's own origin.
/// Store and erase requests are ignored (nothing is kept).
fn answer(
    action: Action,
    origin: &Origin,
    identity: Option<&gix::sec::identity::Account>,
    shared: &Shared,
) -> Option<Outcome> {
    let Action::Get(context) = action else {
        return None;
    };
    let asking = context
        .url
        .as_ref()
        .and_then(|u| gix::url::parse(u.as_slice()).ok());
    let (asked, outcome) = match (asking, identity) {
        (Some(asking), _) if Origin::of(&asking) != *origin => {
            let other = Origin::of(&asking).to_string();
            tracing::info!(origin = %other, "git: not sending credentials to another origin than the repository's (a redirect)");
            (Asked::ByOtherOrigin(other), None)
        }
        (None, _) | (_, None) => (Asked::WithoutCredentials, None),
        (Some(_), Some(identity)) => (
            Asked::Given,
            Some(Outcome {
                identity: identity.clone(),
                next: context.into(),
            }),
        ),
    };
    *shared
        .asked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = asked;
    outcome
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme.as_str(),
            self.host.as_deref().unwrap_or("")
        )?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// HTTP options: redirects on the first request only (as git), the time limit on every request.
fn transport_options(
    repo: &gix::Repository,
    url: &RepoUrl,
    limits: FetchLimits,
) -> gix::Result<Option<Box<dyn std::any::Any>>> {
    let Some(mut options) = repo.transport_options(url.text.as_str(), None)? else {
        return Ok(None);
    };
    if let Some(http) = options.downcast_mut::<http::Options>() {
        http.follow_redirects = http::options::FollowRedirects::Initial;
        http.connect_timeout = Some(limits.timeout.min(Duration::from_secs(20)));
        let timeout = limits.timeout;
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                Ok(builder
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(20))))
            })),
            configure_request: None,
        };
        http.backend = Some(Arc::new(std::sync::Mutex::new(backend)));
    }
    Ok(Some(options))
}

/// One sentence for a failed fetch, and its kind.
fn classify(
    error: &gix::Error,
    at: &str,
    url: &RepoUrl,
    limits: FetchLimits,
    watch: &Watch,
) -> GitError {
    if watch.timed_out() {
        return GitError::new(
            GitErrorKind::Unreachable,
            format!("{at} took longer than {}s", limits.timeout.as_secs()),
        );
    }
    if watch.too_big() {
        return GitError::new(
            GitErrorKind::Refused,
            format!(
                "{at} received more than {} bytes, the limit",
                limits.max_bytes
            ),
        );
    }
    let all = one_line(
        &error
            .iter_errors()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    );
    tracing::debug!(error = %all, "git fetch failed");
    let asked = watch
        .shared
        .asked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let (kind, why) = kind_of(error, &all, &asked, &Origin::of(&url.url));
    // What a server says is its own text: bounded before it reaches a status or an Event.
    let why = at_most(&why, MAX_REASON);
    GitError::new(kind, format!("{at} failed: {why}"))
}

/// The kind, and the reason in words.
fn kind_of(
    error: &gix::Error,
    all: &str,
    asked: &Asked,
    origin: &Origin,
) -> (GitErrorKind, String) {
    use GitErrorKind::*;
    match asked {
        Asked::ByOtherOrigin(other) => {
            let why = format!(
                "a redirect led to {other}, which asks for credentials; they are sent only to {origin}"
            );
            return (Unauthorized, why);
        }
        Asked::WithoutCredentials => {
            return (
                Unauthorized,
                "the server asks for credentials and none are given".into(),
            );
        }
        Asked::Not | Asked::Given => {}
    }
    let http = error
        .iter_errors()
        .find_map(|e| e.downcast_ref::<reqwest::Error>());
    if let Some(http) = http {
        if http.is_timeout() {
            return (Unreachable, "the server did not answer in time".into());
        }
        if http.is_connect() {
            return (
                Unreachable,
                format!(
                    "could not connect: {}",
                    one_line(&error.probable_cause().to_string())
                ),
            );
        }
        if let Some(status) = http.status() {
            let kind = match status.as_u16() {
                401 | 403 => Unauthorized,
                404 => NotFound,
                500.. => Unreachable,
                _ => Refused,
            };
            let why = match status.as_u16() {
                401 => format!("the server refused the credentials ({status})"),
                403 => format!("the credentials may not read this repository ({status})"),
                404 => format!("no such repository ({status})"),
                _ => format!("the server answered {status}"),
            };
            return (kind, why);
        }
    }
    // The server's own words, from an `ERR` packet.
    if let Some((_, said)) = all.split_once("ERR ") {
        let said = said.split('"').next().unwrap_or(said).trim();
        let kind = if said.contains("not our ref") {
            NotFound
        } else {
            Refused
        };
        return (kind, format!("the server says: {said}"));
    }
    if all.contains("to indicate 'smart' protocol") {
        let why = "the server did not answer as a git server (a redirect that is not followed, or a web page)";
        return (Refused, why.into());
    }
    if error.is_unauthenticated() || error.is_permission_denied() {
        return (Unauthorized, "the server refused the credentials".into());
    }
    let cause = one_line(&error.probable_cause().to_string());
    if error.is_retryable() {
        return (Unreachable, cause);
    }
    (Refused, cause)
}

/// Collapse whitespace runs (newlines included) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use gix::error::ErrorExt as _;

    use super::*;

    fn repo_url(text: &str) -> RepoUrl {
        RepoUrl {
            text: text.into(),
            url: gix::url::parse(text.as_bytes()).expect("url"),
        }
    }

    #[test]
    fn what_a_server_says_is_classified_and_bounded() {
        let url = repo_url("https://git.example.com/shop/monorepo.git");
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").expect("id");
        let limits = FetchLimits::default();
        let watch = Watch::start(limits).expect("watch");
        watch.stop();
        let said = format!("upload-pack: not our ref {id} {}", "é".repeat(4000));
        let error = gix::error::Message::new(format!("Unknown header: \"ERR {said}\"")).raise();
        let at = format!("fetching commit {id} from {}", url.text);
        let error = classify(&error, &at, &url, limits, &watch);
        assert_eq!(error.kind(), GitErrorKind::NotFound);
        let message = error.to_string();
        assert!(message.starts_with(&format!(
            "fetching commit {id} from https://git.example.com/shop/monorepo.git failed: the server says: upload-pack: not our ref {id}"
        )), "{message}");
        assert!(message.len() < 700, "{}", message.len());

        let error = gix::error::Message::new("ERR access denied".to_string()).raise();
        let error = classify(&error, &at, &url, limits, &watch);
        assert_eq!(error.kind(), GitErrorKind::Refused, "{error}");
    }

    #[test]
    fn credentials_are_given_only_to_the_repository_origin() {
        let origin = Origin::of(&repo_url("https://git.example.com/shop/monorepo.git").url);
        let identity = gix::sec::identity::Account {
            username: "robot".into(),
            password: "secret".into(),
            oauth_refresh_token: None,
        };
        let watch = Watch::start(FetchLimits::default()).expect("watch");
        watch.stop();
        let ask = |url: &str| {
            let context = gix::credentials::protocol::Context {
                url: Some(url.into()),
                ..Default::default()
            };
            let given = answer(
                Action::Get(context),
                &origin,
                Some(&identity),
                &watch.shared,
            );
            let asked = watch.shared.asked.lock().expect("asked").clone();
            (given.map(|o| o.identity.password), asked)
        };
        let own = "https://git.example.com/shop/monorepo.git";
        assert_eq!(ask(own), (Some("secret".into()), Asked::Given));
        let same_port = "https://GIT.example.com:443/other/path.git";
        assert_eq!(ask(same_port).0, Some("secret".into()));
        for elsewhere in [
            "https://git.example.com:8443/shop/monorepo.git",
            "http://git.example.com/shop/monorepo.git",
            "https://evil.example.com/shop/monorepo.git",
        ] {
            let (given, asked) = ask(elsewhere);
            assert_eq!(given, None, "{elsewhere}");
            assert!(matches!(asked, Asked::ByOtherOrigin(_)), "{elsewhere}");
        }
        let context = gix::credentials::protocol::Context::default();
        assert!(answer(Action::Get(context), &origin, None, &watch.shared).is_none());
    }
}
