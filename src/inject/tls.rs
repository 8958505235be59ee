//! The webhook's serving certificate: read from PEM files at start, and read again when
//! they change (cert-manager renews a certificate by rewriting its Secret, which kubelet
//! swaps into the mounted volume), without a restart. A renewal that cannot be read is
//! logged and the certificate in force is kept.
//!
//! rustls asks [`ReloadingCertificate`] for the certificate at every handshake, so a
//! reload takes effect for the next connection; connections open keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key files (PEM).
#[derive(Debug, Clone)]
pub(crate) struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("--tls-cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("--tls-key {path}: {why}")]
    Key { path: String, why: String },
    #[error("the TLS set-up failed: {0}")]
    Setup(String),
}

/// The certificate in force, replaced by [`ReloadingCertificate::reload`].
pub(crate) struct ReloadingCertificate {
    files: CertificateFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Reads the files; an error names the file and what is wrong with it.
    pub(crate) fn load(
        files: CertificateFiles,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCertificate, TlsError> {
        let key = read(&files, &provider)?;
        Ok(ReloadingCertificate {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
        })
    }

    pub(crate) fn files(&self) -> &CertificateFiles {
        &self.files
    }

    /// Reads the files again and puts what they hold in force; on an error the certificate
    /// in force stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = read(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// A rustls server config serving this certificate (HTTP/1.1 by ALPN).
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Setup(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn read(files: &CertificateFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let shown = |path: &Path| path.display().to_string();
    let cert_error = |why: String| TlsError::Cert {
        path: shown(&files.cert),
        why,
    };
    let key_error = |why: String| TlsError::Key {
        path: shown(&files.key),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| cert_error(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| cert_error(error.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("holds no PEM CERTIFICATE".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        key_error(format!(
            "{error} (a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| key_error(error.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|error| TlsError::Key {
        path: shown(&files.key),
        why: format!(
            "does not match the certificate in {}: {error}",
            shown(&files.cert)
        ),
    })?;
    Ok(certified)
}
