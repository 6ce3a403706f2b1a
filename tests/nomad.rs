//! Pinning a Nomad task image against the Nomad API double.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use monoship::Error;
use monoship::api::NomadTarget;
use monoship::conditions::reasons;
use monoship::targets::nomad::{
    MAX_JOB_BYTES, NomadAccess, NomadAllowlist, NomadClient, NomadClients, is_conflict,
};
use monoship::targets::{PinOutcome, pinned_reference};
use monoship_testkit::nomad::{DEFAULT_NAMESPACE, NomadDouble, TEST_CA_PEM, docker_job};
use serde_json::{Value, json};

const JOB: &str = "web";
const GROUP: &str = "frontend";
const TASK: &str = "server";
const OLD: &str = "registry.example.com/web:commit-1111111";
const DIGEST: &str = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TOKEN: &str = "4b1c7e2a-secret-token-9d3f";
const OTHER_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Every log line of this test binary, captured by one process-wide subscriber (a scoped one
/// would miss callsites whose interest another test thread cached first).
static LOGS: OnceLock<Captured> = OnceLock::new();

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        // `try_init` also routes the `log` records of reqwest and rustls into it.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        logs
    });
}

fn wanted() -> String {
    pinned_reference("registry.example.com/web", DIGEST)
}

fn target(nomad: &NomadDouble) -> NomadTarget {
    NomadTarget {
        address: nomad.address(),
        namespace: None,
        region: None,
        job: JOB.into(),
        group: GROUP.into(),
        task: TASK.into(),
        token_secret_ref: None,
        ca_secret_ref: None,
    }
}

fn client(target: &NomadTarget, token: Option<&str>) -> NomadClient {
    let access = NomadAccess {
        token: token.map(str::to_owned),
        ca_pem: None,
    };
    NomadClient::new(target, &access).expect("client")
}

async fn seeded() -> NomadDouble {
    init();
    let nomad = NomadDouble::start().await.expect("start double");
    nomad.seed_docker_job(JOB, GROUP, TASK, OLD, &[("team", "shop")]);
    nomad
}

