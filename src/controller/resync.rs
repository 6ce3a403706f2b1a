//! When a settled ServiceBuild is looked at again, and when its targets are read again.
//!
//! A settled ServiceBuild is reconciled again every resync period (spread over a tenth of it),
//! and that reconcile reads each target to re-pin drift. Other reconciles of a settled
//! ServiceBuild (a commit whose build reused the current digest, a Job event) read no target
//! while this replica found every target pinned to the digest less than a period ago: a commit
//! across 1000 unchanged services reads no workload, and drift is still corrected within one
//! period. What was checked is kept in memory only: a restarted controller, or a replica that
//! just became leader, reads every target on its first reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::ServiceBuild;
use crate::pipeline::decide::Plan;
use crate::pipeline::outcome::{Outcome, TargetOutcome};

/// `period` plus up to a tenth of it, chosen by `key`: settled ServiceBuilds are looked at again
/// spread over time rather than all at once, every period.
pub fn jittered(period: Duration, key: &str) -> Duration {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let spread = u64::try_from((period / 10).as_millis()).unwrap_or(u64::MAX);
    if spread == 0 {
        return period;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    period + Duration::from_millis(hasher.finish() % spread)
}

/// The resync delay of `sb`: [`jittered`] by its namespace and name.
pub fn resync_of(period: Duration, sb: &ServiceBuild) -> Duration {
    let key = format!("{}/{}", sb.namespace().unwrap_or_default(), sb.name_any());
    jittered(period, &key)
}

/// The last time this replica found every target of each ServiceBuild pinned.
#[derive(Default)]
pub struct TargetChecks {
    checks: Mutex<HashMap<ObjectRef<ServiceBuild>, Check>>,
}

/// One ServiceBuild's last check: what was pinned where, and when the next check is due.
struct Check {
    digest: String,
    /// [`pinned_where`] of the spec checked.
    spec: u64,
    due: Instant,
}

/// A hash of what a check depends on in the spec: the image repository and the targets (a
/// hash, not a copy, keeps an entry to a few dozen bytes; two target lists that collide only
/// put off one check to the end of its period).
fn pinned_where(sb: &ServiceBuild) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    sb.spec.image.repository.hash(&mut hasher);
    serde_json::to_vec(&sb.spec.targets)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// A check that is not due yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The digest every target was found pinned to.
    pub digest: String,
    /// Until the next check is due.
    pub due_in: Duration,
}

impl TargetChecks {
    /// The last check of `sb`'s targets, if it is not due at `now` and the spec names the
    /// same targets and image repository as then.
    pub fn fresh(&self, sb: &ServiceBuild, now: Instant) -> Option<Checked> {
        let checks = self.checks.lock().ok()?;
        let check = checks.get(&ObjectRef::from_obj(sb))?;
        let due_in = check.due.checked_duration_since(now)?;
        let same = check.spec == pinned_where(sb);
        (same && !due_in.is_zero()).then(|| Checked {
            digest: check.digest.clone(),
            due_in,
        })
    }

    /// Every target of `sb` was found pinned to `digest` at `now`: the next check is due one
    /// resync period later.
    pub fn checked(&self, sb: &ServiceBuild, digest: &str, now: Instant, period: Duration) {
        if let Ok(mut checks) = self.checks.lock() {
            let check = Check {
                digest: digest.to_owned(),
                spec: pinned_where(sb),
                due: now + resync_of(period, sb),
            };
            checks.insert(ObjectRef::from_obj(sb), check);
        }
    }

    /// Note what one step of `sb` found of its targets at `now`: a promotion or settle that
    /// found (or left) every target pinned to its digest, without an error, starts a period;
    /// any other step that read targets, or failed, makes the next reconcile read them again.
    pub fn note(
        &self,
        sb: &ServiceBuild,
        plan: &Plan,
        outcome: &Outcome,
        failed: bool,
        now: Instant,
        period: Duration,
    ) {
        let targets: &[TargetOutcome] = match outcome {
            Outcome::Settled { targets }
            | Outcome::Promoted {
                targets: Some(targets),
                ..
            } => targets,
            _ if failed => return self.forget(sb),
            _ => return,
        };
        let digest = match plan {
            Plan::Settle { digest } | Plan::Promote { digest } => Some(digest),
            _ => None,
        };
        match digest {
            Some(digest) if !failed && targets.iter().all(|t| t.result.is_ok()) => {
                self.checked(sb, digest, now, period);
            }
            _ => self.forget(sb),
        }
    }

