//! The reconcile pipeline's pure steps.

pub mod decide;
pub mod record;
