//! monoship: build each service of a monorepo at a commit, resolve the pushed image's digest,
//! and move floating tags and pin targets only when that digest changed.
//!
//! A reconcile is a pipeline, and the module tree follows it:
//!
//! - [`api`]: the `ServiceBuild` resource (spec, status, names).
//! - [`pipeline`]: the pure steps. [`pipeline::observe`] is what a reconcile looks at,
//!   [`pipeline::decide`] picks the next step, [`pipeline::record`] turns the step's outcome into
//!   the status to write and the Events it implies.
//! - [`act`]: the side effects, one small idempotent module each ([`act::build`],
//!   [`act::registry`], [`act::targets`]), each returning a typed outcome.
//! - [`controller`]: the Kubernetes wiring (watches, leader gating, shutdown) and
//!   [`controller::reconcile`], which runs observe → decide → act → record for one object.

pub mod act;
pub mod api;
pub mod app;
pub mod conditions;
pub mod controller;
mod error;
pub mod inputs;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod telemetry;

// Stable paths for the acting modules, used by the tests, the bench and the demo.
pub use act::{build, registry, targets};

pub use api::{ServiceBuild, ServiceBuildSpec, ServiceBuildStatus};
pub use error::{Error, Result};

/// Default image of the init container that fetches the source.
pub const DEFAULT_CHECKOUT_IMAGE: &str = "alpine/git:2.47.2";

/// Install rustls' ring provider as the process default, once. kube and reqwest are
/// built without a provider of their own, so this must run before the first client is made.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
