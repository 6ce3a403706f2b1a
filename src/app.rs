//! Assembles a running monoship: leader election, the metrics and health endpoints, and the
//! controller. The binary, the tests and the demo all start monoship through [`run`].

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::controller::{self, Settings};
use crate::lease::{self, Leadership, LeaseSettings};
use crate::metrics::Metrics;
use crate::telemetry::{self, Health};

/// What a running monoship needs besides the client.
pub struct Options {
    pub settings: Settings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when `None`.
    pub endpoints: Option<tokio::net::TcpListener>,
    /// Leader election; a single replica always leads when `None`.
    pub election: Option<LeaseSettings>,
    /// The client for the Lease, built with timeouts within the renew deadline
    /// ([`lease::client_config`]); the controller's client when `None`.
    pub lease_client: Option<Client>,
    /// Shared so that a caller (a test, the demo) can read the figures.
    pub metrics: Arc<Metrics>,
}

/// Run until `shutdown` is cancelled; a held Lease is released before returning.
pub async fn run(client: Client, options: Options, shutdown: CancellationToken) {
    let Options {
        settings,
        endpoints,
        election,
        lease_client,
        metrics,
    } = options;
    let (leadership, elector) = match election {
        Some(lease_settings) => {
            let lease_client = lease_client.unwrap_or_else(|| client.clone());
            let api: Api<Lease> = Api::namespaced(lease_client, &lease_settings.namespace);
            let (leadership, task) =
                lease::elect(api, lease_settings, shutdown.clone().cancelled_owned());
            (leadership, Some(task))
        }
        None => (Leadership::always(), None),
    };
    // Dropping this future (aborting its task) must stop the elector too: a replica that is
    // gone must not keep renewing its Lease.
    let _elector_guard = elector
        .as_ref()
        .map(|task| AbortOnDrop(task.abort_handle()));
    let health = Health::new(leadership.clone());
    let server = endpoints.map(|listener| {
        tokio::spawn(telemetry::serve(
            listener,
            health.clone(),
            metrics.clone(),
            shutdown.clone().cancelled_owned(),
        ))
    });
    let _server_guard = server.as_ref().map(|task| AbortOnDrop(task.abort_handle()));
    controller::run(client, settings, leadership, metrics, health, shutdown).await;
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    if let Some(server) = server {
        let _ = server.await;
    }
}

/// Aborts a task started by [`run`] when `run` is dropped before it has finished.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
