//! Leader election end to end: two controllers against the in-process API server.
//!
//! Exactly one holds the Lease and acts; the other writes nothing but its (failed) Lease
//! attempts. Killed, the leader is replaced within the lease duration; stopped gracefully, it
//! releases the Lease and is replaced at once. A leader that cannot renew stops acting.
//!
//! Each replica has its own client with its own `User-Agent`, which the API server records
//! with every write: that is how a write is attributed to a replica.

mod common;

use std::time::{Duration, Instant};

use monoship::build::job_name;
use monoship::lease::LeaseSettings;
use monoship_testkit::apiserver::{FaultRule, WriteRecord};
use monoship_testkit::scenario::{NAMESPACE, Seed};
use serde_json::Value;

const LEASE: &str = "monoship";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);

fn election(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: LEASE.to_owned(),
        namespace: NAMESPACE.to_owned(),
        identity: identity.to_owned(),
        lease_duration: LEASE_DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY_PERIOD,
    }
}

fn user_agent(identity: &str) -> String {
    format!("monoship-{identity}")
}

/// A replica named `identity`: its own client (its own User-Agent), its own Events instance.
async fn replica(seed: &Seed, identity: &str) -> common::Running {
    let mut settings = common::settings(seed, Duration::from_secs(600));
    settings.instance = Some(identity.to_owned());
    common::start_with(
        seed.api.client_as(&user_agent(identity)),
        settings,
        Some(election(identity)),
    )
    .await
}

