//! Outcomes: what an acting step did, as plain data. Acting steps ([`crate::act`]) return them
//! and change no status; [`super::record::record`] turns them into status and Events.

use crate::Error;

/// What one acting step did. When a fault stopped the step part way, the outcome holds what was
/// done before it (tags already moved, targets already tried).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Outcome {
    /// The plan needed no side effect, or none happened.
    #[default]
    Nothing,
    /// The build Job was created (or found already created). `superseded` names the Jobs of
    /// older builds that were deleted while they still ran; `reuse_refused` says why a build
    /// planned to be skipped runs after all (its digest is gone from the registry).
    JobCreated {
        superseded: Vec<String>,
        reuse_refused: Option<String>,
    },
    /// The build was skipped: the reused digest carries the revision's tag (`tagged`: this
    /// step wrote it, with one manifest PUT and no blob).
    Reused { tagged: bool },
    /// The digest `repository:<revisionTag>` points at, as the registry answered after the
    /// build; [`super::provenance::check`] holds it against what the build reported.
    DigestResolved { tagged: String },
    /// Floating tags moved, then targets pinned. `targets` is `None` when the tags did not all
    /// move (a fault stopped the step first).
    Promoted {
        tags: Vec<TagMove>,
        targets: Option<Vec<TargetOutcome>>,
    },
    /// Every target kept on the current digest.
    Settled { targets: Vec<TargetOutcome> },
}

/// A floating tag moved to the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMove {
    pub tag: String,
    /// The digest the tag pointed at before, if any.
    pub previous: Option<String>,
}

/// What pinning one target did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    /// The target's identity, as in `status.targets[].target`.
    pub id: String,
    /// `kubernetes` or `nomad`, for metrics.
    pub kind: &'static str,
    /// The reference it is pinned to, `repository@digest`.
    pub image: String,
    pub result: Result<PinOutcome, Fault>,
}

/// What pinning one target did when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The target already ran the digest; nothing that could roll it out was written (at most
    /// the annotation that records which ServiceBuild pins it).
    AlreadyPinned,
    /// The target was written.
    Pinned(Pinned),
}

/// Details of one write to a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    /// The image the target had before, as read.
    pub previous_image: Option<String>,
    /// Nomad: the job's `JobModifyIndex` after the write.
    pub job_modify_index: Option<u64>,
    /// Nomad: the evaluation the write created.
    pub eval_id: Option<String>,
}

/// Why a step (or one target) did not finish, as status and Events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// A condition reason from [`crate::conditions::reasons`].
    pub reason: &'static str,
    /// One readable sentence.
    pub message: String,
    /// A person must act (Stalled); otherwise the fault is transient and retried.
    pub stalled: bool,
}

impl Fault {
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            stalled: true,
        }
    }

    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            stalled: false,
        }
    }
}

impl From<&Error> for Fault {
    fn from(error: &Error) -> Self {
        Self {
            reason: error.reason(),
            message: error.to_string(),
            stalled: error.is_stalled(),
        }
    }
}
