//! Test support for monoship. Used by integration tests, benches and the demo; never shipped
//! in the controller binary.

pub mod nomad;
