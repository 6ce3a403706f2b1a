//! Build Jobs.

mod job;

pub use job::*;
