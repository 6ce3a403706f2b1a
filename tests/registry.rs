//! `monoship::registry` against a real registry (distribution 2.8 on 127.0.0.1) with images
//! built by umoci and pushed by skopeo.

use std::path::Path;

use monoship::Error;
use monoship::conditions::reasons;
use monoship::registry::{RegistryAuth, RegistryClient, RetagOutcome};
use monoship_testkit::fake_registry::{Behaviour, FakeRegistry, FakeRequest, ManifestAnswer};
use monoship_testkit::oci::{
    build_and_push, build_and_push_layers, build_and_push_with, push_index, write_tree,
};
use monoship_testkit::registry::{RecordedRequest, TestRegistry, free_port};

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client_for(registry: &TestRegistry) -> RegistryClient {
    init();
    RegistryClient::new(vec![registry.host()])
}

/// A service directory with a few files; `flavor` changes one file's content.
fn service_dir(flavor: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("main.sh", "#!/bin/sh\necho hello\n"),
            ("config.txt", flavor),
            ("data/a.txt", "a\n"),
            ("data/b.txt", "b\n"),
            ("static/index.html", "<p>hi</p>\n"),
        ],
    );
    dir
}

fn push(registry: &TestRegistry, dir: &Path, repo: &str, tag: &str) -> String {
    build_and_push(dir, &registry.host(), repo, tag)
}

/// The OCI image manifest `repository@digest`, read straight from the registry.
async fn image_manifest(
    registry: &TestRegistry,
    repository: &str,
    digest: &str,
) -> serde_json::Value {
    let url = format!(
        "http://{}/v2/{repository}/manifests/{digest}",
        registry.host()
    );
    let answer = reqwest::Client::new()
        .get(url)
        .header("Accept", MANIFEST_TYPES[1])
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

fn assert_stalled(result: Result<impl std::fmt::Debug, Error>, reason: &str) -> String {
    match result {
        Err(Error::Stalled {
            reason: got,
            message,
        }) => {
            assert_eq!(got, reason, "message: {message}");
            message
        }
        other => panic!("expected Stalled {reason}, got {other:?}"),
    }
}

#[tokio::test]
async fn build_is_deterministic_and_content_addressed() {
    let registry = TestRegistry::start().await;
    let first = service_dir("v1\n");
    let second = service_dir("v1\n");
    let changed = service_dir("v2\n");
    let a = build_and_push_layers(first.path(), &registry.host(), "banana", "a", 3);
    let b = build_and_push_layers(second.path(), &registry.host(), "banana", "b", 3);
    let c = build_and_push_layers(changed.path(), &registry.host(), "banana", "c", 3);
    assert_eq!(
        a, b,
        "same content in different directories must give the same digest"
    );
    assert_ne!(a, c, "different content must give a different digest");

    // The image has the requested number of layers.
    let manifest = image_manifest(&registry, "banana", &a).await;
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(3),
        "{manifest}"
    );
}

