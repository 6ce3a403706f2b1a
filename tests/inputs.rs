//! Skipping builds whose inputs did not change, end to end: the real controller against the
//! in-process API server and the job runner, a real registry, and the seed monorepo served by a
//! real git server (`git http-backend` over smart HTTP with basic auth) or over `file://`.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use monoship_testkit::git_server::{GitServer, GitServerOptions, url_unreachable};
use monoship_testkit::jobrunner::HookDecision;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::{Value, json};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret-Pa55";

fn by_name<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .expect("the ServiceBuild is there")
}

/// Jobs created for one service since the last counter reset.
fn jobs_for(seed: &Seed, service: &str) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == "jobs" && w.verb == "create")
        .filter(|w| w.name.as_deref().is_some_and(|n| n.starts_with(service)))
        .count()
}

/// Write requests of any kind on one Deployment since the last counter reset.
fn deployment_writes(seed: &Seed, service: &str) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.name.as_deref() == Some(service))
        .count()
}

/// Fetch commands the controller sent (gix announces itself as `agent=git/oxide-…`; the build
/// checkouts are the git binary's).
fn controller_fetches(server: &GitServer) -> usize {
    server
        .log()
        .iter()
        .filter(|r| r.body.contains("command=fetch") && r.body.contains("agent=git/oxide"))
        .count()
}

/// Blob uploads to one service's repository among `requests`.
fn blob_uploads(requests: &[monoship_testkit::registry::RecordedRequest], service: &str) -> usize {
    let prefix = format!("/v2/shop/{service}/");
    requests
        .iter()
        .filter(|r| r.is_blob_upload() && r.path.starts_with(&prefix))
        .count()
}

/// The Events of a ServiceBuild: (reason, message).
async fn events(seed: &Seed, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(seed.client.clone(), NAMESPACE);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn basic_auth_secret(seed: &Seed, name: &str, password: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": USER, "password": password}
    }))
    .unwrap();
    Api::<Secret>::namespaced(seed.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The seed, with its monorepo's commits pushed to a git server with basic auth, and the build
/// checkouts given the credentials a kubelet would mount from the Secret.
struct Served {
    seed: Seed,
    server: GitServer,
    bare: std::path::PathBuf,
    _credentials: tempfile::TempDir,
}

impl Served {
    async fn start() -> Self {
        let server = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
        let bare = server.repo("monorepo");
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join("username"), USER).unwrap();
        std::fs::write(credentials.path().join("password"), PASSWORD).unwrap();
        let env = vec![(
            "MONOSHIP_GIT_CREDENTIALS".to_owned(),
            credentials.path().display().to_string(),
        )];
        let mut seed = Seed::start_with(None, env).await;
        seed.source_url = Some(bare.http_url());
        seed.source_secret = Some("git".to_owned());
        basic_auth_secret(&seed, "git", PASSWORD).await;
        let served = Self {
            seed,
            server,
            bare: bare.path().to_owned(),
            _credentials: credentials,
        };
        served.push();
        served
    }

    /// Push the monorepo's `HEAD` to the server; returns it.
    fn push(&self) -> String {
        let target = self.bare.display().to_string();
        self.seed.repo.git(&[
            "push",
            "--quiet",
            "--force",
            &target,
            "HEAD:refs/heads/main",
        ]);
        self.seed.repo.head()
    }
}

