//! Logs, health endpoints and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tracing_subscriber::EnvFilter;

use crate::lease::Leadership;
use crate::metrics::Metrics;

/// Install the structured logger: text or JSON, level from `RUST_LOG` (default `info`).
pub fn init(json: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    }
}

/// Readiness: ready once this replica knows whether it leads, and, when it leads, once the
/// controller's caches have synced. A standby is ready: it is there to take over.
#[derive(Clone)]
pub struct Health {
    synced: Arc<AtomicBool>,
    leadership: Leadership,
}

impl Health {
    pub fn new(leadership: Leadership) -> Self {
        Self {
            synced: Arc::new(AtomicBool::new(false)),
            leadership,
        }
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.leadership.is_decided()
            && (!self.leadership.is_leader() || self.synced.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct Endpoints {
    health: Health,
    metrics: Arc<Metrics>,
}

/// Serve `/metrics`, `/healthz` and `/readyz` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Endpoints { health, metrics });
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "the metrics and health endpoint stopped");
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, &'static str) {
    if endpoints.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(endpoints): State<Endpoints>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoints.metrics.encode(),
    )
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
