//! The one error type, by kind.

use crate::conditions;
use crate::targets;

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

pub type Result<T, E = Error> = std::result::Result<T, E>;