/// Commit 1 builds both services; commit 2 touches banana only: one Job, and orange gets its
/// commit-2 tag by one manifest PUT without a blob, says which inputs it compared, and nothing
/// of orange's is written. A README-only commit builds nothing; a rollback to commit 1 builds
/// nothing and pins banana back; a shared path builds both; a changed template builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_builds_only_the_services_whose_inputs_changed() {
    let served = Served::start().await;
    let seed = &served.seed;
    let controller = common::start(seed, Duration::from_secs(600)).await;

    // Commit 1: both are built.
    let rev1 = served.push();
    seed.set_revision(&rev1).await;
    let first = seed.settled(&rev1).await;
    assert_eq!(common::job_creates(seed), 2);
    let digest = |objects: &[Value], name: &str| {
        by_name(objects, name)["status"]["current"]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (banana1, orange1) = (digest(&first, "banana"), digest(&first, "orange"));
    for service in ["banana", "orange"] {
        let build = &by_name(&first, service)["status"]["build"];
        assert!(
            build["inputKey"]
                .as_str()
                .is_some_and(|k| k.starts_with("sha256:")),
            "{build:#}"
        );
        assert_eq!(phase(by_name(&first, service)), "Promoted");
    }
    assert!(
        served.server.unauthorized() > 0,
        "the server asked for credentials"
    );

    // Commit 2 touches services/banana only.
    seed.api.reset_counters();
    let mark = seed.registry.mark();
    let fetches = controller_fetches(&served.server);
    seed.change_service("banana", "a riper banana\n");
    let rev2 = served.push();
    seed.set_revision(&rev2).await;
    let second = seed.settled(&rev2).await;
    let requests = seed.registry.requests_since(mark);
    assert_eq!(jobs_for(seed, "banana"), 1);
    assert_eq!(
        jobs_for(seed, "orange"),
        0,
        "orange's inputs did not change"
    );
    assert_eq!(
        controller_fetches(&served.server) - fetches,
        1,
        "the controller fetched the commit once"
    );
    let orange = by_name(&second, "orange");
    assert_eq!(phase(orange), "Unchanged", "{:#}", orange["status"]);
    let build = &orange["status"]["build"];
    assert_eq!(build["reusedFrom"], rev1.as_str());
    assert_eq!(build["digestSource"], "Reused");
    assert_eq!(build["digest"], orange1.as_str());
    assert!(build.get("jobName").is_none(), "no Job: {build:#}");
    assert_eq!(
        build["inputKey"],
        by_name(&first, "orange")["status"]["build"]["inputKey"]
    );
    let built = common::condition(orange, "Built").unwrap();
    assert_eq!(built["reason"], "BuildSkipped");
    let message = built["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("inputs unchanged since revision {}", &rev1[..12]))
            && message.contains("services/orange (tree "),
        "{message}"
    );
    let rev2_tag = &rev2[..12];
    let puts = |service: &str, tag: &str| {
        requests
            .iter()
            .filter(|r| r.is_manifest_put(&format!("shop/{service}"), tag))
            .count()
    };
    assert_eq!(
        puts("orange", rev2_tag),
        1,
        "one manifest PUT tags the commit"
    );
    assert_eq!(blob_uploads(&requests, "orange"), 0, "no blob for a tag");
    assert_eq!(puts("orange", "latest"), 0);
    assert_eq!(
        deployment_writes(seed, "orange"),
        0,
        "nothing of orange's written"
    );
    let tags = seed.registry.tags_by_digest("shop/orange");
    assert_eq!(
        tags,
        vec![(
            orange1.clone(),
            vec![
                rev1[..12].to_owned(),
                rev2_tag.to_owned(),
                "latest".to_owned()
            ]
        )],
        "one image carries both commits' tags"
    );
    let skipped = events(seed, "orange").await;
    assert!(
        skipped
            .iter()
            .any(|(reason, note)| reason == "BuildSkipped" && note.contains("services/orange")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().all(|(reason, _)| reason != "Unchanged"),
        "BuildSkipped is the skipped commit's one Event: {skipped:?}"
    );
    let banana = by_name(&second, "banana");
    assert_eq!(phase(banana), "Promoted");
    let banana2 = digest(&second, "banana");
    assert_ne!(banana2, banana1);
    let metrics = controller.get("/metrics").await.1;
    assert_eq!(
        common::counter(&metrics, "monoship_builds_total{result=\"skipped\"}"),
        1.0
    );

    // Commit 3 changes the README only: nothing builds.
    seed.api.reset_counters();
    seed.change_nothing_built("A monorepo, documented.\n");
    let rev3 = served.push();
    seed.set_revision(&rev3).await;
    let third = seed.settled(&rev3).await;
    assert_eq!(common::job_creates(seed), 0);
    for service in ["banana", "orange"] {
        assert_eq!(phase(by_name(&third, service)), "Unchanged");
        assert_eq!(deployment_writes(seed, service), 0);
    }
    assert_eq!(
        seed.api.requests("get", "deployments"),
        0,
        "both targets were found pinned less than a resync period ago: none is read"
    );

    // Back to commit 1: banana's inputs match its first build, whose image is still there.
    seed.api.reset_counters();
    seed.set_revision(&rev1).await;
    let back = seed.settled(&rev1).await;
    assert_eq!(common::job_creates(seed), 0, "a rollback builds nothing");
    let banana = by_name(&back, "banana");
    assert_eq!(phase(banana), "Promoted", "{:#}", banana["status"]);
    assert_eq!(digest(&back, "banana"), banana1);
    assert_eq!(
        seed.deployment_image("banana").await,
        format!("{}@{banana1}", seed.repository("banana")),
        "pinned back"
    );
    assert_eq!(banana["status"]["build"]["digestSource"], "Reused");
    assert_eq!(banana["status"]["build"]["reusedFrom"], rev1.as_str());
    let history = banana["status"]["history"].as_array().unwrap();
    assert_eq!(history[0]["revision"], rev1.as_str());
    assert_eq!(history[0]["skipped"], true, "{:#}", banana["status"]);
    assert_eq!(history[0]["promoted"], true);
    assert_eq!(phase(by_name(&back, "orange")), "Unchanged");
    assert_eq!(deployment_writes(seed, "orange"), 0);

    // Both list a shared path; a commit there builds both.
    for service in ["banana", "orange"] {
        common::merge(
            seed,
            service,
            json!({"spec": {"source": {"paths": [format!("services/{service}"), "shared"]}}}),
        )
        .await;
    }
    seed.repo.write("shared/proto.txt", "message Fruit {}\n");
    seed.repo.commit("shared proto");
    let rev4 = served.push();
    seed.api.reset_counters();
    seed.set_revision(&rev4).await;
    seed.settled(&rev4).await;
    assert_eq!(jobs_for(seed, "banana"), 1);
    assert_eq!(jobs_for(seed, "orange"), 1);

    // A new build template is a new input, though the tree did not change.
    let template = json!({"spec": {"build": {"template": {"spec": {"containers": [
        by_name(&seed.settled(&rev4).await, "banana")["spec"]["build"]["template"]["spec"]["containers"][0]
            .clone()
            .as_object()
            .map(|c| {
                let mut c = c.clone();
                c.insert("env".into(), json!([{"name": "RELEASE", "value": "1"}]));
                Value::Object(c)
            })
            .unwrap()
    ]}}}}});
    common::merge(seed, "banana", template).await;
    seed.change_nothing_built("A monorepo, documented again.\n");
    let rev5 = served.push();
    seed.api.reset_counters();
    seed.set_revision(&rev5).await;
    let fifth = seed.settled(&rev5).await;
    assert_eq!(jobs_for(seed, "banana"), 1, "the template changed");
    assert_eq!(jobs_for(seed, "orange"), 0);
    assert!(
        by_name(&fifth, "banana")["status"]["build"]["inputsMessage"]
            .as_str()
            .unwrap()
            .starts_with("no recorded build has the same inputs")
    );
    assert!(
        !serde_json::to_string(&fifth).unwrap().contains(PASSWORD),
        "the password shows nowhere"
    );
    controller.stop().await;
}

/// Commits whose builds reuse the current digest read no target, and they do not put off the
/// resync's check either: a target edited by hand is re-pinned within about one resync period
/// while such commits keep arriving faster than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_is_re_pinned_while_commits_that_reuse_the_digest_keep_coming() {
    let served = Served::start().await;
    let seed = &served.seed;
    let resync = Duration::from_secs(2);
    let controller = common::start(seed, resync).await;
    let rev1 = served.push();
    seed.set_revision(&rev1).await;
    seed.settled(&rev1).await;
    let pinned = seed.deployment_image("orange").await;

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(seed.client.clone(), NAMESPACE);
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.org/hotfix:1"}]}}}});
    deployments
        .patch(
            "orange",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    let edited = std::time::Instant::now();
    let mut commits = 0;
    while seed.deployment_image("orange").await != pinned {
        assert!(
            edited.elapsed() < resync * 4,
            "not re-pinned {:?} after the edit, {commits} commits later",
            edited.elapsed()
        );
        seed.change_nothing_built(&format!("A monorepo, edition {commits}.\n"));
        let revision = served.push();
        seed.set_revision(&revision).await;
        commits += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let orange = common::wait_for(seed, "orange", "the drift reported", |o| {
        o["status"]["targets"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("example.org/hotfix:1"))
    })
    .await;
    assert_eq!(orange["status"]["targets"][0]["inSync"], true);
    assert!(
        events(seed, "orange")
            .await
            .iter()
            .any(|(reason, note)| reason == "TargetDrifted" && note.contains("hotfix")),
        "a TargetDrifted Event"
    );
    controller.stop().await;
}

/// Twenty ServiceBuilds at one commit: the git server serves one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_servicebuilds_at_one_commit_cost_one_fetch() {
    let hook = std::sync::Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::Fail("build failed".into())
    });
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let services: Vec<String> = (0..20).map(|i| format!("svc-{i:02}")).collect();
    let files: Vec<(String, String)> = services
        .iter()
        .map(|s| (format!("services/{s}/main.go"), format!("package {s}\n")))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    let revision = repo.commit(&changes, "twenty services");
    let seed = Seed::start_with(Some(hook), Vec::new()).await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    for service in &services {
        let mut object = seed.servicebuild("banana", &revision);
        object["metadata"]["name"] = json!(service);
        object["spec"]["source"]["repository"] = json!(repo.http_url());
        object["spec"]["source"]["paths"] = json!([format!("services/{service}")]);
        object["spec"]["image"]["repository"] =
            json!(format!("{}/shop/{service}", seed.registry.host()));
        object["spec"]["targets"] = json!([]);
        common::create(&seed, object).await;
    }
    for service in &services {
        common::wait_for(&seed, service, "a build with its input key", |o| {
            o["status"]["build"]["inputKey"].is_string()
        })
        .await;
    }
    assert_eq!(server.fetches(), 1, "{:#?}", server.log());
    let keys: std::collections::BTreeSet<String> = {
        let mut keys = std::collections::BTreeSet::new();
        for service in &services {
            let object = seed.servicebuilds().get(service).await.unwrap();
            let object = serde_json::to_value(object).unwrap();
            keys.insert(
                object["status"]["build"]["inputKey"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        keys
    };
    assert_eq!(keys.len(), 20, "each service has its own inputs");
    controller.stop().await;
}

/// Wrong credentials, or a server that is not there: the build runs, and the status, a
/// condition and a Warning Event say that the inputs could not be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_that_cannot_be_read_build_and_say_why() {
    let hook = std::sync::Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::Fail("build failed".into())
    });
    let server = GitServer::start(GitServerOptions::basic_auth(USER, PASSWORD));
    let repo = server.repo("monorepo");
    let revision = repo.commit(
        &[("services/banana/main.go", Some("package banana\n"))],
        "one",
    );
    let mut seed = Seed::start_with(Some(hook), Vec::new()).await;
    basic_auth_secret(&seed, "wrong", "not-the-password").await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;

    seed.source_url = Some(repo.http_url());
    seed.source_secret = Some("wrong".to_owned());
    seed.set_service_revision("banana", &revision).await;
    seed.source_url = Some(url_unreachable("monorepo"));
    seed.source_secret = None;
    seed.set_service_revision("orange", &revision).await;

    for service in ["banana", "orange"] {
        let object = common::wait_for(&seed, service, "a build", |o| {
            o["status"]["build"]["inputsMessage"].is_string()
        })
        .await;
        let build = &object["status"]["build"];
        let message = build["inputsMessage"].as_str().unwrap();
        assert!(
            message.starts_with("the inputs could not be read: "),
            "{service}: {message}"
        );
        assert!(build.get("inputKey").is_none());
        assert!(!message.contains("not-the-password"), "{message}");
        // Events are published right after the status write that implies them.
        let mut events = events(&seed, service).await;
        for _ in 0..100 {
            if events
                .iter()
                .any(|(reason, _)| reason == "InputsUnreadable")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            events = self::events(&seed, service).await;
        }
        assert!(
            events.iter().any(|(reason, _)| reason == "BuildStarted"),
            "{service}: the build runs: {events:?}"
        );
        let warning = events
            .iter()
            .find(|(reason, _)| reason == "InputsUnreadable")
            .unwrap_or_else(|| panic!("{service}: {events:?}"));
        assert!(!warning.1.contains("not-the-password"));
    }
    assert_eq!(common::job_creates(&seed), 2);
    assert!(server.unauthorized() > 0);
    controller.stop().await;
}

