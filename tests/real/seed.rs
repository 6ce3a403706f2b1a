//! The seed scenario of tests/seed.rs on the real server, with the counts that are observable
//! there: Jobs created (a watch), Deployment writes (`metadata.generation`: every change to a
//! Deployment's spec bumps it, a write that changes nothing does not exist for the server),
//! registry manifest PUTs and blob uploads (the registry's request log), Nomad POSTs, phases,
//! digests, Events and metrics.
//!
//! kube-controller-manager's Deployment controller runs too: each Deployment gets a ReplicaSet
//! and a pod that stays `Pending` (the stand-in kubelet only runs Job pods).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use monoship::controller::Settings;
use monoship::lease::LeaseSettings;
use monoship_testkit::nomad::NomadDouble;
use monoship_testkit::scenario::{RealSeed, SERVICES};
use serde_json::Value;

use crate::common;

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

fn by_name<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .expect("the ServiceBuild is there")
}

/// Every Job uid a watch has seen in the namespace, in order.
fn record_jobs(
    client: Client,
    namespace: &str,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Job> = Api::namespaced(client, namespace);
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event {
                let uid = job.uid().unwrap_or_default();
                let mut seen = record.lock().unwrap();
                if !seen.contains(&uid) {
                    seen.push(uid);
                }
            }
        }
    });
    (seen, task)
}

async fn generations(seed: &RealSeed) -> HashMap<&'static str, i64> {
    let deployments: Api<Deployment> = Api::namespaced(seed.client.clone(), &seed.namespace);
    let mut out = HashMap::new();
    for service in SERVICES {
        let deployment = deployments.get(service).await.unwrap();
        out.insert(service, deployment.metadata.generation.unwrap_or_default());
    }
    out
}

async fn servicebuild_versions(seed: &RealSeed) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for service in SERVICES {
        out.push(
            seed.servicebuilds()
                .get(service)
                .await
                .unwrap()
                .resource_version(),
        );
    }
    out
}

async fn list_events(seed: &RealSeed) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(seed.client.clone(), &seed.namespace);
    api.list(&ListParams::default()).await.unwrap().items
}

/// How the controller under test runs: with which client, settings and election.
pub struct Controller {
    pub client: Client,
    pub settings: Settings,
    pub election: Option<LeaseSettings>,
}

