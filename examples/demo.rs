//! monoship's main job on the seed scenario, for a newcomer: `bash examples/demo.sh`.
//!
//! The real controller runs against an in-process Kubernetes API server, a job runner that runs
//! each build Job as local processes, a real `docker-registry` on 127.0.0.1 and a git monorepo
//! with two services, banana and orange. Both ServiceBuilds follow one Monorepo, so each commit
//! is one line: the Monorepo's `spec.revision`. Three commits are played:
//!
//! 1. the initial commit: both services are built and promoted;
//! 2. a commit that changes only banana: banana is built and promoted with a new digest;
//!    orange's inputs (`services/orange`) did not change, so it is not built at all: its image
//!    gets the commit's tag and nothing of orange's moves;
//! 3. a commit outside both services (the README): neither is built.
//!
//! After each commit it prints what every ServiceBuild says, and what was really written: the
//! build Jobs and Deployment writes the API server saw and the manifest PUTs the registry saw.
//! At the end it lists each repository's tags by digest, as the registry stores them: one image
//! carries the tags of every commit that did not change it. It exits non-zero when what
//! happened contradicts that contract, so it doubles as a smoke check.
//! Controller logs are warnings only, and build output is hidden, unless `RUST_LOG` is set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use monoship::app::{self, Options};
use monoship::controller::{GitCacheSettings, Settings};
use monoship::metrics::Metrics;
use monoship_testkit::scenario::{NAMESPACE, SERVICES, Seed};
use serde_json::Value;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// What one commit should do to one service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Built, with a new digest: `latest` moves and the Deployment is pinned, once each.
    Promoted,
    /// Not built (inputs unchanged): the current image gets the revision's tag, nothing else
    /// is written.
    Skipped,
}

impl Expect {
    fn phase(self) -> &'static str {
        match self {
            Expect::Promoted => "Promoted",
            Expect::Skipped => "Unchanged",
        }
    }
}

/// One service after one commit.
struct Row {
    service: &'static str,
    phase: String,
    digest: String,
    /// Build Jobs created for the service.
    jobs: usize,
    /// Manifest PUTs of the revision's tag, and blob uploads, to the service's repository.
    revision_tag_puts: usize,
    blob_uploads: usize,
    /// Write requests on the service's Deployment, and how many of them changed it.
    deployment_writes: usize,
    deployment_changes: usize,
    latest_puts: usize,
    why: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Warnings only, and no build output, unless RUST_LOG asks for more.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        monoship_testkit::jobrunner::echo_to_stderr(false);
        EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    monoship::install_crypto_provider();
    let started = Instant::now();

    let seed = Seed::start().await;
    println!(
        "monoship demo: the real controller, an in-process Kubernetes API server, a job runner \
         and a real registry ({}),\npromoting a git monorepo with two services, banana and orange.",
        seed.registry.host()
    );
    println!(
        "A service is built only when its inputs (its source.paths at the commit, its build \
         template and image\nrepository) changed; otherwise its image just gets the commit's \
         tag. It is promoted (`latest` moved, its\nDeployment pinned to repo@sha256:...) only \
         when its image digest changed; otherwise nothing of it is written.\nThe JOBS and write \
         columns are counted by the API server and the registry themselves, not reported by \
         monoship.\n(RUST_LOG=info shows the controller's logs and the build output too.)\n"
    );

    let token = CancellationToken::new();
    let options = Options {
        settings: Settings {
            insecure_registries: vec![seed.registry.host()],
            git_cache: Some(GitCacheSettings {
                dir: seed.workspaces().join("git-cache"),
                max_bytes: 64 << 20,
                parallel_fetches: 4,
                allow_credentials_over_http: false,
                allowed_origins: Default::default(),
            }),
            ..Settings::default()
        },
        endpoints: None,
        election: None,
        lease_client: None,
        metrics: Arc::new(Metrics::default()),
    };
    let controller = tokio::spawn(app::run(seed.client.clone(), options, token.clone()));

    let mut problems = Vec::new();
    let mut digests: HashMap<&str, String> = HashMap::new();

