//! Reading commit trees from the controller (`monoship::inputs::git`) against a real git server
//! over smart HTTP (`git http-backend`) and over `file://`.

use std::sync::Arc;
use std::time::Duration;

use monoship::inputs::git::{
    Credentials, FetchLimits, Fetched, GitCache, GitErrorKind, PathObject,
};
use monoship_testkit::git::{Change, GitRepo};
use monoship_testkit::git_server::{GitServer, GitServerOptions, url_unreachable};

const USER: &str = "robot";
const PASSWORD: &str = "pa55-w0rd-XYZ";

fn credentials() -> Credentials {
    Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

fn cache(dir: &tempfile::TempDir) -> GitCache {
    monoship::install_crypto_provider();
    GitCache::new(dir.path().join("git"), 1 << 30)
        .expect("cache")
        .allow_credentials_over_http(true)
}

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}

/// A monorepo with two services, a README, a symlink and a submodule (gitlink).
fn monorepo(repo: &GitRepo) -> String {
    repo.commit_changes(
        &[
            Change::File("services/banana/main.go".into(), "package main\n".into()),
            Change::File("services/banana/lib/util.go".into(), "package lib\n".into()),
            Change::File("services/orange/main.go".into(), "package orange\n".into()),
            Change::File("README.md".into(), "monorepo\n".into()),
            Change::Symlink("services/current".into(), "banana".into()),
            Change::Gitlink("vendor/lib".into(), "1".repeat(40)),
        ],
        "Add banana and orange",
    )
}

/// What `lookup` must say for a path, from `git rev-parse` and `git ls-tree` in the bare repo.
fn expected(repo: &GitRepo, commit: &str, path: &str) -> PathObject {
    if path.is_empty() || path == "." {
        return PathObject::Tree(repo.rev_parse(&format!("{commit}^{{tree}}")));
    }
    let listing = repo.git(&["ls-tree", commit, "--", path]);
    let Some(line) = listing.lines().next() else {
        return PathObject::Absent;
    };
    let id = repo.rev_parse(&format!("{commit}:{path}"));
    match line.split_whitespace().nth(1) {
        Some("tree") => PathObject::Tree(id),
        Some("commit") => PathObject::Submodule(id),
        _ => PathObject::Blob(id),
    }
}

const PROBES: [&str; 9] = [
    "",
    ".",
    "services/banana",
    "services/banana/main.go",
    "services/current",
    "vendor/lib",
    "services/apple",
    "vendor/lib/inside",
    "README.md/inside",
];

fn assert_lookups_match_git(cache: &GitCache, url: &str, repo: &GitRepo, commit: &str) {
    let found = cache
        .lookup("shop", url, commit, &paths(&PROBES))
        .expect("lookup");
    let want: Vec<PathObject> = PROBES.iter().map(|p| expected(repo, commit, p)).collect();
    assert_eq!(found, want);
    // Each kind is really there, so the comparison above covers them all.
    assert!(matches!(found[2], PathObject::Tree(_)));
    assert!(matches!(found[3], PathObject::Blob(_)));
    assert!(
        matches!(found[4], PathObject::Blob(_)),
        "a symlink is a blob"
    );
    assert_eq!(found[5], PathObject::Submodule("1".repeat(40)));
    assert_eq!(
        found[6..],
        [PathObject::Absent, PathObject::Absent, PathObject::Absent]
    );
}