/// Paths (like `TaskGroups[0].Tasks[0].Config.image`) where two JSON values differ.
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                if x.contains_key(key) != y.contains_key(key) {
                    out.push(format!("{path}.{key} (presence)"));
                } else {
                    diff(va, vb, &format!("{path}.{key}"), out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

fn diffs(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(a, b, "", &mut out);
    out
}

fn image_of(job: &Value) -> &str {
    job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn pins_a_different_image_with_one_enforced_write() {
    let nomad = seeded().await;
    let before = nomad.job(DEFAULT_NAMESPACE, JOB).unwrap();
    let version_before = nomad.version(DEFAULT_NAMESPACE, JOB).unwrap();
    let index_before = before["JobModifyIndex"].as_u64().unwrap();

    let outcome = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap();

    let PinOutcome::Pinned(pinned) = outcome else {
        panic!("expected a write, got {outcome:?}");
    };
    assert_eq!(pinned.previous_image.as_deref(), Some(OLD));
    assert!(pinned.eval_id.as_deref().is_some_and(|id| !id.is_empty()));
    assert_eq!(nomad.posts(JOB), 1);
    assert_eq!(nomad.gets(JOB), 1);

    let bodies = nomad.post_bodies(JOB);
    let body = &bodies[0];
    assert_eq!(body["EnforceIndex"], json!(true));
    assert_eq!(body["JobModifyIndex"], json!(index_before));
    assert_eq!(
        diffs(&before, &body["Job"]),
        vec![".TaskGroups[0].Tasks[0].Config.image".to_owned()]
    );
    assert_eq!(image_of(&body["Job"]), wanted());

    let after = nomad.job(DEFAULT_NAMESPACE, JOB).unwrap();
    assert_eq!(image_of(&after), wanted());
    assert_eq!(
        nomad.version(DEFAULT_NAMESPACE, JOB),
        Some(version_before + 1)
    );
    assert_eq!(
        pinned.job_modify_index,
        after["JobModifyIndex"].as_u64(),
        "the answer's JobModifyIndex is the stored job's"
    );
    assert!(pinned.job_modify_index.unwrap() > index_before);
    assert_eq!(nomad.versions(DEFAULT_NAMESPACE, JOB).len(), 2);

    // The observed image now matches, and a second pin writes nothing.
    let read = client(&target(&nomad), None).task_image().await.unwrap();
    assert_eq!(read.image, wanted());
    assert_eq!(read.driver, "docker");
    assert_eq!(Some(read.job_modify_index), pinned.job_modify_index);
    let again = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap();
    assert_eq!(again, PinOutcome::AlreadyPinned);
    assert_eq!(nomad.posts(JOB), 1);
}

#[tokio::test]
async fn already_pinned_writes_nothing() {
    init();
    let nomad = NomadDouble::start().await.unwrap();
    nomad.seed_docker_job(JOB, GROUP, TASK, &wanted(), &[]);
    let version = nomad.version(DEFAULT_NAMESPACE, JOB);
    let evaluations = nomad.evaluations();

    let outcome = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap();

    assert_eq!(outcome, PinOutcome::AlreadyPinned);
    assert_eq!(nomad.gets(JOB), 1);
    assert_eq!(nomad.posts(JOB), 0);
    assert_eq!(nomad.version(DEFAULT_NAMESPACE, JOB), version);
    assert_eq!(
        nomad.evaluations(),
        evaluations,
        "no evaluation was created"
    );
}

#[tokio::test]
async fn a_concurrent_writer_is_kept_by_reading_again() {
    let nomad = seeded().await;
    nomad.on_next_get(JOB, |job| {
        job["Meta"]["deployed-by"] = json!("someone-else");
    });

    let outcome = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap();

    assert!(matches!(outcome, PinOutcome::Pinned(_)), "{outcome:?}");
    assert_eq!(nomad.posts(JOB), 2);
    assert_eq!(nomad.gets(JOB), 2);
    let bodies = nomad.post_bodies(JOB);
    assert!(
        bodies[1]["JobModifyIndex"].as_u64() > bodies[0]["JobModifyIndex"].as_u64(),
        "the retry uses the index read again"
    );
    let job = nomad.job(DEFAULT_NAMESPACE, JOB).unwrap();
    assert_eq!(job["Meta"]["deployed-by"], json!("someone-else"));
    assert_eq!(job["Meta"]["team"], json!("shop"));
    assert_eq!(image_of(&job), wanted());
    // Seed, the other writer, and us.
    assert_eq!(nomad.version(DEFAULT_NAMESPACE, JOB), Some(2));
}

#[tokio::test]
async fn a_job_that_keeps_changing_gives_up_with_a_conflict() {
    let nomad = seeded().await;
    let counter = Arc::new(Mutex::new(0u32));
    let seen = counter.clone();
    nomad.on_each_get(JOB, move |job| {
        let mut n = seen.lock().unwrap();
        *n += 1;
        job["Meta"]["churn"] = json!(n.to_string());
    });

    let err = client(&target(&nomad), None)
        .with_max_attempts(3)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();

    assert!(is_conflict(&err), "{err}");
    assert!(matches!(err, Error::Nomad { .. }));
    assert!(!err.is_stalled());
    assert_eq!(err.reason(), reasons::NOMAD_CONFLICT);
    assert_eq!(nomad.posts(JOB), 3);
    let job = nomad.job(DEFAULT_NAMESPACE, JOB).unwrap();
    assert_eq!(image_of(&job), OLD, "no write went through");
    assert_eq!(job["Meta"]["churn"], json!("3"));
}

#[tokio::test]
async fn works_in_a_namespace_and_names_it_when_the_job_is_missing() {
    init();
    let nomad = NomadDouble::start().await.unwrap();
    nomad.insert_job("apps", docker_job("apps", JOB, GROUP, TASK, OLD, &[]));
    let mut in_apps = target(&nomad);
    in_apps.namespace = Some("apps".into());

    let outcome = client(&in_apps, None)
        .pin_task_image(&wanted())
        .await
        .unwrap();
    assert!(matches!(outcome, PinOutcome::Pinned(_)));
    assert_eq!(image_of(&nomad.job("apps", JOB).unwrap()), wanted());

    // Same id, default namespace: not there.
    let err = client(&target(&nomad), None)
        .task_image()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reasons::NOMAD_JOB_NOT_FOUND);
    assert!(err.to_string().contains("\"default\""), "{err}");
    assert_eq!(nomad.posts(JOB), 1);
}

#[tokio::test]
async fn mistakes_are_stalled_with_their_reason_and_write_nothing() {
    init();
    let nomad = NomadDouble::start_with_token(TOKEN).await.unwrap();
    nomad.seed_docker_job(JOB, GROUP, TASK, OLD, &[]);
    let mut exec = docker_job(DEFAULT_NAMESPACE, "batch", GROUP, "cleanup", OLD, &[]);
    exec["TaskGroups"][0]["Tasks"][0]["Driver"] = json!("exec");
    exec["TaskGroups"][0]["Tasks"][0]["Config"] = json!({"command": "/usr/bin/cleanup"});
    nomad.insert_job(DEFAULT_NAMESPACE, exec);

    let good = target(&nomad);
    // (case, target, token, expected reason, words the message must name)
    type Case = (
        &'static str,
        NomadTarget,
        Option<&'static str>,
        &'static str,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong token",
            good.clone(),
            Some("not-the-token"),
            reasons::NOMAD_ACCESS_DENIED,
            vec!["\"web\"", "tokenSecretRef"],
        ),
        (
            "no token",
            good.clone(),
            None,
            reasons::NOMAD_ACCESS_DENIED,
            vec!["\"web\"", "tokenSecretRef"],
        ),
        (
            "missing job",
            NomadTarget {
                job: "nope".into(),
                region: Some("eu".into()),
                ..good.clone()
            },
            Some(TOKEN),
            reasons::NOMAD_JOB_NOT_FOUND,
            vec!["\"nope\"", "\"default\"", "\"eu\""],
        ),
        (
            "missing group",
            NomadTarget {
                group: "backend".into(),
                ..good.clone()
            },
            Some(TOKEN),
            reasons::NOMAD_TASK_NOT_FOUND,
            vec!["\"backend\"", "\"web\""],
        ),
        (
            "missing task",
            NomadTarget {
                task: "worker".into(),
                ..good.clone()
            },
            Some(TOKEN),
            reasons::NOMAD_TASK_NOT_FOUND,
            vec!["\"worker\"", "\"frontend\"", "\"web\""],
        ),
        (
            "no image",
            NomadTarget {
                job: "batch".into(),
                task: "cleanup".into(),
                ..good.clone()
            },
            Some(TOKEN),
            reasons::NOMAD_NO_IMAGE,
            vec!["\"cleanup\"", "\"exec\"", "\"batch\""],
        ),
    ];

    for (name, target, token, reason, needles) in cases {
        let client = client(&target, token);
        for err in [
            client.pin_task_image(&wanted()).await.unwrap_err(),
            client.task_image().await.unwrap_err(),
        ] {
            assert!(err.is_stalled(), "{name}: {err:?}");
            assert_eq!(err.reason(), reason, "{name}: {err}");
            for needle in &needles {
                assert!(err.to_string().contains(needle), "{name}: {err}");
            }
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(TOKEN), "{name}: {shown}");
        }
    }
    assert_eq!(nomad.posts(JOB), 0);
    assert_eq!(nomad.posts("nope"), 0);
    assert_eq!(nomad.posts("batch"), 0);
    assert_eq!(nomad.version(DEFAULT_NAMESPACE, JOB), Some(0));
}

