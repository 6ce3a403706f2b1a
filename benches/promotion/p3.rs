//! P3: one commit across every service, of which one changed, against a pipeline that rebuilds
//! and redeploys every service: `latest` moved by skopeo copy (measured on a sample, scaled)
//! and every Deployment patched to the commit's tag.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use monoship_testkit::apiserver::{WriteCounts, WriteRecord};
use monoship_testkit::registry::RecordedRequest;
use serde_json::{Value, json};

use crate::fixture::{
    Fixture, Fleet, blob_bytes, classes, classes_text, job_creates, phase, process_cpu_seconds,
    progress, repository_path, service, set_revision, settle_limit, short, skopeo_copy, tally,
    target_writes, wait_settled,
};
use crate::report::Report;
use crate::{Outcome, fail};

/// Services whose `latest` the baseline moves with skopeo; the total is scaled from these.
const P3_BASELINE_SAMPLE: usize = 10;

pub struct P3 {
    /// The commit every service moved to.
    pub revision: String,
    jobs: usize,
    /// Fetches the controller sent to the git server for the commit.
    git_fetches: usize,
    /// ServiceBuilds whose build was skipped (inputs unchanged).
    skipped: usize,
    /// The controller's VmHWM after the commit settled, in KiB.
    peak_rss_kib: u64,
    promotions: f64,
    target_writes: usize,
    registry: Vec<RecordedRequest>,
    patch_seconds: f64,
    settle_seconds: f64,
    phases: BTreeMap<String, usize>,
    promotions_metric: f64,
    skipped_metric: f64,
    /// Every figure of the commit, for the raw output.
    raw: Value,
}

pub struct Baseline {
    /// Deployment writes of the redeploy of every service.
    pub writes: WriteCounts,
    sample: usize,
    sample_requests: usize,
    registry_scaled: f64,
    seconds: f64,
}

/// One commit across every service, as the controller handled it.
pub struct Commit {
    /// The commit every service moved to.
    pub revision: String,
    pub writes: Vec<WriteRecord>,
    pub requests: Vec<RecordedRequest>,
    /// Every ServiceBuild once settled.
    pub settled: Vec<Value>,
    /// From the first revision patch until every status settled.
    pub settle_seconds: f64,
    pub patch_seconds: f64,
    /// Fetches the controller sent to the git server for the commit.
    pub git_fetches: usize,
    /// API requests by verb and resource, from the first patch until 2 s after every status
    /// settled.
    pub api_requests: BTreeMap<String, u64>,
    /// CPU seconds from the first patch until every status settled, as [`cpu_split`].
    pub cpu_seconds: [f64; 3],
}

/// Move every ServiceBuild to a new commit (`label`) at which one service's image changed (the
/// `changed`-th service's build yields another image); record what the controller does until
/// every status settles.
pub async fn one_changed(
    fixture: &Fixture,
    fleet: &mut Fleet,
    changed: usize,
    label: &str,
) -> Outcome<Commit> {
    let (api, client, registry, setup) = (
        &fixture.api,
        &fixture.client,
        &fixture.registry,
        &fixture.setup,
    );
    // A commit that changes one service's inputs. Only that one builds (its image, b, is
    // placed as its build would push it); every other service's image gets the commit's tag
    // from monoship.
    let changed = service(changed);
    let revision = fixture.commit(std::slice::from_ref(&changed), label);
    setup
        .mount(&fleet.image_b, &repository_path(&changed))
        .await?;
    setup
        .tag(&fleet.image_b, &repository_path(&changed), short(&revision))
        .await?;
    let fetches_before = fixture.controller_fetches();
    let cpu_before = cpu_split(fixture, fleet)?;
    api.reset_counters();
    let mark = registry.mark();
    let started = Instant::now();
    let revision_ref = &revision;
    fleet
        .for_each(32, |name| async move {
            set_revision(client, &name, revision_ref).await
        })
        .await?;
    let patch_seconds = started.elapsed().as_secs_f64();
    for name in fleet.services() {
        fleet.revisions.insert(name, revision.clone());
    }
    let settled = wait_settled(client, &fleet.revisions, settle_limit(fleet.count)).await?;
    let settle_seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_split(fixture, fleet)?;
    let cpu_seconds = std::array::from_fn(|i| cpu_after[i] - cpu_before[i]);
    let git_fetches = fixture.controller_fetches() - fetches_before;
    // Let anything still in flight land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api_requests = api
        .counters()
        .into_iter()
        .map(|(k, n)| {
            let sub = if k.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", k.subresource)
            };
            (format!("{} {}{sub}", k.verb, k.resource), n)
        })
        .collect();
    Ok(Commit {
        revision,
        api_requests,
        writes: api.writes(),
        requests: registry.requests_since(mark),
        settled,
        settle_seconds,
        patch_seconds,
        git_fetches,
        cpu_seconds,
    })
}