    let rev1 = seed.repo.head();
    play(
        &seed,
        1,
        &rev1,
        "both services are new",
        [Expect::Promoted, Expect::Promoted],
        &mut digests,
        &mut problems,
    )
    .await;

    let rev2 = seed.change_service("banana", "a riper banana\n");
    play(
        &seed,
        2,
        &rev2,
        "only services/banana changed",
        [Expect::Promoted, Expect::Skipped],
        &mut digests,
        &mut problems,
    )
    .await;

    let rev3 = seed.change_nothing_built("A monorepo for monoship tests, now documented.\n");
    play(
        &seed,
        3,
        &rev3,
        "only the README changed, outside both services",
        [Expect::Skipped, Expect::Skipped],
        &mut digests,
        &mut problems,
    )
    .await;

    print_registry(&seed, &[&rev1, &rev2, &rev3], &mut problems);

    // Stop everything this demo started: the controller, the job runner, the API server, and
    // the registry process (killed when dropped).
    token.cancel();
    if tokio::time::timeout(Duration::from_secs(20), controller)
        .await
        .is_err()
    {
        problems.push("the controller did not stop within 20s".to_owned());
    }
    let Seed {
        api,
        runner,
        fixture,
    } = seed;
    runner.shutdown().await;
    api.shutdown().await;
    drop(fixture);

    println!(
        "Done in {:.1}s; everything stopped.",
        started.elapsed().as_secs_f64()
    );
    if problems.is_empty() {
        println!("OK: each commit rolled out exactly the services whose image changed.");
    } else {
        println!("FAILED: what happened contradicts the contract:");
        for problem in &problems {
            println!("  - {problem}");
        }
        std::process::exit(1);
    }
}

