//! P2: a no-op resync of every promoted ServiceBuild by a fresh controller process, against a
//! pipeline that re-applies every Deployment on a resync.

use std::time::{Duration, Instant};

use monoship_testkit::apiserver::{WriteCounts, WriteRecord};
use serde_json::json;

use crate::fixture::{Fixture, Fleet, progress, tally};
use crate::report::Report;
use crate::{Outcome, fail};

pub struct P2 {
    api_writes: usize,
    registry_requests: usize,
}

/// What a fresh controller process did while it reconciled every ServiceBuild once.
pub struct Resync {
    /// From starting the process until every ServiceBuild was reconciled.
    pub seconds: f64,
    pub reconciles: f64,
    pub writes: Vec<WriteRecord>,
    pub registry_requests: usize,
}

/// Replace the controller with a new process and count what it writes and asks the registry
/// while it reconciles every ServiceBuild once.
pub async fn resync(fixture: &Fixture, fleet: &mut Fleet) -> Outcome<Resync> {
    let (api, registry, count) = (&fixture.api, &fixture.registry, fleet.count);
    fleet.controller.kill();
    api.reset_counters();
    let mark = registry.mark();
    let started = Instant::now();
    fleet.controller = fixture.start_controller().await?;
    let controller = &fleet.controller;
    let deadline = Instant::now() + Duration::from_secs(300);
    while controller.counter("monoship_reconciles_total").await? < count as f64 {
        if Instant::now() > deadline {
            return fail("the resync did not reconcile every ServiceBuild within 300s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Anything a reconcile started has landed after this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Resync {
        seconds,
        reconciles: controller.counter("monoship_reconciles_total").await?,
        writes: api.writes(),
        registry_requests: registry.requests_since(mark).len(),
    })
}

/// [`resync`], reported.
pub async fn measure(report: &mut Report, fixture: &Fixture, fleet: &mut Fleet) -> Outcome<P2> {
    progress("P2: no-op resync by a fresh controller process");
    let (api, count) = (&fixture.api, fleet.count);
    let Resync {
        seconds,
        reconciles,
        writes,
        registry_requests,
    } = resync(fixture, fleet).await?;
    let by_resource = tally(writes.iter().map(|w| w.resource.clone()));
    report.raw(
        "p2",
        json!({"reconciles": reconciles, "seconds_to_reconcile_all": seconds,
               "api_writes": writes.len(), "api_writes_by_resource": by_resource,
               "registry_requests": registry_requests,
               "list_requests": api.requests("list", "servicebuilds") + api.requests("list", "jobs"),
               "get_requests": api.requests("get", "jobs") + api.requests("get", "deployments")}),
    );
    report.note(format!(
        "P2: a new controller process reconciled all {count} ServiceBuilds ({reconciles} \
         reconciles) in {seconds:.1}s; every write to the API server counts (events, status, \
         Jobs, Deployments; no leases, no election)"
    ));
    Ok(P2 {
        api_writes: writes.len(),
        registry_requests,
    })
}

/// The baseline: every Deployment re-applied with the content P3's baseline redeploy gave it
/// (at `revision`), so it runs after [`crate::p3::baseline`].
pub async fn baseline(
    report: &mut Report,
    fixture: &Fixture,
    fleet: &Fleet,
    revision: &str,
) -> Outcome<WriteCounts> {
    fixture.api.reset_counters();
    fleet.redeploy(&fixture.client, revision).await?;
    let writes = fixture.api.count_writes("deployments");
    report.baseline(
        json!({"p2_reapply_writes": writes.requests, "p2_reapply_changed": writes.changed}),
    );
    Ok(writes)
}

pub fn rows(report: &mut Report, count: usize, p2: &P2, base: &WriteCounts) {
    report.row(
        &format!("P2 API writes, no-op resync of {count}"),
        Some(p2.api_writes as f64),
        Some(base.requests as f64),
        "0",
        Some(p2.api_writes == 0),
        "",
    );
    report.row(
        &format!("P2 registry requests, no-op resync of {count}"),
        Some(p2.registry_requests as f64),
        None,
        "0",
        Some(p2.registry_requests == 0),
        "",
    );
    report.note(format!(
        "P2 baseline: a pipeline that re-applies every Deployment on a resync, measured as {} \
         strategic-merge PATCHes of the same content ({} changed stored state); no registry \
         baseline (a re-apply calls no registry)",
        base.requests, base.changed
    ));
}
