//! Prometheus metrics. Labels are bounded: outcomes, operations and kinds, never an object
//! name or an error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetWriteLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub operation: &'static str,
    /// The HTTP status code, or `error` when no answer came.
    pub status: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric monoship exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result: `ok`, `stalled`, `error`.
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    /// Builds by result: `started`, `succeeded`, `failed`.
    pub builds: Family<ResultLabels, Counter>,
    /// Digests moved to tags and targets.
    pub promotions: Counter,
    /// Builds whose digest was already current: nothing moved.
    pub unchanged: Counter,
    /// Writes to targets by kind (`kubernetes`, `nomad`) and result (`pinned`, `failed`).
    pub target_writes: Family<TargetWriteLabels, Counter>,
    /// Registry requests by operation and status code.
    pub registry_requests: Family<RegistryLabels, Counter>,
    /// ServiceBuilds this replica keeps state for (its last status write, a backoff count).
    pub tracked: Gauge,
    /// Monorepo revisions whose rollout finished, by result: `complete`, `failed`.
    pub rollouts: Family<ResultLabels, Counter>,
    /// Services whose inputs changed (that were built), per finished Monorepo revision.
    pub rollout_changed_services: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("monoship");
        let reconciles = Family::default();
        let reconcile_duration =
            Family::<ResultLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let builds = Family::default();
        let promotions = Counter::default();
        let unchanged = Counter::default();
        let target_writes = Family::default();
        let registry_requests = Family::default();
        let tracked = Gauge::default();
        let rollouts = Family::default();
        let rollout_changed_services = Histogram::new([
            0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
        ]);
        registry.register(
            "rollouts",
            "Monorepo revisions whose rollout finished, by result",
            rollouts.clone(),
        );
        registry.register(
            "rollout_changed_services",
            "Services whose inputs changed, per finished Monorepo revision",
            rollout_changed_services.clone(),
        );
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles by result",
            reconcile_duration.clone(),
        );
        registry.register(
            "builds",
            "Builds by result: started (a Job was created), skipped (inputs unchanged, no Job), \
             succeeded, failed",
            builds.clone(),
        );
        registry.register(
            "promotions",
            "Digests promoted to tags and targets",
            promotions.clone(),
        );
        registry.register(
            "unchanged_builds",
            "Build Jobs that produced the digest already current, so nothing moved (a skipped \
             build is counted as builds{result=\"skipped\"})",
            unchanged.clone(),
        );
        registry.register(
            "target_writes",
            "Writes to targets by kind and result",
            target_writes.clone(),
        );
        registry.register(
            "registry_requests",
            "Registry requests by operation and HTTP status",
            registry_requests.clone(),
        );
        registry.register(
            "tracked_servicebuilds",
            "ServiceBuilds this replica keeps state for (last status write, backoff), as of the last prune",
            tracked.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            builds,
            promotions,
            unchanged,
            target_writes,
            registry_requests,
            tracked,
            rollouts,
            rollout_changed_services,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Count what an Event reports: builds started, succeeded and failed, promotions and
    /// unchanged builds. Counting at the Event keeps the metrics as idempotent as the Events.
    pub fn count(&self, reason: &str) {
        use crate::conditions::reasons;
        let build = |result| {
            self.builds.get_or_create(&ResultLabels { result }).inc();
        };
        match reason {
            reasons::BUILD_STARTED => build("started"),
            reasons::BUILD_SKIPPED => build("skipped"),
            reasons::DIGEST_RESOLVED => build("succeeded"),
            reasons::BUILD_FAILED => build("failed"),
            reasons::PROMOTED => {
                self.promotions.inc();
            }
            reasons::UNCHANGED => {
                self.unchanged.inc();
            }
            reasons::ROLLOUT_COMPLETE => {
                self.rollouts
                    .get_or_create(&ResultLabels { result: "complete" })
                    .inc();
            }
            reasons::ROLLOUT_FAILED => {
                self.rollouts
                    .get_or_create(&ResultLabels { result: "failed" })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn target_write(&self, kind: &'static str, result: &'static str) {
        self.target_writes
            .get_or_create(&TargetWriteLabels { kind, result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let metrics = Metrics::default();
        metrics.promotions.inc();
        metrics.target_write("nomad", "pinned");
        metrics
            .registry_requests
            .get_or_create(&RegistryLabels {
                operation: "resolve",
                status: "200".into(),
            })
            .inc_by(2);
        let text = metrics.encode();
        assert!(text.contains("monoship_promotions_total 1"), "{text}");
        assert!(
            text.contains(r#"monoship_target_writes_total{kind="nomad",result="pinned"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"monoship_registry_requests_total{operation="resolve",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
