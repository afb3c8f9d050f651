//! Server TLS for STARTTLS/STLS and the implicit-TLS ports: rustls (aws-lc-rs) with a
//! certificate chain and key from PEM files, re-read on SIGHUP without dropping sessions
//! (new handshakes use the new certificate; a bad file keeps the old one and logs why).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Also used by the MTA's listeners (`section` names the configuration table in errors).
#[derive(Clone)]
pub struct Tls {
    section: &'static str,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    acceptor: Arc<RwLock<Acceptor>>,
}

/// What a handshake needs: rustls's acceptor and the certificate's channel binding.
#[derive(Clone)]
pub struct Acceptor {
    pub inner: TlsAcceptor,
    /// `tls-server-end-point` (RFC 5929) of the leaf certificate.
    pub end_point: Arc<Vec<u8>>,
}

/// RFC 5929 §4.1: the certificate's hash with its signature's hash function, SHA-256 where
/// that is MD5, SHA-1 or none (Ed25519).
pub fn end_point_hash(cert_der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let oid = x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    match oid.as_str() {
        // ecdsa-with-SHA384, sha384WithRSAEncryption
        "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => sha2::Sha384::digest(cert_der).to_vec(),
        // ecdsa-with-SHA512, sha512WithRSAEncryption
        "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => sha2::Sha256::digest(cert_der).to_vec(),
    }
}

/// How a client certificate names its user, for SASL EXTERNAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalIdentity {
    /// The first rfc822Name of the subjectAltName, else the subject's emailAddress.
    #[default]
    SanEmail,
    /// The subject's commonName (a login name or an address).
    SubjectCn,
}

impl std::str::FromStr for ExternalIdentity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "san-email" => Ok(ExternalIdentity::SanEmail),
            "subject-cn" => Ok(ExternalIdentity::SubjectCn),
            _ => Err(format!("{s:?}: expected san-email or subject-cn")),
        }
    }
}

/// The identity a (verified) client certificate maps to under `rule`, lower-cased.
pub fn certificate_identity(der: &[u8], rule: ExternalIdentity) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let id = match rule {
        ExternalIdentity::SanEmail => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::RFC822Name(e) => Some(e.to_string()),
                    _ => None,
                })
            })
            .or_else(|| {
                cert.subject()
                    .iter_email()
                    .next()
                    .and_then(|e| e.as_str().ok())
                    .map(str::to_string)
            }),
        ExternalIdentity::SubjectCn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|e| e.as_str().ok())
            .map(str::to_string),
    }?;
    let id = id.trim().to_lowercase();
    (!id.is_empty() && !id.chars().any(|c| c.is_control() || c.is_whitespace())).then_some(id)
}

fn build(section: &str, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Acceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{section}.tls_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{section}.tls_cert {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{section}.tls_cert {}: no certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{section}.tls_key {}", key.display()))?;
    let end_point = Arc::new(end_point_hash(certs[0].as_ref()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        // A certificate is asked for, not required: clients without one use passwords.
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("{section}.tls_client_ca {}", ca.display()))?
            {
                roots
                    .add(c.with_context(|| format!("{section}.tls_client_ca {}", ca.display()))?)
                    .with_context(|| format!("{section}.tls_client_ca {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .with_context(|| format!("{section}.tls_client_ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("{section}.tls_cert/tls_key"))?;
    Ok(Acceptor {
        inner: TlsAcceptor::from(Arc::new(cfg)),
        end_point,
    })
}

impl Tls {
    pub fn load(section: &'static str, cert: &Path, key: &Path) -> Result<Tls> {
        Tls::load_with_client_ca(section, cert, key, None)
    }

    /// With `client_ca`, clients may present a certificate issued by it (SASL EXTERNAL).
    pub fn load_with_client_ca(
        section: &'static str,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Tls> {
        Ok(Tls {
            section,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            acceptor: Arc::new(RwLock::new(build(section, cert, key, client_ca)?)),
        })
    }

    pub fn acceptor(&self) -> Acceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files.
    pub fn reload(&self) -> Result<()> {
        let a = build(
            self.section,
            &self.cert,
            &self.key,
            self.client_ca.as_deref(),
        )?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = a;
        Ok(())
    }

    pub async fn reload_on_sighup(self, mut stop: watch::Receiver<bool>) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match self.reload() {
                    Ok(()) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the old certificate"),
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    }
}
