//! Deterministic OCI images built with `umoci` and pushed with `skopeo`, no container engine.
//!
//! The logic lives in one place, `scripts/build-image.sh`, which a build Job's container command
//! can also call (with `MONOSHIP_IMAGE=host/repo:tag` and a service directory) when a job runner
//! executes it as a local process; it reports the digest it pushed to `$MONOSHIP_DIGEST_FILE`
//! as a builder should. The Rust API here runs that script. The same directory
//! content gives the same digest every time; see the script's header for how.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

/// `tests/testkit/scripts/build-image.sh`.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh")
}

/// Build `src_dir` into a one-layer image and push it to `host/repo:tag` (plain HTTP).
/// Returns the pushed manifest digest `sha256:…`. Blocks while umoci and skopeo run.
pub fn build_and_push(src_dir: &Path, host: &str, repo: &str, tag: &str) -> String {
    build_and_push_layers(src_dir, host, repo, tag, 1)
}

/// Like [`build_and_push`], spreading the top-level entries of `src_dir` over `layers` layers.
pub fn build_and_push_layers(
    src_dir: &Path,
    host: &str,
    repo: &str,
    tag: &str,
    layers: usize,
) -> String {
    build_and_push_with(src_dir, &format!("{host}/{repo}:{tag}"), layers, None)
}

/// The general form: push to `image` (`host/repo:tag`) with `layers` layers, with registry
/// credentials `(username, password)` if given.
pub fn build_and_push_with(
    src_dir: &Path,
    image: &str,
    layers: usize,
    credentials: Option<(&str, &str)>,
) -> String {
    let mut command = Command::new("bash");
    command
        .arg(build_script())
        .arg("--layers")
        .arg(layers.to_string());
    if let Some((username, password)) = credentials {
        command.arg("--creds").arg(format!("{username}:{password}"));
    }
    let output = command
        .arg(src_dir)
        .env("MONOSHIP_IMAGE", image)
        .env_remove("MONOSHIP_DIGEST_FILE")
        .output()
        .expect("run build-image.sh (needs umoci and skopeo)");
    assert!(
        output.status.success(),
        "build-image.sh failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let digest = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "build-image.sh printed no digest: {digest:?}"
    );
    digest
}

/// Write `files` (relative path, content) under `dir`, creating parent directories.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(&path, content).expect("write file");
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// PUT an OCI image index to `host/repo:tag` that lists the manifests `children`
/// (`(digest, architecture)`, all `linux`), which must already be in `repo`. Returns the index
/// digest; asserts the registry reports the same one.
pub async fn push_index(host: &str, repo: &str, tag: &str, children: &[(&str, &str)]) -> String {
    crate::registry::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut manifests = Vec::new();
    for (digest, architecture) in children {
        let response = client
            .get(format!("http://{host}/v2/{repo}/manifests/{digest}"))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .expect("GET child manifest");
        assert_eq!(
            response.status().as_u16(),
            200,
            "child {digest} not in {repo}"
        );
        let body = response.bytes().await.expect("child manifest body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("child is JSON");
        let media_type = value["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json");
        manifests.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": body.len(),
            "platform": { "architecture": architecture, "os": "linux" },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let body = serde_json::to_vec(&index).expect("encode index");
    let digest = sha256_digest(&body);
    let response = client
        .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(body)
        .send()
        .await
        .expect("PUT index");
    let status = response.status().as_u16();
    let reported = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        status,
        201,
        "PUT index: {}",
        response.text().await.unwrap_or_default()
    );
    assert_eq!(reported.as_deref(), Some(digest.as_str()));
    digest
}
