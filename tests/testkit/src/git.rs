//! Throwaway git repositories for tests: [`Monorepo`] (a work tree with two services) and
//! [`GitRepo`] (a bare repository, as a server holds it, built commit by commit with plumbing).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A git repository with `services/banana/` and `services/orange/`, and one commit.
pub struct Monorepo {
    dir: tempfile::TempDir,
}

const FIXED_DATE: &str = "2024-01-01T00:00:00Z";

impl Monorepo {
    /// Create the repository with both services and an initial commit.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the monorepo");
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        // Let `git fetch --depth 1 URL <commit>` ask for any commit by id.
        repo.git(&["config", "uploadpack.allowReachableSHA1InWant", "true"]);
        repo.git(&["config", "uploadpack.allowAnySHA1InWant", "true"]);
        repo.git(&["config", "uploadpack.allowTipSHA1InWant", "true"]);
        repo.write("README.md", "A monorepo for monoship tests.\n");
        repo.write("services/banana/main.sh", "#!/bin/sh\necho banana\n");
        repo.write("services/banana/config.txt", "color=yellow\n");
        repo.write("services/banana/data/fruit.txt", "banana\n");
        repo.write("services/orange/main.sh", "#!/bin/sh\necho orange\n");
        repo.write("services/orange/config.txt", "color=orange\n");
        repo.write("services/orange/data/fruit.txt", "orange\n");
        repo.commit("Add banana and orange");
        repo
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `file://` URL for `git fetch --depth 1 URL <commit>`.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Write `content` to `path` (relative to the repository), creating directories.
    pub fn write(&self, path: &str, content: &str) {
        let path = self.dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(path, content).expect("write file");
    }

    /// Stage everything and commit; returns the full commit id. Allows empty commits.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// The full id of `HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Run git in the repository with a fixed identity and dates; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(self.dir.path(), args, None)
    }
}

impl Default for Monorepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Run the real `git` in `dir` with a fixed identity and dates, no system or global config
/// (`HOME` is `dir`), and `stdin` fed to it; returns stdout. Panics when git fails.
fn run_git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    run_git_env(dir, args, stdin, &[])
}

