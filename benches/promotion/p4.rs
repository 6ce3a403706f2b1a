//! P4: peak RSS of the controller process with every ServiceBuild and its Job in its caches,
//! right after the fleet is promoted. No baseline: CI pipelines hold no long-running process.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::Outcome;
use crate::fixture::{Fixture, Fleet, NAMESPACE};
use crate::report::Report;

pub struct P4 {
    servicebuilds: usize,
    jobs: usize,
    hwm_kib: u64,
}

/// Read the controller's memory; the note goes out now, the row (after P3's) with [`row`].
pub async fn measure(report: &mut Report, fixture: &Fixture, fleet: &Fleet) -> Outcome<P4> {
    let count = fleet.count;
    let jobs: Api<Job> = Api::namespaced(fixture.client.clone(), NAMESPACE);
    let job_count = jobs.list(&ListParams::default()).await?.items.len();
    let (hwm, rss) = fleet.controller.memory()?;
    let hwm_idle = fleet.idle_hwm_kib;
    report.note(format!(
        "P4: `monoship run` is a child process; VmHWM from /proc/<pid>/status: {:.1} MiB idle \
         before any ServiceBuild, {:.1} MiB peak after promoting {count} (VmRSS now {:.1} MiB). \
         No baseline: CI pipelines hold no long-running process.",
        hwm_idle as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    ));
    report.raw(
        "p4",
        json!({"vmhwm_idle_kib": hwm_idle, "vmhwm_kib": hwm, "vmrss_kib": rss,
               "servicebuilds": count, "jobs": job_count}),
    );
    Ok(P4 {
        servicebuilds: count,
        jobs: job_count,
        hwm_kib: hwm,
    })
}

pub fn row(report: &mut Report, p4: &P4) {
    report.row(
        &format!(
            "P4 controller peak RSS, {} ServiceBuilds + {} Jobs cached",
            p4.servicebuilds, p4.jobs
        ),
        Some(p4.hwm_kib as f64 / 1024.0),
        None,
        "report",
        None,
        " MiB",
    );
}