    /// The next reconcile of `sb` reads its targets.
    pub fn forget(&self, sb: &ServiceBuild) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.remove(&ObjectRef::from_obj(sb));
        }
    }

    /// Keep only the checks of ServiceBuilds for which `exists` holds.
    pub fn retain(&self, exists: impl Fn(&ObjectRef<ServiceBuild>) -> bool) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.retain(|key, _| exists(key));
        }
    }

    pub fn len(&self) -> usize {
        self.checks.lock().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_are_spread_over_a_tenth_of_the_period() {
        let period = Duration::from_secs(600);
        let delays: std::collections::BTreeSet<_> = (0..200)
            .map(|i| jittered(period, &format!("shop/service-{i}")))
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= period && *d < period + period / 10)
        );
        assert!(
            delays.len() > 190,
            "spread, not in lockstep: {}",
            delays.len()
        );
        assert_eq!(
            jittered(period, "shop/banana"),
            jittered(period, "shop/banana"),
            "stable for one ServiceBuild"
        );
        assert_eq!(
            jittered(Duration::from_millis(5), "x"),
            Duration::from_millis(5)
        );
    }

    fn servicebuild(name: &str, repository: &str, deployment: &str) -> ServiceBuild {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "monoship.dev/v1alpha1",
            "kind": "ServiceBuild",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "source": {"repository": "file:///repo", "revision": "a".repeat(40)},
                "build": {"template": {"spec": {"containers": [{"name": "b"}]}}},
                "image": {"repository": repository},
                "targets": [{"kubernetes": {"kind": "Deployment", "name": deployment, "container": "app"}}],
            },
        }))
        .unwrap_or_else(|error| panic!("fixture: {error}"))
    }

    #[test]
    fn a_check_holds_for_one_period_and_for_the_targets_checked() {
        let checks = TargetChecks::default();
        let period = Duration::from_secs(600);
        let sb = servicebuild("banana", "r.example/banana", "banana");
        let start = Instant::now();
        assert_eq!(checks.fresh(&sb, start), None, "never checked");
        checks.checked(&sb, "sha256:aa", start, period);
        let due = resync_of(period, &sb);
        let later = start + Duration::from_secs(60);
        assert_eq!(
            checks.fresh(&sb, later),
            Some(Checked {
                digest: "sha256:aa".into(),
                due_in: due - Duration::from_secs(60),
            })
        );
        assert_eq!(checks.fresh(&sb, start + due), None, "due");
        assert_eq!(checks.fresh(&sb, start + period * 2), None, "overdue");
        let moved = servicebuild("banana", "r.example/banana", "banana-v2");
        assert_eq!(checks.fresh(&moved, later), None, "other targets");
        let pushed = servicebuild("banana", "r.example/other", "banana");
        assert_eq!(checks.fresh(&pushed, later), None, "other repository");
        let other = servicebuild("orange", "r.example/banana", "banana");
        assert_eq!(checks.fresh(&other, later), None, "another ServiceBuild");
        checks.retain(|key| key.name != "banana");
        assert_eq!(checks.len(), 0);
        checks.checked(&sb, "sha256:aa", start, period);
        checks.forget(&sb);
        assert_eq!(checks.fresh(&sb, later), None, "forgotten");
    }

    #[test]
    fn only_a_step_that_found_every_target_pinned_starts_a_period() {
        use crate::pipeline::outcome::{Fault, PinOutcome};
        let checks = TargetChecks::default();
        let period = Duration::from_secs(600);
        let sb = servicebuild("banana", "r.example/banana", "banana");
        let now = Instant::now();
        let fresh = || checks.fresh(&sb, now).map(|c| c.digest);
        let target = |result| TargetOutcome {
            id: "Deployment/shop/banana:app".into(),
            kind: "kubernetes",
            image: "r.example/banana@sha256:aa".into(),
            result,
        };
        let settle = Plan::Settle {
            digest: "sha256:aa".into(),
        };
        let settled = |result| Outcome::Settled {
            targets: vec![target(result)],
        };
        let pinned = || settled(Ok(PinOutcome::AlreadyPinned));
        checks.note(&sb, &settle, &pinned(), false, now, period);
        assert_eq!(fresh().as_deref(), Some("sha256:aa"));
        // A step that reads no target and did not fail leaves the check as it is.
        checks.note(&sb, &Plan::AwaitJob, &Outcome::Nothing, false, now, period);
        assert_eq!(fresh().as_deref(), Some("sha256:aa"));
        let refused = Err(Fault::transient("TargetError", "forbidden"));
        checks.note(&sb, &settle, &settled(refused), true, now, period);
        assert_eq!(fresh(), None, "a target failed");
        checks.note(&sb, &settle, &pinned(), false, now, period);
        checks.note(&sb, &Plan::AwaitJob, &Outcome::Nothing, true, now, period);
        assert_eq!(fresh(), None, "a step failed");
        let promote = Plan::Promote {
            digest: "sha256:bb".into(),
        };
        let promoted = Outcome::Promoted {
            tags: Vec::new(),
            targets: Some(vec![target(Ok(PinOutcome::AlreadyPinned))]),
        };
        checks.note(&sb, &promote, &promoted, false, now, period);
        assert_eq!(
            fresh().as_deref(),
            Some("sha256:bb"),
            "a promotion pinned it"
        );
        checks.note(&sb, &promote, &promoted, true, now, period);
        assert_eq!(fresh(), None, "a tag of the promotion failed");
    }
}
