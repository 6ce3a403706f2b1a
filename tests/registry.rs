//! `monoship::registry` against a real registry (distribution 2.8 on 127.0.0.1) with images
//! built by umoci and pushed by skopeo.

use std::path::Path;

use monoship::Error;
use monoship::conditions::reasons;
use monoship::registry::{RegistryAuth, RegistryClient, RetagOutcome};
use monoship_testkit::oci::{
    build_and_push, build_and_push_layers, build_and_push_with, push_index, write_tree,
};
use monoship_testkit::registry::{TestRegistry, free_port};

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
    let manifest: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/banana/manifests/{a}",
            registry.host()
        ))
        .header("Accept", MANIFEST_TYPES[1])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

#[tokio::test]
async fn retag_moves_the_tag_with_one_manifest_put_and_no_blob_upload() {
    let registry = TestRegistry::start().await;
    let new = push(&registry, service_dir("new\n").path(), "banana", "build-2");
    let old = push(&registry, service_dir("old\n").path(), "banana", "live");
    assert_ne!(new, old);
    let client = client_for(&registry);
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
    assert_eq!(registry.blob_uploads(), 0, "{:?}", registry.requests());
    assert_eq!(
        registry.manifest_puts("banana", "live"),
        1,
        "{:?}",
        registry.requests()
    );
    let put = registry
        .requests()
        .into_iter()
        .find(|r| r.is_manifest_put("banana", "live"))
        .expect("a manifest PUT");
    assert_eq!(put.status, 201);
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

    let resolved = client
        .resolve_digest(&repository, "live", &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(resolved, new);

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
