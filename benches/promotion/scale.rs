//! The scaling table: the controller's memory and its resync and commit times at several fleet
//! sizes, in the same run as the other measures. Each size gets a fresh API server, registry
//! and controller, and goes through the same steps:
//!
//! 1. promote every service at a first commit (as the set-up of P2-P5), then read the
//!    controller's VmHWM: as P4, every ServiceBuild and its Job in cache;
//! 2. a no-op resync by a fresh controller process, timed from its start until every
//!    ServiceBuild was reconciled (as P2);
//! 3. one commit across every service, one of which changed, timed until every status settles
//!    (as P3), with the CPU time the controller used for it; then the VmHWM of that second
//!    process, which also listed every ServiceBuild and Job when it started.
//!
//! Per ServiceBuild is (VmHWM - VmHWM before any ServiceBuild existed) / services.
//! `MONOSHIP_BENCH_SCALE` lists the sizes (default `100,1000,5000`; add `10000` for the large
//! one, or set it empty to skip the table).

use std::time::Instant;

use serde_json::json;

use crate::fixture::{Fixture, Fleet, job_creates, progress, target_writes};
use crate::report::{Report, table};
use crate::{Outcome, p2, p3};

const DEFAULT_SIZES: &str = "100,1000,5000";

/// The sizes to measure, from `MONOSHIP_BENCH_SCALE`.
pub fn sizes() -> Outcome<Vec<usize>> {
    let listed = std::env::var("MONOSHIP_BENCH_SCALE").unwrap_or(DEFAULT_SIZES.to_owned());
    listed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("MONOSHIP_BENCH_SCALE: {s:?} is not a number of services").into()
            })
        })
        .collect()
}

/// One size's figures, in KiB and seconds.
struct Size {
    services: usize,
    idle_kib: u64,
    promoted_kib: u64,
    restarted_kib: u64,
    promote_seconds: f64,
    resync_seconds: f64,
    settle_seconds: f64,
    /// CPU the controller used for the one-changed commit, in seconds.
    commit_cpu_seconds: f64,
    resync_writes: usize,
    jobs: usize,
    promotions: usize,
    target_writes: usize,
}

impl Size {
    /// The cost of one ServiceBuild in KiB: what the process grew by over its idle peak, shared.
    fn per_servicebuild(&self, hwm_kib: u64) -> f64 {
        hwm_kib.saturating_sub(self.idle_kib) as f64 / self.services as f64
    }
}

/// Measure every size in `sizes`, one after the other, and add the table to `report`.
pub async fn measure(report: &mut Report, sizes: &[usize]) -> Outcome<()> {
    let mut measured = Vec::new();
    for &services in sizes {
        progress(&format!("scaling: {services} services"));
        measured.push(one_size(services).await?);
    }
    if measured.is_empty() {
        return Ok(());
    }
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let cells: Vec<Vec<String>> = measured
        .iter()
        .map(|s| {
            vec![
                s.services.to_string(),
                mib(s.promoted_kib),
                format!("{:.1} KiB", s.per_servicebuild(s.promoted_kib)),
                mib(s.restarted_kib),
                format!("{:.1} KiB", s.per_servicebuild(s.restarted_kib)),
                format!("{:.1} s", s.resync_seconds),
                format!("{:.1} s", s.settle_seconds),
                format!("{:.1} s", s.commit_cpu_seconds),
                format!(
                    "{:.2} ms",
                    s.commit_cpu_seconds * 1000.0 / s.services as f64
                ),
            ]
        })
        .collect();
    let header = [
        "services",
        "peak RSS, promoted",
        "per ServiceBuild",
        "peak RSS, restarted",
        "per ServiceBuild",
        "no-op resync",
        "one changed: settled",
        "controller CPU",
        "per ServiceBuild",
    ];
    report.table(
        "Scaling: the controller at each size (fresh API server, registry and controller each)",
        table(&header, &cells, |column| column == 0),
    );
    let raw: Vec<_> = measured
        .iter()
        .map(|s| {
            json!({"services": s.services, "vmhwm_idle_kib": s.idle_kib,
                   "vmhwm_promoted_kib": s.promoted_kib, "vmhwm_restarted_kib": s.restarted_kib,
                   "promote_seconds": s.promote_seconds, "resync_seconds": s.resync_seconds,
                   "settle_seconds": s.settle_seconds,
                   "commit_controller_cpu_seconds": s.commit_cpu_seconds,
                   "resync_api_writes": s.resync_writes,
                   "jobs_created": s.jobs, "promotions": s.promotions,
                   "target_writes": s.target_writes})
        })
        .collect();
    report.raw("scaling", json!(raw));
    let checks: Vec<String> = measured
        .iter()
        .map(|s| {
            format!(
                "{}: {} API writes on the resync, {} Jobs, {} promotion(s), {} target write(s), \
                 promoted in {:.0}s",
                s.services,
                s.resync_writes,
                s.jobs,
                s.promotions,
                s.target_writes,
                s.promote_seconds
            )
        })
        .collect();
    report.note(format!(
        "Scaling: peak RSS is VmHWM of `monoship run`: \"promoted\" after promoting every \
         service (as P4), \"restarted\" of the process started for the no-op resync (as P2; its \
         initial lists read 500 objects a page) after it also settled one commit across \
         every service with one changed (as P3). Per ServiceBuild = (VmHWM - VmHWM before any \
         ServiceBuild) / services. Controller CPU: user and system time of `monoship run` over \
         that whole commit (from before its images were placed until 2 s after every status \
         settled); the settle time also holds the bench's own API server, job runner and \
         registry, on the same two cores. Per size: {}.",
        checks.join("; ")
    ));
    Ok(())
}

/// Promote `services`, resync them from a fresh process, then move them to a commit where one
/// changed; read the controller's memory after the first and the last step.
async fn one_size(services: usize) -> Outcome<Size> {
    let fixture = Fixture::start(&format!("controller-{services}.log")).await?;
    let started = Instant::now();
    let mut fleet = Fleet::promote(&fixture, services, &mut Report::default()).await?;
    let promote_seconds = started.elapsed().as_secs_f64();
    let (promoted_kib, _) = fleet.controller.memory()?;
    let resync = p2::resync(&fixture, &mut fleet).await?;
    let cpu_before = fleet.controller.cpu_seconds()?;
    let commit = p3::one_changed(&fixture, &mut fleet, services / 2, "rev2").await?;
    let commit_cpu_seconds = fleet.controller.cpu_seconds()? - cpu_before;
    let (restarted_kib, _) = fleet.controller.memory()?;
    fleet.stop().await;
    Ok(Size {
        services,
        idle_kib: fleet.idle_hwm_kib,
        promoted_kib,
        restarted_kib,
        promote_seconds,
        resync_seconds: resync.seconds,
        settle_seconds: commit.settle_seconds,
        commit_cpu_seconds,
        resync_writes: resync.writes.len(),
        jobs: job_creates(&commit.writes),
        promotions: p3::promotions(&commit),
        target_writes: target_writes(&commit.writes),
    })
}
