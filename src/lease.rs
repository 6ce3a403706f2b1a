//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: acquire when the
//! Lease is free or expired, renew well within its duration, and write only through a replace
//! guarded by `resourceVersion`, so two replicas can never both believe they hold it.
//!
//! [`Leadership`] is what the rest of the controller sees: whether this replica may act now.
//! It turns false the moment a renewal fails past the renew deadline, before anything else.
//! Every round runs under that deadline, as client-go's renew loop does: a request that never
//! answers is cut off at the deadline and counts as a failed renewal. With
//! `lease_duration > renew_deadline > retry_period`, a leader stops acting before any other
//! replica can see its Lease expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Timing of the election (client-go's defaults).
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity, usually the pod name.
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops acting.
    pub renew_deadline: Duration,
    /// How often to renew, and how often a standby tries to acquire.
    pub retry_period: Duration,
}

/// Whether this replica may act now. Cheap to clone and to check before every write.
#[derive(Clone, Debug)]
pub struct Leadership {
    leader: Arc<AtomicBool>,
    decided: Arc<AtomicBool>,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// For a single replica without election: always the leader.
    pub fn always() -> Self {
        let (_, changes) = watch::channel(true);
        Self {
            leader: Arc::new(AtomicBool::new(true)),
            decided: Arc::new(AtomicBool::new(true)),
            changes,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Every write is preceded by this check: a replica that lost the Lease stops at once.
    pub fn ensure(&self) -> crate::Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(crate::Error::NotLeader)
        }
    }

    /// Whether the first election round has finished (this replica is leader or standby).
    pub fn is_decided(&self) -> bool {
        self.decided.load(Ordering::SeqCst)
    }

    /// Wait until leadership equals `leader`. When the elector is gone (or there never was
    /// one), leadership cannot change any more: this returns only if it already equals `leader`.
    pub async fn wait_for(&mut self, leader: bool) {
        if self.changes.wait_for(|l| *l == leader).await.is_err() && self.is_leader() != leader {
            std::future::pending::<()>().await;
        }
    }
}

/// The elector's side of [`Leadership`].
struct Elector {
    leader: Arc<AtomicBool>,
    decided: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
}

impl Elector {
    fn set(&self, leader: bool) {
        self.decided.store(true, Ordering::SeqCst);
        if self.leader.swap(leader, Ordering::SeqCst) != leader {
            if leader {
                info!("acquired the leader lease");
            } else {
                warn!("lost the leader lease; stopping all actions");
            }
        }
        self.changes.send_replace(leader);
    }
}

/// Start electing. The returned [`Leadership`] follows the Lease until `shutdown` completes;
/// then a held Lease is released, so a standby takes over at once.
pub fn elect(
    api: Api<Lease>,
    settings: LeaseSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let leader = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicBool::new(false));
    let elector = Elector {
        leader: leader.clone(),
        decided: decided.clone(),
        changes: tx,
    };
    let leadership = Leadership {
        leader,
        decided,
        changes: rx,
    };
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        // When the last successful round of this leader started: the Lease's renewTime is no
        // older than that, so others cannot see it expire before `renew_deadline` after it.
        let mut last_renewal: Option<Instant> = None;
        let mut observed: Option<Observed> = None;
        loop {
            let started = Instant::now();
            let deadline = attempt_deadline(last_renewal, started, settings.renew_deadline);
            let round = tokio::time::timeout_at(
                deadline.into(),
                try_acquire_or_renew(&api, &settings, &mut observed),
            )
            .await;
            match round {
                Ok(Ok(true)) => {
                    last_renewal = Some(started);
                    elector.set(true);
                }
                Ok(Ok(false)) => {
                    last_renewal = None;
                    elector.set(false);
                }
                Ok(Err(error)) => {
                    debug!(%error, "lease round failed");
                    if last_renewal.is_none() || Instant::now() >= deadline {
                        last_renewal = None;
                        elector.set(false);
                    }
                }
                Err(_) => {
                    // A request that hangs is a failed renewal: stop acting now, while the
                    // Lease still holds for everyone else.
                    warn!(
                        renew_deadline = ?settings.renew_deadline,
                        "the lease round did not finish within the renew deadline"
                    );
                    last_renewal = None;
                    elector.set(false);
                }
            }
            // A leader wakes at its deadline at the latest, so it never acts past it.
            let next = Instant::now() + settings.retry_period;
            let wake = last_renewal.map_or(next, |t| next.min(t + settings.renew_deadline));
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        if elector.leader.load(Ordering::SeqCst) {
            elector.set(false);
            if let Err(error) = release(&api, &settings).await {
                warn!(%error, "could not release the leader lease");
            } else {
                info!("released the leader lease");
            }
        }
    });
    (leadership, task)
}

