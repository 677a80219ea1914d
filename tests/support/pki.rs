//! Test certificates made with rcgen, shared by the TLS tests of the daemon
//! (`daemon/server/tests/tls.rs`) and of the operator's daemon client
//! (`operator/tests/tls_client.rs`), which include this file with `#[path]`.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// What a client needs to trust the server and to prove its own identity.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// A client certificate signed by the CA followed by its key, PEM.
    pub client_identity: String,
}

/// A new self-signed CA.
pub fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a server certificate for `server_name` signed by `ca` to
/// `dir/cert.pem` and its key to `dir/key.pem`.
pub fn write_server_cert(dir: &Path, ca: &CertifiedIssuer<'_, KeyPair>, server_name: &str) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![server_name.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// A CA (written to `dir/ca.pem`), a server certificate for `server_name`
/// (`dir/cert.pem`, `dir/key.pem`) and a client identity for `client_name`,
/// both signed by the CA.
pub fn make_pki(dir: &Path, server_name: &str, client_name: &str) -> Pki {
    let ca = new_ca();
    write_server_cert(dir, &ca, server_name);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec![client_name.to_owned()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_identity: format!("{}{}", client.pem(), client_key.serialize_pem()),
    }
}
