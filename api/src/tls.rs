//! Cluster TLS material: mutual TLS between nodes (and from `halyard ctl`) with a cluster CA.
//!
//! Every node certificate carries two DNS SANs: `node-<id>.halyard.cluster` (what a peer
//! checks when it dials node `<id>`, so a certificate of node 2 cannot answer for node 3) and
//! `halyard.cluster` (what `halyard ctl` checks when it only knows an address). Clients must
//! present a certificate signed by the same CA. `halyard certs` (in halyard-node) makes such
//! a set.

use std::path::Path;

use anyhow::{Context, Result};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub const CLUSTER_DOMAIN: &str = "halyard.cluster";

pub fn node_domain(id: u64) -> String {
    format!("node-{id}.{CLUSTER_DOMAIN}")
}

/// PEM material loaded once at start.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Identity,
}

impl TlsMaterial {
    /// Reads the CA certificate, this end's certificate and its key (PEM files). Errors name
    /// the setting (`cluster.tls.ca|cert|key`) whose file is wrong.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterial> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let ca = read(ca)?;
        let cert = read(cert)?;
        let key = read(key)?;
        for (what, pem, marker) in [
            ("ca", &ca, "CERTIFICATE"),
            ("cert", &cert, "CERTIFICATE"),
            ("key", &key, "PRIVATE KEY"),
        ] {
            if !String::from_utf8_lossy(pem).contains(marker) {
                anyhow::bail!("cluster.tls.{what}: not a PEM file with a {marker}");
            }
        }
        Ok(TlsMaterial {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        })
    }

    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Client config that expects the peer to be `domain`.
    pub fn client(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(domain)
    }
}