#[tokio::test]
async fn a_rejected_write_is_stalled_as_invalid_spec() {
    let nomad = seeded().await;
    nomad.fail_next_posts(
        1,
        400,
        "1 error occurred:\n\t* Task group frontend validation failed",
    );
    let err = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reasons::INVALID_SPEC);
    assert!(err.to_string().contains("validation failed"), "{err}");
    assert_eq!(nomad.posts(JOB), 1);
    assert_eq!(image_of(&nomad.job(DEFAULT_NAMESPACE, JOB).unwrap()), OLD);
}

#[tokio::test]
async fn a_token_that_may_read_but_not_write_is_stalled() {
    let nomad = seeded().await;
    nomad.fail_next_posts(1, 403, "Permission denied");
    let err = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reasons::NOMAD_ACCESS_DENIED);
    assert!(err.to_string().contains("submit-job"), "{err}");
    assert_eq!(nomad.posts(JOB), 1, "not retried");
    assert_eq!(image_of(&nomad.job(DEFAULT_NAMESPACE, JOB).unwrap()), OLD);
}

#[tokio::test]
async fn server_errors_and_refused_connections_are_transient() {
    let nomad = seeded().await;
    nomad.fail_next(1, 503, "No cluster leader");
    let err = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Nomad { .. }), "{err:?}");
    assert!(!err.is_stalled() && !is_conflict(&err));
    assert_eq!(err.reason(), reasons::NOMAD_ERROR);
    assert!(err.to_string().contains("No cluster leader"), "{err}");
    assert_eq!(nomad.posts(JOB), 0);

    // A 500 on the write that is not an index conflict is not retried.
    nomad.fail_next_posts(1, 500, "rpc error: eval broker disabled");
    let err = client(&target(&nomad), None)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Nomad { .. }) && !is_conflict(&err),
        "{err:?}"
    );
    assert_eq!(nomad.posts(JOB), 1);
    assert_eq!(image_of(&nomad.job(DEFAULT_NAMESPACE, JOB).unwrap()), OLD);

    let closed = target(&nomad);
    nomad.shutdown().await;
    let err = client(&closed, None)
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Nomad { .. }), "{err:?}");
    assert!(!err.is_stalled() && !is_conflict(&err));
    assert!(err.to_string().contains("could not connect"), "{err}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_shows_in_errors_or_logs() {
    init();
    let nomad = NomadDouble::start_with_token(TOKEN).await.unwrap();
    nomad.seed_docker_job(JOB, GROUP, TASK, OLD, &[]);
    nomad.on_next_get(JOB, |job| job["Meta"]["other"] = json!("writer"));
    let good = client(&target(&nomad), Some(TOKEN));
    assert!(!format!("{good:?}").contains(TOKEN));

    let outcome = good.pin_task_image(&wanted()).await.unwrap();
    assert!(matches!(outcome, PinOutcome::Pinned(_)));
    assert_eq!(nomad.posts(JOB), 2, "the conflict path was logged too");

    let mut errors = Vec::new();
    let mut missing = target(&nomad);
    missing.job = "missing".into();
    errors.push(
        client(&missing, Some(TOKEN))
            .task_image()
            .await
            .unwrap_err(),
    );
    nomad.fail_next(1, 502, "bad gateway");
    errors.push(good.task_image().await.unwrap_err());
    // Answers that echo the token back: a 403, a 500 on read, a 500 on write.
    let echo = format!("token {TOKEN} was refused\n\tX-Nomad-Token: {TOKEN}");
    nomad.fail_next(1, 403, &echo);
    errors.push(good.task_image().await.unwrap_err());
    nomad.fail_next(1, 500, &echo);
    errors.push(good.task_image().await.unwrap_err());
    nomad.on_next_get(JOB, |job| job["Meta"]["again"] = json!("writer"));
    nomad.fail_next_posts(1, 500, &format!("Enforcing job modify index 1: {echo}"));
    errors.push(
        good.with_max_attempts(1)
            .pin_task_image(&pinned_reference("registry.example.com/web", OTHER_DIGEST))
            .await
            .unwrap_err(),
    );
    // A redirect and an oversized answer.
    let redirecting = NomadDouble::start().await.unwrap();
    redirecting.redirect_all_to(&format!("http://localhost:1/?token={TOKEN}"));
    errors.push(
        client(&target(&redirecting), Some(TOKEN))
            .task_image()
            .await
            .unwrap_err(),
    );
    let endless = NomadDouble::start().await.unwrap();
    endless.serve_endless_jobs();
    errors.push(
        client(&target(&endless), Some(TOKEN))
            .task_image()
            .await
            .unwrap_err(),
    );
    let closed = target(&nomad);
    nomad.shutdown().await;
    errors.push(
        client(&closed, Some(TOKEN))
            .pin_task_image(&wanted())
            .await
            .unwrap_err(),
    );
    let reasons: Vec<&str> = errors.iter().map(Error::reason).collect();
    assert_eq!(
        reasons,
        [
            reasons::NOMAD_JOB_NOT_FOUND,
            reasons::NOMAD_ERROR,
            reasons::NOMAD_ACCESS_DENIED,
            reasons::NOMAD_ERROR,
            reasons::NOMAD_CONFLICT,
            reasons::NOMAD_REDIRECT_REFUSED,
            reasons::NOMAD_ANSWER_TOO_LARGE,
            reasons::NOMAD_ERROR,
        ]
    );
    assert!(
        errors[2].to_string().contains("<redacted> was refused"),
        "{}",
        errors[2]
    );
    for err in &errors {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }

    let logs = LOGS.get().expect("logs are captured");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("pinned Nomad task image"),
        "logs were captured: {text}"
    );
    // The HTTP stack's own TRACE records (tracing and `log`) are in the capture too.
    assert!(
        text.contains("hyper_util::") && text.contains("reqwest::"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains("secret-token"), "{text}");
}