/// CPU seconds used so far by the controller, the registry, and the bench process (the API
/// server, the registry's recording proxy, the job runner and the bench's own polls).
fn cpu_split(fixture: &Fixture, fleet: &Fleet) -> Outcome<[f64; 3]> {
    Ok([
        fleet.controller.cpu_seconds()?,
        process_cpu_seconds(fixture.registry.pid())?,
        process_cpu_seconds(std::process::id())?,
    ])
}

/// The promotions of `commit`: ServiceBuilds whose current digest now comes from its revision.
pub fn promotions(commit: &Commit) -> usize {
    commit
        .settled
        .iter()
        .filter(|o| o["status"]["current"]["revision"] == commit.revision.as_str())
        .count()
}

/// The commits of one P3 measure: the one whose settle time is the median of the runs (all its
/// figures), and every run's settle time in the order they ran.
pub struct Runs {
    pub median: P3,
    pub settle_seconds: Vec<f64>,
    /// Jobs each run created.
    pub jobs: Vec<usize>,
}

/// Which commits a P3 measure runs: `runs` of them, at `rev<first>`, `rev<first + 1>`, …, each
/// changing another service (the `changed`-th, then the next, …); with `restart`, every run but
/// the first starts with a new controller process (after its no-op resync), so that each is the
/// first commit a controller sees.
pub struct Commits {
    pub changed: usize,
    pub first: usize,
    pub runs: usize,
    pub restart: bool,
}

/// [`measure`] each of `commits`. The median run's figures go to the raw output under `key`,
/// with every run's settle time. One run on this shared 2-core machine moves by a fifth or more
/// from the next, hence several.
pub async fn measure_runs(
    report: &mut Report,
    fixture: &Fixture,
    fleet: &mut Fleet,
    commits: Commits,
    key: &str,
) -> Outcome<Runs> {
    let Commits {
        changed,
        first,
        runs,
        restart,
    } = commits;
    let mut measured = Vec::with_capacity(runs);
    for run in 0..runs {
        if restart && run > 0 {
            progress(&format!("P3 ({key}): a new controller process"));
            crate::p2::resync(fixture, fleet).await?;
        }
        let label = format!("rev{}", first + run);
        progress(&format!(
            "P3 ({key}, {} of {runs}): one commit across every service, one changed",
            run + 1
        ));
        measured.push(measure(fixture, fleet, changed + run, &label).await?);
    }
    let settle_seconds: Vec<f64> = measured.iter().map(|m| m.settle_seconds).collect();
    let jobs: Vec<usize> = measured.iter().map(|m| m.jobs).collect();
    measured.sort_by(|a, b| a.settle_seconds.total_cmp(&b.settle_seconds));
    if measured.is_empty() {
        return fail("P3 needs at least one run");
    }
    let median = measured.swap_remove((measured.len() - 1) / 2);
    let mut raw = median.raw.clone();
    raw["runs_settle_seconds"] = json!(settle_seconds);
    raw["runs_jobs_created"] = json!(jobs);
    report.raw(key, raw);
    Ok(Runs {
        median,
        settle_seconds,
        jobs,
    })
}

