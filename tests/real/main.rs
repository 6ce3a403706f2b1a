//! The suite's scenarios against a real kube-apiserver and kube-controller-manager (envtest
//! binaries from `KUBEBUILDER_ASSETS`): one control plane for this whole binary, each test in
//! namespaces of its own. Without the binaries every test here says it is skipped and passes;
//! `MONOSHIP_REQUIRE_ENVTEST=1` (CI) turns that into a failure.

#[path = "../common/mod.rs"]
mod common;

mod harness;

/// The shared control plane, or return from the test (it is reported as skipped).
macro_rules! envtest {
    () => {
        match monoship_testkit::envtest::shared() {
            Some(env) => env,
            None => return,
        }
    };
}
pub(crate) use envtest;