/// Point every ServiceBuild at `revision`, wait until both settle, print what happened and
/// check it against `expect` (banana, orange).
async fn play(
    seed: &Seed,
    number: usize,
    revision: &str,
    what: &str,
    expect: [Expect; 2],
    digests: &mut HashMap<&'static str, String>,
    problems: &mut Vec<String>,
) {
    let subject = seed.repo.git(&["log", "-1", "--format=%s", revision]);
    println!(
        "Commit {number}: {} \"{}\" ({what})",
        &revision[..12],
        subject.trim()
    );
    seed.api.reset_counters();
    let mark = seed.registry.mark();
    let clock = Instant::now();
    set_monorepo_revision(seed, revision).await;
    let settled = seed.settled(revision).await;
    let elapsed = clock.elapsed();
    let writes = seed.api.writes();
    let requests = seed.registry.requests_since(mark);

    let mut rows = Vec::new();
    for (service, expect) in SERVICES.into_iter().zip(expect) {
        let object = settled
            .iter()
            .find(|o| o["metadata"]["name"] == service)
            .expect("settled returns every ServiceBuild");
        let status = &object["status"];
        let deployment = writes
            .iter()
            .filter(|w| w.resource == "deployments" && w.name.as_deref() == Some(service));
        let repository = format!("shop/{service}");
        let tag = &revision[..12];
        let row = Row {
            service,
            phase: text(&status["phase"]).to_owned(),
            digest: text(&status["build"]["digest"]).to_owned(),
            jobs: writes
                .iter()
                .filter(|w| w.resource == "jobs" && w.verb == "create")
                .filter(|w| w.name.as_deref().is_some_and(|n| n.starts_with(service)))
                .count(),
            revision_tag_puts: requests
                .iter()
                .filter(|r| r.is_manifest_put(&repository, tag))
                .count(),
            blob_uploads: requests
                .iter()
                .filter(|r| r.is_blob_upload() && r.path.starts_with(&format!("/v2/{repository}/")))
                .count(),
            deployment_writes: deployment.clone().count(),
            deployment_changes: deployment.filter(|w| w.changed).count(),
            latest_puts: requests
                .iter()
                .filter(|r| r.is_manifest_put(&format!("shop/{service}"), "latest"))
                .count(),
            why: ready_message(status),
        };
        check(seed, number, &row, expect, digests, problems).await;
        digests.insert(service, row.digest.clone());
        rows.push(row);
    }
    print_table(&rows);
    print_monorepo(seed, revision, &expect, problems).await;
    println!("  settled in {:.1}s\n", elapsed.as_secs_f64());
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// The message of the Ready condition: why the ServiceBuild is where it is.
fn ready_message(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| text(&c["message"]).to_owned())
        .unwrap_or_else(|| "-".to_owned())
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

fn moved(row: &Row) -> String {
    let mut parts = Vec::new();
    if row.jobs == 0 && row.revision_tag_puts > 0 {
        parts.push("revision tag added".to_owned());
    }
    if row.latest_puts > 0 {
        parts.push("tag latest".to_owned());
    }
    if row.deployment_changes > 0 {
        parts.push(format!("deployment/{} pinned", row.service));
    }
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "SERVICE",
        "JOBS",
        "PHASE",
        "DIGEST",
        "BLOB UPLOADS",
        "DEPLOYMENT WRITES",
        "LATEST PUTS",
        "MOVED",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.service.to_owned(),
                r.jobs.to_string(),
                r.phase.clone(),
                short(&r.digest),
                r.blob_uploads.to_string(),
                r.deployment_writes.to_string(),
                r.latest_puts.to_string(),
                moved(r),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    for (row, r) in cells.iter().zip(rows) {
        line(row);
        println!("    why: {}", r.why);
    }
}

/// Compare what happened to one service with what the commit should have done.
async fn check(
    seed: &Seed,
    number: usize,
    row: &Row,
    expect: Expect,
    digests: &HashMap<&'static str, String>,
    problems: &mut Vec<String>,
) {
    let service = row.service;
    let mut problem = |what: String| problems.push(format!("commit {number}, {service}: {what}"));
    if row.phase != expect.phase() {
        problem(format!(
            "phase {} instead of {} ({})",
            row.phase,
            expect.phase(),
            row.why
        ));
    }
    if !row.digest.starts_with("sha256:") {
        problem("no digest was resolved".to_owned());
    }
    let before = digests.get(service);
    match expect {
        Expect::Promoted => {
            if row.jobs != 1 {
                problem(format!("{} build Jobs instead of 1", row.jobs));
            }
            if before == Some(&row.digest) {
                problem(format!("promoted, but {} was already current", row.digest));
            }
            if row.deployment_changes != 1 {
                problem(format!(
                    "its Deployment changed {} times instead of once",
                    row.deployment_changes
                ));
            }
            if row.latest_puts != 1 {
                problem(format!(
                    "`latest` was PUT {} times instead of once",
                    row.latest_puts
                ));
            }
            let pinned = format!("{}@{}", seed.repository(service), row.digest);
            let image = seed.deployment_image(service).await;
            if image != pinned {
                problem(format!("its Deployment runs {image}, not {pinned}"));
            }
        }
        Expect::Skipped => {
            if row.jobs != 0 {
                problem(format!(
                    "{} build Jobs although its inputs did not change",
                    row.jobs
                ));
            }
            if row.revision_tag_puts != 1 || row.blob_uploads != 0 {
                problem(format!(
                    "the revision's tag took {} manifest PUTs and {} blob uploads instead of 1 \
                     and 0",
                    row.revision_tag_puts, row.blob_uploads
                ));
            }
            if before != Some(&row.digest) {
                problem(format!(
                    "unchanged, but the digest {} differs from the last one ({})",
                    row.digest,
                    before.map_or("none", String::as_str)
                ));
            }
            if row.deployment_writes != 0 {
                problem(format!(
                    "its Deployment was written {} times",
                    row.deployment_writes
                ));
            }
            if row.latest_puts != 0 {
                problem(format!("`latest` was PUT {} times", row.latest_puts));
            }
        }
    }
}

/// Each repository's tags by digest, as the registry stores them: an image that a commit did not
/// change carries that commit's tag too.
fn print_registry(seed: &Seed, revisions: &[&str], problems: &mut Vec<String>) {
    println!("The registry: each image and the tags it carries");
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "DIGEST".to_owned(),
        "TAGS".to_owned(),
    ]];
    for service in SERVICES {
        let repository = format!("shop/{service}");
        let listed = seed.registry.tags_by_digest(&repository);
        let commits = revisions
            .iter()
            .filter(|r| {
                listed
                    .iter()
                    .any(|(_, tags)| tags.iter().any(|t| r.starts_with(t.as_str())))
            })
            .count();
        if commits != revisions.len() {
            problems.push(format!(
                "{repository} carries tags of {commits} of the {} commits",
                revisions.len()
            ));
        }
        for (digest, tags) in listed {
            rows.push([repository.clone(), short(&digest), tags.join(", ")]);
        }
    }
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for row in &rows {
        println!("  {:w0$}  {:w1$}  {}", row[0], row[1], row[2]);
    }
    println!();
}

