//! Condition types and reasons: the vocabulary of `status.conditions` and Events.

/// Condition types. `Ready`, `Reconciling` and `Stalled` follow kstatus.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const BUILT: &str = "Built";
}

/// Reasons, used on conditions and Events (CamelCase, as Kubernetes expects).
pub mod reasons {
    // Progress.
    pub const BUILD_STARTED: &str = "BuildStarted";
    pub const BUILDING: &str = "Building";
    pub const BUILD_SUCCEEDED: &str = "BuildSucceeded";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const BUILD_SUPERSEDED: &str = "BuildSuperseded";
    pub const DIGEST_RESOLVED: &str = "DigestResolved";
    /// The inputs equal a recorded build's: no Job, that build's digest gets the revision's tag.
    pub const BUILD_SKIPPED: &str = "BuildSkipped";
    /// The inputs could not be read (network, credentials, a submodule): the build runs.
    pub const INPUTS_UNREADABLE: &str = "InputsUnreadable";
    /// A Monorepo moved to a new revision.
    pub const REVISION_CHANGED: &str = "RevisionChanged";
    /// A Monorepo's followers are building or promoting its revision.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Every follower of a Monorepo settled on its revision.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Followers of a Monorepo failed or stalled on its revision.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    /// A ServiceBuild waits for its Monorepo's first revision.
    pub const WAITING_FOR_MONOREPO: &str = "WaitingForMonorepo";
    pub const PROMOTING: &str = "Promoting";
    pub const PROMOTED: &str = "Promoted";
    pub const UNCHANGED: &str = "Unchanged";
    pub const TAG_MOVED: &str = "TagMoved";
    pub const TARGET_PINNED: &str = "TargetPinned";
    pub const TARGET_DRIFTED: &str = "TargetDrifted";
    pub const SUSPENDED: &str = "Suspended";
    pub const PENDING: &str = "Pending";

    // A person must act.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `source.monorepoRef` names a Monorepo that does not exist.
    pub const MONOREPO_NOT_FOUND: &str = "MonorepoNotFound";
    /// A Monorepo's branch head cannot be read.
    pub const REPOSITORY_UNREADABLE: &str = "RepositoryUnreadable";
    pub const BUILD_POD_REJECTED: &str = "BuildPodRejected";
    pub const JOB_NOT_OWNED: &str = "JobNotOwned";
    pub const KUBERNETES_API_FORBIDDEN: &str = "KubernetesAPIForbidden";
    pub const KUBERNETES_API_INVALID: &str = "KubernetesAPIInvalid";
    pub const CROSS_NAMESPACE_TARGET_REFUSED: &str = "CrossNamespaceTargetRefused";
    pub const BUILD_SERVICE_ACCOUNT_REFUSED: &str = "BuildServiceAccountRefused";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const INVALID_SECRET: &str = "InvalidSecret";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
    /// Another ServiceBuild pins the target's container (`pin.monoship.dev/<container>`).
    pub const TARGET_CLAIMED: &str = "TargetClaimed";
    pub const REGISTRY_ACCESS_DENIED: &str = "RegistryAccessDenied";
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    pub const NOMAD_ACCESS_DENIED: &str = "NomadAccessDenied";
    pub const NOMAD_JOB_NOT_FOUND: &str = "NomadJobNotFound";
    pub const NOMAD_TASK_NOT_FOUND: &str = "NomadTaskNotFound";
    pub const NOMAD_NO_IMAGE: &str = "NomadTaskHasNoImage";
    /// The target's Nomad address is not in the admin's allowlist (`--nomad-allowed-addresses`).
    pub const NOMAD_ADDRESS_REFUSED: &str = "NomadAddressRefused";
    /// Nomad answered with a redirect, which monoship never follows (the token stays put).
    pub const NOMAD_REDIRECT_REFUSED: &str = "NomadRedirectRefused";
    /// Nomad's answer was larger than monoship reads.
    pub const NOMAD_ANSWER_TOO_LARGE: &str = "NomadAnswerTooLarge";
    /// The build reported one digest and its revision tag points at another: something else
    /// pushed to the tag. Nothing is promoted.
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    /// An older ServiceBuild of the namespace pushes to the same `repository:revisionTag`.
    pub const IMAGE_TAG_CLAIMED: &str = "ImageTagClaimed";

    // Transient.
    pub const BUILD_POD_PENDING: &str = "BuildPodPending";
    pub const KUBERNETES_API_ERROR: &str = "KubernetesAPIError";
    pub const REGISTRY_ERROR: &str = "RegistryError";
    pub const NOMAD_ERROR: &str = "NomadError";
    pub const NOMAD_CONFLICT: &str = "NomadConflict";
    pub const INTERNAL_ERROR: &str = "InternalError";
}