/// Commit 1 builds and promotes both services; commit 2 changes only banana, and nothing of
/// orange's is written; then a no-op resync writes nothing and calls no registry. The same
/// assertions as tests/seed.rs, where a real server shows them.
pub async fn seed_scenario(seed: &mut RealSeed, controller: impl Fn() -> Controller) {
    let nomad = NomadDouble::start().await.unwrap();
    for service in SERVICES {
        let image = format!("{}:bootstrap", seed.repository(service));
        nomad.seed_docker_job(service, "web", "server", &image, &[("team", "fruit")]);
    }
    seed.nomad_address = Some(nomad.address());
    let (jobs_seen, job_watch) = record_jobs(seed.client.clone(), &seed.namespace);
    let start = |c: Controller| common::start_with(c.client, c.settings, c.election);
    let running = start(controller()).await;

    // Commit 1: both services are built and promoted.
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    let first = seed.settled(&rev1).await;
    let mut digests1 = HashMap::new();
    for service in SERVICES {
        let sb = by_name(&first, service);
        assert_eq!(phase(sb), "Promoted", "{service}: {:#}", sb["status"]);
        let digest = sb["status"]["current"]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(digest.starts_with("sha256:"));
        // The real kubelet path: the build's termination message reached the pod's status.
        assert_eq!(
            sb["status"]["build"]["digestSource"], "Reported",
            "{service}: {:#}",
            sb["status"]["build"]
        );
        let pinned = format!("{}@{digest}", seed.repository(service));
        assert_eq!(seed.deployment_image(service).await, pinned);
        let job = nomad.job("default", service).unwrap();
        assert_eq!(
            job["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
            pinned.as_str()
        );
        let targets = sb["status"]["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|t| t["inSync"] == true), "{targets:#?}");
        digests1.insert(service, digest);
    }
    assert_ne!(digests1["banana"], digests1["orange"]);
    assert_eq!(
        seed.jobs().await.len(),
        2,
        "one Job per service and revision"
    );
    assert_eq!(jobs_seen.lock().unwrap().len(), 2);

    // Commit 2 changes only banana.
    let generations_before = generations(seed).await;
    let jobs_before = jobs_seen.lock().unwrap().len();
    let mark = seed.registry.mark();
    let orange_version = nomad.version("default", "orange");
    let banana_read = nomad.job("default", "banana").unwrap();
    let (banana_posts, orange_posts) = (nomad.posts("banana"), nomad.posts("orange"));
    let rev2 = seed.change_service("banana", "a riper banana\n");
    seed.set_revision(&rev2).await;
    let second = seed.settled(&rev2).await;

    let banana = by_name(&second, "banana");
    assert_eq!(phase(banana), "Promoted", "{:#}", banana["status"]);
    let banana_digest = banana["status"]["current"]["digest"].as_str().unwrap();
    assert_ne!(banana_digest, digests1["banana"]);
    assert_eq!(banana["status"]["current"]["revision"], rev2.as_str());
    assert_eq!(
        seed.deployment_image("banana").await,
        format!("{}@{banana_digest}", seed.repository("banana"))
    );
    let orange = by_name(&second, "orange");
    assert_eq!(phase(orange), "Unchanged", "{:#}", orange["status"]);
    assert_eq!(
        orange["status"]["current"]["digest"],
        digests1["orange"].as_str()
    );
    assert_eq!(orange["status"]["current"]["revision"], rev1.as_str());
    assert_eq!(orange["status"]["build"]["revision"], rev2.as_str());
    assert_eq!(
        orange["status"]["build"]["digest"],
        digests1["orange"].as_str()
    );
    let history = &orange["status"]["history"][0];
    assert_eq!(
        (history["revision"].as_str(), history["promoted"].as_bool()),
        (Some(rev2.as_str()), Some(false))
    );
    let ready = orange["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Unchanged"))
    );

    // Deployment writes: orange's spec 0 times, banana's exactly once.
    let generations_after = generations(seed).await;
    assert_eq!(generations_after["orange"], generations_before["orange"]);
    assert_eq!(
        generations_after["banana"],
        generations_before["banana"] + 1
    );
    // One build Job for commit 2, banana's: orange's inputs did not change, so its build was
    // skipped and its image got the commit's tag.
    assert_eq!(jobs_seen.lock().unwrap().len() - jobs_before, 1);
    assert_eq!(orange["status"]["build"]["digestSource"], "Reused");

    // The registry: orange's `latest` is not PUT again, banana's exactly once; no blob of
    // orange's is uploaded.
    let since = seed.registry.requests_since(mark);
    let puts = |repo: &str, tag: &str| {
        since
            .iter()
            .filter(|r| r.is_manifest_put(repo, tag))
            .count()
    };
    assert_eq!(puts("shop/orange", "latest"), 0);
    assert_eq!(
        puts("shop/orange", &rev2[..12]),
        1,
        "orange's image tagged with commit 2"
    );
    assert_eq!(puts("shop/banana", "latest"), 1);
    let orange_uploads = since
        .iter()
        .filter(|r| r.is_blob_upload() && r.path.contains("/shop/orange/"))
        .count();
    assert_eq!(orange_uploads, 0, "orange's commit-2 tag uploads no blob");

    // Nomad: one enforced POST for banana that changes only the image; none for orange.
    assert_eq!(nomad.posts("orange") - orange_posts, 0);
    assert_eq!(nomad.version("default", "orange"), orange_version);
    assert_eq!(nomad.posts("banana") - banana_posts, 1);
    let body = nomad.post_bodies("banana").pop().unwrap();
    assert_eq!(body["EnforceIndex"], true);
    assert_eq!(body["JobModifyIndex"], banana_read["JobModifyIndex"]);
    let mut expected = banana_read.clone();
    expected["TaskGroups"][0]["Tasks"][0]["Config"]["image"] =
        Value::from(format!("{}@{banana_digest}", seed.repository("banana")));
    assert_eq!(
        body["Job"], expected,
        "only the image differs from what was read"
    );

    // Events say what happened, and /metrics counts it.
    let events = list_events(seed).await;
    let reasons_for = |name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect()
    };
    // Orange's build was skipped: BuildSkipped is its one Event for the commit.
    let orange = reasons_for("orange");
    assert!(orange.contains(&"BuildSkipped".to_owned()), "{orange:?}");
    assert!(!orange.contains(&"Unchanged".to_owned()), "{orange:?}");
    for reason in [
        "BuildStarted",
        "DigestResolved",
        "Promoted",
        "TagMoved",
        "TargetPinned",
    ] {
        assert!(
            reasons_for("banana").iter().any(|r| r == reason),
            "{reason}: {:?}",
            reasons_for("banana")
        );
    }
    let (code, text) = running.get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        common::counter(&text, "monoship_promotions_total"),
        3.0,
        "{text}"
    );
    // Orange's build was skipped, not run: no build ran for nothing.
    assert_eq!(
        common::counter(&text, "monoship_unchanged_builds_total"),
        0.0,
        "{text}"
    );
    assert_eq!(
        common::counter(&text, "monoship_builds_total{result=\"started\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        common::counter(&text, "monoship_builds_total{result=\"skipped\"}"),
        1.0,
        "{text}"
    );
    let (code, _) = running.get("/readyz").await;
    assert_eq!(code, 200);

    // A no-op resync: every ServiceBuild reconciled again writes nothing and calls no registry.
    running.stop().await;
    let versions = servicebuild_versions(seed).await;
    let generations_settled = generations(seed).await;
    let jobs_settled = jobs_seen.lock().unwrap().len();
    let events_settled: HashSet<_> = list_events(seed)
        .await
        .iter()
        .map(|e| e.resource_version())
        .collect();
    let mark = seed.registry.mark();
    let mut resync = controller();
    resync.settings.resync = Duration::from_millis(200);
    let resyncing = start(resync).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = common::counter(
        &resyncing.metrics.encode(),
        "monoship_reconciles_total{result=\"ok\"}",
    );
    assert!(reconciles >= 6.0, "resyncs happened: {reconciles}");
    assert_eq!(
        servicebuild_versions(seed).await,
        versions,
        "a no-op resync wrote a ServiceBuild"
    );
    assert_eq!(
        generations(seed).await,
        generations_settled,
        "a no-op resync wrote a Deployment"
    );
    assert_eq!(
        jobs_seen.lock().unwrap().len(),
        jobs_settled,
        "a no-op resync created a Job"
    );
    let events_now: HashSet<_> = list_events(seed)
        .await
        .iter()
        .map(|e| e.resource_version())
        .collect();
    assert_eq!(events_now, events_settled, "a no-op resync wrote an Event");
    assert!(
        seed.registry.requests_since(mark).is_empty(),
        "a no-op resync called the registry"
    );
    assert_eq!(
        nomad.posts("banana") + nomad.posts("orange"),
        banana_posts + orange_posts + 1
    );
    resyncing.stop().await;
    job_watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_commit_rolls_out_exactly_the_service_it_changed() {
    let env = envtest!();
    let _shared = crate::NAMESPACED.read().await;
    let mut seed = RealSeed::start(env, &[]).await;
    crate::install_crd(&seed.client).await;
    let client = seed.client.clone();
    let settings = Settings {
        namespace: Some(seed.namespace.clone()),
        ..common::settings(&seed, Duration::from_secs(600))
    };
    seed_scenario(&mut seed, || Controller {
        client: client.clone(),
        settings: settings.clone(),
        election: None,
    })
    .await;
}
