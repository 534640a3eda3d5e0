//! TLS to PostgreSQL with rustls, verifying the server's certificate as libpq does: the chain
//! against `sslrootcert` whenever a root certificate is at hand (whatever the `sslmode`), the host
//! name only for `verify-full`, nothing at all when there is no root certificate.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The certificates a server's must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// `sslrootcert=FILE`, or libpq's default `~/.postgresql/root.crt`: PEM, one or more.
    File(PathBuf),
    /// `sslrootcert=system`: the system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
    System,
}

impl std::fmt::Display for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::File(path) => write!(f, "{}", path.display()),
            RootSource::System => f.write_str("system"),
        }
    }
}

/// Loaded root certificates: the store webpki builds chains to, and the certificates as given,
/// so that a self-signed server certificate listed as its own root is accepted, as OpenSSL does.
#[derive(Clone)]
pub struct Roots {
    store: Arc<RootCertStore>,
    listed: Arc<Vec<CertificateDer<'static>>>,
    pub source: RootSource,
}

impl Roots {
    /// Reads the root certificates; every failure says which file and why.
    pub fn load(source: &RootSource) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = match source {
            RootSource::File(path) => read_pem_certificates(path)?,
            RootSource::System => {
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(format!(
                        "sslrootcert=system: no trusted root certificates found on this system{}",
                        if errors.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", errors.join("; "))
                        }
                    ));
                }
                found.certs
            }
        };
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(format!(
                "root certificate file \"{source}\": none of its {ignored} certificates can be used"
            ));
        }
        Ok(Self {
            store: Arc::new(store),
            listed: Arc::new(certs),
            source: source.clone(),
        })
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "could not read root certificate file \"{}\": {e}",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "root certificate file \"{}\" is not PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "root certificate file \"{}\" holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// What the handshake checks about the server's certificate.
#[derive(Clone)]
pub struct CertificateCheck {
    /// `None`: the certificate is not checked (libpq without a root certificate: `prefer`,
    /// `require`).
    pub roots: Option<Roots>,
    /// `verify-full`: the certificate must also name the host connected to.
    pub check_host: bool,
}

/// A rustls client configuration for one connection attempt.
fn client_config(check: CertificateCheck) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(LibpqVerifier {
        check,
        provider: provider.clone(),
    });
    let mut config =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(builder) => builder,
            // The built-in provider supports the default versions; this cannot fail.
            Err(_) => ClientConfig::builder(),
        }
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 requires it with `sslnegotiation=direct`; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    config
}

#[derive(Debug)]
struct LibpqVerifier {
    check: CertificateCheck,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CertificateCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCheck")
            .field("roots", &self.roots.as_ref().map(|r| r.source.to_string()))
            .field("check_host", &self.check_host)
            .finish()
    }
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.check.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        match rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots.store,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        ) {
            Ok(()) => {}
            // webpki refuses a CA certificate as a server's; OpenSSL trusts a certificate that is
            // itself in the root file (a self-signed server certificate made with `CA:TRUE`, as
            // `openssl req -x509` makes them). webpki checked the validity dates before this. One
            // that is not in the root file is refused as not signed by it: webpki builds no chain
            // from a CA certificate presented as the server's.
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                let listed = roots
                    .listed
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref());
                if !listed {
                    return Err(CertificateError::UnknownIssuer.into());
                }
            }
            Err(e) => return Err(e),
        }
        if self.check.check_host {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS over rustls for one connection attempt, verifying as `check`
/// says (see [`client_config`]).
pub fn connector(check: CertificateCheck) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new(client_config(check))
}

/// The stream tokio-postgres reads and writes through that connector.
pub type TlsStream<S> =
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<S>>::Stream;

/// Whether a connection error is the TLS handshake's (tokio-postgres's "error performing TLS
/// handshake"), so that `sslmode=prefer` can fall back to an unencrypted connection as libpq does;
/// and the I/O error that carries rustls's reason, when there is one ([`explain`]).
pub fn handshake_failure(error: &tokio_postgres::Error) -> Option<Option<&io::Error>> {
    if !error
        .to_string()
        .starts_with("error performing TLS handshake")
    {
        return None;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return Some(Some(io));
        }
        cause = error.source();
    }
    Some(None)
}

/// A handshake failure in an operator's words, with what was asked for.
pub fn explain(error: &io::Error, host: &str, describe: &str) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let what = match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not signed by any certificate in sslrootcert".into()
            }
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. } => format!(
                "the server's certificate does not name the host `{host}` (sslmode=verify-full checks the host name)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check this machine's clock)".into()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        _ => String::new(),
    };
    if what.is_empty() {
        format!("TLS handshake with `{host}` ({describe}) failed: {error}")
    } else {
        format!("TLS handshake with `{host}` ({describe}) failed: {what} ({error})")
    }
}
