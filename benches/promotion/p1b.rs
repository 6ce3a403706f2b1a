//! P1b: the promotion decision for one unchanged service, from its build Job's success to
//! `Unchanged`, against `skopeo copy` of the revision tag to `latest` plus one Deployment write.

use std::collections::HashMap;
use std::time::Duration;

use monoship_testkit::apiserver::WriteCounts;
use monoship_testkit::registry::RecordedRequest;
use serde_json::json;

use crate::fixture::{
    Fixture, Fleet, classes, classes_text, job_creates, phase, progress, repository_path, service,
    set_revision, short, skopeo_copy, wait_settled,
};
use crate::report::Report;
use crate::{Outcome, fail};

pub struct P1b {
    service: String,
    revision: String,
    registry: Vec<RecordedRequest>,
    target_writes: usize,
}

/// Move one service to a new revision whose build yields the digest it already has.
pub async fn measure(report: &mut Report, fixture: &Fixture, fleet: &mut Fleet) -> Outcome<P1b> {
    progress("P1b: one unchanged service");
    let (api, client, controller) = (&fixture.api, &fixture.client, &fleet.controller);
    let solo = service(1.min(fleet.count - 1));
    // A commit that changes solo's inputs (so it builds) but not its image.
    let rev_b = fixture.commit(std::slice::from_ref(&solo), "p1b");
    fixture
        .setup
        .tag(&fleet.image_a, &repository_path(&solo), short(&rev_b))
        .await?;
    api.reset_counters();
    let unchanged_before = controller
        .counter("monoship_unchanged_builds_total")
        .await?;
    let mark = fixture.registry.mark();
    set_revision(client, &solo, &rev_b).await?;
    fleet.revisions.insert(solo.clone(), rev_b.clone());
    let solo_only: HashMap<String, String> = [(solo.clone(), rev_b.clone())].into();
    let after = wait_settled(client, &solo_only, Duration::from_secs(60)).await?;
    let solo_phase = after
        .iter()
        .find(|o| o["metadata"]["name"] == solo.as_str())
        .map(phase)
        .unwrap_or_default()
        .to_owned();
    let registry = fixture.registry.requests_since(mark);
    let target_writes = api.write_requests("deployments");
    let unchanged = controller
        .counter("monoship_unchanged_builds_total")
        .await?
        - unchanged_before;
    report.raw(
        "p1b",
        json!({"phase": solo_phase, "registry_requests": registry.len(),
               "registry_classes": classes(&registry),
               "target_writes": target_writes, "unchanged": unchanged,
               "job_creates": job_creates(&api.writes())}),
    );
    if solo_phase != "Unchanged" {
        return fail(format!("P1b: {solo} ended {solo_phase}, not Unchanged"));
    }
    Ok(P1b {
        service: solo,
        revision: rev_b,
        registry,
        target_writes,
    })
}

/// The baseline's registry requests: `latest` moved by skopeo copy from the revision tag.
pub async fn baseline(
    report: &mut Report,
    fixture: &Fixture,
    p1b: &P1b,
) -> Outcome<Vec<RecordedRequest>> {
    let mark = fixture.registry.mark();
    skopeo_copy(
        &fixture.host,
        &repository_path(&p1b.service),
        short(&p1b.revision),
        "latest",
    )
    .await?;
    let requests = fixture.registry.requests_since(mark);
    report.baseline(json!({"p1b_skopeo_requests": requests.len(),
                           "p1b_skopeo_classes": classes(&requests)}));
    Ok(requests)
}

/// The rows; the baseline's Deployment write is one of P3's redeploy writes (`redeploy`).
pub fn rows(
    report: &mut Report,
    count: usize,
    p1b: &P1b,
    base: &[RecordedRequest],
    redeploy: &WriteCounts,
) {
    report.row(
        "P1b registry requests, Job success -> Unchanged",
        Some(p1b.registry.len() as f64),
        Some(base.len() as f64),
        "report",
        None,
        "",
    );
    report.row(
        "P1b target writes, unchanged service",
        Some(p1b.target_writes as f64),
        Some(1.0),
        "0",
        Some(p1b.target_writes == 0),
        "",
    );
    report.note(format!(
        "P1b: monoship's registry requests ({}) from the Job's success to Unchanged, and its \
         Deployment writes; baseline: `skopeo copy` of the revision tag to latest measured on the \
         same repository ({}), plus one Deployment write per commit (measured below as {} of {} \
         redeploy writes). The revision-tag push is made by the build in both flows and is \
         counted in neither.",
        classes_text(&classes(&p1b.registry), 1),
        classes_text(&classes(base), 1),
        redeploy.requests,
        count
    ));
}
