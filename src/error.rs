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

    /// A Kubernetes API call failed in a way a retry may fix (a 403 or 422 is
    /// [`Error::Stalled`] instead: see the `From<kube::Error>` conversion).
    #[error("the Kubernetes API {}", describe_kube(.0))]
    Kube(kube::Error),

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

/// A 403 (forbidden) or 422 (invalid) does not heal by retrying: it is a stall with the API
/// server's own message, which names the verb, the resource and the field. Everything else
/// (409, 429, 5xx, timeouts, connections) is retried.
impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        if let kube::Error::Api(status) = &error {
            let message = status.message.trim();
            match status.code {
                403 => {
                    return Self::stalled(
                        conditions::reasons::KUBERNETES_API_FORBIDDEN,
                        format!(
                            "the Kubernetes API server refused a request: {message}; grant \
                             monoship's ServiceAccount that permission (see the chart's RBAC), or \
                             change the ServiceBuild"
                        ),
                    );
                }
                422 => {
                    return Self::stalled(
                        conditions::reasons::KUBERNETES_API_INVALID,
                        format!("the Kubernetes API server rejected a write as invalid: {message}"),
                    );
                }
                _ => {}
            }
        }
        Self::Kube(error)
    }
}

/// One sentence for a failed API call: the server's message and status, never a `Debug` dump.
fn describe_kube(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", status.reason)
            };
            format!(
                "answered HTTP {}{reason}: {}",
                status.code,
                status.message.trim()
            )
        }
        other => format!("call failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
            "metadata": {}
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn forbidden_and_invalid_stall_with_the_servers_message() {
        let forbidden = Error::from(api(
            403,
            "Forbidden",
            r#"deployments.apps "x" is forbidden: User "system:serviceaccount:m:m" cannot patch resource "deployments" in API group "apps" in the namespace "kube-system""#,
        ));
        assert_eq!(
            forbidden.reason(),
            conditions::reasons::KUBERNETES_API_FORBIDDEN
        );
        assert!(
            forbidden
                .to_string()
                .contains("cannot patch resource \"deployments\"")
        );
        let invalid = Error::from(api(
            422,
            "Invalid",
            r#"Deployment.apps "x" is invalid: spec.template.spec.containers[0].image: Required value"#,
        ));
        assert_eq!(
            invalid.reason(),
            conditions::reasons::KUBERNETES_API_INVALID
        );
        assert!(invalid.is_stalled());
    }

    #[test]
    fn other_answers_are_retried_and_read_as_one_sentence() {
        let error = Error::from(api(500, "InternalError", "etcdserver: request timed out"));
        assert!(!error.is_stalled());
        assert_eq!(error.reason(), conditions::reasons::KUBERNETES_API_ERROR);
        let text = error.to_string();
        assert_eq!(
            text,
            "the Kubernetes API answered HTTP 500 InternalError: etcdserver: request timed out"
        );
        assert!(!text.contains("Status {"), "{text}");
    }
}
