//! Test support for monoship. Used by integration tests, benches and the demo; never shipped
//! in the controller binary.

pub mod apiserver;
pub mod envtest;
pub mod fake_registry;
pub mod git;
pub mod git_server;
pub mod jobrunner;
pub mod nomad;
pub mod oci;
mod process;
pub mod registry;
pub mod scenario;
