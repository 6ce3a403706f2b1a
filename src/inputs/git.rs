//! Reading a commit's tree from the controller, with gix: one small bare repository per
//! repository URL on local disk, filled by shallow fetches of single commits by id.
//!
//! [`GitCache::ensure`] makes a commit present (a depth-1 fetch by id, pinned under
//! `refs/monoship/<id>` so the next fetch offers it as a have and receives only what changed);
//! [`GitCache::lookup`] reads object ids at paths of its tree without touching the network. An id
//! is content-addressed: equal tree ids at a path mean equal content below it.
//!
//! Both calls block; run them off the async workers (`tokio::task::spawn_blocking`).
//!
//! What is bounded:
//! - disk: after each fetch, while the cache is above `max_bytes`, the least recently used
//!   repository directories that no call is using are deleted. A repository in use is never
//!   deleted, so the cache can stay above the bound while the one being used is larger.
//! - one fetch: a timeout (every HTTP request, and the whole fetch through gix's interrupt flag)
//!   and a cap on the pack bytes received ([`FetchLimits`], by default the cache's `max_bytes`).
//!   The ref listing before the pack is not counted (it is a few bytes: only a `ref-prefix` that
//!   matches nothing is asked for).
//! - packs per repository: every fetch adds a pack file and nothing repacks; a repository
//!   directory with [`MAX_PACKS`] packs is emptied before the next fetch, which then starts over.
//!
//! Not bounded: the memory gix uses to index a received pack (proportional to its object
//! count), and a `file://` fetch (a local `git-upload-pack` process; meant for tests).
//!
//! Credentials go only to the repository's own origin (scheme, host and port): gix asks for
//! them after a 401, and the answer is empty when the asking URL is another origin (after a
//! redirect). gix follows only the first request's redirects (`http.followRedirects=initial`)
//! and reqwest drops `Authorization` on a hop to another origin. Over plain `http://`
//! credentials are refused unless [`GitCache::allow_credentials_over_http`] is set (tests).
//! Credentials are never written to disk; the URL, which must not carry them, is.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

mod fetch;
mod store;
mod url;
mod watch;

use url::{RepoUrl, parse_revision};

pub use fetch::FetchLimits;

/// Number of pack files at which a repository directory is emptied before the next fetch.
pub const MAX_PACKS: usize = 64;

/// Basic-auth credentials for one repository (from a kubernetes.io/basic-auth Secret).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a path of a commit's tree is, with hex object ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathObject {
    /// A directory: the tree's id.
    Tree(String),
    /// A regular file, an executable file or a symbolic link: the blob's id (a link's blob holds
    /// its target). The mode is not part of the id, so `chmod +x` alone keeps the id.
    Blob(String),
    /// Nothing at this path (also a path that runs through a file, link or submodule).
    Absent,
    /// A submodule (gitlink): the commit id it records.
    Submodule(String),
}

/// What [`GitCache::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The commit was present; nothing was fetched.
    Already,
    /// A fetch ran and brought the commit.
    Fetched,
}

/// Why a git call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitErrorKind {
    /// No connection, a timeout, or a server error (5xx): may pass.
    Unreachable,
    /// 401/403, no credentials where the server wants them, or a redirect to another origin
    /// that wants them (they are not sent there).
    Unauthorized,
    /// The server does not have the commit (or the repository).
    NotFound,
    /// The server or this cache refused the fetch: a redirect that is not followed (after the
    /// first request), an answer that is not git's, too many bytes, credentials over plain http.
    Refused,
    /// A URL scheme inputs are not read over (ssh, git, ...).
    Unsupported,
    /// The revision is not a full commit id, the URL carries credentials or does not parse, or a
    /// path leaves the tree.
    Invalid,
    /// The local cache: disk I/O, a commit not fetched yet, a damaged repository.
    Local,
}

/// A failed git call: one readable sentence (no credentials in it) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitError {
    kind: GitErrorKind,
    message: String,
}

