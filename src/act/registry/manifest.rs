//! What counts as a manifest: one of four media types in `Content-Type`, at most 4 MiB, and a
//! JSON body of the matching shape.

use sha2::Digest as _;

/// Every manifest media type monoship accepts, top-level types first.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// The `Accept` value of every manifest request: all of [`MANIFEST_MEDIA_TYPES`], so a
/// registry answers with the top-level manifest (the index of a multi-arch image).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

const OCI_IMAGE_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const OCI_IMAGE_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const IMAGE_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const IMAGE_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest read: distribution refuses to store bigger ones (`defaultMaxManifestSize`
/// of distribution v3, 4 MiB; the spec asks registries to accept at least that much).
pub const MANIFEST_BODY_CAP: usize = 4 * 1024 * 1024;

/// The manifest media type a `Content-Type` value names (parameters and case ignored), if any.
pub fn media_type_of(content_type: &str) -> Option<&'static str> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    MANIFEST_MEDIA_TYPES
        .into_iter()
        .find(|media_type| media_type.eq_ignore_ascii_case(essence))
}

/// Why `body` is not a manifest of `media_type`: a JSON object with `schemaVersion` 2, and
/// `manifests` (an index or list) or `config` and `layers` (an image manifest), and a
/// `mediaType` field, if present, equal to `media_type`.
pub fn shape_problem(media_type: &str, body: &[u8]) -> Option<&'static str> {
    let Ok(serde_json::Value::Object(value)) = serde_json::from_slice(body) else {
        return Some("is not a JSON object");
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Some("does not have schemaVersion 2");
    }
    if let Some(declared) = value.get("mediaType")
        && declared.as_str() != Some(media_type)
    {
        return Some("declares a mediaType other than its Content-Type");
    }
    let is_index = matches!(
        media_type,
        OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE
    );
    let fits = if is_index {
        value.get("manifests").is_some_and(|m| m.is_array())
    } else {
        value.get("config").is_some_and(|c| c.is_object())
            && value.get("layers").is_some_and(|l| l.is_array())
    };
    (!fits).then_some(if is_index {
        "is an index media type without a manifests list"
    } else {
        "is an image manifest media type without config and layers"
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let mut digest = String::with_capacity(71);
    digest.push_str("sha256:");
    for byte in hash {
        digest.push_str(&format!("{byte:02x}"));
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            media_type_of("application/vnd.oci.image.index.v1+json"),
            Some(OCI_IMAGE_INDEX_MEDIA_TYPE)
        );
        assert_eq!(
            media_type_of("Application/VND.docker.distribution.manifest.v2+json; charset=utf-8"),
            Some(IMAGE_MANIFEST_MEDIA_TYPE)
        );
        for other in [
            "text/html",
            "application/octet-stream",
            "application/json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "",
        ] {
            assert_eq!(media_type_of(other), None, "{other}");
        }
    }

    #[test]
    fn shapes() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(shape_problem(OCI_IMAGE_INDEX_MEDIA_TYPE, index), None);
        let bare = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(shape_problem(OCI_IMAGE_MEDIA_TYPE, bare), None);
        assert_eq!(shape_problem(IMAGE_MANIFEST_MEDIA_TYPE, bare), None);
        assert!(shape_problem(OCI_IMAGE_INDEX_MEDIA_TYPE, bare).is_some());
        assert!(shape_problem(OCI_IMAGE_MEDIA_TYPE, index).is_some());
        assert!(shape_problem(OCI_IMAGE_MEDIA_TYPE, b"<html></html>").is_some());
        assert!(shape_problem(OCI_IMAGE_MEDIA_TYPE, b"[]").is_some());
        let v1 = br#"{"schemaVersion":1,"config":{},"layers":[]}"#;
        assert!(shape_problem(OCI_IMAGE_MEDIA_TYPE, v1).is_some());
    }

    #[test]
    fn accept_list_is_complete() {
        for media_type in [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ] {
            assert!(MANIFEST_MEDIA_TYPES.contains(&media_type), "{media_type}");
        }
        assert_eq!(ACCEPT_MANIFESTS, MANIFEST_MEDIA_TYPES.join(", "));
    }

    #[test]
    fn digest_of_bytes() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