#[tokio::test]
async fn resolve_digest_matches_the_pushed_digest_and_sends_every_manifest_type() {
    let registry = TestRegistry::start().await;
    let dir = service_dir("v1\n");
    let pushed = push(&registry, dir.path(), "banana", "v1");
    let client = client_for(&registry);

    let mark = registry.mark();
    let resolved = client
        .resolve_digest(
            &format!("{}/banana", registry.host()),
            "v1",
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    assert_eq!(resolved, pushed);

    let requests = registry.requests_since(mark);
    let head = requests
        .iter()
        .find(|r| r.method == "HEAD" && r.path == "/v2/banana/manifests/v1")
        .unwrap_or_else(|| panic!("no HEAD for the tag in {requests:?}"));
    assert_eq!(head.status, 200);
    for media_type in MANIFEST_TYPES {
        assert!(
            head.accept.iter().any(|a| a == media_type),
            "{media_type} missing: {:?}",
            head.accept
        );
    }
    // The registry sends Docker-Content-Digest, so no GET fallback was needed.
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/manifests/")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn an_index_resolves_to_the_index_digest_not_a_child() {
    let registry = TestRegistry::start().await;
    let amd64 = push(&registry, service_dir("amd64\n").path(), "banana", "amd64");
    let arm64 = push(&registry, service_dir("arm64\n").path(), "banana", "arm64");
    let index = push_index(
        &registry.host(),
        "banana",
        "multi",
        &[(&amd64, "amd64"), (&arm64, "arm64")],
    )
    .await;
    let client = client_for(&registry);

    let resolved = client
        .resolve_digest(
            &format!("{}/banana", registry.host()),
            "multi",
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    assert_eq!(resolved, index);
    assert_ne!(resolved, amd64);
    assert_ne!(resolved, arm64);

    // Re-tagging the index keeps it an index, byte for byte.
    registry.reset_requests();
    let outcome = client
        .retag_without_upload(
            &format!("{}/banana", registry.host()),
            &index,
            "live",
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    assert_eq!(outcome, RetagOutcome::Moved { previous: None });
    let resolved = client
        .resolve_digest(
            &format!("{}/banana", registry.host()),
            "live",
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap();
    assert_eq!(resolved, index);
    let put = registry
        .requests()
        .into_iter()
        .find(|r| r.is_manifest_put("banana", "live"))
        .expect("a manifest PUT");
    assert_eq!(put.content_type.as_deref(), Some(MANIFEST_TYPES[0]));
    assert_eq!(registry.blob_uploads(), 0);
}

/// One tag move is exactly HEAD tag, GET by digest, PUT; one resolve is exactly one HEAD. No
/// `GET /v2/` ping, no blob upload; the metric counts each request once, by operation and
/// status.
#[tokio::test]
async fn retag_moves_the_tag_with_one_manifest_put_and_no_blob_upload() {
    let registry = TestRegistry::start().await;
    let new = push(&registry, service_dir("new\n").path(), "banana", "build-2");
    let old = push(&registry, service_dir("old\n").path(), "banana", "live");
    assert_ne!(new, old);
    let metrics = std::sync::Arc::new(monoship::metrics::Metrics::default());
    let client = client_for(&registry).with_metrics(metrics.clone());
    let repository = format!("{}/banana", registry.host());

    registry.reset_requests();
    let outcome = client
        .retag_without_upload(&repository, &new, "live", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RetagOutcome::Moved {
            previous: Some(old.clone())
        }
    );
    assert_eq!(
        sequence(&registry.requests()),
        tag_move("banana", "live", 200, &new)
    );
    let put = registry
        .requests()
        .into_iter()
        .find(|r| r.is_manifest_put("banana", "live"))
        .expect("a manifest PUT");
    assert_eq!(put.content_type.as_deref(), Some(MANIFEST_TYPES[1]));
    let head = registry
        .requests()
        .into_iter()
        .find(|r| r.method == "HEAD" && r.path == "/v2/banana/manifests/live")
        .expect("the tag was resolved first");
    for media_type in MANIFEST_TYPES {
        assert!(
            head.accept.iter().any(|a| a == media_type),
            "{media_type}: {:?}",
            head.accept
        );
    }

    registry.reset_requests();
    let resolved = client
        .resolve_digest(&repository, "live", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(resolved, new);
    assert_eq!(
        sequence(&registry.requests()),
        ["HEAD /v2/banana/manifests/live -> 200"]
    );
    let text = metrics.encode();
    for line in [
        r#"monoship_registry_requests_total{operation="resolve",status="200"} 2"#,
        r#"monoship_registry_requests_total{operation="get_manifest",status="200"} 1"#,
        r#"monoship_registry_requests_total{operation="put_manifest",status="201"} 1"#,
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }

    // Second time: already so, nothing written.
    registry.reset_requests();
    let outcome = client
        .retag_without_upload(&repository, &new, "live", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(outcome, RetagOutcome::AlreadyTagged);
    assert_eq!(
        registry.manifest_puts("banana", "live"),
        0,
        "{:?}",
        registry.requests()
    );
    assert_eq!(registry.blob_uploads(), 0);
    assert!(
        registry
            .requests()
            .iter()
            .all(|r| r.method == "HEAD" || r.method == "GET"),
        "{:?}",
        registry.requests()
    );

    // A tag that does not exist yet is created.
    let outcome = client
        .retag_without_upload(&repository, &new, "fresh", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(outcome, RetagOutcome::Moved { previous: None });
    assert_eq!(
        client
            .resolve_digest(&repository, "fresh", &RegistryAuth::Anonymous)
            .await
            .unwrap(),
        new
    );
}

/// A new revision tag is added with GET by digest and PUT, no check first; the next tag of the
/// same image is one PUT of the bytes kept from the first; adding a tag again writes the same
/// bytes again and changes nothing.
#[tokio::test]
async fn a_new_tag_is_added_with_two_requests_and_the_next_with_one() {
    let registry = TestRegistry::start().await;
    let built = push(&registry, service_dir("one\n").path(), "banana", "build-1");
    let client = client_for(&registry);
    let repository = format!("{}/banana", registry.host());

    let get = format!("GET /v2/banana/manifests/{built} -> 200");
    for (tag, expected) in [
        (
            "rev-2",
            vec![get.clone(), "PUT /v2/banana/manifests/rev-2 -> 201".into()],
        ),
        (
            "rev-3",
            vec!["PUT /v2/banana/manifests/rev-3 -> 201".to_string()],
        ),
        (
            "rev-2",
            vec!["PUT /v2/banana/manifests/rev-2 -> 201".to_string()],
        ),
    ] {
        registry.reset_requests();
        let outcome = client
            .add_tag_without_upload(&repository, &built, tag, &RegistryAuth::Anonymous)
            .await
            .unwrap();
        assert_eq!(outcome, RetagOutcome::Moved { previous: None });
        assert_eq!(sequence(&registry.requests()), expected, "{tag}");
        assert_eq!(registry.blob_uploads(), 0);
    }
    // Another client (another controller process) keeps nothing yet: it reads the bytes.
    registry.reset_requests();
    client_for(&registry)
        .add_tag_without_upload(&repository, &built, "rev-4", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(
        sequence(&registry.requests()),
        [get, "PUT /v2/banana/manifests/rev-4 -> 201".to_string()]
    );
    assert_eq!(
        client
            .resolve_digest(&repository, "rev-2", &RegistryAuth::Anonymous)
            .await
            .unwrap(),
        built
    );
    let tags = registry.tags_by_digest("banana");
    let with_built = tags.iter().find(|(digest, _)| *digest == built).unwrap();
    assert_eq!(with_built.1, ["build-1", "rev-2", "rev-3", "rev-4"]);

    // An image gone from the registry is IMAGE_NOT_FOUND, as for a tag move.
    let absent = format!("sha256:{}", "0".repeat(64));
    assert_stalled(
        client
            .add_tag_without_upload(&repository, &absent, "rev-3", &RegistryAuth::Anonymous)
            .await,
        reasons::IMAGE_NOT_FOUND,
    );
}

/// Kept bytes are believed only as long as the registry takes them: once the image is deleted
/// with its blobs, the PUT of the kept bytes is refused, they are forgotten and read again, and
/// the image is known gone (IMAGE_NOT_FOUND, so the revision is built). A manifest deleted while
/// its blobs stay is written back by the tag, as a rebuild of the same inputs would push it.
#[tokio::test]
async fn kept_bytes_the_registry_refuses_are_read_again() {
    let registry = TestRegistry::start().await;
    let built = push(&registry, service_dir("gone\n").path(), "banana", "build-1");
    let client = client_for(&registry);
    let repository = format!("{}/banana", registry.host());
    let anonymous = RegistryAuth::Anonymous;
    client
        .add_tag_without_upload(&repository, &built, "rev-2", &anonymous)
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let base = format!("http://{}/v2/banana", registry.host());
    let manifest = image_manifest(&registry, "banana", &built).await;
    let delete = |path: String| {
        let http = http.clone();
        async move {
            let status = http.delete(path).send().await.unwrap().status();
            assert_eq!(status, reqwest::StatusCode::ACCEPTED);
        }
    };

    // The manifest is deleted, its blobs stay: the tag puts it back.
    delete(format!("{base}/manifests/{built}")).await;
    registry.reset_requests();
    client
        .add_tag_without_upload(&repository, &built, "rev-3", &anonymous)
        .await
        .unwrap();
    assert_eq!(
        sequence(&registry.requests()),
        ["PUT /v2/banana/manifests/rev-3 -> 201"]
    );
    assert_eq!(
        client
            .resolve_digest(&repository, "rev-3", &anonymous)
            .await
            .unwrap(),
        built
    );

    // The manifest and its blobs are deleted: the kept bytes are refused, read again, gone.
    delete(format!("{base}/manifests/{built}")).await;
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for blob in blobs {
        delete(format!("{base}/blobs/{blob}")).await;
    }
    registry.reset_requests();
    assert_stalled(
        client
            .add_tag_without_upload(&repository, &built, "rev-4", &anonymous)
            .await,
        reasons::IMAGE_NOT_FOUND,
    );
    // The refusal first asks whether the tag is there already (as for immutable tags).
    assert_eq!(
        sequence(&registry.requests()),
        [
            "PUT /v2/banana/manifests/rev-4 -> 400".to_string(),
            "HEAD /v2/banana/manifests/rev-4 -> 404".to_string(),
            format!("GET /v2/banana/manifests/{built} -> 404"),
        ]
    );
}

/// A registry with immutable tags refuses to write a tag again: when the tag already points at
/// the digest that is done (checked only then); when it points elsewhere or the write fails
/// for another reason, the registry's refusal is the error.
#[tokio::test]
async fn an_immutable_tag_already_there_counts_as_added() {
    let (fake, client, repository) = hostile_with(Behaviour {
        immutable_tags: true,
        ..Behaviour::default()
    })
    .await;
    let v1 = fake.put_manifest("banana", "v1", OCI_MANIFEST, &manifest_bytes("v1"));
    let v2 = fake.put_manifest("banana", "v2", OCI_MANIFEST, &manifest_bytes("v2"));

    fake.reset_requests();
    let added = client
        .add_tag_without_upload(&repository, &v1, "rev-2", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(added, RetagOutcome::Moved { previous: None });
    assert_eq!(
        fake.requests().len(),
        2,
        "{:?}",
        fake_sequence(&fake.requests())
    );

    fake.reset_requests();
    let again = client
        .add_tag_without_upload(&repository, &v1, "rev-2", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(again, RetagOutcome::AlreadyTagged);
    assert_eq!(
        fake_sequence(&fake.requests()),
        [
            // The bytes are those kept from the first write.
            "PUT /v2/banana/manifests/rev-2 -> 400".to_string(),
            "HEAD /v2/banana/manifests/rev-2 -> 200".to_string(),
        ]
    );

    let refused = client
        .add_tag_without_upload(&repository, &v2, "rev-2", &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("HTTP 400 TAG_INVALID"), "{message}");
    assert_eq!(fake.manifest("banana", "rev-2"), Some(manifest_bytes("v1")));
}

#[tokio::test]
async fn a_missing_tag_is_image_not_found() {
    let registry = TestRegistry::start().await;
    push(&registry, service_dir("v1\n").path(), "banana", "v1");
    let client = client_for(&registry);
    let repository = format!("{}/banana", registry.host());

    let message = assert_stalled(
        client
            .resolve_digest(&repository, "nope", &RegistryAuth::Anonymous)
            .await,
        reasons::IMAGE_NOT_FOUND,
    );
    assert!(message.contains(&format!("{repository}:nope")), "{message}");
    assert!(message.contains("$MONOSHIP_IMAGE"), "{message}");

    // A repository that was never pushed is missing too.
    assert_stalled(
        client
            .resolve_digest(
                &format!("{}/never", registry.host()),
                "v1",
                &RegistryAuth::Anonymous,
            )
            .await,
        reasons::IMAGE_NOT_FOUND,
    );

    // Re-tagging to a digest that is not in the repository is a stall, not a retry.
    let absent = format!("sha256:{}", "0".repeat(64));
    assert_stalled(
        client
            .retag_without_upload(&repository, &absent, "live", &RegistryAuth::Anonymous)
            .await,
        reasons::IMAGE_NOT_FOUND,
    );
    assert_stalled(
        client
            .retag_without_upload(&repository, "latest", "live", &RegistryAuth::Anonymous)
            .await,
        reasons::INVALID_SPEC,
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_transient() {
    init();
    let host = format!("127.0.0.1:{}", free_port());
    let client = RegistryClient::new(vec![host.clone()]);
    let result = client
        .resolve_digest(&format!("{host}/banana"), "v1", &RegistryAuth::Anonymous)
        .await;
    match result {
        Err(error @ Error::Registry { .. }) => {
            assert!(!error.is_stalled());
            assert_eq!(error.reason(), reasons::REGISTRY_ERROR);
        }
        other => panic!("expected a transient registry error, got {other:?}"),
    }
}

#[tokio::test]
async fn htpasswd_registry_denies_without_credentials_and_accepts_basic() {
    let registry = TestRegistry::start_with_htpasswd("builder", "s3cret").await;
    let dir = service_dir("v1\n");
    let image = format!("{}/banana:v1", registry.host());
    let pushed = build_and_push_with(dir.path(), &image, 1, Some(("builder", "s3cret")));
    let client = client_for(&registry);
    let repository = format!("{}/banana", registry.host());

    let message = assert_stalled(
        client
            .resolve_digest(&repository, "v1", &RegistryAuth::Anonymous)
            .await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
    assert!(message.contains(&repository), "{message}");
    assert!(message.contains("image.pushSecretRef"), "{message}");

    let wrong = RegistryAuth::Basic {
        username: "builder".into(),
        password: "wrong".into(),
    };
    assert_stalled(
        client.resolve_digest(&repository, "v1", &wrong).await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
    assert_stalled(
        client
            .retag_without_upload(&repository, &pushed, "live", &wrong)
            .await,
        reasons::REGISTRY_ACCESS_DENIED,
    );

    // Credentials as they come from a kubernetes.io/dockerconfigjson Secret.
    let config = format!(
        r#"{{"auths":{{"http://{}":{{"username":"builder","password":"s3cret"}}}}}}"#,
        registry.host()
    );
    let auth = RegistryAuth::from_docker_config_json(config.as_bytes(), &repository).unwrap();
    assert_eq!(
        auth,
        RegistryAuth::Basic {
            username: "builder".into(),
            password: "s3cret".into()
        }
    );
    assert_eq!(
        client
            .resolve_digest(&repository, "v1", &auth)
            .await
            .unwrap(),
        pushed
    );

    registry.reset_requests();
    let outcome = client
        .retag_without_upload(&repository, &pushed, "live", &auth)
        .await
        .unwrap();
    assert_eq!(outcome, RetagOutcome::Moved { previous: None });
    assert_eq!(registry.manifest_puts("banana", "live"), 1);
    assert_eq!(registry.blob_uploads(), 0);
    assert_eq!(
        client
            .resolve_digest(&repository, "live", &auth)
            .await
            .unwrap(),
        pushed
    );

    // The same client, used anonymously after a Basic call, still gets no access: credentials
    // are never shared between callers.
    assert_stalled(
        client
            .resolve_digest(&repository, "live", &RegistryAuth::Anonymous)
            .await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
}

/// `METHOD path -> status` of each request, for exact sequence assertions.
fn sequence(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// The requests of one tag move once auth is settled: HEAD the tag (answered `head`), GET the
/// manifest by digest, PUT it to the tag.
fn tag_move(repository: &str, tag: &str, head: u16, digest: &str) -> Vec<String> {
    vec![
        format!("HEAD /v2/{repository}/manifests/{tag} -> {head}"),
        format!("GET /v2/{repository}/manifests/{digest} -> 200"),
        format!("PUT /v2/{repository}/manifests/{tag} -> 201"),
    ]
}

fn fake_sequence(requests: &[FakeRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Basic auth against the real registry (htpasswd): the first request learns the challenge
/// (one 401), after that the credentials go with every request up front, and only to it.
#[tokio::test]
async fn basic_credentials_are_sent_up_front_once_the_registry_asked_for_them() {
    let registry = TestRegistry::start_with_htpasswd("builder", "s3cret").await;
    let pushed = build_and_push_with(
        service_dir("v1\n").path(),
        &format!("{}/banana:v1", registry.host()),
        1,
        Some(("builder", "s3cret")),
    );
    let client = client_for(&registry);
    let repository = format!("{}/banana", registry.host());
    let auth = RegistryAuth::Basic {
        username: "builder".into(),
        password: "s3cret".into(),
    };

    registry.reset_requests();
    assert_eq!(
        client
            .resolve_digest(&repository, "v1", &auth)
            .await
            .unwrap(),
        pushed
    );
    assert_eq!(
        sequence(&registry.requests()),
        [
            "HEAD /v2/banana/manifests/v1 -> 401",
            "HEAD /v2/banana/manifests/v1 -> 200"
        ]
    );

    registry.reset_requests();
    client
        .retag_without_upload(&repository, &pushed, "live", &auth)
        .await
        .unwrap();
    assert_eq!(
        sequence(&registry.requests()),
        tag_move("banana", "live", 404, &pushed)
    );

    // Anonymous callers of the same client still send nothing, and are denied.
    registry.reset_requests();
    assert_stalled(
        client
            .resolve_digest(&repository, "live", &RegistryAuth::Anonymous)
            .await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
    assert_eq!(
        sequence(&registry.requests()),
        ["HEAD /v2/banana/manifests/live -> 401"]
    );
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest_bytes(flavor: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": monoship_testkit::oci::sha256_digest(flavor.as_bytes()),
            "size": flavor.len(),
        },
        "layers": [],
    }))
    .unwrap()
}

/// A registry whose HEAD carries no digest, so the client must GET, and whose GET answers `get`.
async fn hostile(get: ManifestAnswer) -> (FakeRegistry, RegistryClient, String) {
    hostile_with(Behaviour {
        digest_header: false,
        get,
        ..Behaviour::default()
    })
    .await
}

async fn hostile_with(behaviour: Behaviour) -> (FakeRegistry, RegistryClient, String) {
    init();
    let fake = FakeRegistry::start(behaviour).await;
    fake.put_manifest("banana", "v1", OCI_MANIFEST, &manifest_bytes("v1"));
    let client = RegistryClient::new(vec![fake.host()]);
    let repository = format!("{}/banana", fake.host());
    (fake, client, repository)
}

fn assert_transient(result: Result<impl std::fmt::Debug, Error>, needle: &str) -> String {
    match result {
        Err(error @ Error::Registry { .. }) => {
            assert!(!error.is_stalled());
            assert_eq!(error.reason(), reasons::REGISTRY_ERROR);
            let message = error.to_string();
            assert!(message.contains(needle), "{needle:?} not in {message}");
            message
        }
        other => panic!("expected a transient registry error, got {other:?}"),
    }
}

#[tokio::test]
async fn without_a_digest_header_the_digest_is_the_sha256_of_a_checked_manifest_body() {
    let (fake, client, repository) = hostile(ManifestAnswer::Stored).await;
    let digest = monoship_testkit::oci::sha256_digest(&manifest_bytes("v1"));
    assert_eq!(
        client
            .resolve_digest(&repository, "v1", &RegistryAuth::Anonymous)
            .await
            .unwrap(),
        digest
    );
    assert_eq!(
        fake_sequence(&fake.requests()),
        [
            "HEAD /v2/banana/manifests/v1 -> 200",
            "GET /v2/banana/manifests/v1 -> 200"
        ]
    );
}

/// An HTML page, an octet-stream (even one holding a manifest), or a manifest media type on a
/// body that is no manifest: no digest, a transient error that says what came back, and no
/// request after the GET.
#[tokio::test]
async fn a_body_that_is_no_manifest_is_no_digest() {
    let cases = [
        (
            "text/html; charset=utf-8",
            b"<html><body>Sign in to continue</body></html>".to_vec(),
            "Content-Type text/html, which is not a manifest media type",
        ),
        (
            "application/octet-stream",
            manifest_bytes("v1"),
            "Content-Type application/octet-stream, which is not a manifest media type",
        ),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"hello":"world"}"#.to_vec(),
            "without config and layers",
        ),
    ];
    for (content_type, body, needle) in cases {
        let (fake, client, repository) = hostile(ManifestAnswer::Fixed {
            content_type: content_type.into(),
            body,
        })
        .await;
        let message = assert_transient(
            client
                .resolve_digest(&repository, "v1", &RegistryAuth::Anonymous)
                .await,
            needle,
        );
        assert!(!message.contains("sha256:"), "{message}");
        assert_eq!(
            fake_sequence(&fake.requests()),
            [
                "HEAD /v2/banana/manifests/v1 -> 200",
                "GET /v2/banana/manifests/v1 -> 200"
            ]
        );
    }
}

/// A 64 MiB manifest body, chunked or with its Content-Length: no digest, a clear error, and the
/// client hangs up after at most the 4 MiB cap (plus what sits in socket buffers), long before
/// the end. A client that read the whole body would make the server stream all 64 MiB.
#[tokio::test]
async fn a_64_mib_body_is_not_read_past_the_cap() {
    const CAP: usize = 4 * 1024 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    for declare_length in [false, true] {
        let (fake, client, repository) = hostile(ManifestAnswer::Huge {
            content_type: OCI_MANIFEST.into(),
            total: TOTAL,
            declare_length,
        })
        .await;
        assert_transient(
            client
                .resolve_digest(&repository, "v1", &RegistryAuth::Anonymous)
                .await,
            "larger than 4 MiB",
        );
        assert!(
            fake.wait_stream_dropped().await,
            "the client kept the connection open"
        );
        let streamed = fake.streamed_bytes();
        assert!(!fake.stream_finished(), "the whole body was sent");
        // The fake paces its chunks, so socket buffers hold little beyond what was read. With a
        // Content-Length over the cap the client reads nothing of the body.
        let slack = 1024 * 1024;
        let bound = if declare_length { slack } else { CAP + slack };
        assert!(
            streamed <= bound,
            "declare_length={declare_length}: {streamed} bytes sent, more than {bound}"
        );
        eprintln!("declare_length={declare_length}: {streamed} bytes sent before the hang-up");
    }
}

/// A tag move whose GET by digest answers garbage writes nothing; so does one whose served
/// manifest is not the digest asked for.
#[tokio::test]
async fn a_tag_move_believes_only_the_manifest_with_the_requested_digest() {
    for answer in [
        ManifestAnswer::Fixed {
            content_type: "text/html".into(),
            body: b"<html></html>".to_vec(),
        },
        ManifestAnswer::Fixed {
            content_type: OCI_MANIFEST.into(),
            body: manifest_bytes("something else"),
        },
    ] {
        let (fake, client, repository) = hostile(answer).await;
        let digest = monoship_testkit::oci::sha256_digest(&manifest_bytes("v1"));
        assert_transient(
            client
                .retag_without_upload(&repository, &digest, "live", &RegistryAuth::Anonymous)
                .await,
            &repository,
        );
        assert!(
            fake.requests().iter().all(|r| r.method != "PUT"),
            "{:?}",
            fake.requests()
        );
        assert_eq!(fake.manifest("banana", "live"), None);
    }
}

/// The bearer flow against a registry that demands tokens from its realm: the realm gets the
/// basic credentials, the registry gets only tokens; a pull token serves HEAD and GET, a push
/// token is fetched for the PUT; tokens are cached, so the next tag move asks for none.
#[tokio::test]
async fn bearer_tokens_are_fetched_per_scope_cached_and_sent_only_to_the_registry() {
    init();
    let fake = FakeRegistry::start(Behaviour {
        bearer: Some(("robot".into(), "t0ps3cret".into())),
        ..Behaviour::default()
    })
    .await;
    let first = fake.put_manifest("team/banana", "build-1", OCI_MANIFEST, &manifest_bytes("1"));
    let second = fake.put_manifest("team/banana", "build-2", OCI_MANIFEST, &manifest_bytes("2"));
    let client = RegistryClient::new(vec![fake.host()]);
    let repository = format!("{}/team/banana", fake.host());
    let auth = RegistryAuth::Basic {
        username: "robot".into(),
        password: "t0ps3cret".into(),
    };

    let outcome = client
        .retag_without_upload(&repository, &first, "live", &auth)
        .await
        .unwrap();
    assert_eq!(outcome, RetagOutcome::Moved { previous: None });
    assert_eq!(
        fake.manifest("team/banana", "live"),
        Some(manifest_bytes("1"))
    );
    let requests = fake.requests();
    assert_eq!(
        fake_sequence(&requests),
        [
            "HEAD /v2/team/banana/manifests/live -> 401".to_string(),
            "GET /token -> 200".to_string(),
            "HEAD /v2/team/banana/manifests/live -> 404".to_string(),
            format!("GET /v2/team/banana/manifests/{first} -> 200"),
            "GET /token -> 200".to_string(),
            "PUT /v2/team/banana/manifests/live -> 201".to_string(),
        ]
    );
    let scopes: Vec<&str> = requests
        .iter()
        .filter(|r| r.path == "/token")
        .map(|r| r.query.as_str())
        .collect();
    assert!(
        scopes[0].contains("scope=repository%3Ateam%2Fbanana%3Apull")
            && scopes[0].contains("service=fake-registry"),
        "{scopes:?}"
    );
    assert!(
        scopes[1].contains("scope=repository%3Ateam%2Fbanana%3Apull%2Cpush"),
        "{scopes:?}"
    );
    for request in &requests {
        let sent = request.authorization.as_deref().unwrap_or_default();
        if request.path == "/token" {
            assert!(sent.starts_with("Basic "), "{request:?}");
        } else {
            assert!(
                !sent.starts_with("Basic "),
                "a password went to the registry: {request:?}"
            );
        }
    }
    assert_eq!(requests[0].authorization, None);

    // Everything is known now: a resolve and a second tag move fetch no token and meet no 401.
    fake.reset_requests();
    assert_eq!(
        client
            .resolve_digest(&repository, "live", &auth)
            .await
            .unwrap(),
        first
    );
    client
        .retag_without_upload(&repository, &second, "live", &auth)
        .await
        .unwrap();
    let mut expected = vec!["HEAD /v2/team/banana/manifests/live -> 200".to_string()];
    expected.extend(tag_move("team/banana", "live", 200, &second));
    assert_eq!(fake_sequence(&fake.requests()), expected);

    // A token the registry no longer takes is replaced once, and the request sent again.
    fake.revoke_tokens();
    fake.reset_requests();
    assert_eq!(
        client
            .resolve_digest(&repository, "live", &auth)
            .await
            .unwrap(),
        second
    );
    assert_eq!(
        fake_sequence(&fake.requests()),
        [
            "HEAD /v2/team/banana/manifests/live -> 401",
            "GET /token -> 200",
            "HEAD /v2/team/banana/manifests/live -> 200"
        ]
    );

    // Another caller's tokens are not reused: anonymous and wrong credentials ask the realm
    // themselves and are denied, and no message carries a password.
    fake.reset_requests();
    let message = assert_stalled(
        client
            .resolve_digest(&repository, "live", &RegistryAuth::Anonymous)
            .await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
    // The registry is known to want tokens, so the realm is asked first, without credentials.
    assert_eq!(fake_sequence(&fake.requests()), ["GET /token -> 401"]);
    assert_eq!(fake.requests()[0].authorization, None);
    let wrong = RegistryAuth::Basic {
        username: "robot".into(),
        password: "guessed-wrong".into(),
    };
    let wrong_message = assert_stalled(
        client.resolve_digest(&repository, "live", &wrong).await,
        reasons::REGISTRY_ACCESS_DENIED,
    );
    for text in [&message, &wrong_message] {
        assert!(
            !text.contains("t0ps3cret") && !text.contains("guessed-wrong"),
            "{text}"
        );
        assert!(!text.contains("token-"), "{text}");
    }
}

/// A registry that asked for basic credentials then redirects the manifest GET to another
/// origin: the redirect is not followed, so the credentials go nowhere else. And what a
/// registry echoes back of the credentials never reaches an error message.
#[tokio::test]
async fn credentials_go_nowhere_else_and_into_no_message() {
    let elsewhere = FakeRegistry::start(Behaviour::default()).await;
    elsewhere.put_manifest("banana", "v1", OCI_MANIFEST, &manifest_bytes("v1"));
    let auth = RegistryAuth::Basic {
        username: "robot".into(),
        password: "t0ps3cret".into(),
    };
    let encoded = "cm9ib3Q6dDBwczNjcmV0"; // base64("robot:t0ps3cret")
    let basic = Some(("robot".to_string(), "t0ps3cret".to_string()));

    let (fake, client, repository) = hostile_with(Behaviour {
        digest_header: false,
        get: ManifestAnswer::Redirect(format!(
            "http://{}/v2/banana/manifests/v1",
            elsewhere.host()
        )),
        basic: basic.clone(),
        ..Behaviour::default()
    })
    .await;
    let message = assert_transient(
        client.resolve_digest(&repository, "v1", &auth).await,
        "redirect to another origin",
    );
    assert_eq!(
        fake_sequence(&fake.requests()),
        [
            "HEAD /v2/banana/manifests/v1 -> 401",
            "HEAD /v2/banana/manifests/v1 -> 200",
            "GET /v2/banana/manifests/v1 -> 307"
        ]
    );
    assert!(
        fake.requests()[2]
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "the redirect answered a request with credentials"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    assert!(
        !message.contains("t0ps3cret") && !message.contains(encoded),
        "{message}"
    );

    let (fake, client, repository) = hostile_with(Behaviour {
        digest_header: false,
        get: ManifestAnswer::EchoAuthorization,
        basic,
        ..Behaviour::default()
    })
    .await;
    let message = assert_transient(
        client.resolve_digest(&repository, "v1", &auth).await,
        "HTTP 500",
    );
    assert_eq!(fake.requests().len(), 3, "{:?}", fake.requests());
    assert!(
        !message.contains("t0ps3cret") && !message.contains(encoded),
        "{message}"
    );
}