impl GitError {
    pub(crate) fn new(kind: GitErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> GitErrorKind {
        self.kind
    }
}

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GitError {}

/// One repository directory. Its lock serializes fetches (write) against lookups (read) and
/// keeps eviction (a `try_write`) away from a directory in use.
struct Entry {
    dir: PathBuf,
    url: String,
    slot: RwLock<Slot>,
    last_used: AtomicU64,
    size: AtomicU64,
    /// The repository as last opened for lookups, shared by them: opening it (config, refs,
    /// pack indices) costs more than a lookup. Dropped by every fetch.
    opened: Mutex<Option<gix::ThreadSafeRepository>>,
    /// Directories read for lookups, shared by them.
    trees: store::Trees,
}

impl Entry {
    /// The repository for a lookup, opened once and shared until the next fetch.
    fn repository(&self) -> Result<gix::Repository, GitError> {
        let mut opened = lock(&self.opened);
        if let Some(repo) = opened.as_ref() {
            return Ok(repo.to_thread_local());
        }
        let repo = store::open(&self.dir)?;
        *opened = Some(repo.clone().into_sync());
        Ok(repo)
    }
}

#[derive(Default)]
struct Slot {
    /// Set by eviction: the directory is gone; look the entry up again.
    evicted: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read(slot: &RwLock<Slot>) -> RwLockReadGuard<'_, Slot> {
    slot.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(slot: &RwLock<Slot>) -> RwLockWriteGuard<'_, Slot> {
    slot.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Local git repositories for reading commit trees, bounded on disk. `Send + Sync`; share it
/// through an `Arc`.
pub struct GitCache {
    root: PathBuf,
    max_bytes: u64,
    limits: FetchLimits,
    credentials_over_http: bool,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Logical clock for least-recently-used order.
    clock: AtomicU64,
}

impl GitCache {
    /// `dir`: cache root (created if missing; repository directories already in it are kept
    /// and counted); `max_bytes`: the on-disk bound.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Result<Self, GitError> {
        std::fs::create_dir_all(&dir).map_err(|e| local(&dir, "create", &e))?;
        let adopted = store::adopt(&dir);
        let clock = adopted.len() as u64;
        let entries = adopted
            .into_iter()
            .enumerate()
            .map(|(order, found)| {
                let entry = Entry {
                    dir: found.dir,
                    url: found.url,
                    slot: RwLock::new(Slot::default()),
                    last_used: AtomicU64::new(order as u64),
                    size: AtomicU64::new(found.size),
                    opened: Mutex::new(None),
                    trees: store::Trees::default(),
                };
                (found.key, Arc::new(entry))
            })
            .collect();
        Ok(Self {
            root: dir,
            max_bytes,
            limits: FetchLimits {
                max_bytes,
                ..FetchLimits::default()
            },
            credentials_over_http: false,
            entries: Mutex::new(entries),
            clock: AtomicU64::new(clock),
        })
    }