/// [`one_changed`] for the `changed`-th service at commit `label`, counted.
async fn measure(fixture: &Fixture, fleet: &mut Fleet, changed: usize, label: &str) -> Outcome<P3> {
    let promotions_before = fleet
        .controller
        .counter("monoship_promotions_total")
        .await?;
    let skipped_before = fleet
        .controller
        .counter("monoship_builds_total{result=\"skipped\"}")
        .await?;
    let commit = one_changed(fixture, fleet, changed, label).await?;
    let jobs = job_creates(&commit.writes);
    let target_writes = target_writes(&commit.writes);
    let controller = &fleet.controller;
    let promotions_metric =
        controller.counter("monoship_promotions_total").await? - promotions_before;
    let promotions = promotions(&commit) as f64;
    let skipped_metric = controller
        .counter("monoship_builds_total{result=\"skipped\"}")
        .await?
        - skipped_before;
    let phases = tally(commit.settled.iter().map(|o| phase(o).to_owned()));
    let (final_hwm, final_rss) = controller.memory()?;
    let skipped = commit
        .settled
        .iter()
        .filter(|o| o["status"]["build"]["digestSource"] == "Reused")
        .count();
    let git_fetches = commit.git_fetches;
    let requests = commit.requests;
    let raw = json!({"jobs_created": jobs, "promotions": promotions,
               "promotions_metric_delta": promotions_metric, "skipped_metric_delta": skipped_metric,
               "target_writes": target_writes, "registry_requests": requests.len(),
               "registry_classes": classes(&requests), "blob_upload_bytes": blob_bytes(&requests),
               "settle_seconds": commit.settle_seconds, "patch_seconds": commit.patch_seconds,
               "phases": phases, "git_fetches": git_fetches, "skipped_builds": skipped,
               "controller_vmhwm_kib_after": final_hwm, "controller_vmrss_kib_after": final_rss,
               "cpu_seconds": {"controller": commit.cpu_seconds[0], "registry": commit.cpu_seconds[1],
                               "bench_process": commit.cpu_seconds[2]},
               "api_requests": commit.api_requests,
               "api_writes": tally(commit.writes.iter().map(|w| format!("{} {}", w.verb, w.resource)))});
    Ok(P3 {
        revision: commit.revision,
        jobs,
        git_fetches,
        skipped,
        peak_rss_kib: final_hwm,
        promotions,
        target_writes,
        registry: requests,
        patch_seconds: commit.patch_seconds,
        settle_seconds: commit.settle_seconds,
        phases,
        promotions_metric,
        skipped_metric,
        raw,
    })
}

/// The baseline, with the controller stopped: skopeo copy of the commit's tag to `latest` on a
/// sample of services, then every Deployment redeployed at the commit.
pub async fn baseline(
    report: &mut Report,
    fixture: &Fixture,
    fleet: &Fleet,
    p3: &P3,
) -> Outcome<Baseline> {
    let (api, registry, count) = (&fixture.api, &fixture.registry, fleet.count);
    let mark = registry.mark();
    let sample = P3_BASELINE_SAMPLE.min(count);
    for i in 0..sample {
        let name = service(i * count / sample);
        skopeo_copy(
            &fixture.host,
            &repository_path(&name),
            short(&p3.revision),
            "latest",
        )
        .await?;
    }
    let sample_requests = registry.requests_since(mark).len();
    let registry_scaled = sample_requests as f64 * count as f64 / sample as f64;
    api.reset_counters();
    let started = Instant::now();
    fleet.redeploy(&fixture.client, &p3.revision).await?;
    let seconds = started.elapsed().as_secs_f64();
    let writes = api.count_writes("deployments");
    report.baseline(json!({
        "p3_skopeo_sample": sample, "p3_skopeo_sample_requests": sample_requests,
        "p3_registry_requests_scaled": registry_scaled,
        "p3_redeploy_writes": writes.requests, "p3_redeploy_changed": writes.changed,
        "p3_redeploy_seconds": seconds}));
    Ok(Baseline {
        writes,
        sample,
        sample_requests,
        registry_scaled,
        seconds,
    })
}

