//! A throwaway monorepo: a real git repository in a temp directory.

use std::path::Path;
use std::process::Command;

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
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=Monoship Test",
                "-c",
                "user.email=test@monoship.invalid",
            ])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_AUTHOR_DATE", FIXED_DATE)
            .env("GIT_COMMITTER_DATE", FIXED_DATE)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Default for Monorepo {
    fn default() -> Self {
        Self::new()
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