    /// Bound each fetch: total time and pack bytes received.
    pub fn with_fetch_limits(mut self, limits: FetchLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Allow sending credentials over plain `http://` (tests against a loopback server).
    pub fn allow_credentials_over_http(mut self, allow: bool) -> Self {
        self.credentials_over_http = allow;
        self
    }

    /// Bytes the repository directories take on disk, as last measured.
    pub fn size_on_disk(&self) -> u64 {
        lock(&self.entries)
            .values()
            .map(|e| e.size.load(Ordering::SeqCst))
            .sum()
    }

    /// The directory that holds `repository`, whether or not it exists yet.
    pub fn repository_dir(&self, scope: &str, repository: &str) -> Result<PathBuf, GitError> {
        Ok(self.root.join(RepoUrl::parse(repository)?.key(scope)))
    }

    /// Blocking. Make `revision` (a full commit id) of `repository` present locally, fetching it
    /// shallowly (depth 1, by id, pinned under `refs/monoship/<id>`) when it is not. Calls for
    /// one repository are serialized, so concurrent calls for one commit fetch it once.
    ///
    /// `scope` names whose credentials read the repository: each scope has a directory of its
    /// own, so what one scope's credentials fetched is never read in another.
    pub fn ensure(
        &self,
        scope: &str,
        repository: &str,
        revision: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Fetched, GitError> {
        let url = RepoUrl::parse(repository)?;
        let id = parse_revision(revision)?;
        self.check_credentials(&url, repository, credentials)?;
        let key = url.key(scope);
        let outcome = loop {
            let entry = self.entry(&key, &url);
            let slot = write(&entry.slot);
            if slot.evicted {
                continue;
            }
            entry.last_used.store(self.tick(), Ordering::SeqCst);
            let mut repo = store::open_or_init(&entry.dir, &url.text)?;
            if store::is_pinned(&repo, id) {
                break Fetched::Already;
            }
            if store::pack_count(&entry.dir) >= MAX_PACKS {
                tracing::info!(repository = %url.text, packs = MAX_PACKS, "git cache: starting the repository over");
                repo = store::reset(&entry.dir, &url.text)?;
            }
            *lock(&entry.opened) = None;
            let result = fetch::fetch(&repo, &url, id, credentials, self.limits);
            entry
                .size
                .store(store::dir_size(&entry.dir), Ordering::SeqCst);
            result?;
            if !store::is_pinned(&repo, id) {
                return Err(GitError::new(
                    GitErrorKind::NotFound,
                    format!("{} did not send commit {id}", url.text),
                ));
            }
            break Fetched::Fetched;
        };
        if outcome == Fetched::Fetched {
            self.evict(&key);
        }
        Ok(outcome)
    }

    /// Blocking, local only: the object at each repo-relative path of the commit's tree (`""` or
    /// `"."` = the root tree; `a/b`, `./a/b/` alike). Err if the commit is not present.
    pub fn lookup(
        &self,
        scope: &str,
        repository: &str,
        revision: &str,
        paths: &[String],
    ) -> Result<Vec<PathObject>, GitError> {
        let url = RepoUrl::parse(repository)?;
        let id = parse_revision(revision)?;
        let missing = || {
            GitError::new(
                GitErrorKind::Local,
                format!("commit {id} of {} has not been fetched", url.text),
            )
        };
        loop {
            let Some(entry) = lock(&self.entries).get(&url.key(scope)).cloned() else {
                return Err(missing());
            };
            let slot = read(&entry.slot);
            if slot.evicted {
                continue;
            }
            entry.last_used.store(self.tick(), Ordering::SeqCst);
            let repo = entry.repository()?;
            return store::lookup(&repo, &entry.trees, id, paths)?.ok_or_else(missing);
        }
    }

    /// Blocking: the commit at the head of `branch`, asked of the server (nothing is fetched).
    pub fn branch_head(
        &self,
        scope: &str,
        repository: &str,
        branch: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, GitError> {
        let url = RepoUrl::parse(repository)?;
        self.check_credentials(&url, repository, credentials)?;
        let entry = loop {
            let entry = self.entry(&url.key(scope), &url);
            if !read(&entry.slot).evicted {
                break entry;
            }
        };
        let slot = read(&entry.slot);
        let repo = store::open_or_init(&entry.dir, &url.text)?;
        let head = fetch::branch_head(&repo, &url, branch, credentials, self.limits)?;
        drop(slot);
        Ok(head.to_string())
    }

    /// Credentials go over plain `http://` only when the cache allows it (tests).
    fn check_credentials(
        &self,
        url: &RepoUrl,
        repository: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), GitError> {
        if credentials.is_some() && url.is_plain_http() && !self.credentials_over_http {
            return Err(GitError::new(
                GitErrorKind::Refused,
                format!(
                    "credentials are not sent over plain http ({repository}); use an https URL"
                ),
            ));
        }
        Ok(())
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn entry(&self, key: &str, url: &RepoUrl) -> Arc<Entry> {
        lock(&self.entries)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Entry {
                    dir: self.root.join(key),
                    url: url.text.clone(),
                    slot: RwLock::new(Slot::default()),
                    last_used: AtomicU64::new(0),
                    size: AtomicU64::new(0),
                    opened: Mutex::new(None),
                    trees: store::Trees::default(),
                })
            })
            .clone()
    }

    /// Delete least-recently-used repository directories nobody uses (never `keep`) until the
    /// cache is within its bound.
    fn evict(&self, keep: &str) {
        let mut doomed = Vec::new();
        let total = {
            let mut entries = lock(&self.entries);
            let mut total: u64 = entries
                .values()
                .map(|e| e.size.load(Ordering::SeqCst))
                .sum();
            let mut candidates: Vec<(String, Arc<Entry>)> = entries
                .iter()
                .filter(|(key, _)| key.as_str() != keep)
                .map(|(key, entry)| (key.clone(), entry.clone()))
                .collect();
            candidates.sort_by_key(|(_, entry)| entry.last_used.load(Ordering::SeqCst));
            for (key, entry) in candidates {
                if total <= self.max_bytes {
                    break;
                }
                let mut slot = match entry.slot.try_write() {
                    Ok(slot) => slot,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                };
                slot.evicted = true;
                entries.remove(&key);
                let size = entry.size.load(Ordering::SeqCst);
                total = total.saturating_sub(size);
                tracing::info!(repository = %entry.url, bytes = size, bound = self.max_bytes, "git cache: evicted the least recently used repository");
                // Renamed while the map is locked, so a new entry for this URL starts empty.
                doomed.push(store::retire(&self.root, &entry.dir));
            }
            total
        };
        for dir in doomed.into_iter().flatten() {
            store::remove(&dir);
        }
        if total > self.max_bytes {
            tracing::info!(
                bytes = total,
                bound = self.max_bytes,
                "git cache: above its bound; the repositories left are in use"
            );
        }
    }
}

fn local(path: &Path, action: &str, error: &std::io::Error) -> GitError {
    GitError::new(
        GitErrorKind::Local,
        format!("git cache: could not {action} {}: {error}", path.display()),
    )
}
