//! The OCI registry: resolve a tag's digest, and move a tag to a digest without uploading blobs.
//! (Interface placeholder; the implementation lands from the registry branch.)
use crate::Result;

pub struct RegistryClient;
pub enum RetagOutcome {
    AlreadyTagged,
    Moved { previous: Option<String> },
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic { username: String, password: String },
}
impl RegistryAuth {
    pub fn from_docker_config_json(_bytes: &[u8], _repository: &str) -> Result<Self> {
        Ok(Self::Anonymous)
    }
}
impl RegistryClient {
    pub fn new(_insecure: Vec<String>) -> Self {
        Self
    }
    pub async fn resolve_digest(
        &self,
        _repository: &str,
        _tag: &str,
        _auth: &RegistryAuth,
    ) -> Result<String> {
        todo!()
    }
    pub async fn retag_without_upload(
        &self,
        _repository: &str,
        _digest: &str,
        _tag: &str,
        _auth: &RegistryAuth,
    ) -> Result<RetagOutcome> {
        todo!()
    }
}
