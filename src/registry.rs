//! The OCI registry: resolve a tag's digest, and move a tag to a digest without uploading blobs.
