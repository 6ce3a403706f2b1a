//! The Monorepo resource end to end: ServiceBuilds that follow one Monorepo build only what a
//! commit changed, and the Monorepo's status answers what the commit rolled out. The real
//! controller, the in-process API server and job runner, a real registry and a real git server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use monoship_testkit::git::GitRepo;
use monoship_testkit::git_server::{GitServer, GitServerOptions};
use monoship_testkit::jobrunner::HookDecision;
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::{Value, json};

fn monorepos(seed: &Seed) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monoship.dev", "v1alpha1", "Monorepo"),
        "monorepos",
    );
    Api::namespaced_with(seed.client.clone(), NAMESPACE, &resource)
}

async fn create_monorepo(seed: &Seed, name: &str, spec: Value) {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "monoship.dev/v1alpha1",
        "kind": "Monorepo",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }))
    .unwrap();
    monorepos(seed)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

async fn monorepo(seed: &Seed, name: &str) -> Value {
    serde_json::to_value(monorepos(seed).get(name).await.unwrap()).unwrap()
}

/// Wait until `done` holds for the Monorepo, or panic with its status.
async fn wait_monorepo(
    seed: &Seed,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let object = monorepo(seed, name).await;
        if done(&object) {
            return object;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for Monorepo {name} {what}: {:#}",
            object["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(object: &Value) -> Option<&str> {
    common::condition(object, "Ready").and_then(|c| c["status"].as_str())
}

/// A ServiceBuild of `service` that follows Monorepo `monorepo`.
fn follower(seed: &Seed, service: &str, monorepo: &str) -> Value {
    let mut object = seed.servicebuild(service, &"0".repeat(40));
    object["metadata"]["name"] = json!(service);
    object["spec"]["source"] = json!({
        "monorepoRef": {"name": monorepo},
        "paths": [format!("services/{service}")]
    });
    object["spec"]["image"]["repository"] =
        json!(format!("{}/shop/{service}", seed.registry.host()));
    object["spec"]["targets"] = json!([
        {"kubernetes": {"kind": "Deployment", "name": service, "container": "app"}}
    ]);
    object
}

async fn deployment(seed: &Seed, service: &str) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": service, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": service}},
            "template": {
                "metadata": {"labels": {"app": service}},
                "spec": {"containers": [{"name": "app", "image": "example.org/bootstrap:1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(seed.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

fn commit_all(repo: &GitRepo, services: &[String], content: &str) -> String {
    let files: Vec<(String, String)> = services
        .iter()
        .map(|s| (format!("services/{s}/data.txt"), format!("{s} {content}\n")))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    repo.commit(&changes, content)
}

fn settled_all(objects: &[Value], revision: &str) -> bool {
    objects
        .iter()
        .all(|o| monoship_testkit::scenario::settled_at(o, revision))
}

async fn followers(seed: &Seed) -> Vec<Value> {
    seed.servicebuilds()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

/// Twenty ServiceBuilds follow one Monorepo. One patch of `spec.revision` that touches two
/// services: two Jobs, eighteen skipped, two Deployment writes, and the Monorepo counts them,
/// Ready only once every follower settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_revision_line_rolls_out_exactly_the_changed_services() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let services: Vec<String> = (0..20).map(|i| format!("svc-{i:02}")).collect();
    let rev1 = commit_all(&repo, &services, "one");
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    create_monorepo(
        &seed,
        "shop",
        json!({"repository": repo.http_url(), "revision": rev1}),
    )
    .await;
    for service in &services {
        deployment(&seed, service).await;
        common::create(&seed, follower(&seed, service, "shop")).await;
    }
    let first = wait_monorepo(&seed, "shop", "to roll out commit 1", |o| {
        ready(o) == Some("True") && o["status"]["revision"] == rev1.as_str()
    })
    .await;
    let summary = &first["status"]["summary"];
    assert_eq!(summary["services"], 20);
    assert_eq!(summary["changed"], 20);
    assert_eq!(summary["promoted"], 20);
    assert!(settled_all(&followers(&seed).await, &rev1));

    // Commit 2 touches svc-03 and svc-11.
    let rev2 = repo.commit(
        &[
            ("services/svc-03/data.txt", Some("svc-03 two\n")),
            ("services/svc-11/data.txt", Some("svc-11 two\n")),
        ],
        "two services",
    );
    seed.api.reset_counters();
    let fetches = server.fetches();
    monorepos(&seed)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"revision": rev2}})),
        )
        .await
        .unwrap();
    let second = wait_monorepo(&seed, "shop", "to roll out commit 2", |o| {
        o["status"]["revision"] == rev2.as_str() && ready(o) == Some("True")
    })
    .await;
    let all = followers(&seed).await;
    assert!(
        settled_all(&all, &rev2),
        "Ready only once every follower settled"
    );
    let summary = &second["status"]["summary"];
    assert_eq!(
        (
            &summary["changed"],
            &summary["promoted"],
            &summary["unchanged"],
            &summary["failed"]
        ),
        (&json!(2), &json!(2), &json!(18), &json!(0)),
        "{summary:#}"
    );
    assert_eq!(summary["changedNames"], json!(["svc-03", "svc-11"]));
    assert_eq!(common::job_creates(&seed), 2);
    let deployment_writes = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.changed)
        .count();
    assert_eq!(deployment_writes, 2);
    // One fetch by the controller for the commit, plus the two builds' own checkouts.
    assert_eq!(server.fetches() - fetches, 3, "{:#?}", server.log().len());
    assert_eq!(second["status"]["history"][0]["revision"], rev1.as_str());
    assert_eq!(second["status"]["history"][0]["changed"], 20);
    let metrics = controller.get("/metrics").await.1;
    assert_eq!(
        common::counter(&metrics, "monoship_rollouts_total{result=\"complete\"}"),
        2.0
    );
    assert_eq!(
        common::counter(&metrics, "monoship_rollout_changed_services_count"),
        2.0
    );
    assert_eq!(
        common::counter(&metrics, "monoship_rollout_changed_services_sum"),
        22.0
    );
    controller.stop().await;
}

