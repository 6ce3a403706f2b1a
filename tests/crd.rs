//! The generated CRD: identical to `crds/servicebuild.yaml`, and every admission rule rejects
//! what it should, with its own message. CEL rules run in kube's client-side CEL evaluator;
//! schema constraints (patterns, lengths, ranges, required fields) in a JSON Schema validator.

mod crd_cases;

use crd_cases::{cel_errors, schema, schema_errors, valid, with};
use kube::CustomResourceExt;
use monoship::ServiceBuild;
use serde_json::{Value, json};

#[test]
fn crd_file_matches_the_generated_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_monoship"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let root = env!("CARGO_MANIFEST_DIR");
    let servicebuild = std::fs::read_to_string(format!("{root}/crds/servicebuild.yaml")).unwrap();
    let monorepo = std::fs::read_to_string(format!("{root}/crds/monorepo.yaml")).unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout) == format!("{monorepo}{servicebuild}"),
        "crds/ is stale: run `for crd in servicebuild monorepo; do cargo run -q -- crd $crd > \
         crds/$crd.yaml; done`"
    );
}

/// The names of a CRD version's printer columns.
fn printer_columns(version: &Value) -> Vec<&str> {
    version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
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
    let columns = printer_columns(version);
    assert_eq!(columns, ["Revision", "Digest", "Phase", "Ready", "Age"]);
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn a_valid_servicebuild_passes_schema_and_cel() {
    for (case, object) in crd_cases::valid_cases() {
        assert_eq!(schema_errors(&object), Vec::<String>::new(), "{case}");
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{case}");
    }
}

/// Each invalid case is rejected by a CEL rule with its own message.
#[test]
fn cel_rules_reject_each_invalid_case_with_its_own_message() {
    let cases = crd_cases::cel_cases();
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
    let cases = crd_cases::schema_cases();
    for (case, object, path) in cases {
        let errors = schema_errors(&object);
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "{case}: expected a schema error at {path}, got {errors:?}"
        );
    }
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
    for file in ["servicebuild.yaml", "monorepo.yaml"] {
        let top = std::fs::read(format!("{root}/crds/{file}")).unwrap();
        let chart = std::fs::read(format!("{root}/charts/monoship/crds/{file}")).unwrap();
        assert!(
            top == chart,
            "charts/monoship/crds/{file} differs from crds/{file}: copy it"
        );
    }
}

/// Every ServiceBuild in `examples/` passes the schema and the CEL rules, as admission would.
#[test]
fn every_example_servicebuild_is_admitted() {
    let mut checked = 0;
    for (name, value) in crd_cases::examples() {
        assert_eq!(schema_errors(&value), Vec::<String>::new(), "{name}");
        assert_eq!(cel_errors(&value), Vec::<String>::new(), "{name}");
        serde_json::from_value::<ServiceBuild>(value).unwrap_or_else(|e| panic!("{name}: {e}"));
        checked += 1;
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
    use serde::Deserialize;
    let mut kinds = Vec::new();
    for document in serde_yaml::Deserializer::from_slice(&yaml) {
        let crd = Value::deserialize(document).expect("each CRD is YAML");
        kinds.push(crd["spec"]["names"]["kind"].as_str().unwrap().to_owned());
        // What kubectl stores: the object as applied, compact JSON, plus a newline.
        let annotation = serde_json::to_string(&crd).unwrap().len() + 1;
        assert!(
            annotation < 262_144 / 4,
            "the last-applied annotation would be {annotation} bytes"
        );
    }
    assert_eq!(kinds, ["Monorepo", "ServiceBuild"]);
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

/// The Monorepo CRD: exactly one of `revision` and `ref`, a valid interval and branch.
#[test]
fn monorepo_admission_wants_exactly_one_of_revision_and_ref() {
    use kube::core::cel::Validator;
    let crd = serde_json::to_value(monoship::api::Monorepo::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mr"]));
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns = printer_columns(version);
    assert_eq!(
        columns,
        [
            "Revision", "Services", "Changed", "Promoted", "Failed", "Ready", "Age"
        ]
    );
    let schema = version["schema"]["openAPIV3Schema"].clone();
    let errors = |spec: Value| -> Vec<String> {
        let object = json!({"apiVersion": "monoship.dev/v1alpha1", "kind": "Monorepo",
            "metadata": {"name": "shop"}, "spec": spec});
        match Validator::new().validate(&schema, &object, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec().iter().map(|e| e.to_string()).collect(),
        }
    };
    let repository = "https://git.example.com/shop/monorepo.git";
    let revision = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        errors(json!({"repository": repository, "revision": revision})),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(json!({"repository": repository, "ref": {"branch": "main"}, "interval": "30s"})),
        Vec::<String>::new()
    );
    let one_of = "set exactly one of spec.revision";
    for spec in [
        json!({"repository": repository}),
        json!({"repository": repository, "revision": revision, "ref": {"branch": "main"}}),
    ] {
        assert!(
            errors(spec.clone()).iter().any(|e| e.contains(one_of)),
            "{spec}"
        );
    }
    let refused = [
        (
            json!({"repository": repository, "revision": "main"}),
            "full commit id",
        ),
        (
            json!({"repository": repository, "ref": {"branch": "refs/heads/main"}}),
            "without refs/heads/",
        ),
        (
            json!({"repository": repository, "ref": {"branch": "main"}, "interval": "soon"}),
            "spec.interval",
        ),
    ];
    for (spec, message) in refused {
        let found = errors(spec.clone());
        assert!(
            found.iter().any(|e| e.contains(message)),
            "{spec}: {found:?}"
        );
    }
}
