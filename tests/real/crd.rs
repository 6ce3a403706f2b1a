//! The ServiceBuild CRD on a real kube-apiserver: every admission case of tests/crd.rs (the
//! real structural schema and CEL rules, with the real messages), and the CRD install that
//! README.md documents, run with kubectl as a user would.

use std::process::Command;

use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use monoship_testkit::scenario::servicebuild_resource;
use serde_json::{Value, json};

use crate::crd_cases;

/// What the server answers to a dry-run create: `Ok` or the error's code and message.
async fn admit(
    api: &Api<DynamicObject>,
    namespace: &str,
    mut object: Value,
) -> Result<(), (u16, String)> {
    object["metadata"]["namespace"] = json!(namespace);
    let object: DynamicObject = serde_json::from_value(object).expect("a ServiceBuild");
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&pp, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err((status.code, status.message)),
        Err(other) => Err((0, other.to_string())),
    }
}

/// `/spec/targets/0/kubernetes/name` as the API server writes field paths:
/// `spec.targets[0].kubernetes.name`.
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.parse::<usize>().is_ok() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    path
}

async fn servicebuilds(
    env: &monoship_testkit::envtest::Envtest,
) -> (Client, Api<DynamicObject>, String) {
    let client = env.client().await;
    crate::install_crd(&client).await;
    let namespace = env.namespace(&client, "crd", &[]).await;
    let api = Api::namespaced_with(client.clone(), &namespace, &servicebuild_resource());
    (client, api, namespace)
}

/// What the client-side checks of tests/crd.rs expect of a case.
enum Expect {
    Admitted,
    /// Refused by a CEL rule whose message contains this.
    Cel(&'static str),
    /// Refused by the schema at this JSON Pointer.
    Schema(&'static str),
}

/// Each case of tests/crd.rs, judged by the real server: the valid objects and every example
/// are admitted; each invalid object is refused with a 422 carrying the CEL rule's message or
/// naming the field the schema refuses. For every object the schema admits, the CEL rules that
/// fail are the same on both sides (compared by message). Any case where the client-side
/// checks and the server disagree is listed in the failure.
#[tokio::test]
async fn every_admission_case_of_the_client_side_checks_holds_on_the_real_server() {
    let env = envtest!();
    let (_client, api, namespace) = servicebuilds(env).await;
    let examples = crd_cases::examples();
    assert!(
        examples.len() >= 3,
        "only {} example ServiceBuilds",
        examples.len()
    );
    let cases: Vec<(String, Value, Expect)> = crd_cases::valid_cases()
        .into_iter()
        .map(|(case, object)| (case.to_owned(), object, Expect::Admitted))
        .chain(
            examples
                .into_iter()
                .map(|(case, object)| (case, object, Expect::Admitted)),
        )
        .chain(
            crd_cases::cel_cases()
                .into_iter()
                .map(|(case, object, message)| (case.to_owned(), object, Expect::Cel(message))),
        )
        .chain(
            crd_cases::schema_cases()
                .into_iter()
                .map(|(case, object, pointer)| (case.to_owned(), object, Expect::Schema(pointer))),
        )
        .collect();
    let rules = crd_cases::rule_messages();
    let mut disagreements = Vec::new();
    for (case, object, expect) in &cases {
        let client_cel = crd_cases::cel_messages(object);
        let client_schema = crd_cases::schema_errors(object);
        let answer = admit(&api, &namespace, object.clone()).await;
        if let Err((_, message)) = &answer {
            eprintln!("{case}: {message}");
        }
        let verdict = match (expect, &answer) {
            (Expect::Admitted, Ok(())) => None,
            (Expect::Cel(expected), Err((422, message))) if message.contains(expected) => None,
            (Expect::Schema(pointer), Err((422, message)))
                if message.contains(&field_path(pointer)) =>
            {
                None
            }
            (_, Ok(())) => Some("the server admits it".to_owned()),
            (_, Err((code, message))) => Some(format!("the server answers {code}: {message}")),
        };
        if let Some(verdict) = verdict {
            let expected = match expect {
                Expect::Admitted => "admitted".to_owned(),
                Expect::Cel(message) => format!("a CEL error {message:?}"),
                Expect::Schema(pointer) => format!("a schema error at {pointer}"),
            };
            disagreements.push(format!("{case}: client-side {expected}; {verdict}"));
        }
        // With a schema-valid object the server evaluates every rule, as the client does.
        if client_schema.is_empty() {
            let server_message = answer.err().map(|(_, m)| m).unwrap_or_default();
            let mut server_rules: Vec<&String> = rules
                .iter()
                .filter(|r| server_message.contains(r.as_str()))
                .collect();
            let mut client_rules: Vec<&String> = client_cel.iter().collect();
            server_rules.sort();
            server_rules.dedup();
            client_rules.sort();
            client_rules.dedup();
            if server_rules != client_rules {
                disagreements.push(format!(
                    "{case}: failing CEL rules client-side {client_rules:?}, on the server {server_rules:?}"
                ));
            }
        }
    }
    assert!(cases.len() >= 27, "only {} cases", cases.len());
    assert!(
        disagreements.is_empty(),
        "the client-side checks and kube-apiserver disagree:\n{}",
        disagreements.join("\n")
    );
}

/// The CRD install line of README.md's "Install on a cluster", run as a shell would, with
/// `monoship` on PATH and a kubeconfig for the real server.
fn readme_install_line() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Install on a cluster")
        .nth(1)
        .expect("README.md has an \"Install on a cluster\" section");
    section
        .lines()
        .find(|l| l.trim_start().starts_with("monoship crd"))
        .expect("README.md gives a `monoship crd ...` line")
        .trim()
        .to_owned()
}

/// Run `line` with `sh -c`, with the monoship binary on PATH and `kubeconfig`.
fn shell(line: &str, kubeconfig: &std::path::Path) -> std::process::Output {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_monoship"))
        .parent()
        .expect("the binary's directory")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .args(["-c", line])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("sh runs")
}

/// kubectl is needed for the README's line; without it (outside CI) the test says so and
/// returns.
fn kubectl_present() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("MONOSHIP_REQUIRE_ENVTEST").is_err(),
            "MONOSHIP_REQUIRE_ENVTEST is set but kubectl is not on PATH"
        );
        eprintln!("kubectl is not on PATH: skipped");
    }
    found
}

