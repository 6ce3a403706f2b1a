//! Fresh certificates for one control plane: a CA, the API server's serving certificate for
//! 127.0.0.1 and localhost, client certificates signed by the CA, and the service-account
//! signing key. ECDSA P-256 throughout (rcgen with ring), which kube-apiserver,
//! kube-controller-manager and rustls all accept.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, PEM-encoded.
struct Pair {
    cert: String,
    key: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

fn client(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
) -> Result<Pair, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name, organization);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Generate every certificate and key and write them into `dir`: `ca.crt`/`ca.key`,
/// `apiserver.crt`/`apiserver.key` (serving), `admin.crt`/`admin.key` (`O=system:masters`),
/// `kcm.crt`/`kcm.key` (`CN=system:kube-controller-manager`) and `sa.key`/`sa.pub` (the
/// service-account token signing key).
pub fn generate(dir: &Path) -> Result<(), Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("monoship-envtest-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Pair {
        cert: ca_cert.pem(),
        key: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "10.0.0.1".to_owned(),
    ])?;
    serving.distinguished_name = name("kube-apiserver", None);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let admin = client(&issuer, "envtest-admin", Some("system:masters"))?;
    let controller_manager = client(&issuer, "system:kube-controller-manager", None)?;
    let service_accounts = KeyPair::generate()?;

    let write = |file: &str, text: &str| std::fs::write(dir.join(file), text);
    write("ca.crt", &ca.cert)?;
    write("ca.key", &ca.key)?;
    write("apiserver.crt", &serving_cert.pem())?;
    write("apiserver.key", &serving_key.serialize_pem())?;
    write("admin.crt", &admin.cert)?;
    write("admin.key", &admin.key)?;
    write("kcm.crt", &controller_manager.cert)?;
    write("kcm.key", &controller_manager.key)?;
    write("sa.key", &service_accounts.serialize_pem())?;
    write("sa.pub", &service_accounts.public_key_pem())?;
    Ok(())
}
