//! TLS for the main server and the participant services (rustls).
//!
//! A server given a certificate chain and a private key (PEM files) speaks
//! only HTTPS on its port; the orchestrator reaches participants at
//! `https://` URLs, trusting the system's roots never, only the CA (or
//! self-signed certificate) given to it, so a demo's own certificate is all
//! it needs. Plain HTTP stays acceptable on loopback only (see the README).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file it was meant to be.
        what: &'static str,
        /// The path given.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

fn file_error(what: &'static str, path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error("certificate file", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate file", path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            "certificate file",
            path,
            "no PEM certificate in it",
        ));
    }
    Ok(certs)
}

/// A server's TLS settings: its certificate chain and key.
#[derive(Clone)]
pub struct TlsServer(pub(crate) tokio_rustls::TlsAcceptor);

impl TlsServer {
    /// Loads the certificate chain (`cert`, PEM, leaf first) and the private
    /// key (`key`, PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsServer, TlsError> {
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key file", key, e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsServer(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsServer")
    }
}

impl PartialEq for TlsServer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.0.config(), other.0.config())
    }
}

impl Eq for TlsServer {}

/// What the orchestrator trusts when it calls participants over `https://`.
#[derive(Clone)]
pub struct TlsClient(pub(crate) Arc<rustls::ClientConfig>);

impl TlsClient {
    /// Trusts exactly the certificates in `ca` (PEM): a CA, or a
    /// participant's self-signed certificate.
    pub fn trusting_pem_file(ca: &Path) -> Result<TlsClient, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(ca)? {
            roots.add(c).map_err(|e| file_error("CA file", ca, e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient(Arc::new(config)))
    }

    /// The rustls client configuration (to make TLS connections the same
    /// way, e.g. in tests).
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.0.clone()
    }

    /// Trusts nothing: `https://` URLs fail (the default without a CA).
    pub fn trusting_nothing() -> TlsClient {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        TlsClient(Arc::new(config))
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsClient {}
