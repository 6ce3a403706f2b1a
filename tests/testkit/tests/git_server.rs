//! The smart-HTTP git server against the real `git` client.

use std::path::Path;
use std::process::{Command, Output};

use monoship_testkit::git::{Change, GitRepo};
use monoship_testkit::git_server::{GitServer, GitServerOptions, url_unreachable};

/// Run the real git client in `dir`, never prompting for credentials.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .output()
        .expect("run git")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn banana_repo(server: &GitServer) -> (GitRepo, String) {
    let repo = server.repo("monorepo");
    let commit = repo.commit(
        &[
            ("services/banana/main.go", Some("package main\n")),
            ("README.md", Some("monorepo\n")),
        ],
        "Add banana",
    );
    (repo, commit)
}

#[test]
fn anonymous_clone_over_http_counts_one_ls_refs_and_one_fetch() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let (repo, commit) = banana_repo(&server);
    let work = tempfile::tempdir().unwrap();

    ok(git(
        work.path(),
        &["clone", "--quiet", &repo.http_url(), "clone"],
    ));

    let clone = work.path().join("clone");
    assert_eq!(ok(git(&clone, &["rev-parse", "HEAD"])), commit);
    assert_eq!(
        std::fs::read_to_string(clone.join("services/banana/main.go")).unwrap(),
        "package main\n"
    );
    assert_eq!(server.ls_refs(), 1, "{:#?}", server.log());
    assert_eq!(server.fetches(), 1, "{:#?}", server.log());
    assert_eq!(server.unauthorized(), 0);
    // GET info/refs (capabilities), POST ls-refs, POST fetch.
    assert_eq!(server.requests(), 3, "{:#?}", server.log());
    assert!(
        server
            .log()
            .iter()
            .all(|r| r.git_protocol.as_deref() == Some("version=2"))
    );
}

#[test]
fn basic_auth_lets_the_right_user_in_and_answers_401_to_others() {
    let server = GitServer::start(GitServerOptions::basic_auth("robot", "s3cret"));
    let (repo, commit) = banana_repo(&server);
    let work = tempfile::tempdir().unwrap();
    let with_user = |user: &str| {
        repo.http_url()
            .replace("http://", &format!("http://{user}@"))
    };

    // No credentials: 401 and git gives up (it may not prompt).
    let anonymous = git(work.path(), &["clone", "--quiet", &repo.http_url(), "a"]);
    assert!(!anonymous.status.success());
    assert_eq!(server.fetches(), 0);
    assert_eq!(server.unauthorized(), 1);
    let denied = server.log()[0].clone();
    assert_eq!((denied.status, denied.authorization), (401, false));

    // Wrong password: 401 again, nothing served.
    let wrong = git(
        work.path(),
        &["clone", "--quiet", &with_user("robot:wrong"), "b"],
    );
    assert!(!wrong.status.success());
    assert_eq!(server.fetches(), 0);
    assert!(server.unauthorized() >= 2);
    assert!(server.log().iter().all(|r| r.status == 401));

    // Right password.
    let before = server.unauthorized();
    ok(git(
        work.path(),
        &["clone", "--quiet", &with_user("robot:s3cret"), "c"],
    ));
    assert_eq!(
        ok(git(&work.path().join("c"), &["rev-parse", "HEAD"])),
        commit
    );
    assert_eq!(server.fetches(), 1);
    assert_eq!(server.ls_refs(), 1);
    // git tries without credentials first, then once with them.
    assert_eq!(server.unauthorized(), before + 1, "{:#?}", server.log());
    assert!(server.with_authorization() >= 3);
}

#[test]
fn a_v2_client_fetches_an_older_commit_by_id_at_depth_one_without_any_server_setting() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let (repo, first) = banana_repo(&server);
    let second = repo.commit(
        &[("services/banana/main.go", Some("package main // v2\n"))],
        "Change banana",
    );
    assert_ne!(first, second);
    // No uploadpack.* setting at all (exit code 1: nothing matched).
    let settings = git(repo.path(), &["config", "--get-regexp", "uploadpack"]);
    assert_eq!(settings.status.code(), Some(1));
    let work = tempfile::tempdir().unwrap();
    ok(git(work.path(), &["init", "--quiet"]));

    // Protocol v2 (git's default): the older, non-tip commit by id.
    ok(git(
        work.path(),
        &["fetch", "--quiet", "--depth", "1", &repo.http_url(), &first],
    ));
    assert_eq!(ok(git(work.path(), &["rev-parse", "FETCH_HEAD"])), first);
    assert_eq!(
        ok(git(work.path(), &["rev-list", "--count", "FETCH_HEAD"])),
        "1",
        "depth 1"
    );
    assert_eq!(server.fetches(), 1);

    // Protocol v0 asks the server to allow unadvertised wants, which it does not.
    let other = tempfile::tempdir().unwrap();
    ok(git(other.path(), &["init", "--quiet"]));
    let v0 = git(
        other.path(),
        &[
            "-c",
            "protocol.version=0",
            "fetch",
            "--quiet",
            "--depth",
            "1",
            &repo.http_url(),
            &first,
        ],
    );
    assert!(!v0.status.success());
    assert!(
        String::from_utf8_lossy(&v0.stderr).contains("unadvertised object"),
        "{}",
        String::from_utf8_lossy(&v0.stderr)
    );
}

