//! The pure steps of a reconcile: observe → decide → act → record.
//!
//! - [`observe`]: what one reconcile looks at, as plain data (the controller gathers it).
//! - [`decide`]: from what was observed to a [`decide::Plan`]; [`validate`] holds the checks of
//!   the spec that admission cannot make.
//! - act happens in [`crate::act`]; each step returns an [`outcome::Outcome`].
//! - [`provenance`]: the digest a build reported, checked against its tag's.
//! - [`record`]: from (status as read, plan, outcome, clock) to the status to write and the
//!   Events it implies; [`conditions`] and [`events`] are its parts.
//!
//! Nothing here does I/O or reads a clock, so every step is a table of unit tests.

pub mod conditions;
pub mod decide;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod observe;
pub mod outcome;
pub mod provenance;
pub mod record;
pub mod rollout;
pub mod validate;
