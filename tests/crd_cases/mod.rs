//! The admission cases of the ServiceBuild CRD, shared by tests/crd.rs (client-side CEL and
//! JSON Schema) and tests/real (the real kube-apiserver), so both judge the same objects.
#![allow(dead_code)]

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use monoship::ServiceBuild;
use serde_json::{Value, json};

/// The CRD's openAPIV3Schema.
pub fn schema() -> Value {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let crd = ServiceBuild::crd();
            let version = &crd.spec.versions[0];
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("the CRD has a schema");
            serde_json::to_value(schema).unwrap()
        })
        .clone()
}

/// The CEL messages an object fails with.
pub fn cel_errors(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

/// The JSON Schema errors an object fails with (OpenAPI's `nullable` aside, the CRD schema is
/// plain JSON Schema).
pub fn schema_errors(object: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("the CRD schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

/// The message of every CEL rule in the schema.
pub fn rule_messages() -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    found.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                    );
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&schema(), &mut found);
    found
}

/// The rule messages of the CEL errors an object fails with, client-side.
pub fn cel_messages(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

/// A ServiceBuild that every rule admits.
pub fn valid() -> Value {
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

/// `object` with the value at `pointer` (JSON Pointer) replaced.
pub fn with(mut object: Value, pointer: &str, value: Value) -> Value {
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

/// Valid variants beyond [`valid`]: `(case, object)`.
pub fn valid_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("valid", valid()),
        (
            "sha256 revision",
            with(valid(), "/spec/source/revision", json!("ab".repeat(32))),
        ),
        (
            "historyLimit 100",
            with(valid(), "/spec/historyLimit", json!(100)),
        ),
        (
            "a follower of a Monorepo",
            with(
                valid(),
                "/spec/source",
                json!({"monorepoRef": {"name": "shop"}, "paths": ["services/banana", "go.mod"]}),
            ),
        ),
        (
            "the whole tree as a path, and skipping off",
            with(
                with(valid(), "/spec/source/paths", json!(["."])),
                "/spec/build/skipUnchanged",
                json!(false),
            ),
        ),
    ]
}

/// Objects a CEL rule rejects: `(case, object, part of the rule's message)`.
pub fn cel_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
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
        (
            "a monorepoRef beside a repository",
            with(valid(), "/spec/source/monorepoRef", json!({"name": "shop"})),
            "set either source.monorepoRef",
        ),
        (
            "no repository and no monorepoRef",
            with(
                valid(),
                "/spec/source",
                json!({"paths": ["services/banana"]}),
            ),
            "set either source.monorepoRef",
        ),
        (
            "a path out of the repository",
            with(valid(), "/spec/source/paths", json!(["services/../../etc"])),
            "source.paths entries must be relative",
        ),
        (
            "an absolute path",
            with(valid(), "/spec/source/paths", json!(["/etc"])),
            "source.paths entries must be relative",
        ),
    ]
}

/// Objects the schema itself rejects: `(case, object, JSON Pointer of the offending field)`.
pub fn schema_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
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
    ]
}

/// Every ServiceBuild in `examples/`: `(file and name, object)`.
pub fn examples() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut found = Vec::new();
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
            found.push((name, value));
        }
    }
    found
}