/// An admin's `--git-allowed-origins` that does not list the repository's origin: the controller
/// sends it nothing, and the build runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_the_admin_did_not_allow_is_never_read() {
    let hook = std::sync::Arc::new(|_: &k8s_openapi::api::batch::v1::Job| {
        HookDecision::Fail("build failed".into())
    });
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let revision = repo.commit(
        &[("services/banana/main.go", Some("package banana\n"))],
        "one",
    );
    let mut seed = Seed::start_with(Some(hook), Vec::new()).await;
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    if let Some(git) = settings.git_cache.as_mut() {
        git.allowed_origins =
            monoship::act::origin::Allowlist::parse(&["https://git.example.com"]).unwrap();
    }
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    seed.source_url = Some(repo.http_url());
    seed.set_service_revision("banana", &revision).await;
    let object = common::wait_for(&seed, "banana", "a build", |o| {
        o["status"]["build"]["inputsMessage"].is_string()
    })
    .await;
    let message = object["status"]["build"]["inputsMessage"].as_str().unwrap();
    assert!(
        message.contains("is not in the origins inputs may be read from (--git-allowed-origins: https://git.example.com:443)"),
        "{message}"
    );
    assert_eq!(common::job_creates(&seed), 1, "the build runs");
    assert_eq!(server.requests(), 0, "nothing was sent to the repository");
    controller.stop().await;
}

/// Over `file://`: a commit outside every service's paths builds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_url_is_read_too() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    seed.settled(&rev1).await;
    seed.api.reset_counters();
    let rev2 = seed.change_nothing_built("docs\n");
    seed.set_revision(&rev2).await;
    let settled = seed.settled(&rev2).await;
    assert_eq!(common::job_creates(&seed), 0);
    for object in &settled {
        assert_eq!(phase(object), "Unchanged");
        assert_eq!(object["status"]["build"]["digestSource"], "Reused");
    }
    controller.stop().await;
}

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}
