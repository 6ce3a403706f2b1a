//! monoship: build each service of a monorepo at a commit, resolve the pushed image's digest,
//! and move floating tags and pin targets only when that digest changed.
//!
//! Reconcile is a pipeline: observe → [`decide`] (pure) → act ([`build`], [`registry`],
//! [`targets`]) → record (status and Events, written only on change).

pub mod act;
pub mod api;
pub mod app;
pub mod conditions;
pub mod controller;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod telemetry;

// Stable paths for the acting modules.
pub use act::{build, registry, targets};
pub use pipeline::{decide, record as status};

pub use api::{ServiceBuild, ServiceBuildSpec, ServiceBuildStatus};

/// Default image of the init container that fetches the source.
pub const DEFAULT_CHECKOUT_IMAGE: &str = "alpine/git:2.47.2";

/// Every error monoship can meet, by kind.
///
/// [`Error::is_stalled`] tells a person's mistake (the ServiceBuild or something it references
/// must change; retrying cannot help) from a transient fault (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ServiceBuild, or something it references, is wrong. `reason` is a constant from
    /// [`conditions::reasons`]; `message` says what to change.
    #[error("{message}")]
    Stalled {
        reason: &'static str,
        message: String,
    },

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A registry call failed in a way a retry may fix (5xx, timeout, connection).
    #[error("registry {operation} {reference}: {message}")]
    Registry {
        operation: &'static str,
        reference: String,
        message: String,
    },

    /// A Nomad API call failed in a way a retry may fix (5xx, connection, index conflict).
    #[error("Nomad job {job}: {message}")]
    Nomad { job: String, message: String },

    /// This replica does not hold the leader Lease (any more): it must not write.
    #[error("this replica is not the leader")]
    NotLeader,

    /// Encoding or decoding JSON failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A person's mistake: mark Stalled and wait for a change instead of retrying.
    pub fn is_stalled(&self) -> bool {
        matches!(self, Self::Stalled { .. })
    }

    /// Shorthand for [`Error::Stalled`].
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Stalled {
            reason,
            message: message.into(),
        }
    }

    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Stalled { reason, .. } => reason,
            Self::Kube(_) => conditions::reasons::KUBERNETES_API_ERROR,
            Self::Registry { .. } => conditions::reasons::REGISTRY_ERROR,
            Self::Nomad { .. } if targets::nomad::is_conflict(self) => {
                conditions::reasons::NOMAD_CONFLICT
            }
            Self::Nomad { .. } => conditions::reasons::NOMAD_ERROR,
            Self::Json(_) | Self::NotLeader => conditions::reasons::INTERNAL_ERROR,
        }
    }
}

/// Install rustls' ring provider as the process default, once. kube, oci-client and reqwest are
/// built without a provider of their own, so this must run before the first client is made.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