#[tokio::test]
async fn https_with_the_ca_from_the_secret() {
    init();
    let nomad = NomadDouble::start_tls(Some(TOKEN)).await.unwrap();
    nomad.seed_docker_job(JOB, GROUP, TASK, OLD, &[]);
    let target = target(&nomad);
    assert!(target.address.starts_with("https://127.0.0.1:"));

    // Without the CA the server is not trusted, and nothing is written.
    let err = client(&target, Some(TOKEN))
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Nomad { .. }), "{err:?}");
    assert!(
        err.to_string().contains("caSecretRef") && err.to_string().contains("certificate"),
        "{err}"
    );
    assert_eq!(nomad.gets(JOB), 0);

    let access = NomadAccess {
        token: Some(TOKEN.into()),
        ca_pem: Some(TEST_CA_PEM.as_bytes().to_vec()),
    };
    let trusted = NomadClient::new(&target, &access).unwrap();
    let outcome = trusted.pin_task_image(&wanted()).await.unwrap();
    assert!(matches!(outcome, PinOutcome::Pinned(_)), "{outcome:?}");
    assert_eq!(nomad.posts(JOB), 1);
    assert_eq!(
        image_of(&nomad.job(DEFAULT_NAMESPACE, JOB).unwrap()),
        wanted()
    );
    assert_eq!(trusted.task_image().await.unwrap().image, wanted());
}

