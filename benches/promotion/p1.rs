//! P1: move a floating tag to an image already in the registry, `retag_without_upload` against
//! `skopeo copy docker://…:old docker://…:latest`, between two images of several layers (all
//! but one shared) in one repository.

use std::time::Instant;

use monoship::registry::{RegistryAuth, RegistryClient, RetagOutcome};
use serde_json::{Value, json};

use crate::fixture::{
    Fixture, blob_bytes, build_image, classes, classes_text, noise, percentile, skopeo_copy, sorted,
};
use crate::report::Report;
use crate::{Outcome, fail};

/// Repeats of each tag move.
const P1_RUNS: usize = 30;
/// Layers of the image.
const P1_LAYERS: usize = 6;

/// P1: move `latest` between two images of several layers, by monoship and by skopeo.
pub async fn measure(report: &mut Report, fixture: &Fixture) -> Outcome<()> {
    let (registry, setup) = (&fixture.registry, &fixture.setup);
    let repository = "bench/p1";
    let files = |variant: u64| -> Vec<(String, Vec<u8>)> {
        (0..P1_LAYERS as u64)
            .map(|i| {
                // The last layer differs between the two images; the others are shared.
                let seed = if i + 1 == P1_LAYERS as u64 {
                    1000 + variant
                } else {
                    i
                };
                (format!("layer{i}"), noise(seed, 512 * 1024))
            })
            .collect()
    };
    build_image(&setup.backend, repository, "old", P1_LAYERS, files(1)).await?;
    build_image(&setup.backend, repository, "new", P1_LAYERS, files(2)).await?;
    let old = setup.image(repository, "old").await?;
    let new = setup.image(repository, "new").await?;
    let layer_bytes: u64 = {
        let value: Value = serde_json::from_slice(&new.manifest)?;
        value["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum()
    };
    setup.tag(&old, repository, "latest").await?;
    let host = registry.host();
    let full = format!("{host}/{repository}");

    // monoship: one client for every move, as the controller keeps one.
    let client = RegistryClient::new(vec![host.clone()]);
    let mut monoship_times = Vec::new();
    let mark = registry.mark();
    for run in 0..P1_RUNS {
        let to = if run % 2 == 0 { &new } else { &old };
        let start = Instant::now();
        let outcome = client
            .retag_without_upload(&full, &to.digest, "latest", &RegistryAuth::Anonymous)
            .await?;
        monoship_times.push(start.elapsed().as_secs_f64() * 1000.0);
        if !matches!(outcome, RetagOutcome::Moved { .. }) {
            return fail(format!("P1: monoship did not move latest: {outcome:?}"));
        }
        if setup.digest_of(repository, "latest").await? != to.digest {
            return fail("P1: latest is not where monoship moved it");
        }
    }
    let monoship_requests = registry.requests_since(mark);

    // skopeo copy docker://…:old docker://…:latest, as CI pipelines do.
    let mut skopeo_times = Vec::new();
    let mark = registry.mark();
    for run in 0..P1_RUNS {
        let (to, tag) = if run % 2 == 0 {
            (&new, "new")
        } else {
            (&old, "old")
        };
        let start = Instant::now();
        skopeo_copy(&host, repository, tag, "latest").await?;
        skopeo_times.push(start.elapsed().as_secs_f64() * 1000.0);
        if setup.digest_of(repository, "latest").await? != to.digest {
            return fail("P1: latest is not where skopeo moved it");
        }
    }
    let skopeo_requests = registry.requests_since(mark);

    let runs = P1_RUNS as f64;
    let m_requests = monoship_requests.len() as f64 / runs;
    let s_requests = skopeo_requests.len() as f64 / runs;
    let m_blob = blob_bytes(&monoship_requests) as f64 / runs;
    let s_blob = blob_bytes(&skopeo_requests) as f64 / runs;
    let m_sent: usize = monoship_requests.iter().map(|r| r.request_bytes).sum();
    let s_sent: usize = skopeo_requests.iter().map(|r| r.request_bytes).sum();
    let monoship_times = sorted(monoship_times);
    let skopeo_times = sorted(skopeo_times);
    report.row(
        "P1 registry requests per tag move",
        Some(m_requests),
        Some(s_requests),
        "<= 4",
        Some(m_requests <= 4.0),
        "",
    );
    report.row(
        "P1 blob bytes uploaded per tag move",
        Some(m_blob),
        Some(s_blob),
        "0",
        Some(m_blob == 0.0),
        " B",
    );
    report.row(
        "P1 time per tag move, median",
        Some(percentile(&monoship_times, 50.0)),
        Some(percentile(&skopeo_times, 50.0)),
        "report",
        None,
        " ms",
    );
    report.note(format!(
        "P1: {P1_RUNS} moves of `latest` each way between two {P1_LAYERS}-layer images \
         ({layer_bytes} layer bytes) in one repository of the real registry. Requests per move \
         by class, monoship: {}; skopeo copy: {}. Request body bytes per move (manifest PUT \
         included): monoship {:.0}, skopeo {:.0}. Time includes skopeo's process start; p90 \
         monoship {:.2} ms, skopeo {:.1} ms.",
        classes_text(&classes(&monoship_requests), P1_RUNS),
        classes_text(&classes(&skopeo_requests), P1_RUNS),
        m_sent as f64 / runs,
        s_sent as f64 / runs,
        percentile(&monoship_times, 90.0),
        percentile(&skopeo_times, 90.0),
    ));
    report.raw(
        "p1",
        json!({"runs": P1_RUNS, "layers": P1_LAYERS, "layer_bytes": layer_bytes,
               "monoship": {"requests": monoship_requests.len(), "classes": classes(&monoship_requests),
                            "blob_upload_bytes": blob_bytes(&monoship_requests), "request_bytes": m_sent,
                            "ms": monoship_times},
               "skopeo": {"requests": skopeo_requests.len(), "classes": classes(&skopeo_requests),
                          "blob_upload_bytes": blob_bytes(&skopeo_requests), "request_bytes": s_sent,
                          "ms": skopeo_times}}),
    );
    Ok(())
}
