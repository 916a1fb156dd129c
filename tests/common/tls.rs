//! TLS material for broker tests, generated with rcgen in a temp dir: a CA,
//! a server certificate for `localhost` and 127.0.0.1 signed by it, a client
//! certificate signed by it, and a second CA that signed nothing we use (to
//! check that a wrong CA is refused).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files on disk.
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (SAN: localhost, 127.0.0.1).
    pub server_cert: PathBuf,
    /// Server private key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate (CN tstat-client).
    pub client_cert: PathBuf,
    /// Client private key.
    pub client_key: PathBuf,
    /// A CA unrelated to everything above.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

impl TlsFiles {
    /// Writes a fresh set of certificates into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        fs::create_dir_all(dir).expect("create cert dir");
        let (ca_pem, issuer) = ca("tstat test CA");
        let (other_pem, _) = ca("unrelated test CA");
        let (server_pem, server_key) = leaf(
            &issuer,
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) = leaf(
            &issuer,
            "tstat-client",
            vec!["tstat-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).expect("write PEM");
            p
        };
        TlsFiles {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other_pem),
        }
    }
}