fn run_git_env(dir: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &Path)]) -> String {
    let mut command = Command::new("git");
    command
        .args(["-c", "user.name=Monoship Test"])
        .args(["-c", "user.email=test@monoship.invalid"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", FIXED_DATE)
        .env("GIT_COMMITTER_DATE", FIXED_DATE)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run git");
    // Written from a thread of its own while the output is read: git may answer (hash-object
    // prints one id per path) before it has read all its input, and both pipes are bounded.
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("git stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || pipe.write_all(&bytes))
    });
    let output = child.wait_with_output().expect("wait for git");
    if let Some(writer) = writer {
        writer
            .join()
            .expect("the stdin writer")
            .expect("write to git");
    }
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One change to the tree of the next commit of a [`GitRepo`].
#[derive(Clone, Debug)]
pub enum Change {
    /// A regular file (mode 100644) with this content.
    File(String, String),
    /// An executable file (mode 100755).
    Executable(String, String),
    /// A symbolic link (mode 120000) to this target.
    Symlink(String, String),
    /// A submodule entry (gitlink, mode 160000) at this commit id. The commit need not exist.
    Gitlink(String, String),
    /// Remove the path (a file, link or gitlink; a directory with everything under it).
    Delete(String),
}

/// A bare repository, as a server keeps it, whose `main` branch grows with [`GitRepo::commit`].
/// Commits are made with plumbing (`hash-object`, `update-index` on a private index,
/// `write-tree`, `commit-tree`, `update-ref`), with a fixed identity and date, so the same
/// changes in the same order give the same commit ids. No `uploadpack.*` setting is made: a
/// protocol v2 client may fetch any commit by id (see the tests).
pub struct GitRepo {
    dir: PathBuf,
    http_url: Option<String>,
    /// Keeps a repository made by [`GitRepo::new`] alive.
    _temp: Option<tempfile::TempDir>,
}

impl GitRepo {
    /// A bare repository in a temp directory of its own, reachable by `file://` only.
    pub fn new(name: &str) -> Self {
        let temp = tempfile::tempdir().expect("temp dir for a bare repository");
        let mut repo = Self::create(temp.path(), name, None);
        repo._temp = Some(temp);
        repo
    }

    /// Create `<root>/<name>.git` (bare, `main` branch) with no commits yet; `http_url` is where a
    /// server serves it.
    pub(crate) fn create(root: &Path, name: &str, http_url: Option<String>) -> Self {
        let dir = root.join(format!("{name}.git"));
        std::fs::create_dir_all(&dir).expect("create the bare repository directory");
        run_git(
            &dir,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
            None,
        );
        Self {
            dir,
            http_url,
            _temp: None,
        }
    }

    /// The bare repository's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `http://127.0.0.1:PORT/<name>.git` when made by a [`crate::git_server::GitServer`].
    pub fn http_url(&self) -> String {
        self.http_url
            .clone()
            .expect("this repository is not served over HTTP")
    }

    /// `file:///.../<name>.git`.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Commit file changes on top of `main`: `Some(content)` writes a regular file, `None`
    /// deletes the path. Returns the full commit id.
    pub fn commit(&self, changes: &[(&str, Option<&str>)], message: &str) -> String {
        let changes: Vec<Change> = changes
            .iter()
            .map(|(path, content)| match content {
                Some(content) => Change::File(path.to_string(), content.to_string()),
                None => Change::Delete(path.to_string()),
            })
            .collect();
        self.commit_changes(&changes, message)
    }

    /// Commit any [`Change`]s on top of `main` (or as the first commit); returns its full id.
    pub fn commit_changes(&self, changes: &[Change], message: &str) -> String {
        let index = self.dir.join("monoship-test-index");
        let env = [("GIT_INDEX_FILE", index.as_path())];
        let git = |args: &[&str], stdin: Option<&[u8]>| {
            run_git_env(&self.dir, args, stdin, &env).trim().to_string()
        };
        let parent = self.head();
        match &parent {
            Some(parent) => git(&["read-tree", parent], None),
            None => git(&["read-tree", "--empty"], None),
        };
        // `update-index --index-info` lines: `<mode> <id>\t<path>`; mode 0 removes the path.
        // Blobs are written by one `hash-object` and the index updated by one `update-index`,
        // so a commit of thousands of files costs a few processes.
        let contents: Vec<&str> = changes
            .iter()
            .filter_map(|change| match change {
                Change::File(_, content)
                | Change::Executable(_, content)
                | Change::Symlink(_, content) => Some(content.as_str()),
                Change::Gitlink(..) | Change::Delete(_) => None,
            })
            .collect();
        let mut ids = self.hash_all(&contents).into_iter();
        let mut lines = String::new();
        for change in changes {
            let (mode, path, id) = match change {
                Change::File(path, _) => ("100644", path, ids.next().unwrap_or_default()),
                Change::Executable(path, _) => ("100755", path, ids.next().unwrap_or_default()),
                Change::Symlink(path, _) => ("120000", path, ids.next().unwrap_or_default()),
                Change::Gitlink(path, id) => ("160000", path, id.clone()),
                Change::Delete(path) => {
                    let listed = git(&["ls-files", "-z", "--", path], None);
                    for entry in listed.split('\0').filter(|entry| !entry.is_empty()) {
                        lines.push_str(&format!("0 {}\t{entry}\n", "0".repeat(40)));
                    }
                    continue;
                }
            };
            lines.push_str(&format!("{mode} {id}\t{path}\n"));
        }
        git(&["update-index", "--index-info"], Some(lines.as_bytes()));
        let tree = git(&["write-tree"], None);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(parent) = &parent {
            args.extend(["-p", parent.as_str()]);
        }
        let commit = git(&args, None);
        git(&["update-ref", "refs/heads/main", &commit], None);
        commit
    }

    /// Write each of `contents` as a blob with one `git hash-object`; returns their ids, in
    /// order.
    fn hash_all(&self, contents: &[&str]) -> Vec<String> {
        if contents.is_empty() {
            return Vec::new();
        }
        let staging = tempfile::tempdir().expect("a directory for blob contents");
        let mut paths = String::new();
        for (i, content) in contents.iter().enumerate() {
            let path = staging.path().join(i.to_string());
            std::fs::write(&path, content).expect("write a blob's content");
            paths.push_str(&format!("{}\n", path.display()));
        }
        run_git(
            &self.dir,
            &["hash-object", "-w", "--stdin-paths"],
            Some(paths.as_bytes()),
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The full id of `main`, or `None` before the first commit.
    pub fn head(&self) -> Option<String> {
        let output = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "refs/heads/main^{commit}",
            ])
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.dir)
            .output()
            .expect("run git rev-parse");
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (output.status.success() && !id.is_empty()).then_some(id)
    }

    /// `git rev-parse <spec>` in the repository (e.g. `"<commit>:services/banana"`).
    pub fn rev_parse(&self, spec: &str) -> String {
        run_git(&self.dir, &["rev-parse", "--verify", spec], None)
            .trim()
            .to_string()
    }

    /// Run git in the bare repository; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(&self.dir, args, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_a_commit_by_id_with_depth_one() {
        let repo = Monorepo::new();
        let first = repo.head();
        repo.write("services/banana/config.txt", "color=green\n");
        let second = repo.commit("Banana turns green");
        assert_ne!(first, second);
        assert_eq!(second.len(), 40);

        // Fetch the older, non-tip commit by id into a fresh clone.
        let clone = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("git")
                .args(args)
                .current_dir(clone.path())
                .env("HOME", clone.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["init", "--quiet"]);
        run(&["fetch", "--quiet", "--depth", "1", &repo.url(), &first]);
        run(&["checkout", "--quiet", "FETCH_HEAD"]);
        let config =
            std::fs::read_to_string(clone.path().join("services/banana/config.txt")).unwrap();
        assert_eq!(config, "color=yellow\n");
        assert_eq!(run(&["rev-parse", "HEAD"]).trim(), first);
    }
}
