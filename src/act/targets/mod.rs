//! Targets: where a promoted digest goes. Each module pins one kind of target idempotently:
//! it reads the target first and writes only when the image is not already `repository@digest`.

pub mod kubernetes;
pub mod nomad;

/// What pinning one target did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The target already ran the digest; nothing was written.
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

/// `repository@digest`: the reference every target is pinned to.
pub fn pinned_reference(repository: &str, digest: &str) -> String {
    format!("{repository}@{digest}")
}