/// README.md: `monoship crd | kubectl apply -f -` installs the CRD, after which `kubectl get sb`
/// works. Client-side apply copies the whole CRD into the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation, which kube-apiserver limits to
/// 262144 bytes; the CRD keeps well under it.
#[tokio::test]
async fn the_readme_install_line_installs_the_crd() {
    let env = envtest!();
    if !kubectl_present() {
        return;
    }
    let line = readme_install_line();
    let output = shell(&line, &env.kubeconfig_path());
    assert!(
        output.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let client = env.client().await;
    crate::crd_established(&client, "servicebuilds.monoship.dev").await;
    crate::crd_established(&client, "monorepos.monoship.dev").await;
    // What kubectl wrote, not only a CRD another test installed.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    let crd = crds.get("servicebuilds.monoship.dev").await.unwrap();
    let managers: Vec<String> = crd
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m.starts_with("kubectl")),
        "no kubectl field manager on the CRD: {managers:?}"
    );
    let annotations = crd.metadata.annotations.unwrap_or_default();
    let applied = annotations
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .expect("client-side apply wrote its annotation");
    assert!(applied.len() < 262_144 / 4, "{} bytes", applied.len());
    let output = shell("kubectl get sb -A", &env.kubeconfig_path());
    assert!(
        output.status.success(),
        "`kubectl get sb` fails after `{line}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The defaults of tests/crd.rs's `defaults_are_in_the_schema`, as the real server applies
/// them to an object that leaves them out.
#[tokio::test]
async fn the_real_server_applies_the_schema_defaults() {
    let env = envtest!();
    let (_client, api, namespace) = servicebuilds(env).await;
    let mut object = crd_cases::valid();
    object["metadata"]["namespace"] = json!(namespace);
    let spec = object["spec"].as_object_mut().unwrap();
    spec.remove("historyLimit");
    spec["image"].as_object_mut().unwrap().remove("revisionTag");
    spec["build"]
        .as_object_mut()
        .unwrap()
        .remove("timeoutSeconds");
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = api.create(&pp, &object).await.expect("admitted");
    let spec = &created.data["spec"];
    assert_eq!(spec["historyLimit"], 10);
    assert_eq!(spec["image"]["revisionTag"], "{shortRevision}");
    assert_eq!(spec["build"]["timeoutSeconds"], 3600);
}