#[test]
fn over_http_with_basic_auth_ids_match_git_and_a_second_commit_costs_one_fetch() {
    let server = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
    let repo = server.repo("monorepo");
    let first = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let url = repo.http_url();

    let started = std::time::Instant::now();
    let outcome = cache.ensure("shop", &url, &first, Some(&credentials()));
    eprintln!("first fetch over loopback: {:?}", started.elapsed());
    assert_eq!(outcome, Ok(Fetched::Fetched), "{:#?}", server.log());
    assert_eq!(server.fetches(), 1);
    assert_lookups_match_git(&cache, &url, &repo, &first);

    // The ref listing asks only for a prefix that matches nothing.
    let ls_refs = server
        .log()
        .into_iter()
        .find(|r| r.body.contains("command=ls-refs"));
    let ls_refs = ls_refs.expect("an ls-refs request");
    assert!(
        ls_refs.body.contains("ref-prefix refs/monoship/none"),
        "{}",
        ls_refs.body
    );

    let second = repo.commit(
        &[("services/orange/main.go", Some("package orange // v2\n"))],
        "Change orange",
    );
    assert_eq!(
        cache.ensure("shop", &url, &second, Some(&credentials())),
        Ok(Fetched::Fetched)
    );
    assert_eq!(server.fetches(), 2);
    assert_lookups_match_git(&cache, &url, &repo, &second);
    // The first commit stays readable, and banana's tree id did not change.
    let banana = paths(&["services/banana", "services/orange"]);
    let before = cache.lookup("shop", &url, &first, &banana).unwrap();
    let after = cache.lookup("shop", &url, &second, &banana).unwrap();
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);

    // Present now: no request at all.
    let requests = server.requests();
    assert_eq!(
        cache.ensure("shop", &url, &second, Some(&credentials())),
        Ok(Fetched::Already)
    );
    assert_eq!(
        cache.ensure("shop", &url, &first, Some(&credentials())),
        Ok(Fetched::Already)
    );
    assert_eq!(server.requests(), requests);
    assert_eq!(server.fetches(), 2);
}

#[test]
fn the_second_fetch_offers_the_pinned_commit_and_receives_only_what_changed() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let mut files: Vec<(String, String)> = (0..40)
        .map(|n| (format!("services/s{n}/main.go"), format!("package s{n}\n")))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    let first = repo.commit(&changes, "forty services");
    files[0].1 = "package s0 // v2\n".into();
    let second = repo.commit(&[(files[0].0.as_str(), Some(files[0].1.as_str()))], "s0 v2");
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let url = repo.http_url();

    cache.ensure("shop", &url, &first, None).unwrap();
    let after_first = cache.size_on_disk();
    cache.ensure("shop", &url, &second, None).unwrap();
    let grown = cache.size_on_disk() - after_first;
    let fetch = server
        .log()
        .into_iter()
        .rfind(|r| r.body.contains("command=fetch"))
        .expect("a fetch");
    assert!(
        fetch.body.contains(&format!("have {first}")),
        "{}",
        fetch.body
    );
    // The second pack holds the new commit, two trees on the path and one blob: far less
    // than the first one's 40 blobs and 42 trees.
    assert!(
        grown < after_first / 2,
        "grew by {grown} after {after_first}"
    );
}

#[test]
fn over_file_urls_ids_match_git() {
    let repo = GitRepo::new("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let url = repo.file_url();
    assert_eq!(
        cache.ensure("shop", &url, &commit, None),
        Ok(Fetched::Fetched)
    );
    assert_lookups_match_git(&cache, &url, &repo, &commit);
    assert_eq!(
        cache.ensure("shop", &url, &commit, None),
        Ok(Fetched::Already)
    );
}

#[test]
fn a_wrong_password_is_unauthorized_and_the_message_does_not_carry_it() {
    let server = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
    let repo = server.repo("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let wrong = Credentials {
        username: USER.into(),
        password: "wrong-secret-123".into(),
    };

    let error = cache
        .ensure("shop", &repo.http_url(), &commit, Some(&wrong))
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Unauthorized, "{error}");
    let message = error.to_string();
    eprintln!("wrong password: {message}");
    assert!(!message.contains("wrong-secret-123"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.contains(&commit) && message.contains(&repo.http_url()),
        "{message}"
    );
    assert_eq!(server.fetches(), 0);

    let error = cache
        .ensure("shop", &repo.http_url(), &commit, None)
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Unauthorized, "{error}");
    eprintln!("no credentials: {error}");
    assert!(!format!("{:?}", credentials()).contains(PASSWORD));
}