#[test]
fn commits_delete_paths_and_hold_gitlinks_and_symlinks() {
    let repo = GitRepo::new("plumbing");
    assert_eq!(repo.head(), None);
    let first = repo.commit(
        &[
            ("services/banana/main.go", Some("package main\n")),
            ("services/banana/lib/util.go", Some("package lib\n")),
            ("README.md", Some("monorepo\n")),
        ],
        "first",
    );
    let second = repo.commit_changes(
        &[
            Change::Delete("services/banana/lib".into()),
            Change::Delete("README.md".into()),
            Change::Gitlink("vendor/lib".into(), first.clone()),
            Change::Symlink("services/link".into(), "banana".into()),
        ],
        "second",
    );
    assert_eq!(repo.head(), Some(second.clone()));
    assert_eq!(repo.rev_parse(&format!("{second}^")), first);
    let listing = repo.git(&["ls-tree", "-r", &second]);
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(
        entries,
        [
            format!(
                "100644 blob {}\tservices/banana/main.go",
                repo.rev_parse(&format!("{first}:services/banana/main.go"))
            ),
            format!(
                "120000 blob {}\tservices/link",
                repo.rev_parse(&format!("{second}:services/link"))
            ),
            format!("160000 commit {first}\tvendor/lib"),
        ]
    );
    assert_eq!(
        repo.git(&["cat-file", "-p", &format!("{second}:services/link")]),
        "banana"
    );
    // The same changes give the same ids (fixed identity and dates).
    let again = GitRepo::new("plumbing");
    let again_first = again.commit(
        &[
            ("services/banana/main.go", Some("package main\n")),
            ("services/banana/lib/util.go", Some("package lib\n")),
            ("README.md", Some("monorepo\n")),
        ],
        "first",
    );
    assert_eq!(again_first, first);
    assert!(again.file_url().starts_with("file:///"));
}

#[test]
fn a_stopped_server_and_an_unreachable_url_refuse_connections() {
    let mut server = GitServer::start(GitServerOptions::anonymous());
    let (repo, _) = banana_repo(&server);
    server.stop();
    let work = tempfile::tempdir().unwrap();
    let stopped = git(work.path(), &["ls-remote", &repo.http_url()]);
    assert!(!stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stderr.contains("Failed to connect"), "{stderr}");
    let nowhere = git(work.path(), &["ls-remote", &url_unreachable("monorepo")]);
    assert!(!nowhere.status.success());
}

#[test]
fn a_redirecting_server_sends_clients_elsewhere() {
    let target = GitServer::start(GitServerOptions::anonymous());
    let (_repo, commit) = banana_repo(&target);
    let redirecting = GitServer::start(GitServerOptions {
        redirect_to: Some(target.base_url()),
        ..GitServerOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let heads = ok(git(
        work.path(),
        &["ls-remote", &redirecting.url("monorepo"), "refs/heads/main"],
    ));
    assert_eq!(heads, format!("{commit}\trefs/heads/main"));
    assert!(redirecting.log().iter().all(|r| r.status == 302));
    assert!(target.requests() >= 1);
}

/// A commit of thousands of files: `hash-object` answers more than a pipe holds before it has
/// read all its input, which must not dead-lock the writer.
#[test]
fn a_commit_of_thousands_of_files_completes() {
    let repo = monoship_testkit::git::GitRepo::new("many");
    let files: Vec<(String, String)> = (0..3000)
        .map(|i| {
            (
                format!("services/svc-{i:04}/data.txt"),
                format!("svc {i}\n"),
            )
        })
        .collect();
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    let commit = repo.commit(&changes, "many");
    assert_eq!(commit.len(), 40);
}
