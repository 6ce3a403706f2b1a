//! Background fetches: one per (credentials, repository, revision), shared by every
//! ServiceBuild that points at that commit, run off the reconcile workers. A reconcile asks for
//! the inputs of its build and gets them at once when the commit is here, or `Pending` (the
//! fetch starts, or is already running); when the fetch ends, every ServiceBuild that waited is
//! named on the wake-up channel, and the controller reconciles it again.
//!
//! What one fetcher keeps is bounded: finished fetches are remembered up to [`MAX_ENTRIES`],
//! failures for [`FAILURE_TTL`] (a build that could not read its inputs runs anyway, so a
//! failure is retried only for later builds).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast};
use tracing::{debug, info};

use super::git::{Credentials, Fetched, GitCache, PathObject};
use super::key::{input_key, normalize};
use crate::act::origin::{Allowlist, Origin};
use crate::api::ServiceBuildSpec;
use crate::pipeline::observe::Inputs;

/// Fetches that run at once.
pub const DEFAULT_PARALLEL_FETCHES: usize = 4;
/// How long a failed fetch is remembered before a later build tries again.
pub const FAILURE_TTL: Duration = Duration::from_secs(60);
/// Finished fetches remembered (the commits stay in the on-disk cache either way).
pub const MAX_ENTRIES: usize = 4096;
/// Lookups of cached commits that run at once: a commit that 1000 ServiceBuilds wait for
/// wakes them together, and each lookup is a few milliseconds of blocking work.
const LOOKUPS: usize = 4;
/// Waiters named on the wake-up channel before a slow receiver misses some (it then finds the
/// commit at its next requeue).
const WAKE_CAPACITY: usize = 16_384;

/// Whose credentials read a repository: `namespace/secret`, or `namespace` for anonymous
/// reads. Every scope has its own copy of the repository, so a ServiceBuild never sees what
/// only another namespace's credentials could read.
pub fn scope(namespace: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => format!("{namespace}/{secret}"),
        None => namespace.to_owned(),
    }
}

/// A ServiceBuild waiting for a fetch: `(namespace, name)`.
pub type Waiter = (String, String);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FetchKey {
    scope: String,
    repository: String,
    revision: String,
}

#[derive(Debug)]
enum Entry {
    Running { waiters: Vec<Waiter> },
    Ready { at: Instant },
    Failed { message: String, at: Instant },
}

/// Fetches commits into the git cache in the background, once per commit.
pub struct Fetcher {
    cache: Arc<GitCache>,
    /// The origins inputs may be read from (`--git-allowed-origins`); empty allows all.
    allowed: Allowlist,
    entries: Mutex<HashMap<FetchKey, Entry>>,
    permits: Arc<Semaphore>,
    /// Lookups that run at once (each on a blocking thread).
    lookups: Arc<Semaphore>,
    wake: broadcast::Sender<Waiter>,
    fetches: std::sync::atomic::AtomicU64,
}

impl Fetcher {
    pub fn new(cache: GitCache, parallel: usize, allowed: Allowlist) -> Self {
        Self {
            cache: Arc::new(cache),
            allowed,
            entries: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            lookups: Arc::new(Semaphore::new(LOOKUPS)),
            wake: broadcast::channel(WAKE_CAPACITY).0,
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The ServiceBuilds to reconcile again because a fetch they waited for ended.
    pub fn subscribe(&self) -> broadcast::Receiver<Waiter> {
        self.wake.subscribe()
    }

    /// Fetches that went to the network (a commit already cached does not count).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The inputs of `spec` at its revision, read by `scope`'s credentials. `credentials` is
    /// awaited only when a fetch must start; its error is why the inputs cannot be read.
    pub async fn inputs<C>(
        self: &Arc<Self>,
        spec: &ServiceBuildSpec,
        scope: String,
        waiter: Waiter,
        credentials: C,
    ) -> Inputs
    where
        C: Future<Output = Result<Option<Credentials>, String>>,
    {
        let paths = match normalize(&spec.source.paths) {
            Ok(paths) => paths,
            Err(message) => return Inputs::Unreadable(message),
        };
        if let Err(message) = self.check_origin(&spec.source.repository) {
            return Inputs::Unreadable(message);
        }
        let key = FetchKey {
            scope,
            repository: spec.source.repository.clone(),
            revision: spec.source.revision.clone(),
        };
        let mut credentials = Some(credentials);
        // Twice at most: a commit evicted from the disk cache is fetched again.
        for _ in 0..2 {
            match self.state(&key, &waiter) {
                State::Waiting => return Inputs::Pending,
                State::Failed(message) => return Inputs::Unreadable(message),
                State::Start => {
                    let Some(credentials) = credentials.take() else {
                        return Inputs::Pending;
                    };
                    match credentials.await {
                        Ok(credentials) => self.start(key, credentials),
                        Err(message) => {
                            self.finish(&key, Err(message.clone()));
                            return Inputs::Unreadable(message);
                        }
                    }
                    return Inputs::Pending;
                }
                State::Ready => match self.lookup(&key, &paths).await {
                    Ok(objects) => {
                        let objects = paths.iter().cloned().zip(objects).collect();
                        return match input_key(spec, objects) {
                            Ok(key) => Inputs::Known(key),
                            Err(message) => Inputs::Unreadable(message),
                        };
                    }
                    Err(error) => {
                        debug!(%error, "a cached commit is gone; fetching it again");
                        self.forget(&key);
                    }
                },
            }
        }
        Inputs::Pending
    }

    /// The objects at `paths` of a fetched commit, read off the async workers.
    async fn lookup(&self, key: &FetchKey, paths: &[String]) -> Result<Vec<PathObject>, String> {
        let permit = self.lookups.clone().acquire_owned().await;
        let cache = self.cache.clone();
        let (key, paths) = (key.clone(), paths.to_vec());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            cache.lookup(&key.scope, &key.repository, &key.revision, &paths)
        })
        .await
        .map_err(|error| format!("reading the git cache stopped: {error}"))?
        .map_err(|error| error.to_string())
    }