/// The Lease's holder, `None` when there is no Lease or it is released.
fn holder(seed: &Seed) -> Option<String> {
    let lease = seed
        .api
        .get_object("coordination.k8s.io", "leases", Some(NAMESPACE), LEASE)?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Wait until `done(holder)` holds, polling often; how long it took. Panics after `timeout`.
async fn wait_for_holder(
    seed: &Seed,
    timeout: Duration,
    done: impl Fn(Option<&str>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let current = holder(seed);
        if done(current.as_deref()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "the Lease holder is still {current:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the replica's `/readyz` answers 200.
async fn wait_ready(replica: &common::Running, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) = replica.get("/readyz").await;
        if code == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{who} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The writes one replica sent since the last counter reset.
fn writes_by(seed: &Seed, identity: &str) -> Vec<WriteRecord> {
    let agent = user_agent(identity);
    seed.api
        .writes()
        .into_iter()
        .filter(|w| w.user_agent.as_deref() == Some(agent.as_str()))
        .collect()
}

/// Whether `writes` hold a successful `verb` on `resource` (and `subresource`).
fn wrote(writes: &[WriteRecord], verb: &str, resource: &str, subresource: Option<&str>) -> bool {
    writes.iter().any(|w| {
        w.verb == verb
            && w.resource == resource
            && w.subresource.as_deref() == subresource
            && (200..300).contains(&w.code)
    })
}

/// A standby may try for the Lease, but may change nothing: not the Lease, nothing else.
fn assert_wrote_nothing(seed: &Seed, identity: &str) {
    let writes = writes_by(seed, identity);
    let acting: Vec<_> = writes
        .iter()
        .filter(|w| w.resource != "leases" || w.changed)
        .collect();
    assert!(acting.is_empty(), "{identity} wrote: {acting:#?}");
}

/// The leader drove the ServiceBuilds: status, build Jobs, Deployments and Events.
fn assert_acted(seed: &Seed, identity: &str) {
    let writes = writes_by(seed, identity);
    for (verb, resource, subresource) in [
        ("patch", "servicebuilds", Some("status")),
        ("create", "jobs", None),
        ("patch", "deployments", None),
        ("create", "events", None),
    ] {
        assert!(
            wrote(&writes, verb, resource, subresource),
            "{identity} did not {verb} {resource}: {writes:#?}"
        );
    }
}

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or_default()
}

/// The `reportingInstance` of every Event about a ServiceBuild.
fn event_instances(seed: &Seed) -> Vec<String> {
    seed.api
        .list_objects("events.k8s.io", "events", Some(NAMESPACE))
        .iter()
        .filter(|e| e["regarding"]["kind"] == "ServiceBuild")
        .map(|e| {
            e["reportingInstance"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Both replicas up; waits until one holds the Lease and both are ready. Returns the
/// replicas as (leader, standby) with their identities.
async fn start_pair(seed: &Seed) -> ((String, common::Running), (String, common::Running)) {
    let a = replica(seed, "a").await;
    let b = replica(seed, "b").await;
    wait_for_holder(seed, Duration::from_secs(10), |h| h.is_some()).await;
    wait_ready(&a, "a").await;
    wait_ready(&b, "b").await;
    let leader = holder(seed).expect("a holder");
    match leader.as_str() {
        "a" => (("a".to_owned(), a), ("b".to_owned(), b)),
        "b" => (("b".to_owned(), b), ("a".to_owned(), a)),
        other => panic!("unknown holder {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_leads_and_the_standby_takes_over_when_it_is_killed() {
    let seed = Seed::start().await;
    seed.api.reset_counters();
    let ((leader_id, leader), (standby_id, standby)) = start_pair(&seed).await;

    // Readiness: the standby is ready (it is there to take over), the leader once synced.
    assert_eq!(standby.get("/readyz").await.0, 200);
    assert_eq!(leader.get("/readyz").await.0, 200);

    // A commit driven to Promoted: only the leader acts.
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    let first = seed.settled(&rev1).await;
    for sb in &first {
        assert_eq!(phase(sb), "Promoted", "{:#}", sb["status"]);
    }
    assert_eq!(holder(&seed).as_deref(), Some(leader_id.as_str()));
    assert_acted(&seed, &leader_id);
    assert_wrote_nothing(&seed, &standby_id);
    let instances = event_instances(&seed);
    assert!(!instances.is_empty());
    assert!(
        instances.iter().all(|i| *i == leader_id),
        "Events reported by {instances:?}"
    );
    assert_eq!(standby.get("/readyz").await.0, 200);

    // Kill the leader: it releases nothing. The standby acquires once the Lease expires.
    seed.api.reset_counters();
    let killed = Instant::now();
    leader.kill();
    let bound = LEASE_DURATION + 2 * RETRY_PERIOD + Duration::from_millis(500);
    wait_for_holder(&seed, bound, |h| h == Some(standby_id.as_str())).await;
    let takeover = killed.elapsed();
    eprintln!("takeover after kill: {takeover:?}");
    assert!(takeover <= bound, "takeover took {takeover:?}");

    // The new leader drives the next commit alone.
    let rev2 = seed.change_service("banana", "a riper banana\n");
    seed.set_revision(&rev2).await;
    let second = seed.settled(&rev2).await;
    let banana = second
        .iter()
        .find(|o| o["metadata"]["name"] == "banana")
        .unwrap();
    assert_eq!(phase(banana), "Promoted", "{:#}", banana["status"]);
    assert_eq!(banana["status"]["current"]["revision"], rev2.as_str());
    assert_acted(&seed, &standby_id);
    let from_killed = writes_by(&seed, &leader_id);
    assert!(
        from_killed.is_empty(),
        "the killed replica wrote: {from_killed:#?}"
    );
    assert_eq!(holder(&seed).as_deref(), Some(standby_id.as_str()));
    assert_eq!(standby.get("/readyz").await.0, 200);
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_releases_the_lease_and_the_standby_takes_over_at_once() {
    let seed = Seed::start().await;
    let ((leader_id, leader), (standby_id, standby)) = start_pair(&seed).await;

    seed.api.reset_counters();
    leader.stop().await;
    let stopped = Instant::now();
    // Released (holder cleared), or already taken by the standby: not held by the stopped one.
    assert_ne!(holder(&seed).as_deref(), Some(leader_id.as_str()));
    let released = writes_by(&seed, &leader_id);
    assert!(
        wrote(&released, "update", "leases", None),
        "no release: {released:#?}"
    );
    // Without the release the standby would wait out the lease duration.
    let takeover = wait_for_holder(&seed, LEASE_DURATION - Duration::from_millis(500), |h| {
        h == Some(standby_id.as_str())
    })
    .await;
    eprintln!(
        "takeover after a graceful stop: {:?}",
        stopped.elapsed().max(takeover)
    );
    wait_ready(&standby, &standby_id).await;

    // The new leader acts.
    let rev = seed.repo.head();
    seed.set_revision(&rev).await;
    seed.settled(&rev).await;
    assert_acted(&seed, &standby_id);
    let from_stopped: Vec<_> = writes_by(&seed, &leader_id)
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(from_stopped.is_empty(), "{from_stopped:#?}");
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_renew_stops_acting() {
    let seed = Seed::start().await;
    let ((leader_id, leader), (standby_id, standby)) = start_pair(&seed).await;
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    seed.settled(&rev1).await;
    assert_acted(&seed, &leader_id);

    // Every Lease update fails from now on, the leader's renewals and the standby's attempts
    // alike: nobody may lead once the leader's renew deadline has passed.
    seed.api.inject_fault(
        FaultRule::new("update", "leases")
            .times(100_000)
            .status(500),
    );
    tokio::time::sleep(RENEW_DEADLINE + 2 * RETRY_PERIOD + Duration::from_millis(500)).await;
    seed.api.reset_counters();

    // A new commit while renewals fail: no replica builds it.
    let rev2 = seed.change_service("banana", "a riper banana\n");
    seed.set_revision(&rev2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failing_renewals = writes_by(&seed, &leader_id)
        .iter()
        .filter(|w| w.resource == "leases" && w.code == 500)
        .count();
    assert!(failing_renewals > 0, "the leader stopped renewing");
    assert_wrote_nothing(&seed, &leader_id);
    assert_wrote_nothing(&seed, &standby_id);
    let uid = seed.get("banana").await["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let banana_job = job_name("banana", &uid, &rev2, None, None);
    assert!(
        !seed.jobs().await.contains(&banana_job),
        "banana's Job for {rev2} exists"
    );
    // Not leading is not unready: a standby waits to take over.
    assert_eq!(leader.get("/readyz").await.0, 200);

    // Renewals work again: a replica leads and builds the commit.
    seed.api.clear_faults();
    seed.settled(&rev2).await;
    assert!(seed.jobs().await.contains(&banana_job));
    let new_leader = holder(&seed).expect("a holder");
    assert_acted(&seed, &new_leader);
    leader.stop().await;
    standby.stop().await;
}

/// A renewal that never answers must count as a failed one: the leader stops writing at its
/// renew deadline, before the Lease can expire for the standby, so two replicas never write
/// at once (client-go bounds each renew attempt by `RenewDeadline` for the same reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_renewal_hangs_stops_writing_before_the_standby_takes_over() {
    let seed = Seed::start().await;
    let ((leader_id, leader), (standby_id, standby)) = start_pair(&seed).await;
    let rev1 = seed.repo.head();
    seed.set_revision(&rev1).await;
    seed.settled(&rev1).await;
    assert_acted(&seed, &leader_id);
    seed.api.reset_counters();

    // Every Lease update of the leader hangs far beyond the lease duration; the standby's
    // requests are served as usual.
    seed.api.inject_fault(
        FaultRule::new("update", "leases")
            .user_agent(&user_agent(&leader_id))
            .delay(Duration::from_secs(120))
            .times(100_000),
    );
    let bound = RENEW_DEADLINE + LEASE_DURATION + 4 * RETRY_PERIOD + Duration::from_secs(1);
    wait_for_holder(&seed, bound, |h| h == Some(standby_id.as_str())).await;

    // A new commit after the takeover: the new leader drives it.
    let rev2 = seed.change_service("banana", "a riper banana\n");
    seed.set_revision(&rev2).await;
    let settled = seed.settled(&rev2).await;
    let banana = settled
        .iter()
        .find(|o| o["metadata"]["name"] == "banana")
        .expect("banana");
    assert_eq!(phase(banana), "Promoted", "{:#}", banana["status"]);

    // The write log, in the order the API server served it: nothing from the old leader
    // after the standby's acquisition (its hung renewals may still come back, refused).
    let writes = seed.api.writes();
    let standby_agent = user_agent(&standby_id);
    let leader_agent = user_agent(&leader_id);
    let takeover = writes
        .iter()
        .position(|w| {
            w.user_agent.as_deref() == Some(standby_agent.as_str())
                && w.resource == "leases"
                && w.changed
        })
        .expect("the standby acquired the Lease");
    let late: Vec<_> = writes[takeover..]
        .iter()
        .filter(|w| w.user_agent.as_deref() == Some(leader_agent.as_str()))
        .filter(|w| w.resource != "leases" || w.changed)
        .collect();
    assert!(
        late.is_empty(),
        "{leader_id} wrote after {standby_id} took the Lease: {late:#?}"
    );
    // (Before the takeover the old leader may still finish what it was doing, such as the
    // Events of its last reconcile: that is not a second writer.)
    assert_acted(&seed, &standby_id);
    seed.api.clear_faults();
    leader.kill();
    standby.stop().await;
}