#[test]
fn unreachable_missing_and_unsupported_are_told_apart() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);

    let error = cache
        .ensure("shop", &url_unreachable("monorepo"), &commit, None)
        .unwrap_err();
    eprintln!("unreachable: {error}");
    assert_eq!(error.kind(), GitErrorKind::Unreachable, "{error}");

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let error = cache
        .ensure("shop", &repo.http_url(), absent, None)
        .unwrap_err();
    eprintln!("absent commit: {error}");
    assert_eq!(error.kind(), GitErrorKind::NotFound, "{error}");

    let error = cache
        .ensure("shop", &server.url("nothing-here"), &commit, None)
        .unwrap_err();
    eprintln!("absent repository: {error}");
    assert_eq!(error.kind(), GitErrorKind::NotFound, "{error}");

    for url in [
        "ssh://git@example.com/shop/monorepo.git",
        "git@example.com:shop/monorepo.git",
    ] {
        let error = cache.ensure("shop", url, &commit, None).unwrap_err();
        assert_eq!(error.kind(), GitErrorKind::Unsupported, "{error}");
        assert!(
            error.to_string().contains("cannot be read over ssh"),
            "{error}"
        );
    }
    let error = cache
        .ensure("shop", "git://example.com/monorepo.git", &commit, None)
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Unsupported, "{error}");

    let with_password = repo.http_url().replace("http://", "http://robot:secret@");
    let error = cache
        .ensure("shop", &with_password, &commit, None)
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Invalid, "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");

    let error = cache
        .ensure("shop", &repo.http_url(), "HEAD", None)
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Invalid, "{error}");

    // Not fetched yet: lookup says so, locally.
    let error = cache
        .lookup("shop", &repo.http_url(), &commit, &paths(&[""]))
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Local, "{error}");
    // The one fetch command served was the absent commit's.
    assert_eq!(server.fetches(), 1);
}

#[test]
fn credentials_are_not_sent_over_plain_http_unless_allowed() {
    monoship::install_crypto_provider();
    let server = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
    let repo = server.repo("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let strict = GitCache::new(dir.path().to_path_buf(), 1 << 30).unwrap();
    let error = strict
        .ensure("shop", &repo.http_url(), &commit, Some(&credentials()))
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Refused, "{error}");
    assert_eq!(server.requests(), 0);
}

