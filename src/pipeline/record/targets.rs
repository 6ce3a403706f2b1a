//! Record: each target's entry in `status.targets` from what pinning it did.

use super::Step;
use super::reasons;
use crate::api::TargetStatus;
use crate::pipeline::outcome::{PinOutcome, TargetOutcome};

impl Step<'_> {
    /// Each target's entry from its outcome. `settled`: the digest was already promoted, so a
    /// write means the target had drifted.
    pub(super) fn pinned(&mut self, digest: &str, targets: &[TargetOutcome], settled: bool) {
        let mut entries = Vec::with_capacity(targets.len());
        for target in targets {
            let previous = self
                .status
                .targets
                .iter()
                .find(|t| t.target == target.id)
                .cloned()
                .unwrap_or_default();
            let mut entry = TargetStatus {
                target: target.id.clone(),
                ..previous
            };
            match &target.result {
                Ok(PinOutcome::AlreadyPinned) => {
                    // A drift report stays until the next write; an error is cleared.
                    if !entry.in_sync || entry.digest.as_deref() != Some(digest) {
                        entry.message = None;
                    }
                    entry.digest = Some(digest.to_owned());
                    entry.in_sync = true;
                }
                Ok(PinOutcome::Pinned(pinned)) => {
                    let was = pinned
                        .previous_image
                        .clone()
                        .unwrap_or_else(|| "no image".to_owned());
                    if settled {
                        self.event(
                            true,
                            reasons::TARGET_DRIFTED,
                            format!(
                                "Target {} ran {was} instead of {}; re-pinned",
                                target.id, target.image
                            ),
                        );
                    }
                    self.event(
                        false,
                        reasons::TARGET_PINNED,
                        format!("Pinned {} to {}", target.id, target.image),
                    );
                    entry = TargetStatus {
                        target: target.id.clone(),
                        digest: Some(digest.to_owned()),
                        in_sync: true,
                        updated_at: Some(self.now.clone()),
                        message: settled.then(|| format!("re-pinned after drift: found {was}")),
                        job_modify_index: pinned.job_modify_index,
                        eval_id: pinned.eval_id.clone(),
                    };
                }
                Err(fault) => {
                    entry.in_sync = false;
                    entry.message = Some(fault.message.clone());
                }
            }
            entries.push(entry);
        }
        self.status.targets = entries;
    }
}
