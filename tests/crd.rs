//! The generated CRD: identical to `crds/servicebuild.yaml`, and every admission rule rejects
//! what it should, with its own message. CEL rules run in kube's client-side CEL evaluator;
//! schema constraints (patterns, lengths, ranges, required fields) in a JSON Schema validator.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use monoship::ServiceBuild;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = ServiceBuild::crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).unwrap()
}

fn valid() -> Value {
    json!({
        "apiVersion": "monoship.dev/v1alpha1",
        "kind": "ServiceBuild",
        "metadata": {"name": "banana", "namespace": "shop"},
        "spec": {
            "source": {
                "repository": "https://git.example.com/shop/monorepo.git",
                "revision": "0123456789abcdef0123456789abcdef01234567",
                "paths": ["services/banana"]
            },
            "build": {"template": {"spec": {"containers": [
                {"name": "build", "image": "quay.io/skopeo/stable", "command": ["sh", "-c", "make push"]}
            ]}}},
            "image": {"repository": "registry.example.com:5000/shop/banana", "tags": ["latest"]},
            "targets": [
                {"kubernetes": {"kind": "Deployment", "name": "banana", "container": "app"}},
                {"nomad": {"address": "https://nomad.example.com:4646", "job": "banana", "group": "web", "task": "server"}}
            ]
        }
    })
}

/// The CEL messages an object fails with.
fn cel_errors(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

/// The JSON Schema errors an object fails with (OpenAPI's `nullable` aside, the CRD schema is
/// plain JSON Schema).
fn schema_errors(object: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("the CRD schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = object.pointer_mut(parent).unwrap();
    match parent {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("not a container: {pointer}"),
    }
    object
}

#[test]
fn crd_file_matches_the_generated_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_monoship"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/servicebuild.yaml"
    ))
    .unwrap();
    assert!(
        output.stdout == file,
        "crds/servicebuild.yaml is stale: run `cargo run -- crd > crds/servicebuild.yaml`"
    );
}

#[test]
fn crd_names_scope_columns_and_status_subresource() {
    let crd = serde_json::to_value(ServiceBuild::crd()).unwrap();
    assert_eq!(crd["spec"]["group"], "monoship.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sb"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Revision", "Digest", "Phase", "Ready", "Age"]);
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn a_valid_servicebuild_passes_schema_and_cel() {
    assert_eq!(schema_errors(&valid()), Vec::<String>::new());
    assert_eq!(cel_errors(&valid()), Vec::<String>::new());
    let sha256 = with(valid(), "/spec/source/revision", json!("ab".repeat(32)));
    assert_eq!(cel_errors(&sha256), Vec::<String>::new());
}

/// Each invalid case is rejected by a CEL rule with its own message.
#[test]
fn cel_rules_reject_each_invalid_case_with_its_own_message() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "short revision",
            with(valid(), "/spec/source/revision", json!("0123456")),
            "must be a full commit id",
        ),
        (
            "branch name",
            with(valid(), "/spec/source/revision", json!("main")),
            "must be a full commit id",
        ),
        (
            "upper-case hex",
            with(
                valid(),
                "/spec/source/revision",
                json!("0123456789ABCDEF0123456789abcdef01234567"),
            ),
            "must be a full commit id",
        ),
        (
            "repository with tag",
            with(
                valid(),
                "/spec/image/repository",
                json!("registry.example.com/shop/banana:v1"),
            ),
            "must not contain a tag",
        ),
        (
            "repository with digest",
            with(
                valid(),
                "/spec/image/repository",
                json!(format!(
                    "registry.example.com/banana@sha256:{}",
                    "a".repeat(64)
                )),
            ),
            "must not contain a digest",
        ),
        (
            "target with no kind",
            with(valid(), "/spec/targets/0", json!({})),
            "exactly one of kubernetes or nomad",
        ),
        (
            "target with two kinds",
            with(
                valid(),
                "/spec/targets/0",
                json!({
            "kubernetes": {"kind": "Deployment", "name": "banana", "container": "app"},
            "nomad": {"address": "http://n:4646", "job": "j", "group": "g", "task": "t"}}),
            ),
            "exactly one of kubernetes or nomad",
        ),
        (
            "duplicate target",
            with(
                valid(),
                "/spec/targets/1",
                json!({"kubernetes": {"kind": "Deployment", "name": "banana", "container": "app"}}),
            ),
            "same target twice",
        ),
        (
            "template without containers",
            with(valid(), "/spec/build/template/spec/containers", json!([])),
            "at least one container",
        ),
        (
            "bad floating tag",
            with(valid(), "/spec/image/tags", json!(["-latest"])),
            "must be valid tags",
        ),
        (
            "bad revisionTag",
            with(valid(), "/spec/image/revisionTag", json!("v{commit}")),
            "placeholders {revision} and {shortRevision}",
        ),
        (
            "nomad address without scheme",
            with(
                valid(),
                "/spec/targets/1/nomad/address",
                json!("nomad:4646"),
            ),
            "http:// or https://",
        ),
        (
            "long name",
            with(valid(), "/metadata/name", json!("a".repeat(64))),
            "at most 63 characters",
        ),
    ];
    for (case, object, expected) in cases {
        let errors = cel_errors(&object);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{case}: expected a CEL error containing {expected:?}, got {errors:?}"
        );
    }
}

