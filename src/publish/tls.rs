//! TLS for the broker connection (design §7.3), with rustls: which roots to
//! trust (`ca_certs` only, or the system store), the client certificate, and
//! the `CERT_NONE` escape hatch. It builds a connector; it never opens a socket.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use lapin::tcp::RustlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{CertReqs, TlsOptions};

/// Builds the rustls connector for `[ssl_options]`; the error says which file
/// or setting is wrong.
pub(crate) fn connector(opts: &TlsOptions) -> Result<RustlsConnector, String> {
    client_config(opts).map(RustlsConnector::from)
}

/// The rustls client configuration for `[ssl_options]` (also used by the
/// stream transport, which connects with tokio-rustls).
pub(crate) fn client_config(opts: &TlsOptions) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;

    let builder = if opts.cert_reqs == CertReqs::None {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification {
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        builder.with_root_certificates(roots(opts.ca_certs.as_deref())?)
    };

    let config = match (&opts.certfile, &opts.keyfile) {
        (Some(cert), key) => {
            // A certfile that also holds the key may stand alone.
            let key_path = key.as_deref().unwrap_or(cert);
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| format!("{}: no usable PEM private key: {e}", key_path.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("certfile/keyfile: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => return Err("keyfile is set but certfile is not".into()),
    };
    Ok(config)
}

/// The trust anchors: only the `ca_certs` file when given (so a broker
/// certificate from any other CA is refused), else the system store.
fn roots(ca_certs: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca_certs {
        Some(path) => {
            let certs = read_certs(path)?;
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "ca_certs {}: no usable CA certificate",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "no system CA certificates found: set ca_certs in [ssl_options]".into(),
                );
            }
        }
    }
    Ok(store)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in file", path.display()));
    }
    Ok(certs)
}

/// `cert_reqs = CERT_NONE`: accept any server certificate. The handshake
/// signatures are still checked, so the session key belongs to whoever sent
/// the certificate; only who that is goes unverified.
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for NoVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerification")
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
