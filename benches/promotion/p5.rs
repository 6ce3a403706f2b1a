//! P5: reaction latency, from a revision change of one ServiceBuild among them all to its build
//! Job's creation, seen on a watch in the bench process. No baseline: a CI pipeline reacts on
//! its runner's schedule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;

use crate::fixture::{
    Fixture, Fleet, NAMESPACE, percentile, progress, repository_path, service, set_revision, short,
    sorted, wait_settled,
};
use crate::report::Report;
use crate::{Outcome, fail};

/// Revision changes timed.
const P5_CHANGES: usize = 200;

pub struct P5 {
    service: String,
    p50: f64,
    p99: f64,
}

/// Change one service's revision `P5_CHANGES` times, each settling before the next.
pub async fn measure(report: &mut Report, fixture: &Fixture, fleet: &mut Fleet) -> Outcome<P5> {
    progress("P5: reaction latency");
    let client = &fixture.client;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut events = watcher(jobs, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event {
                    let now = Instant::now();
                    if let Ok(mut seen) = seen.lock() {
                        seen.entry(job.name_any()).or_insert(now);
                    }
                }
            }
        })
    };
    let target = service(0);
    // Each change is a commit to the target's inputs, so each builds.
    let revisions: Vec<String> = (0..P5_CHANGES)
        .map(|i| fixture.commit(std::slice::from_ref(&target), &format!("p5-{i}")))
        .collect();
    let target_repository = repository_path(&target);
    for rev in &revisions {
        fixture
            .setup
            .tag(&fleet.image_a, &target_repository, short(rev))
            .await?;
    }
    // Let the watch list what exists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let uid = crate::fixture::servicebuilds(client)
        .get(&target)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let mut latencies = Vec::new();
    for rev in &revisions {
        let name = monoship::build::job_name(&target, &uid, rev, None, None);
        let changed = Instant::now();
        set_revision(client, &target, rev).await?;
        let deadline = changed + Duration::from_secs(30);
        let created = loop {
            if let Some(at) = seen.lock().ok().and_then(|s| s.get(&name).copied()) {
                break at;
            }
            if Instant::now() > deadline {
                return fail(format!("P5: no Job {name} within 30s"));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        latencies.push(created.saturating_duration_since(changed).as_secs_f64() * 1000.0);
        let one: HashMap<String, String> = [(target.clone(), rev.clone())].into();
        wait_settled(client, &one, Duration::from_secs(30)).await?;
    }
    watch.abort();
    fleet
        .revisions
        .insert(target.clone(), revisions[P5_CHANGES - 1].clone());
    let latencies = sorted(latencies);
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    report.raw(
        "p5",
        json!({"changes": P5_CHANGES, "p50_ms": p50, "p99_ms": p99,
               "max_ms": latencies.last(), "min_ms": latencies.first()}),
    );
    Ok(P5 {
        service: target,
        p50,
        p99,
    })
}

pub fn rows(report: &mut Report, count: usize, p5: &P5) {
    for (name, value) in [("p50", p5.p50), ("p99", p5.p99)] {
        report.row(
            &format!("P5 revision change -> Job created, {name} of {P5_CHANGES}"),
            Some(value),
            None,
            "report",
            None,
            " ms",
        );
    }
    report.note(format!(
        "P5: time from sending the revision patch to the Job's ADDED event on a watch in the \
         bench process, on {} while {count} ServiceBuilds are cached; each change settles \
         before the next. No baseline: a CI pipeline reacts on its runner's schedule.",
        p5.service
    ));
}