/// The double answers the register edge cases as Nomad's job endpoint does.
#[tokio::test]
async fn the_double_answers_registers_like_nomad() {
    let nomad = seeded().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/job/{JOB}", nomad.address());
    let post = |body: Value| {
        let request = http.post(&url).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let job = nomad.job(DEFAULT_NAMESPACE, JOB).unwrap();
    let index = job["JobModifyIndex"].as_u64().unwrap();

    assert_eq!(post(json!({})).await, (400, "Job must be specified".into()));
    let mut no_id = job.clone();
    no_id.as_object_mut().unwrap().remove("ID");
    assert_eq!(
        post(json!({ "Job": no_id })).await,
        (400, "Job ID hasn't been provided".into())
    );
    let mut other = job.clone();
    other["ID"] = json!("other");
    assert_eq!(
        post(json!({ "Job": other })).await,
        (400, "Job ID does not match name".into())
    );
    assert_eq!(
        post(json!({ "Job": job, "EnforceIndex": true, "JobModifyIndex": 0 })).await,
        (
            500,
            "Enforcing job modify index 0: job already exists".into()
        )
    );
    assert_eq!(
        post(json!({ "Job": job, "EnforceIndex": true, "JobModifyIndex": index - 1 })).await,
        (
            500,
            format!(
                "Enforcing job modify index {}: job exists with conflicting job modify index: {index}",
                index - 1
            )
        )
    );

    // Only status fields differ: no new version, same JobModifyIndex, but an evaluation.
    let evaluations = nomad.evaluations();
    let mut same = job.clone();
    same["Status"] = json!("pending");
    same["SubmitTime"] = json!(1);
    let (status, body) =
        post(json!({ "Job": same, "EnforceIndex": true, "JobModifyIndex": index })).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["JobModifyIndex"], json!(index));
    assert!(answer["EvalID"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(nomad.evaluations(), evaluations + 1);
    assert_eq!(nomad.version(DEFAULT_NAMESPACE, JOB), Some(0));

    // A Meta change is a new version with a new JobModifyIndex.
    let mut changed = job.clone();
    changed["Meta"]["commit"] = json!("2222222");
    let (status, body) =
        post(json!({ "Job": changed, "EnforceIndex": true, "JobModifyIndex": index })).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["JobModifyIndex"].as_u64().unwrap() > index);
    assert_eq!(nomad.version(DEFAULT_NAMESPACE, JOB), Some(1));
    let versions: Value = http
        .get(format!("{url}/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions["Versions"][0]["Version"], json!(1));
    assert_eq!(versions["Versions"][1]["Version"], json!(0));
    assert_eq!(versions["Versions"][0]["Meta"]["commit"], json!("2222222"));
}

/// A Nomad address that redirects elsewhere never gets the token to the other origin: no
/// redirect is followed, and the pin is Stalled with a reason that says so.
#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_token_stays() {
    let nomad = seeded().await;
    let elsewhere = NomadDouble::start().await.unwrap();
    elsewhere.seed_docker_job(JOB, GROUP, TASK, OLD, &[]);
    let other_host = elsewhere.address().replace("127.0.0.1", "localhost");
    nomad.redirect_all_to(&other_host);

    let client = client(&target(&nomad), Some(TOKEN));
    for err in [
        client.pin_task_image(&wanted()).await.unwrap_err(),
        client.task_image().await.unwrap_err(),
    ] {
        assert!(err.is_stalled(), "{err:?}");
        assert_eq!(err.reason(), reasons::NOMAD_REDIRECT_REFUSED, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("HTTP 302") && text.contains("localhost:"),
            "{text}"
        );
        assert!(text.contains("nomad.address"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert!(
        elsewhere.requests().is_empty(),
        "the other origin was reached: {:?}",
        elsewhere.requests()
    );
    let asked = nomad.requests();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|r| r.token() == Some(TOKEN)));
    assert_eq!(nomad.posts(JOB), 0);
}

/// A job answer larger than the cap is not read beyond it: an endless body and one whose
/// declared length is over the cap both end in a Stalled error, and the server stops
/// producing bytes once the client has given up.
#[tokio::test]
async fn an_oversized_job_is_read_no_further_than_the_cap() {
    init();
    let nomad = NomadDouble::start().await.unwrap();
    nomad.serve_endless_jobs();
    let err = client(&target(&nomad), Some(TOKEN))
        .pin_task_image(&wanted())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reasons::NOMAD_ANSWER_TOO_LARGE, "{err}");
    assert!(err.is_stalled());
    assert!(err.to_string().contains("4096 KiB"), "{err}");
    let streamed = nomad.streamed_bytes();
    // The cap, plus at most what loopback socket buffers hold.
    let slack = 16u64 << 20;
    assert!(
        streamed >= MAX_JOB_BYTES as u64 && streamed < MAX_JOB_BYTES as u64 + slack,
        "{streamed} bytes produced"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let later = nomad.streamed_bytes();
    assert!(
        later < MAX_JOB_BYTES as u64 + slack,
        "the server kept sending: {later} bytes"
    );
    assert_eq!(nomad.posts(JOB), 0);
    eprintln!("endless body: {streamed} bytes produced, {later} after 300 ms");

    let declared = NomadDouble::start().await.unwrap();
    declared.serve_jobs_of_length(1 << 30);
    let err = client(&target(&declared), None)
        .task_image()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), reasons::NOMAD_ANSWER_TOO_LARGE, "{err}");
    let streamed = declared.streamed_bytes();
    assert!(
        streamed < MAX_JOB_BYTES as u64 + slack,
        "{streamed} bytes produced"
    );
    eprintln!("declared 1 GiB: {streamed} bytes produced");
}

/// An address outside the admin's allowlist is Stalled before anything is sent.
#[tokio::test]
async fn an_address_outside_the_allowlist_gets_no_request() {
    let nomad = seeded().await;
    let allowed = NomadAllowlist::parse(&["http://nomad.example.com:4646"]).unwrap();
    let clients = NomadClients::new(allowed);
    let access = NomadAccess {
        token: Some(TOKEN.into()),
        ca_pem: None,
    };
    let err = clients.client(&target(&nomad), &access).unwrap_err();
    assert!(err.is_stalled());
    assert_eq!(err.reason(), reasons::NOMAD_ADDRESS_REFUSED);
    assert!(
        err.to_string().contains("http://nomad.example.com:4646"),
        "{err}"
    );
    assert!(!err.to_string().contains(TOKEN));
    assert!(nomad.requests().is_empty(), "{:?}", nomad.requests());
    assert!(clients.is_empty());

    // The same address, allowed by scheme, host and port: it works.
    let exact = NomadAllowlist::parse(&[nomad.address()]).unwrap();
    let outcome = NomadClients::new(exact)
        .client(&target(&nomad), &access)
        .unwrap()
        .pin_task_image(&wanted())
        .await
        .unwrap();
    assert!(matches!(outcome, PinOutcome::Pinned(_)));
}

/// Two targets with different tokens on one address share one HTTP client (one kept-alive
/// connection), and each request carries its own target's token only.
#[tokio::test]
async fn one_connection_pool_per_address_and_each_request_with_its_own_token() {
    init();
    let nomad = NomadDouble::start().await.unwrap();
    nomad.seed_docker_job(JOB, GROUP, TASK, OLD, &[]);
    nomad.seed_docker_job("api", GROUP, TASK, OLD, &[]);
    let clients = NomadClients::default();
    let mut api = target(&nomad);
    api.job = "api".into();
    let web_token = NomadAccess {
        token: Some("token-of-web".into()),
        ca_pem: None,
    };
    let api_token = NomadAccess {
        token: Some("token-of-api".into()),
        ca_pem: None,
    };
    for _ in 0..2 {
        let web = clients.client(&target(&nomad), &web_token).unwrap();
        web.task_image().await.unwrap();
        let api = clients.client(&api, &api_token).unwrap();
        api.task_image().await.unwrap();
    }
    assert_eq!(clients.len(), 1);
    let requests = nomad.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let expected = if request.uri.starts_with("/v1/job/api") {
            "token-of-api"
        } else {
            "token-of-web"
        };
        assert_eq!(request.token(), Some(expected), "{request:?}");
        let tokens = request
            .headers
            .iter()
            .filter(|(name, _)| name == "x-nomad-token")
            .count();
        assert_eq!(tokens, 1, "{request:?}");
    }
    assert!(
        requests.iter().all(|r| r.peer == requests[0].peer),
        "one connection carried all four requests: {:?}",
        requests.iter().map(|r| r.peer).collect::<Vec<_>>()
    );

    // A separate client set (another pool) opens its own connection.
    let other = NomadClients::default();
    other
        .client(&target(&nomad), &web_token)
        .unwrap()
        .task_image()
        .await
        .unwrap();
    assert_ne!(nomad.requests()[4].peer, requests[0].peer);
}