/// Cases enforced by the schema itself: empty names, ranges, required fields.
#[test]
fn schema_rejects_empty_names_ranges_and_missing_fields() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty target name",
            with(valid(), "/spec/targets/0/kubernetes/name", json!("")),
            "/spec/targets/0/kubernetes/name",
        ),
        (
            "empty container",
            with(valid(), "/spec/targets/0/kubernetes/container", json!("")),
            "/spec/targets/0/kubernetes/container",
        ),
        (
            "empty nomad job",
            with(valid(), "/spec/targets/1/nomad/job", json!("")),
            "/spec/targets/1/nomad/job",
        ),
        (
            "empty repository",
            with(valid(), "/spec/image/repository", json!("")),
            "/spec/image/repository",
        ),
        (
            "historyLimit 0",
            with(valid(), "/spec/historyLimit", json!(0)),
            "/spec/historyLimit",
        ),
        (
            "historyLimit 101",
            with(valid(), "/spec/historyLimit", json!(101)),
            "/spec/historyLimit",
        ),
        (
            "unknown workload kind",
            with(
                valid(),
                "/spec/targets/0/kubernetes/kind",
                json!("ReplicaSet"),
            ),
            "/spec/targets/0/kubernetes/kind",
        ),
        (
            "no template",
            with(valid(), "/spec/build", json!({})),
            "/spec/build",
        ),
    ];
    for (case, object, path) in cases {
        let errors = schema_errors(&object);
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "{case}: expected a schema error at {path}, got {errors:?}"
        );
    }
    let ok = with(valid(), "/spec/historyLimit", json!(100));
    assert_eq!(schema_errors(&ok), Vec::<String>::new());
}

#[test]
fn defaults_are_in_the_schema() {
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["historyLimit"]["default"], 10);
    assert_eq!(
        spec["image"]["properties"]["revisionTag"]["default"],
        "{shortRevision}"
    );
    assert_eq!(
        spec["build"]["properties"]["timeoutSeconds"]["default"],
        3600
    );
}

#[test]
fn the_chart_ships_the_same_crd() {
    let root = env!("CARGO_MANIFEST_DIR");
    let top = std::fs::read(format!("{root}/crds/servicebuild.yaml")).unwrap();
    let chart = std::fs::read(format!("{root}/charts/monoship/crds/servicebuild.yaml")).unwrap();
    assert!(
        top == chart,
        "charts/monoship/crds/servicebuild.yaml differs from crds/servicebuild.yaml: copy it"
    );
}

/// Every ServiceBuild in `examples/` passes the schema and the CEL rules, as admission would.
#[test]
fn every_example_servicebuild_is_admitted() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            if value["kind"] != "ServiceBuild" {
                continue;
            }
            let name = format!("{} {}", path.display(), value["metadata"]["name"]);
            assert_eq!(schema_errors(&value), Vec::<String>::new(), "{name}");
            assert_eq!(cel_errors(&value), Vec::<String>::new(), "{name}");
            serde_json::from_value::<ServiceBuild>(value).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example ServiceBuilds found");
}

/// README's install line is `monoship crd | kubectl apply -f -`. Client-side apply stores the
/// whole object, as JSON, in the `kubectl.kubernetes.io/last-applied-configuration` annotation,
/// and kube-apiserver refuses annotations over 262,144 bytes in total (`metadata.annotations:
/// Too long`). The annotation kubectl would write must fit, with room to grow.
#[test]
fn the_documented_install_line_fits_the_last_applied_annotation() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains("monoship crd | kubectl apply -f -"),
        "the README documents the client-side install line"
    );
    let yaml = std::process::Command::new(env!("CARGO_BIN_EXE_monoship"))
        .arg("crd")
        .output()
        .expect("monoship crd runs")
        .stdout;
    let crd: Value = serde_yaml::from_slice(&yaml).expect("the CRD is YAML");
    // What kubectl stores: the object as applied, compact JSON, plus a newline.
    let annotation = serde_json::to_string(&crd).unwrap().len() + 1;
    assert!(
        annotation < 262_144 / 4,
        "the last-applied annotation would be {annotation} bytes"
    );
}

/// The build template's schema checks what monoship relies on, and keeps the rest of the pod
/// template as written (the API server validates the pod when the build Job is created).
#[test]
fn the_build_template_keeps_pod_fields_and_requires_named_containers() {
    let pod = json!({"spec": {
        "serviceAccountName": "builder",
        "securityContext": {"runAsNonRoot": true},
        "containers": [{"name": "build", "image": "b", "resources": {"limits": {"cpu": "2"}}}]
    }});
    let object = with(valid(), "/spec/build/template", pod);
    assert_eq!(schema_errors(&object), Vec::<String>::new());
    let template = &schema()["properties"]["spec"]["properties"]["build"]["properties"]["template"];
    assert_eq!(
        template["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    let unnamed = with(
        valid(),
        "/spec/build/template/spec/containers",
        json!([{"image": "b"}]),
    );
    assert!(!schema_errors(&unnamed).is_empty());
}
