//! Builds, promotions and targets when things overlap: ServiceBuilds whose names share a long
//! prefix, the rebuild annotation set, removed and set again, a revision that changes while a
//! promotion starts, one Nomad job on two clusters, an invalid write. Each test failed on the
//! controller before the fix it names. (Target ownership is in tests/overlap.rs.)

mod common;

use std::time::Duration;

use monoship_testkit::apiserver::FaultRule;
use monoship_testkit::scenario::Seed;
use serde_json::{Value, json};

use common::{create, merge, phase, wait_for};

fn job_name(object: &Value) -> String {
    object["status"]["build"]["jobName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Two ServiceBuilds whose names share their first 52 characters build the same commit: each
/// gets its own Job (the Job name hashes the ServiceBuild's uid), and neither adopts the
/// other's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servicebuilds_with_a_long_shared_prefix_get_their_own_jobs() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();
    let prefix = "banana-service-with-a-name-long-enough-to-be-cut-off";
    assert!(prefix.len() >= 52);
    let mut names = Vec::new();
    for (suffix, service) in [("-one", "banana"), ("-two", "orange")] {
        let name = format!("{prefix}{suffix}");
        let mut object = seed.servicebuild(service, &revision);
        object["metadata"]["name"] = json!(name);
        create(&seed, object).await;
        names.push(name);
    }
    let mut jobs = Vec::new();
    for name in &names {
        let done = wait_for(&seed, name, "Promoted", |o| phase(o) == "Promoted").await;
        jobs.push(job_name(&done));
    }
    assert_ne!(jobs[0], jobs[1], "one Job each");
    assert_eq!(common::job_creates(&seed), 2);
    assert_eq!(seed.runner.runs(), 2, "both builds ran");
    controller.stop().await;
}

/// The rebuild annotation is a trigger: a new value builds again now; removing it, or setting
/// the value already handled, changes nothing; an old value set again after another one builds
/// anew instead of finding that value's old Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rebuild_annotation_triggers_and_never_resurrects() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_millis(300)).await;
    let revision = seed.repo.head();
    let good = seed.servicebuild("banana", &revision)["spec"]["build"].clone();
    let mut failing = seed.servicebuild("banana", &revision);
    failing["spec"]["build"]["template"]["spec"]["containers"][0]["command"] =
        json!(["sh", "-c", "exit 3"]);
    create(&seed, failing).await;
    let failed = wait_for(&seed, "banana", "Failed", |o| phase(o) == "Failed").await;
    let failed_job = job_name(&failed);

    let rebuild =
        |value: Value| json!({"metadata": {"annotations": {"monoship.dev/rebuild": value}}});
    merge(&seed, "banana", json!({"spec": {"build": good}})).await;
    merge(&seed, "banana", rebuild(json!("1"))).await;
    let first = wait_for(&seed, "banana", "Promoted after rebuild 1", |o| {
        phase(o) == "Promoted" && o["status"]["lastHandledRebuild"] == "1"
    })
    .await;
    let job_1 = job_name(&first);
    assert_ne!(job_1, failed_job);
    assert_eq!(common::job_creates(&seed), 2);

    // Removing the annotation, or setting the value already handled, changes nothing.
    merge(&seed, "banana", rebuild(Value::Null)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    merge(&seed, "banana", rebuild(json!("1"))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = seed.get("banana").await;
    assert_eq!(phase(&still), "Promoted", "{:#}", still["status"]);
    assert_eq!(job_name(&still), job_1);
    assert_eq!(
        common::job_creates(&seed),
        2,
        "no build, no resurrected failure"
    );

    // A new value builds again; the old value set again after it builds again too, as a Job
    // of its own.
    merge(&seed, "banana", rebuild(json!("2"))).await;
    let second = wait_for(&seed, "banana", "settled after rebuild 2", |o| {
        o["status"]["lastHandledRebuild"] == "2" && matches!(phase(o), "Promoted" | "Unchanged")
    })
    .await;
    merge(&seed, "banana", rebuild(json!("1"))).await;
    let third = wait_for(&seed, "banana", "settled after rebuild 1 again", |o| {
        o["status"]["lastHandledRebuild"] == "1"
            && job_name(o) != job_name(&second)
            && matches!(phase(o), "Promoted" | "Unchanged")
    })
    .await;
    let job_1_again = job_name(&third);
    assert!(
        ![
            failed_job.as_str(),
            job_1.as_str(),
            job_name(&second).as_str()
        ]
        .contains(&job_1_again.as_str()),
        "{job_1_again} is a new Job"
    );
    assert_eq!(common::job_creates(&seed), 4);
    controller.stop().await;
}

/// The status write that starts a promotion is conditional on the object as read: a revision
/// set while it is on its way aborts it before any tag or target moves, and the newer revision
/// is promoted instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revision_changed_while_a_promotion_starts_is_never_promoted() {
    let seed = Seed::start().await;
    // The first status write (Building) goes through; the next (the start of the promotion)
    // is held for 3 s, long enough for a newer revision to land.
    seed.api.inject_fault(
        FaultRule::new("patch", "servicebuilds")
            .subresource("status")
            .name("banana")
            .after(1)
            .delay(Duration::from_secs(3))
            .times(1),
    );
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let old = seed.repo.head();
    let short = &old[..12];
    seed.set_service_revision("banana", &old).await;
    // Wait until the old build's digest was resolved: the promotion's first write is next.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seed
        .registry
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.path == format!("/v2/shop/banana/manifests/{short}"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no digest resolution"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newer = seed.change_service("banana", "newer\n");
    seed.set_service_revision("banana", &newer).await;

    let done = wait_for(&seed, "banana", "Promoted at the newer revision", |o| {
        phase(o) == "Promoted" && o["status"]["build"]["revision"] == newer.as_str()
    })
    .await;
    let history = done["status"]["history"].as_array().unwrap();
    assert!(
        history.iter().all(|h| h["revision"] != old.as_str()),
        "the older revision was never promoted: {history:#?}"
    );
    let pins = all_target_writes(&seed);
    assert_eq!(
        pins, 1,
        "the Deployment was pinned once, to the newer digest"
    );
    let latest_puts = seed
        .registry
        .requests()
        .iter()
        .filter(|r| r.is_manifest_put("shop/banana", "latest"))
        .count();
    assert_eq!(latest_puts, 1, "latest moved once, to the newer digest");
    controller.stop().await;
}

/// The same Nomad job on two clusters (or in two regions) is two targets, not a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_nomad_job_on_two_clusters_is_two_targets() {
    use monoship_testkit::nomad::NomadDouble;
    let seed = Seed::start().await;
    let (east, west) = (
        NomadDouble::start().await.unwrap(),
        NomadDouble::start().await.unwrap(),
    );
    let bootstrap = format!("{}:bootstrap", seed.repository("banana"));
    for cluster in [&east, &west] {
        cluster.seed_docker_job("banana", "web", "server", &bootstrap, &[]);
    }
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let mut object = seed.servicebuild("banana", &seed.repo.head());
    object["spec"]["targets"] = json!([
        {"nomad": {"address": east.address(), "job": "banana", "group": "web", "task": "server"}},
        {"nomad": {"address": west.address(), "job": "banana", "group": "web", "task": "server",
                   "region": "west"}}
    ]);
    create(&seed, object).await;
    let done = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    let digest = done["status"]["current"]["digest"].as_str().unwrap();
    let pinned = format!("{}@{digest}", seed.repository("banana"));
    for cluster in [&east, &west] {
        let job = cluster.job("default", "banana").unwrap();
        assert_eq!(
            job["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
            pinned.as_str()
        );
        assert_eq!(cluster.posts("banana"), 1);
    }
    assert_eq!(done["status"]["targets"].as_array().unwrap().len(), 2);
    controller.stop().await;
}

/// A write the API server rejects as invalid (422) does not heal by retrying: Stalled with the
/// server's own sentence, not a backoff loop with a Debug dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_write_stalls_with_the_servers_sentence() {
    let (seed, controller) = common::with_failing_target_writes(422).await;
    let stalled = wait_for(&seed, "banana", "Stalled", |o| phase(o) == "Stalled").await;
    let stall = common::condition(&stalled, "Stalled").unwrap();
    assert_eq!(stall["reason"], "KubernetesAPIInvalid");
    let message = stall["message"].as_str().unwrap();
    assert!(
        message.contains("rejected a write as invalid: injected fault (422)")
            && !message.contains("Status {"),
        "{message}"
    );
    controller.stop().await;
}

/// The build of `service` as a shell command line: the seed build script on `dir`.
fn build_command(seed: &Seed, dir: &str) -> String {
    let script = monoship_testkit::oci::build_script();
    format!("bash {} --layers {} {dir}", script.display(), seed.layers)
}

/// `banana` built by a shell `command` instead of the seed build.
fn servicebuild_running(seed: &Seed, command: &str) -> Value {
    let mut object = seed.servicebuild("banana", &seed.repo.head());
    object["spec"]["build"]["template"]["spec"]["containers"][0]["command"] =
        json!(["bash", "-c", command]);
    object
}

/// Writes that changed any Deployment (creations aside).
fn all_target_writes(seed: &Seed) -> usize {
    seed.api
        .writes()
        .iter()
        .filter(|w| w.resource == "deployments" && w.changed && w.verb != "create")
        .count()
}

fn built_message(object: &Value) -> String {
    common::condition(object, "Built").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Someone else pushes to the build's revision tag after the build pushed (here: right after,
/// another image to the same tag): the digest the build reported and the one the tag points at
/// differ, so nothing is promoted, and the stall names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_overwritten_after_the_build_pushed_promotes_nothing() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let overwrite = format!(
        "{} && env -u MONOSHIP_DIGEST_FILE {}",
        build_command(&seed, "services/banana"),
        build_command(&seed, "services/orange")
    );
    create(&seed, servicebuild_running(&seed, &overwrite)).await;
    let stalled = wait_for(&seed, "banana", "Stalled", |o| phase(o) == "Stalled").await;
    let stall = common::condition(&stalled, "Stalled").unwrap();
    assert_eq!(stall["reason"], "DigestMismatch", "{:#}", stalled["status"]);
    let message = stall["message"].as_str().unwrap();
    let digests: Vec<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| w.starts_with("sha256:") && w.len() == 71)
        .collect();
    assert_eq!(digests.len(), 2, "both digests: {message}");
    assert_ne!(digests[0], digests[1], "{message}");
    // The same content pushed elsewhere gives the same digest: the tag holds orange's build.
    let orange = seed.repo.path().join("services/orange");
    let host = seed.registry.host();
    let orange_digest = tokio::task::spawn_blocking(move || {
        monoship_testkit::oci::build_and_push_layers(&orange, &host, "scratch/orange", "x", 2)
    })
    .await
    .unwrap();
    assert_eq!(digests[1], orange_digest, "the tag's digest: {message}");
    assert!(stalled["status"]["build"]["digest"].is_null());
    assert!(stalled["status"]["current"].is_null());
    assert_eq!(all_target_writes(&seed), 0, "no target written");
    assert_eq!(
        seed.registry.manifest_puts("shop/banana", "latest"),
        0,
        "no tag moved"
    );
    // It stays so: nothing is retried until a new revision or rebuild token.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&seed.get("banana").await), "Stalled");
    assert_eq!(
        (all_target_writes(&seed), common::job_creates(&seed)),
        (0, 1)
    );
    controller.stop().await;
}

