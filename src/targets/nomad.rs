//! Nomad targets: pin a task's image with check-and-set.
//! (Interface placeholder; the implementation lands from the nomad branch.)
use super::PinOutcome;
use crate::Result;
use crate::api::NomadTarget;
pub struct NomadAccess {
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}
pub struct NomadClient;
impl NomadClient {
    pub fn new(_target: &NomadTarget, _access: &NomadAccess) -> Result<Self> {
        Ok(Self)
    }
    pub async fn pin_task_image(&self, _image: &str) -> Result<PinOutcome> {
        todo!()
    }
}
