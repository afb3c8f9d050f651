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
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

fn build(section: &str, cert: &Path, key: &Path) -> Result<TlsAcceptor> {
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{section}.tls_cert/tls_key"))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl Tls {
    pub fn load(section: &'static str, cert: &Path, key: &Path) -> Result<Tls> {
        Ok(Tls {
            section,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            acceptor: Arc::new(RwLock::new(build(section, cert, key)?)),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files.
    pub fn reload(&self) -> Result<()> {
        let a = build(self.section, &self.cert, &self.key)?;
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
