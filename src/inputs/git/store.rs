//! The repository directories of the cache on disk: create, open, measure, retire, and read
//! trees.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gix::ObjectId;

use super::{GitError, GitErrorKind, PathObject, local};

/// A file in each repository directory holding the URL it caches (for logs after a restart).
const URL_FILE: &str = "monoship-url";
/// Infix of a directory being deleted by eviction.
const RETIRED: &str = ".evicted-";

/// A repository directory found in the cache root at start.
pub(super) struct Found {
    pub key: String,
    pub dir: PathBuf,
    pub url: String,
    pub size: u64,
}

/// The repository directories under `root`, oldest first (by modification time). Leftovers of
/// an eviction that did not finish are deleted.
pub(super) fn adopt(root: &Path) -> Vec<Found> {
    let Ok(listing) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for item in listing.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let dir = item.path();
        if name.contains(RETIRED) {
            remove(&dir);
            continue;
        }
        let is_key = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_key || !dir.is_dir() {
            continue;
        }
        let modified = item
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let url = std::fs::read_to_string(dir.join(URL_FILE)).unwrap_or_default();
        let size = dir_size(&dir);
        found.push((
            modified,
            Found {
                key: name,
                dir,
                url,
                size,
            },
        ));
    }
    found.sort_by_key(|(modified, _)| *modified);
    found.into_iter().map(|(_, found)| found).collect()
}

fn options() -> gix::open::Options {
    // Only the repository's own config: no system/global config, no environment.
    gix::open::Options::isolated()
}

pub(super) fn open(dir: &Path) -> Result<gix::Repository, GitError> {
    gix::open_opts(dir, options()).map_err(|e| {
        GitError::new(
            GitErrorKind::Local,
            format!("git cache: could not open {}: {e}", dir.display()),
        )
    })
}

/// Open the repository in `dir`, creating it when missing and starting over when it cannot be
/// opened.
pub(super) fn open_or_init(dir: &Path, url: &str) -> Result<gix::Repository, GitError> {
    if dir.join("HEAD").is_file() {
        match open(dir) {
            Ok(repo) => return Ok(repo),
            Err(error) => {
                tracing::info!(repository = %url, %error, "git cache: starting a damaged repository over");
                return reset(dir, url);
            }
        }
    }
    init(dir, url)
}

fn init(dir: &Path, url: &str) -> Result<gix::Repository, GitError> {
    std::fs::create_dir_all(dir).map_err(|e| local(dir, "create", &e))?;
    let repo = gix::ThreadSafeRepository::init_opts(
        dir,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        options(),
    )
    .map_err(|e| {
        GitError::new(
            GitErrorKind::Local,
            format!(
                "git cache: could not create a repository in {}: {e}",
                dir.display()
            ),
        )
    })?;
    let url_file = dir.join(URL_FILE);
    std::fs::write(&url_file, url).map_err(|e| local(&url_file, "write", &e))?;
    Ok(repo.into())
}

/// Delete `dir` and create an empty repository in it.
pub(super) fn reset(dir: &Path, url: &str) -> Result<gix::Repository, GitError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(local(dir, "delete", &e)),
    }
    init(dir, url)
}

/// The pin ref name of a commit.
pub(super) fn pin(id: ObjectId) -> String {
    format!("refs/monoship/{id}")
}

/// The commit was fetched whole: its pin exists (written after the pack) and points at it.
pub(super) fn is_pinned(repo: &gix::Repository, id: ObjectId) -> bool {
    match repo.try_find_reference(pin(id).as_str()) {
        Ok(Some(reference)) => {
            reference.target().try_id() == Some(id.as_ref()) && repo.has_object(id)
        }
        _ => false,
    }
}

pub(super) fn pack_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("objects").join("pack"))
        .map(|listing| {
            listing
                .flatten()
                .filter(|item| item.path().extension().is_some_and(|ext| ext == "pack"))
                .count()
        })
        .unwrap_or(0)
}

/// Bytes of the regular files below `dir` (links not followed; unreadable parts count 0).
pub(super) fn dir_size(dir: &Path) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .map(|item| match item.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&item.path()),
            Ok(kind) if kind.is_file() => item.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Move `dir` aside (to be deleted by [`remove`]); deletes it at once if it cannot be moved.
pub(super) fn retire(root: &Path, dir: &Path) -> Option<PathBuf> {
    static RETIREMENTS: AtomicU64 = AtomicU64::new(0);
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let n = RETIREMENTS.fetch_add(1, Ordering::SeqCst);
    let aside = root.join(format!("{name}{RETIRED}{}-{n}", std::process::id()));
    match std::fs::rename(dir, &aside) {
        Ok(()) => Some(aside),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => {
            remove(dir);
            None
        }
    }
}

pub(super) fn remove(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "git cache: could not delete a directory");
    }
}

/// The objects at `paths` of commit `id`'s tree, or `None` when the commit is not present.
pub(super) fn lookup(
    repo: &gix::Repository,
    id: ObjectId,
    paths: &[String],
) -> Result<Option<Vec<PathObject>>, GitError> {
    let damaged = |e: &dyn std::fmt::Display| {
        GitError::new(
            GitErrorKind::Local,
            format!("git cache: could not read commit {id}: {e}"),
        )
    };
    let object = match repo.try_find_object(id) {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(None),
        Err(e) => return Err(damaged(&e)),
    };
    if object.kind != gix::object::Kind::Commit {
        return Err(GitError::new(
            GitErrorKind::Invalid,
            format!("{id} is a {}, not a commit", object.kind),
        ));
    }
    let tree = object.into_commit().tree().map_err(|e| damaged(&e))?;
    paths
        .iter()
        .map(|path| walk(repo, &tree, path).map_err(|e| e.unwrap_or_else(|e| damaged(&e))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Follow `path` one component at a time from `root`. A path through a file, link or
/// submodule is absent (a gitlink's commit is not in this repository).
fn walk(
    repo: &gix::Repository,
    root: &gix::Tree<'_>,
    path: &str,
) -> Result<PathObject, Result<GitError, gix::Error>> {
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if components.contains(&"..") {
        return Err(Ok(GitError::new(
            GitErrorKind::Invalid,
            format!("path {path:?} leaves the repository's tree"),
        )));
    }
    let Some((last, parents)) = components.split_last() else {
        return Ok(PathObject::Tree(root.id.to_string()));
    };
    let mut tree = root.clone();
    for name in parents {
        let entry = match tree.lookup_entry([name.as_bytes()]).map_err(Err)? {
            Some(entry) if entry.mode().is_tree() => entry,
            _ => return Ok(PathObject::Absent),
        };
        tree = repo.find_tree(entry.object_id()).map_err(Err)?;
    }
    let Some(entry) = tree.lookup_entry([last.as_bytes()]).map_err(Err)? else {
        return Ok(PathObject::Absent);
    };
    let id = entry.object_id().to_string();
    let mode = entry.mode();
    Ok(if mode.is_tree() {
        PathObject::Tree(id)
    } else if mode.is_commit() {
        PathObject::Submodule(id)
    } else {
        PathObject::Blob(id)
    })
}
