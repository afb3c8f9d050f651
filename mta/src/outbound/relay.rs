//! The SMTP relay channel: MX resolution (RFC 5321 §5.1) and an SMTP client.
//!
//! - MX records in preference order; no MX but the domain exists → the domain itself
//!   (implicit MX); a null MX (RFC 7505) or a non-existent domain fails permanently; a DNS
//!   error is temporary.
//! - Each MX host's addresses are tried in turn; a host that cannot be reached, greets with
//!   4xx or drops the connection sends us to the next one.
//! - Opportunistic STARTTLS (RFC 3207/7435): used when offered, certificates not verified
//!   (without DANE or MTA-STS there is nothing to verify them against); a failed handshake
//!   is a temporary failure of that host. A channel with `tls = "verify"` requires STARTTLS
//!   and a certificate valid for its host under its CA: anything less is a temporary
//!   failure (the message stays queued), never a delivery in clear. Its idle connections
//!   are only reused when they were verified.
//! - One transaction per (queue entry, domain) with every recipient of that domain;
//!   ESMTP parameters (SIZE, BODY=8BITMIME, SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT) are sent
//!   only to servers that advertise them.
//! - Per-recipient outcome: 2xx delivered, 4xx retried later, 5xx failed (a DSN follows).
//! - Connection reuse per destination (address and port of the server, so domains sharing
//!   an MX share connections too): after a transaction the connection is kept open, idle,
//!   for [`IDLE_LIMIT`]; the next transaction for that address takes it after an `RSET`
//!   answered 250 (anything else: it is closed and a new one made). A connection serves at
//!   most [`MAX_USES`] transactions and lives at most [`MAX_AGE`]; at most
//!   [`MAX_IDLE_PER_DESTINATION`] wait per address. Idle connections are closed with QUIT.
//!
//! This file holds the channel itself ([`Relay`]: its construction, [`Relay::send`] over
//! the MX hosts or a smarthost, [`Relay::lmtp`], and opening a connection); beside it are
//! the DNS lookups (`dns.rs`), connection reuse (`pool.rs`) and the SMTP and LMTP client
//! dialogue on one connection (`client.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_raft_store::RecipientSpec;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::client::{Conn, HostFailure, Io};
use super::pool::{Open, Pool};
use crate::MtaConfig;

pub use super::client::dot_stuff;
pub use super::pool::{IDLE_LIMIT, MAX_AGE, MAX_IDLE_PER_DESTINATION, MAX_USES};

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Try again later.
    Temporary(String),
    /// Give up: (reply code, text).
    Permanent(u16, String),
}

pub struct Relay {
    pub(super) resolver: TokioResolver,
    pub(super) idle: Pool,
    pub(super) next_idle_id: std::sync::atomic::AtomicU64,
    port: u16,
    hostname: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    /// Verifying connectors of the channels with `tls = "verify"`, by channel name.
    verified: std::collections::HashMap<String, tokio_rustls::TlsConnector>,
    /// The channel to other resource groups (set once the node's groups are known).
    pub handover: std::sync::OnceLock<super::handover::Handover>,
}