/// When the next round must have finished: a leader's renew deadline counts from the start of
/// its last successful round; any other round gets one renew deadline of its own.
fn attempt_deadline(
    last_renewal: Option<Instant>,
    started: Instant,
    renew_deadline: Duration,
) -> Instant {
    last_renewal.unwrap_or(started) + renew_deadline
}

/// `config` made fit for the Lease: every request is bounded well within the renew deadline
/// (connect, read and write timeouts), and nothing is retried inside one round, so a hung
/// or slow API server shows as a failed round instead of a leader that never learns it lost.
pub fn client_config(mut config: kube::Config, settings: &LeaseSettings) -> kube::Config {
    let bound = settings.renew_deadline.max(Duration::from_millis(100));
    config.connect_timeout = Some(
        config
            .connect_timeout
            .map_or(bound, |timeout| timeout.min(bound)),
    );
    config.read_timeout = Some(bound);
    config.write_timeout = Some(bound);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    config
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The Lease record as last seen, and when (on this replica's clock) it was first seen so.
/// As in client-go, a Lease counts as expired when its record has not changed for its
/// duration as measured here, so clock skew between replicas does not matter.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

/// One election round: `Ok(true)` when this replica holds the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> kube::Result<bool> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(duration_seconds(settings.lease_duration)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let unchanged = observed
        .as_ref()
        .is_some_and(|o| o.holder == holder && o.renew_time == spec.renew_time);
    if !unchanged {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew_time: spec.renew_time.clone(),
            since: Instant::now(),
        });
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let expired = observed
        .as_ref()
        .is_some_and(|o| o.since.elapsed() > duration);
    let ours = holder.as_deref() == Some(settings.identity.as_str());
    if !ours && holder.is_some() && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration_seconds(settings.lease_duration));
    spec.renew_time = Some(now());
    // The replace carries the resourceVersion read above: a concurrent writer makes it fail
    // with 409, and this round is lost rather than shared.
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    api.replace(&settings.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            name: "monoship".into(),
            namespace: "ns".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_lease_client_bounds_every_request_by_the_renew_deadline() {
        let base = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        assert_eq!(base.read_timeout, None, "kube's default read has no bound");
        let config = client_config(base.clone(), &settings());
        let deadline = Some(Duration::from_secs(10));
        assert_eq!(config.read_timeout, deadline);
        assert_eq!(config.write_timeout, deadline);
        assert!(config.connect_timeout <= deadline && config.connect_timeout.is_some());
        assert!(config.reset_reader_on_write && !config.default_retry);
        let mut none = base;
        none.connect_timeout = None;
        assert_eq!(client_config(none, &settings()).connect_timeout, deadline);
    }

    #[test]
    fn a_leaders_deadline_counts_from_its_last_renewal() {
        let start = Instant::now();
        let later = start + Duration::from_secs(4);
        let deadline = Duration::from_secs(10);
        assert_eq!(
            attempt_deadline(Some(start), later, deadline),
            start + deadline
        );
        assert_eq!(attempt_deadline(None, later, deadline), later + deadline);
    }
}
