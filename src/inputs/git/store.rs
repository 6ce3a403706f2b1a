//! The repository directories of the cache on disk: create, open, measure, retire, and read
//! trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
/// Directories are read through `trees`.
pub(super) fn lookup(
    repo: &gix::Repository,
    trees: &Trees,
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
    let tree = object
        .into_commit()
        .tree_id()
        .map_err(|e| damaged(&e))?
        .detach();
    paths
        .iter()
        .map(|path| walk(repo, trees, tree, path).map_err(|e| e.unwrap_or_else(|e| damaged(&e))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The most directory entries [`Trees`] keeps (a few hundred KiB).
const MAX_TREE_ENTRIES: usize = 16 * 1024;

/// Directories as read from the repository, by tree id: every ServiceBuild of a commit walks
/// through the same few (the root, `services/`), which are then decompressed and parsed once,
/// not once per ServiceBuild. Tree ids name their content, so an entry never goes stale; when
/// full, it starts over.
#[derive(Default)]
pub(super) struct Trees {
    /// The directories, and how many entries they hold together.
    cached: std::sync::Mutex<(TreeMap, usize)>,
}

type TreeMap = std::collections::HashMap<ObjectId, Arc<[TreeEntry]>>;

pub(super) struct TreeEntry {
    name: Box<[u8]>,
    mode: gix::object::tree::EntryMode,
    id: ObjectId,
}

impl Trees {
    fn entries(
        &self,
        repo: &gix::Repository,
        id: ObjectId,
    ) -> Result<Arc<[TreeEntry]>, gix::Error> {
        if let Some(found) = self.lock().0.get(&id) {
            return Ok(found.clone());
        }
        let tree = repo.find_tree(id)?;
        let decoded = tree.decode()?;
        let entries: Arc<[TreeEntry]> = decoded
            .entries
            .iter()
            .map(|entry| TreeEntry {
                name: entry.filename.to_vec().into_boxed_slice(),
                mode: entry.mode,
                id: entry.oid.to_owned(),
            })
            .collect();
        let mut cached = self.lock();
        if cached.1 + entries.len() > MAX_TREE_ENTRIES {
            cached.0.clear();
            cached.1 = 0;
        }
        if entries.len() <= MAX_TREE_ENTRIES {
            cached.1 += entries.len();
            // Another lookup may have read the same directory meanwhile.
            if let Some(twin) = cached.0.insert(id, entries.clone()) {
                cached.1 -= twin.len();
            }
        }
        Ok(entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (TreeMap, usize)> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Follow `path` one component at a time from the tree `root`. A path through a file, link or
/// submodule is absent (a gitlink's commit is not in this repository).
fn walk(
    repo: &gix::Repository,
    trees: &Trees,
    root: ObjectId,
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
        return Ok(PathObject::Tree(root.to_string()));
    };
    let mut tree = root;
    for name in parents {
        let entries = trees.entries(repo, tree).map_err(Err)?;
        match entries.iter().find(|e| *e.name == *name.as_bytes()) {
            Some(entry) if entry.mode.is_tree() => tree = entry.id,
            _ => return Ok(PathObject::Absent),
        }
    }
    let entries = trees.entries(repo, tree).map_err(Err)?;
    let Some(entry) = entries.iter().find(|e| *e.name == *last.as_bytes()) else {
        return Ok(PathObject::Absent);
    };
    let id = entry.id.to_string();
    Ok(if entry.mode.is_tree() {
        PathObject::Tree(id)
    } else if entry.mode.is_commit() {
        PathObject::Submodule(id)
    } else {
        PathObject::Blob(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn each_directory_walked_through_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        for file in ["services/a/main.go", "services/b/main.go", "README"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "one"]);
        let id = ObjectId::from_hex(git(dir.path(), &["rev-parse", "HEAD"]).as_bytes()).unwrap();
        let tree_of = |path: &str| git(dir.path(), &["rev-parse", &format!("HEAD:{path}")]);
        let repo = open(&dir.path().join(".git")).unwrap();
        let trees = Trees::default();

        let paths: Vec<String> = [
            "services/a",
            "services/b/main.go",
            "README",
            "nope/x",
            "README/x",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..2 {
            let found = lookup(&repo, &trees, id, &paths).unwrap().unwrap();
            assert_eq!(
                found,
                [
                    PathObject::Tree(tree_of("services/a")),
                    PathObject::Blob(tree_of("services/b/main.go")),
                    PathObject::Blob(tree_of("README")),
                    PathObject::Absent,
                    PathObject::Absent,
                ]
            );
        }
        // The root, services/ and services/b/, each once: 2 + 2 + 1 entries.
        let cached = trees.lock();
        assert_eq!((cached.0.len(), cached.1), (3, 5));
    }
}
