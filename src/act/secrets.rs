//! Reading the Secrets a ServiceBuild names, in its own namespace only. A missing Secret or key
//! is a person's mistake (Stalled); the message names the Secret and the field that names it,
//! never a value.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::conditions::reasons;
use crate::{Error, Result};

/// The Secret `name` in `namespace`, named by the spec field `field`.
pub async fn get(client: &Client, namespace: &str, name: &str, field: &str) -> Result<Secret> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await?.ok_or_else(|| {
        Error::stalled(
            reasons::SECRET_NOT_FOUND,
            format!("Secret {namespace}/{name} named by {field} does not exist"),
        )
    })
}

/// The bytes of `key` in a Secret read by [`get`].
pub fn bytes<'a>(secret: &'a Secret, namespace: &str, name: &str, key: &str) -> Result<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .ok_or_else(|| {
            Error::stalled(
                reasons::INVALID_SECRET,
                format!("Secret {namespace}/{name} has no key {key:?}"),
            )
        })
}

/// `key` of the Secret `name`, as trimmed UTF-8 text.
pub async fn text(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<String> {
    let secret = get(client, namespace, name, field).await?;
    let bytes = bytes(&secret, namespace, name, key)?;
    String::from_utf8(bytes.to_vec())
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            Error::stalled(
                reasons::INVALID_SECRET,
                format!("Secret {namespace}/{name} key {key:?} is not UTF-8 text"),
            )
        })
}
