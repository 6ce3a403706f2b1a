//! The time and byte watch of one fetch: a timer that sets gix's interrupt flag, and gix
//! progress that counts the pack bytes received.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::fetch::{Asked, FetchLimits};
use super::{GitError, GitErrorKind};

pub(super) struct Shared {
    pub(super) asked: std::sync::Mutex<Asked>,
    pub(super) interrupt: AtomicBool,
    pub(super) timed_out: AtomicBool,
    pub(super) too_big: AtomicBool,
    pub(super) received: AtomicU64,
    pub(super) max_bytes: u64,
}

/// The time and byte watch of one fetch: a timer thread, and progress that counts pack bytes.
pub(super) struct Watch {
    pub(super) shared: Arc<Shared>,
    done: Option<std::sync::mpsc::Sender<()>>,
    timer: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub(super) fn start(limits: FetchLimits) -> Result<Self, GitError> {
        let shared = Arc::new(Shared {
            asked: Default::default(),
            interrupt: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            too_big: AtomicBool::new(false),
            received: AtomicU64::new(0),
            max_bytes: limits.max_bytes,
        });
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let timer_shared = shared.clone();
        let timer = std::thread::Builder::new()
            .name("git-fetch-timer".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(limits.timeout)
                {
                    timer_shared.timed_out.store(true, Ordering::SeqCst);
                    timer_shared.interrupt.store(true, Ordering::SeqCst);
                }
            })
            .map_err(|e| {
                GitError::new(
                    GitErrorKind::Local,
                    format!("git: could not start a fetch timer: {e}"),
                )
            })?;
        Ok(Self {
            shared,
            done: Some(done),
            timer: Some(timer),
        })
    }

    pub(super) fn stop(&self) {
        // Wakes the timer, which then ends without interrupting.
        let _ = self.done.as_ref().map(|done| done.send(()));
    }

    pub(super) fn progress(&self) -> Budget {
        Budget {
            shared: self.shared.clone(),
            id: gix::progress::UNKNOWN,
            step: Default::default(),
        }
    }

    pub(super) fn timed_out(&self) -> bool {
        self.shared.timed_out.load(Ordering::SeqCst)
    }

    pub(super) fn too_big(&self) -> bool {
        self.shared.too_big.load(Ordering::SeqCst)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.done.take();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

/// gix progress that discards everything but the bytes of the pack being read (the child
/// `read pack`, id `BWRB`), and interrupts the fetch when they pass the limit.
pub(super) struct Budget {
    shared: Arc<Shared>,
    id: gix::progress::Id,
    step: gix::progress::StepShared,
}

/// `gix_pack::bundle::write::ProgressId::ReadPackBytes`.
const READ_PACK_BYTES: gix::progress::Id = *b"BWRB";

impl gix::Count for Budget {
    fn set(&self, step: gix::progress::Step) {
        let before = self.step.swap(step, Ordering::SeqCst);
        self.count(step.saturating_sub(before));
    }

    fn step(&self) -> gix::progress::Step {
        self.step.load(Ordering::SeqCst)
    }

    fn inc_by(&self, step: gix::progress::Step) {
        self.step.fetch_add(step, Ordering::SeqCst);
        self.count(step);
    }

    fn counter(&self) -> gix::progress::StepShared {
        self.step.clone()
    }
}

impl Budget {
    fn count(&self, bytes: usize) {
        if self.id != READ_PACK_BYTES {
            return;
        }
        let total = self
            .shared
            .received
            .fetch_add(bytes as u64, Ordering::SeqCst)
            .saturating_add(bytes as u64);
        if total > self.shared.max_bytes {
            self.shared.too_big.store(true, Ordering::SeqCst);
            self.shared.interrupt.store(true, Ordering::SeqCst);
        }
    }
}

impl gix::Progress for Budget {
    fn init(&mut self, _max: Option<gix::progress::Step>, _unit: Option<gix::progress::Unit>) {}

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> gix::progress::Id {
        self.id
    }

    fn message(&self, _level: gix::progress::MessageLevel, _message: String) {}
}

impl gix::NestedProgress for Budget {
    type SubProgress = Budget;

    fn add_child(&mut self, _name: impl Into<String>) -> Self::SubProgress {
        self.add_child_with_id(String::new(), gix::progress::UNKNOWN)
    }

    fn add_child_with_id(
        &mut self,
        _name: impl Into<String>,
        id: gix::progress::Id,
    ) -> Self::SubProgress {
        Budget {
            shared: self.shared.clone(),
            id,
            step: Default::default(),
        }
    }
}
