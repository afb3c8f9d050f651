//! Cluster TLS: mutual TLS between nodes (and from `halyard ctl`) with a cluster CA. The
//! material itself ([`TlsMaterial`]) lives in `halyard-api`, next to the client that uses
//! it; this module loads it from the configuration and makes certificates (`halyard certs`).
//!
//! Every node certificate carries two DNS SANs: `node-<id>.halyard.cluster` (what a peer
//! checks when it dials node `<id>`, so a certificate of node 2 cannot answer for node 3) and
//! `halyard.cluster` (what `halyard ctl` checks when it only knows an address). Clients must
//! present a certificate signed by the same CA. `halyard certs` makes such a set.

use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::config::TlsConfig;

pub use halyard_api::tls::{CLUSTER_DOMAIN, TlsMaterial, node_domain};

/// Loads the material `[cluster.tls]` names.
pub fn load(cfg: &TlsConfig) -> Result<TlsMaterial> {
    TlsMaterial::load(&cfg.ca, &cfg.cert, &cfg.key)
}

/// A new self-signed CA named `name`: its certificate and what signs with it.
fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca_params)
}

fn new_ca(name: &str) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>)> {
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params(name)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    Ok((ca_cert, Issuer::new(ca_params, ca_key)))
}

/// Writes a cluster CA and certificates for the given node ids (and one for `halyard ctl`)
/// into `dir`: `ca.pem`, `ca.key`, `node-<id>.pem`, `node-<id>.key`, `ctl.pem`, `ctl.key`.
pub fn generate(dir: &Path, node_ids: &[u64]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, issuer) = new_ca("Halyard cluster CA")?;
    write_private(&dir.join("ca.key"), issuer_key_pem(&issuer).as_bytes())?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    let mut names: Vec<(String, Vec<String>)> = node_ids
        .iter()
        .map(|id| {
            (
                format!("node-{id}"),
                vec![node_domain(*id), CLUSTER_DOMAIN.to_string()],
            )
        })
        .collect();
    names.push(("ctl".to_string(), vec![format!("ctl.{CLUSTER_DOMAIN}")]));
    for (file, sans) in names {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, file.clone());
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        issue_leaf(dir, &file, p, &issuer)?;
    }
    Ok(())
}

/// Writes a self-signed CA and a server certificate for the mail ports (IMAP/POP3 TLS) valid
/// for `names` (host names or IP addresses): `mail-ca.pem`, `mail.pem`, `mail.key`. For test
/// and lab set-ups; production uses a certificate from the site's CA or ACME.
pub fn generate_mail_server(dir: &Path, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, issuer) = new_ca("Halyard mail test CA")?;
    std::fs::write(dir.join("mail-ca.pem"), ca_cert.pem())?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue_leaf(dir, "mail", p, &issuer)
}

/// Writes a domain administrator's certificate `admin-<name>.pem`/`.key`, signed by the
/// cluster CA that `generate` wrote into `dir` (`ca.key` must be there): its URI
/// subjectAltNames `halyard:domain-admin:<domain>` limit it to those domains (see
/// [`crate::scope`]).
pub fn generate_admin(dir: &Path, name: &str, domains: &[String]) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!("--admin {name:?}: letters, digits, '-', '_' and '.' only");
    }
    let domains: Vec<String> = domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    if domains.is_empty() || domains.iter().any(|d| d.contains(['/', ' ', '@'])) {
        anyhow::bail!("--domains: give the domains it administers, comma-separated");
    }
    let key_pem = std::fs::read_to_string(dir.join("ca.key")).with_context(|| {
        format!(
            "reading the cluster CA key {}",
            dir.join("ca.key").display()
        )
    })?;
    let issuer = Issuer::new(
        ca_params("Halyard cluster CA")?,
        KeyPair::from_pem(&key_pem)?,
    );
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names = domains
        .iter()
        .map(|d| {
            let uri = format!("{}{d}", crate::scope::DOMAIN_ADMIN_URI);
            Ok(rcgen::SanType::URI(uri.as_str().try_into()?))
        })
        .collect::<Result<_>>()?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue_leaf(dir, &format!("admin-{name}"), p, &issuer)
}

/// Writes a CA for mail users' client certificates and one certificate per address (its
/// subjectAltName email and common name), for SASL EXTERNAL (`access.tls_client_ca`,
/// `mta.tls_client_ca`): `users-ca.pem`, `users-ca.key`, `user-<address>.pem`,
/// `user-<address>.key`. Each run makes a new CA: issue every user's certificate in one run,
/// or use the site's own CA.
pub fn generate_user_certs(dir: &Path, addresses: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, issuer) = new_ca("Halyard mail users CA")?;
    write_private(
        &dir.join("users-ca.key"),
        issuer_key_pem(&issuer).as_bytes(),
    )?;
    std::fs::write(dir.join("users-ca.pem"), ca_cert.pem())?;
    for a in addresses {
        let a = a.trim().to_lowercase();
        if !a.contains('@') || a.contains(['/', ' ']) {
            anyhow::bail!("{a:?} is not a mail address");
        }
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(a.as_str().try_into()?)];
        p.distinguished_name.push(DnType::CommonName, a.clone());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue_leaf(dir, &format!("user-{a}"), p, &issuer)?;
    }
    Ok(())
}

/// Signs `params` with a new key under `issuer`: `<file>.pem` and `<file>.key` (mode 0600).
fn issue_leaf(
    dir: &Path,
    file: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<()> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem())?;
    write_private(
        &dir.join(format!("{file}.key")),
        key.serialize_pem().as_bytes(),
    )
}

fn issuer_key_pem(issuer: &Issuer<'_, KeyPair>) -> String {
    issuer.key().serialize_pem()
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