#[test]
fn a_redirect_to_another_origin_never_carries_the_credentials() {
    let target = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
    let repo = target.repo("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);

    // An open server that sends everything to another port (another origin), which asks for
    // credentials: gix asks for them for the other origin, and gets none.
    let open_redirect = GitServer::start(GitServerOptions {
        redirect_to: Some(target.base_url()),
        ..GitServerOptions::default()
    });
    let url = open_redirect.url("monorepo");
    let error = cache
        .ensure("shop", &url, &commit, Some(&credentials()))
        .unwrap_err();
    eprintln!("open redirect: {error}");
    assert_eq!(error.kind(), GitErrorKind::Unauthorized, "{error}");
    assert!(target.requests() >= 1, "the redirect was followed");
    assert_eq!(target.with_authorization(), 0, "{:#?}", target.log());

    // A server that takes the credentials, then redirects: gix follows redirects of the first
    // request only (`http.followRedirects=initial`), so the other origin is not even asked.
    let before = target.requests();
    let auth_redirect = GitServer::start(GitServerOptions {
        basic_auth: Some((USER.into(), PASSWORD.into())),
        redirect_to: Some(target.base_url()),
        ..GitServerOptions::default()
    });
    let url = auth_redirect.url("monorepo");
    let error = cache
        .ensure("shop", &url, &commit, Some(&credentials()))
        .unwrap_err();
    eprintln!("redirect after auth: {error}");
    assert_eq!(error.kind(), GitErrorKind::Refused, "{error}");
    assert!(auth_redirect.with_authorization() >= 1);
    assert_eq!(target.requests(), before, "{:#?}", target.log());
    assert_eq!(target.with_authorization(), 0);
    assert_eq!(target.fetches(), 0);
}

#[test]
fn a_hanging_server_times_out_and_a_large_pack_is_refused() {
    let hanging = GitServer::start(GitServerOptions {
        hang: true,
        ..GitServerOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let limits = FetchLimits {
        timeout: Duration::from_secs(2),
        max_bytes: 4096,
    };
    let cache = cache(&dir).with_fetch_limits(limits);
    let started = std::time::Instant::now();
    let error = cache
        .ensure("shop", &hanging.url("monorepo"), &"a".repeat(40), None)
        .unwrap_err();
    eprintln!("hanging after {:?}: {error}", started.elapsed());
    assert_eq!(error.kind(), GitErrorKind::Unreachable, "{error}");

    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    // Hex of sha256 chains: 64 KiB that compress to no less than half.
    use sha2::Digest as _;
    let noise: String = (0..1024u32)
        .flat_map(|n| sha2::Sha256::digest(n.to_be_bytes()))
        .map(|b| format!("{b:02x}"))
        .collect();
    let commit = repo.commit(&[("blob.txt", Some(noise.as_str()))], "big");
    let error = cache
        .ensure("shop", &repo.http_url(), &commit, None)
        .unwrap_err();
    eprintln!("too big: {error}");
    assert_eq!(error.kind(), GitErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("4096 bytes"), "{error}");
}

#[test]
fn the_cache_is_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GitCache>();
}

#[test]
fn twenty_threads_ensuring_one_commit_fetch_it_once() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let commit = monorepo(&repo);
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache(&dir));
    let url = repo.http_url();
    let outcomes: Vec<Fetched> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| cache.ensure("shop", &url, &commit, None).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(server.fetches(), 1);
    assert_eq!(
        outcomes.iter().filter(|o| **o == Fetched::Fetched).count(),
        1
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == Fetched::Already).count(),
        19
    );
}

#[test]
fn the_least_recently_used_repository_is_evicted_when_the_cache_is_over_its_bound() {
    monoship::install_crypto_provider();
    let server = GitServer::start(GitServerOptions::anonymous());
    let older = server.repo("older");
    let newer = server.repo("newer");
    let older_commit = monorepo(&older);
    let newer_commit = monorepo(&newer);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("git");
    // Bound: one repository fits, two do not.
    let probe = GitCache::new(dir.path().join("probe"), 1 << 30).unwrap();
    probe
        .ensure("shop", &older.file_url(), &older_commit, None)
        .unwrap();
    let one = probe.size_on_disk();
    let cache = GitCache::new(root.clone(), one + one / 2).unwrap();

    cache
        .ensure("shop", &older.http_url(), &older_commit, None)
        .unwrap();
    let older_dir = cache.repository_dir("shop", &older.http_url()).unwrap();
    assert!(older_dir.is_dir());
    cache
        .ensure("shop", &newer.http_url(), &newer_commit, None)
        .unwrap();
    assert!(!older_dir.exists(), "the older repository was evicted");
    assert!(
        cache
            .repository_dir("shop", &newer.http_url())
            .unwrap()
            .is_dir()
    );
    assert!(cache.size_on_disk() <= one + one / 2);
    let error = cache
        .lookup("shop", &older.http_url(), &older_commit, &paths(&[""]))
        .unwrap_err();
    assert_eq!(error.kind(), GitErrorKind::Local);
    // Nothing but repository directories is left in the root.
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Fetching the older one again works, and evicts the newer one.
    assert_eq!(
        cache.ensure("shop", &older.http_url(), &older_commit, None),
        Ok(Fetched::Fetched)
    );
    assert!(
        !cache
            .repository_dir("shop", &newer.http_url())
            .unwrap()
            .exists()
    );

    // A new cache on the same root keeps what is there.
    drop(cache);
    let again = GitCache::new(root, one + one / 2).unwrap();
    assert_eq!(
        again.ensure("shop", &older.http_url(), &older_commit, None),
        Ok(Fetched::Already)
    );
    assert!(again.size_on_disk() > 0);
}