/// A build that reports its digest (the seed build writes `$MONOSHIP_DIGEST_FILE`) records it
/// as reported; one that reports nothing falls back to its tag and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digest_is_recorded_with_where_it_came_from() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    seed.set_service_revision("orange", &seed.repo.head()).await;
    let silent = format!(
        "env -u MONOSHIP_DIGEST_FILE {}",
        build_command(&seed, "services/banana")
    );
    create(&seed, servicebuild_running(&seed, &silent)).await;

    let orange = wait_for(&seed, "orange", "Promoted", |o| phase(o) == "Promoted").await;
    let build = &orange["status"]["build"];
    assert_eq!(build["digestSource"], "Reported", "{build:#}");
    assert_eq!(build["digest"], orange["status"]["current"]["digest"]);
    assert!(built_message(&orange).contains("reported its digest"));

    let banana = wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    let build = &banana["status"]["build"];
    assert_eq!(build["digestSource"], "Tag", "{build:#}");
    assert_eq!(build["digest"], banana["status"]["current"]["digest"]);
    let message = built_message(&banana);
    assert!(message.contains("reported no digest"), "{message}");
    assert!(message.contains("its tag"), "{message}");
    controller.stop().await;
}

/// Two ServiceBuilds of one namespace push to the same repository and revision tag: the newer
/// one is refused before it creates a Job, and its stall names the older.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_servicebuild_on_the_same_tag_creates_no_job() {
    let seed = Seed::start().await;
    let controller = common::start(&seed, Duration::from_secs(600)).await;
    let revision = seed.repo.head();
    create(&seed, seed.servicebuild("banana", &revision)).await;
    wait_for(&seed, "banana", "Building", |o| !job_name(o).is_empty()).await;
    // Creation times have a resolution of one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut copy = seed.servicebuild("banana", &revision);
    copy["metadata"]["name"] = json!("banana-copy");
    copy["spec"]["targets"] = json!([]);
    create(&seed, copy).await;
    let refused = wait_for(&seed, "banana-copy", "Stalled", |o| phase(o) == "Stalled").await;
    let stall = common::condition(&refused, "Stalled").unwrap();
    assert_eq!(stall["reason"], "ImageTagClaimed");
    let message = stall["message"].as_str().unwrap();
    let image = format!("{}:{}", seed.repository("banana"), &revision[..12]);
    assert!(
        message.contains("ServiceBuild shop/banana,") && message.contains(&image),
        "{message}"
    );
    wait_for(&seed, "banana", "Promoted", |o| phase(o) == "Promoted").await;
    assert_eq!(common::job_creates(&seed), 1, "only the older one built");
    assert_eq!(seed.jobs().await.len(), 1);
    assert!(refused["status"]["build"].is_null());
    controller.stop().await;
}

/// What the controller keeps per ServiceBuild (its last status write until the watch has
/// delivered it, a backoff count) goes when the ServiceBuild goes: with many ServiceBuilds
/// coming and going it does not grow. `/metrics` shows the count as of the last prune. (That
/// the prune drops exactly the entries of ServiceBuilds that are gone is a unit test of the
/// context; an entry may also go earlier, once the watch delivered the write it notes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_controller_keeps_of_a_deleted_servicebuild_goes_with_it() {
    let seed = Seed::start().await;
    let mut settings = common::settings(&seed, Duration::from_secs(600));
    settings.prune_every = Duration::from_millis(200);
    let controller = common::start_with(seed.client.clone(), settings, None).await;
    let revision = seed.repo.head();
    seed.set_revision(&revision).await;
    seed.settled(&revision).await;
    let tracked = || {
        common::counter(
            &controller.metrics.encode(),
            "monoship_tracked_servicebuilds",
        )
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(tracked() <= 2.0, "tracked: {}", tracked());
    for name in ["banana", "orange"] {
        seed.servicebuilds()
            .delete(name, &Default::default())
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tracked() != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tracked: {}",
            tracked()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.stop().await;
}