fn monorepos(seed: &Seed) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monoship.dev", "v1alpha1", "Monorepo"),
        "monorepos",
    );
    Api::namespaced_with(seed.client.clone(), NAMESPACE, &resource)
}

/// The one line a commit changes: the Monorepo's `spec.revision`. The first commit creates the
/// Monorepo and the two ServiceBuilds that follow it.
async fn set_monorepo_revision(seed: &Seed, revision: &str) {
    let api = monorepos(seed);
    let exists = api.get_opt("shop").await.ok().flatten().is_some();
    if exists {
        let patch = json!({"spec": {"revision": revision}});
        if let Err(error) = api
            .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            eprintln!("demo: cannot set the Monorepo's revision: {error}");
        }
        return;
    }
    let monorepo = json!({
        "apiVersion": "monoship.dev/v1alpha1", "kind": "Monorepo",
        "metadata": {"name": "shop", "namespace": NAMESPACE},
        "spec": {"repository": seed.repo.url(), "revision": revision}
    });
    let created = match serde_json::from_value::<DynamicObject>(monorepo) {
        Ok(object) => api
            .create(&PostParams::default(), &object)
            .await
            .map(|_| ()),
        Err(error) => Err(kube::Error::SerdeError(error)),
    };
    if let Err(error) = created {
        eprintln!("demo: cannot create the Monorepo: {error}");
    }
    for service in SERVICES {
        let mut object = seed.servicebuild(service, revision);
        object["spec"]["source"] = json!({
            "monorepoRef": {"name": "shop"},
            "paths": [format!("services/{service}")]
        });
        let created = match serde_json::from_value::<DynamicObject>(object) {
            Ok(object) => seed
                .servicebuilds()
                .create(&PostParams::default(), &object)
                .await
                .map(|_| ()),
            Err(error) => Err(kube::Error::SerdeError(error)),
        };
        if let Err(error) = created {
            eprintln!("demo: cannot create ServiceBuild {service}: {error}");
        }
    }
}

/// What `kubectl get mr` shows once the Monorepo has caught up with `revision`, and whether it
/// counts what the commit should have done.
async fn print_monorepo(
    seed: &Seed,
    revision: &str,
    expect: &[Expect; 2],
    problems: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let monorepo = loop {
        let object = monorepos(seed)
            .get("shop")
            .await
            .ok()
            .and_then(|o| serde_json::to_value(o).ok())
            .unwrap_or_default();
        let status = &object["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if (status["revision"] == revision && ready) || Instant::now() > deadline {
            break object;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = &monorepo["status"];
    let summary = &status["summary"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map_or("-", |c| text(&c["status"]));
    println!("  $ kubectl get mr -n shop");
    println!(
        "  {:<6}{:<15}{:<10}{:<9}{:<10}{:<8}READY",
        "NAME", "REVISION", "SERVICES", "CHANGED", "PROMOTED", "FAILED"
    );
    let count = |key: &str| {
        summary[key]
            .as_u64()
            .map_or("-".to_owned(), |n| n.to_string())
    };
    println!(
        "  {:<6}{:<15}{:<10}{:<9}{:<10}{:<8}{ready}",
        "shop",
        text(&status["shortRevision"]),
        count("services"),
        count("changed"),
        count("promoted"),
        count("failed"),
    );
    let built = expect.iter().filter(|e| **e == Expect::Promoted).count();
    if summary["changed"] != built || ready != "True" {
        problems.push(format!(
            "the Monorepo at {} says {summary} (Ready {ready}); {built} service(s) should have changed",
            &revision[..12]
        ));
    }
}
