//! The chart's RBAC on a real kube-apiserver: render charts/monoship with Helm (as tests/chart
//! does), apply its ServiceAccount, ClusterRole/Role and bindings, and run the seed scenario
//! with the controller authenticated as that ServiceAccount, watching every namespace and
//! electing a leader, as the chart runs it.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use monoship::controller::Settings;
use monoship::lease::LeaseSettings;
use monoship_testkit::scenario::RealSeed;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common;
use crate::seed::{Controller, seed_scenario};

/// The release namespace `tests/chart/render.py` renders into.
const RELEASE_NAMESPACE: &str = "monoship-system";

/// The objects Helm renders for `values` (CRDs aside), or `None` when the chart tests' Python
/// packages are missing (`bash tests/chart/run.sh` or `bash tests/run.sh` installs them).
fn render_chart(values: &Value) -> Option<Vec<Value>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .arg(format!("{root}/tests/chart/render.py"))
        .arg(format!("{root}/charts/monoship"))
        .arg(values.to_string())
        .output()
        .expect("python3 runs");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            std::env::var("MONOSHIP_REQUIRE_ENVTEST").is_err(),
            "rendering the chart failed: {stderr}"
        );
        eprintln!(
            "rendering the chart failed (run `bash tests/chart/run.sh` once to install its Python packages): skipped\n{stderr}"
        );
        return None;
    }
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let objects = serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("rendered YAML"))
        .filter(|object| !object.is_null())
        .collect();
    Some(objects)
}

/// Create or update `object` (of resource `plural`) as it was rendered, without what the
/// render's fake API server added.
async fn apply(client: &Client, mut object: Value, plural: &str) {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in ["uid", "resourceVersion", "creationTimestamp"] {
            metadata.remove(field);
        }
    }
    let (group, version) = match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (String::new(), "v1".to_owned()),
    };
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), plural);
    let name = object["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("monoship-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

/// Apply the rendered ServiceAccount, roles and bindings; return the ServiceAccount's name and
/// the kinds applied.
async fn apply_rbac(client: &Client, objects: Vec<Value>) -> (String, Vec<String>) {
    let mut account = None;
    let mut kinds = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "ServiceAccount" => {
                account = object["metadata"]["name"].as_str().map(str::to_owned);
                apply(client, object, "serviceaccounts").await;
            }
            "Role" => apply(client, object, "roles").await,
            "RoleBinding" => apply(client, object, "rolebindings").await,
            "ClusterRole" => apply(client, object, "clusterroles").await,
            "ClusterRoleBinding" => apply(client, object, "clusterrolebindings").await,
            _ => continue,
        }
        kinds.push(kind);
    }
    (account.expect("the chart renders a ServiceAccount"), kinds)
}

/// With the chart's default values (a ClusterRole, every namespace, leader election on a Lease in
/// the release namespace), the controller has every permission the seed scenario needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_charts_rbac_is_enough_for_the_seed_scenario() {
    let env = envtest!();
    let Some(objects) = render_chart(&json!({"replicas": 1})) else {
        return;
    };
    // This controller watches every namespace: no other test may count writes meanwhile.
    let _alone = crate::NAMESPACED.write().await;
    let admin = env.client().await;
    crate::install_crd(&admin).await;
    let release: Namespace =
        serde_json::from_value(json!({"metadata": {"name": RELEASE_NAMESPACE}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .patch(
            RELEASE_NAMESPACE,
            &PatchParams::apply("monoship-tests"),
            &Patch::Apply(&release),
        )
        .await
        .expect("the release namespace");
    let (account, mut kinds) = apply_rbac(&admin, objects).await;
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ],
        "the chart's default RBAC objects"
    );
    let client = env
        .service_account_client(RELEASE_NAMESPACE, &account)
        .await;

    let mut seed = RealSeed::start(env, &[]).await;
    let settings = Settings {
        namespace: None,
        ..common::settings(&seed, Duration::from_secs(600))
    };
    let election = LeaseSettings {
        name: "monoship".to_owned(),
        namespace: RELEASE_NAMESPACE.to_owned(),
        identity: "monoship-0".to_owned(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };
    seed_scenario(&mut seed, || Controller {
        client: client.clone(),
        settings: settings.clone(),
        election: Some(election.clone()),
    })
    .await;
}