/// `spec.ref.branch`: a commit pushed to the branch is picked up within one interval, and
/// polls that find the same head write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_branch_is_followed_with_no_write_between_polls() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let services = vec!["banana".to_owned()];
    let rev1 = commit_all(&repo, &services, "one");
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    create_monorepo(
        &seed,
        "shop",
        json!({"repository": repo.http_url(), "ref": {"branch": "main"}, "interval": "10s"}),
    )
    .await;
    common::create(&seed, follower(&seed, "banana", "shop")).await;
    wait_monorepo(&seed, "shop", "to follow the branch", |o| {
        o["status"]["revision"] == rev1.as_str() && ready(o) == Some("True")
    })
    .await;
    let ls_refs = server.ls_refs();
    seed.api.reset_counters();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(server.ls_refs() > ls_refs, "the branch was read again");
    let monorepo_writes = seed
        .api
        .writes()
        .iter()
        .filter(|w| w.resource == "monorepos")
        .count();
    assert_eq!(monorepo_writes, 0, "no write while the head stays");

    let rev2 = commit_all(&repo, &services, "two");
    let started = tokio::time::Instant::now();
    wait_monorepo(&seed, "shop", "to pick up the new head", |o| {
        o["status"]["revision"] == rev2.as_str() && ready(o) == Some("True")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let banana = seed.get("banana").await;
    assert_eq!(banana["status"]["build"]["revision"], rev2.as_str());
    controller.stop().await;
}

/// A follower of a Monorepo that does not exist is Stalled, and creating the Monorepo
/// un-stalls it at once; a failed build shows on the Monorepo by name, and it is not Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_monorepo_stalls_and_a_failed_build_shows() {
    let server = GitServer::start(GitServerOptions::anonymous());
    let repo = server.repo("monorepo");
    let services = vec!["banana".to_owned(), "orange".to_owned()];
    let rev1 = commit_all(&repo, &services, "one");
    let hook = Arc::new(|job: &k8s_openapi::api::batch::v1::Job| {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        if name.starts_with("orange") {
            HookDecision::Fail("exit 1".into())
        } else {
            HookDecision::Run
        }
    });
    let seed = Seed::start_with(Some(hook), Vec::new()).await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    for service in &services {
        common::create(&seed, follower(&seed, service, "shop")).await;
    }
    let stalled = common::wait_for(&seed, "banana", "to stall", |o| {
        common::phase(o) == "Stalled"
    })
    .await;
    let condition = common::condition(&stalled, "Stalled").unwrap();
    assert_eq!(condition["reason"], "MonorepoNotFound");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("Monorepo shop/shop, which does not exist"),
        "{condition:#}"
    );

    let created = tokio::time::Instant::now();
    create_monorepo(
        &seed,
        "shop",
        json!({"repository": repo.http_url(), "revision": rev1}),
    )
    .await;
    common::wait_for(
        &seed,
        "banana",
        "to build after the Monorepo appears",
        |o| o["status"]["build"]["revision"] == rev1.as_str(),
    )
    .await;
    assert!(
        created.elapsed() < Duration::from_secs(30),
        "not a 5-minute retry: {:?}",
        created.elapsed()
    );
    let failed = wait_monorepo(&seed, "shop", "to show the failure", |o| {
        o["status"]["summary"]["building"] == 0 && o["status"]["revision"] == rev1.as_str()
    })
    .await;
    let summary = &failed["status"]["summary"];
    assert_eq!(summary["failed"], 1, "{summary:#}");
    assert_eq!(summary["failedNames"], json!(["orange"]));
    assert_eq!(ready(&failed), Some("False"));
    let condition = common::condition(&failed, "Ready").unwrap();
    assert_eq!(condition["reason"], "RolloutFailed");
    assert!(condition["message"].as_str().unwrap().contains("orange"));
    controller.stop().await;
}

/// A branch that cannot be read stalls the Monorepo with the reason, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_branch_that_cannot_be_read_stalls_the_monorepo() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let unreachable = monoship_testkit::git_server::url_unreachable("monorepo");
    create_monorepo(
        &seed,
        "shop",
        json!({"repository": unreachable, "ref": {"branch": "main"}, "interval": "10s"}),
    )
    .await;
    let stalled = wait_monorepo(&seed, "shop", "to stall", |o| {
        common::condition(o, "Stalled").is_some()
    })
    .await;
    let condition = common::condition(&stalled, "Stalled").unwrap();
    assert_eq!(condition["reason"], "RepositoryUnreadable");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("reading branch main of http://127.0.0.1:"),
        "{message}"
    );
    assert_eq!(ready(&stalled), Some("False"));
    assert!(stalled["status"].get("revision").is_none());
    controller.stop().await;
}
