//! Promotion benchmarks: monoship against the flow CI pipelines run today, measured in one run.
//!
//! `cargo bench --bench promotion` prints one table (measure, monoship, baseline, ratio, goal)
//! and writes it, with the notes and the raw figures, to `target/bench/promotion.json`.
//!
//! Everything runs on loopback: a real `docker-registry` behind the testkit's recording proxy
//! (every request counted by method and path class, with its body size), the testkit's
//! in-process API server (every write logged), the testkit job runner with a hook that marks
//! build Jobs complete at once, and the real controller binary (`monoship run`) as a child
//! process pointed at the API server through a kubeconfig, so its memory is its own.
//!
//! - P1: move a floating tag to an image already in the registry: `retag_without_upload`
//!   against `skopeo copy docker://…:old docker://…:latest`.
//! - P1b: the promotion decision for one unchanged service, from Job success to `Unchanged`.
//! - P2: a no-op resync of every promoted ServiceBuild (a fresh controller process).
//! - P3: one commit across every service, one of which changed.
//! - P4: peak RSS of the controller with every ServiceBuild and its Job in cache.
//! - P5: reaction latency from a revision change to the build Job's creation.
//! - Scaling: peak RSS, RSS per ServiceBuild, no-op resync and one-changed commit times at
//!   several fleet sizes (see [`scale`]).
//!
//! Timings are reported, never asserted. The process exits non-zero only when the harness
//! itself fails. `MONOSHIP_BENCH_SERVICES` (default 1000) sets the number of services of P1-P5;
//! `MONOSHIP_BENCH_SCALE` (default `100,1000,5000`) the sizes of the scaling table.

mod fixture;
mod p1;
mod p1b;
mod p2;
mod p3;
mod p4;
mod p5;
mod report;
mod scale;

use std::time::Instant;

use fixture::{Fixture, Fleet, progress};
use report::Report;

/// Commits P3 measures as the first a new controller process sees, and then in a row.
const P3_RUNS_AFTER_RESTART: usize = 3;
const P3_RUNS_NEXT: usize = 5;

type Failure = Box<dyn std::error::Error + Send + Sync>;
type Outcome<T> = Result<T, Failure>;

fn fail<T>(message: impl Into<String>) -> Outcome<T> {
    Err(message.into().into())
}

fn main() {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(started)) {
        Ok(()) => eprintln!("bench: done in {:.0}s", started.elapsed().as_secs_f64()),
        Err(error) => {
            eprintln!("bench: the harness failed: {error}");
            std::process::exit(1);
        }
    }
}

/// Every measure in one run. The controller's measures run in the order that leaves each the
/// state the next needs; the baselines run after the controller has stopped, on the same
/// registry and API server; the rows are then added in the order of the issue.
async fn run(started: Instant) -> Outcome<()> {
    monoship::install_crypto_provider();
    let count: usize = std::env::var("MONOSHIP_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sizes = scale::sizes()?;
    let fixture = Fixture::start("controller.log").await?;
    let mut report = Report::default();

    progress("P1: tag moves, monoship and skopeo copy");
    p1::measure(&mut report, &fixture).await?;

    let mut fleet = Fleet::promote(&fixture, count, &mut report).await?;
    let p4 = p4::measure(&mut report, &fixture, &fleet).await?;
    let p2 = p2::measure(&mut report, &fixture, &mut fleet).await?;
    let p1b = p1b::measure(&mut report, &fixture, &mut fleet).await?;
    let p5 = p5::measure(&mut report, &fixture, &mut fleet).await?;
    let after_restart = p3::Commits {
        changed: count / 2,
        first: 2,
        runs: P3_RUNS_AFTER_RESTART,
        restart: true,
    };
    let p3 = p3::measure_runs(&mut report, &fixture, &mut fleet, after_restart, "p3").await?;
    let in_a_row = p3::Commits {
        changed: count / 2 + P3_RUNS_AFTER_RESTART,
        first: 2 + P3_RUNS_AFTER_RESTART,
        runs: P3_RUNS_NEXT,
        restart: false,
    };
    let p3_next = p3::measure_runs(&mut report, &fixture, &mut fleet, in_a_row, "p3_next").await?;
    fleet.stop().await;

    progress("baselines: skopeo copy and redeploys");
    let p1b_base = p1b::baseline(&mut report, &fixture, &p1b).await?;
    let p3_base = p3::baseline(&mut report, &fixture, &fleet, &p3.median).await?;
    // A resync of the same commit re-applies the Deployments P3's baseline just wrote.
    let p2_base = p2::baseline(&mut report, &fixture, &fleet, &p3.median.revision).await?;

    p1b::rows(&mut report, count, &p1b, &p1b_base, &p3_base.writes);
    p2::rows(&mut report, count, &p2, &p2_base);
    p3::rows(&mut report, count, &p3, &p3_next, &p3_base);
    p4::row(&mut report, &p4);
    p5::rows(&mut report, count, &p5);
    // The scaling table runs on fleets of its own: this one's API server and registry go.
    let out_dir = fixture.out_dir.clone();
    drop(fleet);
    drop(fixture);
    scale::measure(&mut report, &sizes).await?;

    report.publish(count, started, &out_dir)?;
    Ok(())
}