    /// The commit at the head of `branch` of `repository`, asked of the server now.
    pub async fn branch_head(
        &self,
        scope: String,
        repository: String,
        branch: String,
        credentials: Option<Credentials>,
    ) -> Result<String, String> {
        self.check_origin(&repository)?;
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            cache.branch_head(&scope, &repository, &branch, credentials.as_ref())
        })
        .await
        .map_err(|error| format!("reading the branch stopped: {error}"))?
        .map_err(|error| error.to_string())
    }

    /// Whether the admin's allowlist lets monoship read `repository` (checked before any
    /// request, with the same sentence whether or not the server exists).
    fn check_origin(&self, repository: &str) -> Result<(), String> {
        if self.allowed.allows_all() {
            return Ok(());
        }
        let origin = reqwest::Url::parse(repository)
            .ok()
            .and_then(|url| Origin::of(&url));
        match origin {
            Some(origin) if self.allowed.allows(&origin) => Ok(()),
            _ => Err(format!(
                "{repository} is not in the origins inputs may be read from \
                 (--git-allowed-origins: {})",
                self.allowed
            )),
        }
    }

    fn state(&self, key: &FetchKey, waiter: &Waiter) -> State {
        let Ok(mut entries) = self.entries.lock() else {
            return State::Failed("the fetcher's state is unusable".to_owned());
        };
        match entries.get_mut(key) {
            Some(Entry::Ready { .. }) => State::Ready,
            Some(Entry::Running { waiters }) => {
                if !waiters.contains(waiter) {
                    waiters.push(waiter.clone());
                }
                State::Waiting
            }
            Some(Entry::Failed { message, at }) if at.elapsed() < FAILURE_TTL => {
                State::Failed(message.clone())
            }
            _ => {
                entries.insert(
                    key.clone(),
                    Entry::Running {
                        waiters: vec![waiter.clone()],
                    },
                );
                State::Start
            }
        }
    }

    fn start(self: &Arc<Self>, key: FetchKey, credentials: Option<Credentials>) {
        let fetcher = self.clone();
        tokio::spawn(async move {
            let permit = fetcher.permits.clone().acquire_owned().await;
            let cache = fetcher.cache.clone();
            let fetch_key = key.clone();
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                cache.ensure(
                    &fetch_key.scope,
                    &fetch_key.repository,
                    &fetch_key.revision,
                    credentials.as_ref(),
                )
            })
            .await;
            let result = match result {
                Ok(Ok(fetched)) => {
                    if fetched == Fetched::Fetched {
                        fetcher
                            .fetches
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        info!(repository = %key.repository, revision = %key.revision,
                            seconds = started.elapsed().as_secs_f64(), "fetched");
                    }
                    Ok(())
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(format!("the fetch stopped: {error}")),
            };
            fetcher.finish(&key, result);
        });
    }

    /// Record how a fetch ended and wake everyone who waited for it.
    fn finish(&self, key: &FetchKey, result: Result<(), String>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let at = Instant::now();
        let entry = match result {
            Ok(()) => Entry::Ready { at },
            Err(message) => Entry::Failed { message, at },
        };
        let waiters = match entries.insert(key.clone(), entry) {
            Some(Entry::Running { waiters }) => waiters,
            _ => Vec::new(),
        };
        if entries.len() > MAX_ENTRIES {
            prune(&mut entries);
        }
        drop(entries);
        for waiter in waiters {
            // No receiver (no controller runs): the waiter finds the commit when it is next
            // reconciled.
            let _ = self.wake.send(waiter);
        }
    }

    fn forget(&self, key: &FetchKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

enum State {
    Ready,
    Waiting,
    Failed(String),
    Start,
}

/// Drop expired failures, then the oldest finished fetches, down to three quarters of
/// [`MAX_ENTRIES`]; running fetches stay.
fn prune(entries: &mut HashMap<FetchKey, Entry>) {
    entries.retain(|_, e| !matches!(e, Entry::Failed { at, .. } if at.elapsed() >= FAILURE_TTL));
    let keep = MAX_ENTRIES * 3 / 4;
    if entries.len() <= keep {
        return;
    }
    let mut finished: Vec<(Instant, FetchKey)> = entries
        .iter()
        .filter_map(|(k, e)| match e {
            Entry::Ready { at } | Entry::Failed { at, .. } => Some((*at, k.clone())),
            Entry::Running { .. } => None,
        })
        .collect();
    finished.sort_by_key(|(at, _)| *at);
    let excess = entries.len() - keep;
    for (_, key) in finished.into_iter().take(excess) {
        entries.remove(&key);
    }
}