/// A verifying TLS client under the PEM trust anchors in `ca`.
fn verifying(channel: &str, ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let what =
        |e: &dyn std::fmt::Display| format!("mta.channels {channel}: tls_ca {}: {e}", ca.display());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| what(&e))? {
        // A bundle may hold certificates rustls cannot use; the others still count.
        let _ = roots.add(c.map_err(|e| what(&e))?);
    }
    if roots.is_empty() {
        return Err(what(&"no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Accepts any certificate: opportunistic TLS encrypts against passive listening only.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A message to send to one domain.
pub struct Outgoing<'a> {
    pub from: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub rcpts: Vec<&'a RecipientSpec>,
    pub body: &'a [u8],
}

impl Relay {
    pub fn new(cfg: &MtaConfig) -> Result<Relay, String> {
        let resolver = if cfg.dns_servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("mta.dns_servers: system resolver: {e}"))?
                .build()
        } else {
            let mut servers = Vec::new();
            for s in &cfg.dns_servers {
                let sa: SocketAddr = s
                    .parse()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("mta.dns_servers: {s:?} is not ip or ip:port"))?;
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                servers.push(NameServerConfig::new(sa.ip(), true, vec![udp, tcp]));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
            .build()
        }
        .map_err(|e| format!("mta.dns_servers: {e}"))?;
        let mut verified = std::collections::HashMap::new();
        for c in &cfg.channels {
            if c.tls == crate::rewrite::TlsMode::Verify {
                let ca = c
                    .tls_ca
                    .clone()
                    .unwrap_or_else(|| crate::rewrite::SYSTEM_ROOTS.into());
                verified.insert(c.name.clone(), verifying(&c.name, &ca)?);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        Ok(Relay {
            resolver,
            idle: Default::default(),
            next_idle_id: Default::default(),
            port: cfg.relay_port,
            hostname: cfg.hostname.clone(),
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
            io_timeout: Duration::from_secs(cfg.relay_timeout_secs),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            verified,
            handover: Default::default(),
        })
    }

    /// The verifying connector of `channel`, when it has `tls = "verify"`.
    pub fn verifier(&self, channel: &str) -> Option<&tokio_rustls::TlsConnector> {
        self.verified.get(channel)
    }

    /// Delivers `out` to `domain` (its MX hosts, or `smarthost` when given as
    /// `host:port`); one outcome per recipient, in order.
    /// `verify`: the channel's verifying connector (`tls = "verify"`).
    pub async fn send(
        &self,
        domain: &str,
        smarthost: Option<&str>,
        verify: Option<&tokio_rustls::TlsConnector>,
        out: &Outgoing<'_>,
    ) -> Vec<Outcome> {
        let all = |o: Outcome| vec![o; out.rcpts.len()];
        if let Some(h) = smarthost {
            let (host, port, ips) = match self.addresses(h).await {
                Ok(x) => x,
                Err(why) => return all(Outcome::Temporary(format!("4.4.1 {h}: {why}"))),
            };
            let mut last = String::from("no address");
            for ip in ips {
                match self
                    .deliver_to(&host, SocketAddr::new(ip, port), verify, out)
                    .await
                {
                    Ok(o) => return o,
                    Err(HostFailure(why)) => last = format!("[{ip}]: {why}"),
                }
            }
            // RFC 3463: 4.7.5 "cryptographic failure" when verified TLS was the obstacle.
            let code = if verify.is_some() && last.contains("TLS") {
                "4.7.5"
            } else {
                "4.4.1"
            };
            return all(Outcome::Temporary(format!("{code} {h}: {last}")));
        }
        let hosts = match self.exchangers(domain).await {
            Ok(h) => h,
            Err(o) => return all(o),
        };
        let mut last = String::from("no mail exchanger");
        for host in hosts {
            let addrs: Vec<IpAddr> = match self.resolver.lookup_ip(host.as_str()).await {
                Ok(l) => l.iter().collect(),
                Err(e) => {
                    last = format!("{host}: {e}");
                    continue;
                }
            };
            for ip in addrs {
                match self
                    .deliver_to(&host, SocketAddr::new(ip, self.port), verify, out)
                    .await
                {
                    Ok(outcomes) => return outcomes,
                    Err(HostFailure(why)) => last = format!("{host} [{ip}]: {why}"),
                }
            }
        }
        all(Outcome::Temporary(format!(
            "4.4.1 no mail exchanger of {domain} took it: {last}"
        )))
    }

    /// One transaction with the server at `sa`: on an idle connection to it that still
    /// answers `RSET`, else on a new one.
    async fn deliver_to(
        &self,
        host: &str,
        sa: SocketAddr,
        verify: Option<&tokio_rustls::TlsConnector>,
        out: &Outgoing<'_>,
    ) -> Result<Vec<Outcome>, HostFailure> {
        for _ in 0..MAX_IDLE_PER_DESTINATION {
            let Some(mut open) = self.take_idle(sa) else {
                break;
            };
            if verify.is_some() && open.verified_for.as_deref() != Some(host) {
                // Opened without verification (or for another name): not for this channel.
                self.put_idle(sa, open);
                break;
            }
            if matches!(open.conn.cmd("RSET").await, Ok((250, _))) {
                tracing::debug!(server = %sa, uses = open.uses, "reusing connection");
                return self.run(open, sa, out).await;
            }
        }
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(HostFailure(e.to_string())),
            Err(_) => return Err(HostFailure("connection timed out".into())),
        };
        let open = self.open(tcp, host, sa.ip(), verify).await?;
        self.run(open, sa, out).await
    }

    /// A transaction on `open`, which then waits for the next one or is closed.
    async fn run(
        &self,
        mut open: Open,
        sa: SocketAddr,
        out: &Outgoing<'_>,
    ) -> Result<Vec<Outcome>, HostFailure> {
        let exts = std::mem::take(&mut open.exts);
        let outcomes = open
            .conn
            .transaction(&open.host, open.ip, out, &exts)
            .await?;
        open.exts = exts;
        open.uses += 1;
        self.put_idle(sa, open);
        Ok(outcomes)
    }

    /// Connects to `host:port` (a name or an address).
    async fn connect(&self, hostport: &str) -> Result<(TcpStream, String, IpAddr), String> {
        let (host, port, ips) = self.addresses(hostport).await?;
        let mut last = "no address".to_string();
        for ip in ips {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect((ip, port))).await {
                Ok(Ok(t)) => return Ok((t, host, ip)),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "connection timed out".into(),
            }
        }
        Err(last)
    }

    /// Delivers `out` over LMTP (RFC 2033) to `hostport`: one outcome per recipient, from
    /// the server's per-recipient replies after the data.
    pub async fn lmtp(&self, hostport: &str, out: &Outgoing<'_>) -> Vec<Outcome> {
        let all = |o: Outcome| vec![o; out.rcpts.len()];
        let (tcp, host, ip) = match self.connect(hostport).await {
            Ok(x) => x,
            Err(why) => return all(Outcome::Temporary(format!("4.4.1 {hostport}: {why}"))),
        };
        let mut c = Conn {
            io: BufReader::new(tcp),
            timeout: self.io_timeout,
            closing: false,
        };
        match c.lmtp_transaction(&self.hostname, &host, ip, out).await {
            Ok(o) => o,
            Err(HostFailure(why)) => all(Outcome::Temporary(format!("4.4.1 {hostport}: {why}"))),
        }
    }

    /// Greeting, EHLO (HELO for a server without extensions) and STARTTLS when offered:
    /// a connection ready for transactions.
    async fn open(
        &self,
        tcp: TcpStream,
        host: &str,
        ip: IpAddr,
        verify: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Open, HostFailure> {
        let mut c = Conn {
            io: BufReader::new(Box::new(tcp) as Box<dyn Io>),
            timeout: self.io_timeout,
            closing: false,
        };
        let ready = |conn, exts, verified_for| Open {
            conn,
            host: host.to_string(),
            ip,
            exts,
            opened: Instant::now(),
            uses: 0,
            verified_for,
        };
        let (code, text) = c.reply().await?;
        if code != 220 {
            return Err(HostFailure(format!("greeting {code} {text}")));
        }
        let ehlo = c.cmd(&format!("EHLO {}", self.hostname)).await?;
        if ehlo.0 != 250 && verify.is_some() {
            return Err(HostFailure(format!(
                "EHLO {} {}: no STARTTLS, and the channel requires verified TLS",
                ehlo.0, ehlo.1
            )));
        }
        if ehlo.0 != 250 {
            // An SMTP-only server: HELO, no extensions.
            let (code, text) = c.cmd(&format!("HELO {}", self.hostname)).await?;
            if code != 250 {
                return Err(HostFailure(format!("HELO {code} {text}")));
            }
            return Ok(ready(c, vec![], None));
        }
        let extensions = |text: &str| -> Vec<String> {
            text.lines()
                .skip(1)
                .map(|l| l.to_ascii_uppercase())
                .collect()
        };
        let exts = extensions(&ehlo.1);
        if !exts.iter().any(|e| e == "STARTTLS") {
            if verify.is_some() {
                return Err(HostFailure(
                    "STARTTLS not offered, and the channel requires verified TLS".into(),
                ));
            }
            return Ok(ready(c, exts, None));
        }
        let (code, text) = c.cmd("STARTTLS").await?;
        if code != 220 {
            return Err(HostFailure(format!("STARTTLS {code} {text}")));
        }
        let name = rustls::pki_types::ServerName::try_from(host.trim_end_matches('.').to_string())
            .unwrap_or(rustls::pki_types::ServerName::IpAddress(ip.into()));
        // Whatever the server sent after its 220 is dropped with the buffer (RFC 3207 §6).
        let connector = verify.unwrap_or(&self.tls);
        let tls = tokio::time::timeout(self.io_timeout, connector.connect(name, c.io.into_inner()))
            .await
            .map_err(|_| HostFailure("TLS handshake timed out".into()))?
            .map_err(|e| HostFailure(format!("TLS handshake: {e}")))?;
        let mut t = Conn {
            io: BufReader::new(Box::new(tls) as Box<dyn Io>),
            timeout: self.io_timeout,
            closing: false,
        };
        let (code, text) = t.cmd(&format!("EHLO {}", self.hostname)).await?;
        if code != 250 {
            return Err(HostFailure(format!("EHLO after STARTTLS {code} {text}")));
        }
        let exts = extensions(&text);
        Ok(ready(t, exts, verify.map(|_| host.to_string())))
    }
}