/// The rows of the first commits after a restart (`first`) and of the next ones (`next`), each
/// the median run's.
pub fn rows(report: &mut Report, count: usize, first: &Runs, next: &Runs, base: &Baseline) {
    let (p3, runs) = (&first.median, &first.settle_seconds);
    let (next_jobs, next_runs) = (&next.jobs, &next.settle_seconds);
    let next = &next.median;
    // Every run's Jobs count, not only the median's: the most any run created.
    let most_jobs = first
        .jobs
        .iter()
        .chain(next_jobs.iter())
        .copied()
        .max()
        .unwrap_or(0);
    report.row(
        &format!("P3 Jobs created, 1 of {count} changed, most of any run"),
        Some(most_jobs as f64),
        Some(count as f64),
        "1",
        Some(most_jobs == 1),
        "",
    );
    report.row(
        "P3 git fetches by the controller for the commit",
        Some(p3.git_fetches as f64),
        None,
        "1",
        Some(p3.git_fetches == 1),
        "",
    );
    report.row(
        "P3 promotions",
        Some(p3.promotions),
        Some(count as f64),
        "1",
        Some(p3.promotions == 1.0),
        "",
    );
    report.row(
        "P3 target writes",
        Some(p3.target_writes as f64),
        Some(base.writes.requests as f64),
        "1",
        Some(p3.target_writes == 1),
        "",
    );
    for (commit, which) in [
        (
            p3,
            format!("first commit after a restart, median of {}", runs.len()),
        ),
        (next, format!("next commit, median of {}", next_runs.len())),
    ] {
        report.row(
            &format!("P3 registry requests, {which}"),
            Some(commit.registry.len() as f64),
            Some(base.registry_scaled),
            "report",
            None,
            "",
        );
        report.row(
            &format!("P3 revision patch -> every status settled, {which}"),
            Some(commit.settle_seconds),
            None,
            "< 3 s",
            Some(commit.settle_seconds < 3.0),
            " s",
        );
    }
    report.row(
        "P3 controller peak RSS with the git cache in use",
        Some(p3.peak_rss_kib as f64 / 1024.0),
        None,
        "report",
        None,
        " MiB",
    );
    report.note(format!(
        "P3: {count} ServiceBuilds patched to the new commit in {:.1}s, all settled after \
         {:.1}s (the median of {} first commits after a restart, each a new controller process: \
         {}; {:?}; {} builds skipped, their images tagged with the commit); promotions counts ServiceBuilds whose current digest \
         comes from the new commit (monoship_promotions_total rose by {}, \
         monoship_builds_total{{result=\"skipped\"}} by {}); monoship's registry requests: {}. \
         Baseline: every \
         service rebuilt (Jobs = {count}) and redeployed: `latest` moved by skopeo copy, measured \
         on {} services ({} requests) and scaled to {count}; Deployment writes measured on \
         all {count} ({} changed, {:.1}s). Builds are instant here, so there is \
         no baseline for the settle time; the build pushes are counted on neither side.",
        p3.patch_seconds,
        p3.settle_seconds,
        runs.len(),
        seconds_list(runs),
        p3.phases,
        p3.skipped,
        p3.promotions_metric,
        p3.skipped_metric,
        classes_text(&classes(&p3.registry), 1),
        base.sample,
        base.sample_requests,
        base.writes.changed,
        base.seconds,
    ));
    report.note(format!(
        "P3 next commit: the same controller, right after, moves every ServiceBuild to another \
         commit at which another service changed, {} times in a row: settled after {:.1}s \
         (the median; every run: {}; {:?}); monoship's registry requests: {}. A skipped \
         build's revision tag is one manifest PUT of bytes the controller kept from the commit \
         before (the first commit after a restart reads them with a GET).",
        next_runs.len(),
        next.settle_seconds,
        seconds_list(next_runs),
        next.phases,
        classes_text(&classes(&next.registry), 1),
    ));
}

/// `2.7 s, 3.1 s, …`, in the order the runs ran.
fn seconds_list(seconds: &[f64]) -> String {
    let each: Vec<String> = seconds.iter().map(|s| format!("{s:.2} s")).collect();
    each.join(", ")
}
