//! Record: the build's part of the status (`status.build`, the `Built` condition) as a build
//! starts, runs, fails, succeeds or is skipped.

use super::{Inputs, Observed, Step, WantedBuild, build_is_current};
use crate::api::{
    BuildStatus, DigestSource, Phase, REBUILD_ANNOTATION, short_digest, short_revision,
};
use crate::conditions::{reasons, types};
use crate::pipeline::conditions::Summary;
use crate::pipeline::outcome::Fault;

impl Step<'_> {
    /// `status.build` for the wanted build, started now unless it already describes it.
    pub(super) fn build_status(&mut self) -> &mut BuildStatus {
        let wanted: &WantedBuild = self.observed.wanted;
        if !build_is_current(&self.status, wanted) {
            self.status.build = Some(BuildStatus {
                revision: wanted.revision.clone(),
                short_revision: short_revision(&wanted.revision).to_owned(),
                rebuild: wanted.rebuild.clone(),
                job_name: wanted.job_name.clone(),
                image: Some(wanted.image.clone()),
                input_key: match self.observed.inputs {
                    Inputs::Known(key) => Some(key.key.clone()),
                    _ => None,
                },
                inputs_message: inputs_message(self.observed),
                start_time: Some(
                    self.observed
                        .job
                        .started
                        .clone()
                        .unwrap_or_else(|| self.now.clone()),
                ),
                ..BuildStatus::default()
            });
            if wanted.rebuild.is_some() {
                self.status.last_handled_rebuild = wanted.rebuild.clone();
            }
            self.condition(
                types::BUILT,
                false,
                reasons::BUILDING,
                "the build of the current revision has not finished",
            );
            if let Inputs::Unreadable(why) = self.observed.inputs {
                self.event(
                    true,
                    reasons::INPUTS_UNREADABLE,
                    format!(
                        "Could not read the inputs of revision {}, so it is built: {why}",
                        short_revision(&wanted.revision)
                    ),
                );
            }
        }
        self.status.build.get_or_insert_with(BuildStatus::default)
    }

    /// The build is skipped: the digest of the build of `from`, whose inputs are the same, now
    /// carries this revision's tag.
    pub(super) fn reused(&mut self, digest: &str, from: &str) {
        let wanted: &WantedBuild = self.observed.wanted;
        let compared = match self.observed.inputs {
            Inputs::Known(key) => key,
            _ => return,
        };
        let message = format!(
            "inputs unchanged since revision {}: {}; reusing {} and tagging it {}",
            short_revision(from),
            compared.describe(),
            short_digest(digest),
            wanted.image
        );
        self.status.build = Some(BuildStatus {
            revision: wanted.revision.clone(),
            short_revision: short_revision(&wanted.revision).to_owned(),
            image: Some(wanted.image.clone()),
            digest: Some(digest.to_owned()),
            digest_source: Some(DigestSource::Reused),
            input_key: Some(compared.key.clone()),
            inputs_message: Some(message.clone()),
            reused_from: Some(from.to_owned()),
            start_time: Some(self.now.clone()),
            completion_time: Some(self.now.clone()),
            ..BuildStatus::default()
        });
        self.condition(types::BUILT, true, reasons::BUILD_SKIPPED, &message);
        // The next step settles (Unchanged) or promotes the reused digest (a rollback).
        self.status.phase = Some(Phase::Promoting);
    }

    pub(super) fn building(&mut self) {
        let build = self.build_status();
        let mut message = format!(
            "build Job {} runs for revision {}",
            build.job_name, build.short_revision
        );
        // Inputs that could not be read are why it runs: say so where people look.
        if let (None, Some(why)) = (&build.input_key, &build.inputs_message) {
            message = format!("{message}; {why}");
        }
        self.status.phase = Some(Phase::Building);
        self.summarize(Summary::Progressing {
            reason: reasons::BUILDING,
            message: &message,
        });
    }

    pub(super) fn failed(&mut self, reason: &str, message: &str) {
        let now = self.now.clone();
        let build = self.build_status();
        build.failure_reason = Some(reason.to_owned());
        build.message = Some(message.to_owned());
        if build.completion_time.is_none() {
            build.completion_time = Some(now);
        }
        let summary = format!(
            "build Job {} failed ({reason}): {message}. Set a new revision, or a new value of the \
             {REBUILD_ANNOTATION} annotation, to build again",
            build.job_name
        );
        self.status.phase = Some(Phase::Failed);
        self.condition(types::BUILT, false, reasons::BUILD_FAILED, &summary);
        self.summarize(Summary::Stalled {
            reason: reasons::BUILD_FAILED,
            message: &summary,
        });
    }

    pub(super) fn resolved(&mut self, digest: &str, source: DigestSource) {
        let build = self.finish_build();
        build.digest = Some(digest.to_owned());
        build.digest_source = Some(source);
        build.failure_reason = None;
        build.message = None;
        let message = match source {
            DigestSource::Reported => {
                "the build of the current revision succeeded and reported its digest, which its \
                 tag points at"
            }
            DigestSource::Tag => {
                "the build of the current revision succeeded and reported no digest: the digest \
                 is the one its tag points at"
            }
            DigestSource::Reused => "the build was skipped: its inputs are an earlier build's",
        };
        self.condition(types::BUILT, true, reasons::BUILD_SUCCEEDED, message);
    }

    /// The build reported one digest, its tag points at another: nothing is recorded as built,
    /// and the build stays stalled until a new revision or rebuild token.
    pub(super) fn mismatch(&mut self, fault: &Fault) {
        let build = self.finish_build();
        build.failure_reason = Some(reasons::DIGEST_MISMATCH.to_owned());
        build.message = Some(fault.message.clone());
        self.condition(types::BUILT, false, fault.reason, &fault.message);
        self.fault(fault);
    }

    /// `status.build` of the wanted build, its completion time set (the Job's, else now).
    pub(super) fn finish_build(&mut self) -> &mut BuildStatus {
        let completion = self
            .observed
            .job
            .completed
            .clone()
            .unwrap_or_else(|| self.now.clone());
        let build = self.build_status();
        build.completion_time = Some(completion);
        build
    }
}

/// Why the wanted build runs, as far as its inputs tell (`None` when they were not read).
fn inputs_message(observed: &Observed<'_>) -> Option<String> {
    match observed.inputs {
        Inputs::Known(key) if observed.wanted.rebuild.is_some() => Some(format!(
            "the {REBUILD_ANNOTATION} annotation asks for a build; inputs: {}",
            key.describe()
        )),
        Inputs::Known(key) if !observed.spec.build.skip_unchanged => Some(format!(
            "build.skipUnchanged is false; inputs: {}",
            key.describe()
        )),
        Inputs::Known(key) => Some(format!(
            "no recorded build has the same inputs: {}",
            key.describe()
        )),
        Inputs::Unreadable(why) => Some(format!("the inputs could not be read: {why}")),
        Inputs::NotRead | Inputs::Pending => None,
    }
}
