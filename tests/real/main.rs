//! The suite's scenarios against a real kube-apiserver and kube-controller-manager (envtest
//! binaries from `KUBEBUILDER_ASSETS`): one control plane for this whole binary, each test in
//! namespaces of its own. Without the binaries every test here says it is skipped and passes;
//! `MONOSHIP_REQUIRE_ENVTEST=1` (CI) turns that into a failure.
//!
//! One binary on purpose: each test binary starts its own control plane (a few seconds and
//! about 500 MiB), so the real-server tests are modules of this one.

#[path = "../common/mod.rs"]
mod common;

/// The shared control plane, or return from the test (it is reported as skipped).
macro_rules! envtest {
    () => {
        match monoship_testkit::envtest::shared() {
            Some(env) => env,
            None => return,
        }
    };
}

#[path = "../crd_cases/mod.rs"]
mod crd_cases;

mod crd;
mod gaps;
mod harness;
mod rbac;
mod seed;

/// Tests whose controller watches one namespace hold this for reading; a test whose controller
/// watches every namespace (as the chart installs it) holds it for writing, so that it never
/// reconciles another test's ServiceBuilds while that test counts writes.
pub static NAMESPACED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Install the CRDs (crds/servicebuild.yaml, crds/monorepo.yaml) with server-side apply, as
/// often as tests ask, and wait until they are served.
pub async fn install_crd(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};

    for file in ["servicebuild.yaml", "monorepo.yaml"] {
        let path = format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("a CRD file");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("a CRD");
        let name = crd.metadata.name.clone().expect("a name");
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        api.patch(
            &name,
            &PatchParams::apply("monoship-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the CRD is applied");
    }
    crd_established(client, "servicebuilds.monoship.dev").await;
    crd_established(client, "monorepos.monoship.dev").await;
}

/// Wait until the CRD `name` is Established (served).
pub async fn crd_established(client: &kube::Client, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let crd = api.get_opt(name).await.expect("get the CRD");
        let established = crd
            .and_then(|crd| crd.status)
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRD is not Established within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