#[test]
fn a_repository_in_use_by_a_lookup_is_not_evicted() {
    monoship::install_crypto_provider();
    let server = GitServer::start(GitServerOptions::anonymous());
    let a = server.repo("a");
    let b = server.repo("b");
    let a_commit = monorepo(&a);
    let b_commit = monorepo(&b);
    let dir = tempfile::tempdir().unwrap();
    // A bound of one byte: every fetch would evict everything else it can.
    let cache = GitCache::new(dir.path().to_path_buf(), 1).unwrap();
    let cache = Arc::new(cache.with_fetch_limits(FetchLimits::default()));
    cache
        .ensure("shop", &a.http_url(), &a_commit, None)
        .unwrap();

    // Many lookups of `a` while `b` is fetched: each either sees `a` whole or finds it gone
    // (evicted between two lookups), never a half-deleted repository.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut whole = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match cache.lookup(
                    "shop",
                    &a.http_url(),
                    &a_commit,
                    &paths(&["services/banana"]),
                ) {
                    Ok(found) => {
                        assert!(matches!(found[0], PathObject::Tree(_)));
                        whole += 1;
                    }
                    Err(error) => {
                        assert_eq!(error.kind(), GitErrorKind::Local, "{error}");
                        assert!(
                            error.to_string().contains("has not been fetched"),
                            "{error}"
                        );
                    }
                }
            }
            whole
        });
        cache
            .ensure("shop", &b.http_url(), &b_commit, None)
            .unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
    });
}

#[test]
fn an_older_commit_after_a_newer_one_reads_like_git() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let first = monorepo(&repo);
    let second = repo.commit(
        &[
            ("services/banana/main.go", Some("package main // v2\n")),
            ("README.md", None),
        ],
        "Change banana, drop the README",
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let url = repo.http_url();
    assert_eq!(
        cache.ensure("shop", &url, &second, None),
        Ok(Fetched::Fetched)
    );
    assert_eq!(
        cache.ensure("shop", &url, &first, None),
        Ok(Fetched::Fetched)
    );
    assert_lookups_match_git(&cache, &url, &repo, &first);
    let readme = cache
        .lookup("shop", &url, &second, &paths(&["README.md"]))
        .unwrap();
    assert_eq!(readme, [PathObject::Absent]);
}

#[test]
fn a_repository_with_too_many_packs_starts_over() {
    use monoship::inputs::git::MAX_PACKS;
    let repo = GitRepo::new("monorepo");
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(&dir);
    let url = repo.file_url();
    let packs = || {
        let pack_dir = cache
            .repository_dir("shop", &url)
            .unwrap()
            .join("objects/pack");
        std::fs::read_dir(pack_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "pack")
            })
            .count()
    };
    let mut commits = Vec::new();
    for n in 0..MAX_PACKS {
        let content = format!("{n}\n");
        let commit = repo.commit(&[("counter.txt", Some(content.as_str()))], "count");
        assert_eq!(
            cache.ensure("shop", &url, &commit, None),
            Ok(Fetched::Fetched)
        );
        commits.push(commit);
    }
    assert_eq!(packs(), MAX_PACKS);
    let last = repo.commit(&[("counter.txt", Some("last\n"))], "last");
    assert_eq!(
        cache.ensure("shop", &url, &last, None),
        Ok(Fetched::Fetched)
    );
    assert_eq!(packs(), 1, "started over");
    // The commits of before are fetched again when asked for.
    assert_eq!(
        cache.ensure("shop", &url, &commits[0], None),
        Ok(Fetched::Fetched)
    );
    let found = cache
        .lookup("shop", &url, &commits[0], &paths(&["counter.txt"]))
        .unwrap();
    assert_eq!(
        found,
        [PathObject::Blob(
            repo.rev_parse(&format!("{}:counter.txt", commits[0]))
        )]
    );
}
