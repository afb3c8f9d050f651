//! The SMTP relay channel: MX resolution (RFC 5321 §5.1) and an SMTP client.
//!
//! - MX records in preference order; no MX but the domain exists → the domain itself
//!   (implicit MX); a null MX (RFC 7505) or a non-existent domain fails permanently; a DNS
//!   error is temporary.
//! - Each MX host's addresses are tried in turn; a host that cannot be reached, greets with
//!   4xx or drops the connection sends us to the next one.
//! - Opportunistic STARTTLS (RFC 3207/7435): used when offered, certificates not verified
//!   (without DANE or MTA-STS there is nothing to verify them against); a failed handshake
//!   is a temporary failure of that host.
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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_raft_store::RecipientSpec;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::MtaConfig;

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Try again later.
    Temporary(String),
    /// Give up: (reply code, text).
    Permanent(u16, String),
}

/// How long a connection waits, idle, for another transaction to the same server.
pub const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// Transactions one connection carries at most.
pub const MAX_USES: u32 = 100;
/// Age after which a connection is not reused.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Idle connections kept per server address.
pub const MAX_IDLE_PER_DESTINATION: usize = 4;

/// A byte stream to a server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open SMTP connection after EHLO (and STARTTLS), between transactions.
struct Open {
    conn: Conn<Box<dyn Io>>,
    host: String,
    ip: IpAddr,
    /// Extensions of the last EHLO reply (upper case).
    exts: Vec<String>,
    opened: Instant,
    uses: u32,
}

/// Idle connections by server address, each with the id its closing timer knows it by.
type Pool = Arc<std::sync::Mutex<HashMap<SocketAddr, Vec<(u64, Open)>>>>;

pub struct Relay {
    resolver: TokioResolver,
    idle: Pool,
    next_idle_id: std::sync::atomic::AtomicU64,
    port: u16,
    hostname: String,
    connect_timeout: Duration,
    io_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
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

/// A connection-level failure: try the next host.
struct HostFailure(String);

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
        })
    }

    /// Whether `ip` is listed in DNS blocklist `zone` (an A record in 127.0.0.0/8 for the
    /// reversed address); `None` when the lookup failed.
    pub async fn listed(&self, ip: IpAddr, zone: &str) -> Option<bool> {
        let name = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!(
                    "{}.{}.{}.{}.{}.",
                    o[3],
                    o[2],
                    o[1],
                    o[0],
                    zone.trim_end_matches('.')
                )
            }
            IpAddr::V6(v6) => {
                let mut n = String::new();
                for b in v6.octets().iter().rev() {
                    n.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
                }
                format!("{n}{}.", zone.trim_end_matches('.'))
            }
        };
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(l) => Some(l.iter().any(|a| match a {
                IpAddr::V4(v4) => v4.octets()[0] == 127,
                IpAddr::V6(_) => false,
            })),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Some(false),
            Err(_) => None,
        }
    }

    /// Whether `domain` exists as a mail domain (MX, or an address record): `Err` when the
    /// DNS cannot tell now.
    pub async fn domain_exists(&self, domain: &str) -> Result<bool, String> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) if !l.answers().is_empty() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.is_nx_domain() => return Ok(false),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(e.to_string()),
        }
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(l) => Ok(l.iter().next().is_some()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Mail exchangers of `domain`, most preferred first.
    async fn exchangers(&self, domain: &str) -> Result<Vec<String>, Outcome> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => {
                let mut mx: Vec<(u16, String)> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
                    return Err(Outcome::Permanent(
                        556,
                        format!("5.1.10 {domain} accepts no mail (null MX)"),
                    ));
                }
                if mx.is_empty() {
                    return Ok(vec![domain.to_string()]);
                }
                mx.sort();
                Ok(mx.into_iter().map(|(_, h)| h).collect())
            }
            Err(e) if e.is_nx_domain() => Err(Outcome::Permanent(
                550,
                format!("5.1.2 domain {domain} does not exist"),
            )),
            Err(e) if e.is_no_records_found() => Ok(vec![domain.to_string()]),
            Err(e) => Err(Outcome::Temporary(format!(
                "4.4.3 DNS lookup of {domain} failed: {e}"
            ))),
        }
    }

    /// Delivers `out` to `domain` (its MX hosts, or `smarthost` when given as
    /// `host:port`); one outcome per recipient, in order.
    pub async fn send(
        &self,
        domain: &str,
        smarthost: Option<&str>,
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
                match self.deliver_to(&host, SocketAddr::new(ip, port), out).await {
                    Ok(o) => return o,
                    Err(HostFailure(why)) => last = format!("[{ip}]: {why}"),
                }
            }
            return all(Outcome::Temporary(format!("4.4.1 {h}: {last}")));
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
                    .deliver_to(&host, SocketAddr::new(ip, self.port), out)
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
        out: &Outgoing<'_>,
    ) -> Result<Vec<Outcome>, HostFailure> {
        for _ in 0..MAX_IDLE_PER_DESTINATION {
            let Some(mut open) = self.take_idle(sa) else {
                break;
            };
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
        let open = self.open(tcp, host, sa.ip()).await?;
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

    fn take_idle(&self, sa: SocketAddr) -> Option<Open> {
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.get_mut(&sa)?;
        let open = list.pop().map(|(_, o)| o);
        if list.is_empty() {
            pool.remove(&sa);
        }
        open
    }

    /// Keeps `open` for the next transaction to `sa`, or closes it (server said 421, used
    /// or aged out, enough idle already); an idle connection is closed after [`IDLE_LIMIT`].
    fn put_idle(&self, sa: SocketAddr, open: Open) {
        let keep = !open.conn.closing && open.uses < MAX_USES && open.opened.elapsed() < MAX_AGE;
        let id = self
            .next_idle_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refused = {
            let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(sa).or_default();
            if keep && list.len() < MAX_IDLE_PER_DESTINATION {
                list.push((id, open));
                None
            } else {
                Some(open)
            }
        };
        if let Some(open) = refused {
            tokio::spawn(quit(open));
            return;
        }
        let pool = self.idle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_LIMIT).await;
            let expired = {
                let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                let list = pool.get_mut(&sa);
                let found = list.and_then(|l| {
                    let i = l.iter().position(|(i, _)| *i == id)?;
                    Some(l.remove(i).1)
                });
                if pool.get(&sa).is_some_and(|l| l.is_empty()) {
                    pool.remove(&sa);
                }
                found
            };
            if let Some(open) = expired {
                quit(open).await;
            }
        });
    }

    /// The host name, port and addresses of `host:port` (a name or an address).
    async fn addresses(&self, hostport: &str) -> Result<(String, u16, Vec<IpAddr>), String> {
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| {
                p.parse::<u16>()
                    .ok()
                    .map(|p| (h.trim_matches(['[', ']']), p))
            })
            .ok_or_else(|| format!("{hostport:?} is not host:port"))?;
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup_ip(format!("{}.", host.trim_end_matches('.')).as_str())
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .collect(),
        };
        Ok((host.to_string(), port, ips))
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
    async fn open(&self, tcp: TcpStream, host: &str, ip: IpAddr) -> Result<Open, HostFailure> {
        let mut c = Conn {
            io: BufReader::new(Box::new(tcp) as Box<dyn Io>),
            timeout: self.io_timeout,
            closing: false,
        };
        let ready = |conn, exts| Open {
            conn,
            host: host.to_string(),
            ip,
            exts,
            opened: Instant::now(),
            uses: 0,
        };
        let (code, text) = c.reply().await?;
        if code != 220 {
            return Err(HostFailure(format!("greeting {code} {text}")));
        }
        let ehlo = c.cmd(&format!("EHLO {}", self.hostname)).await?;
        if ehlo.0 != 250 {
            // An SMTP-only server: HELO, no extensions.
            let (code, text) = c.cmd(&format!("HELO {}", self.hostname)).await?;
            if code != 250 {
                return Err(HostFailure(format!("HELO {code} {text}")));
            }
            return Ok(ready(c, vec![]));
        }
        let extensions = |text: &str| -> Vec<String> {
            text.lines()
                .skip(1)
                .map(|l| l.to_ascii_uppercase())
                .collect()
        };
        let exts = extensions(&ehlo.1);
        if !exts.iter().any(|e| e == "STARTTLS") {
            return Ok(ready(c, exts));
        }
        let (code, text) = c.cmd("STARTTLS").await?;
        if code != 220 {
            return Err(HostFailure(format!("STARTTLS {code} {text}")));
        }
        let name = rustls::pki_types::ServerName::try_from(host.trim_end_matches('.').to_string())
            .unwrap_or(rustls::pki_types::ServerName::IpAddress(ip.into()));
        // Whatever the server sent after its 220 is dropped with the buffer (RFC 3207 §6).
        let tls = tokio::time::timeout(self.io_timeout, self.tls.connect(name, c.io.into_inner()))
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
        Ok(ready(t, exts))
    }
}

/// Says goodbye on a connection no longer wanted (briefly: it is closed either way).
async fn quit(mut open: Open) {
    let _ = tokio::time::timeout(Duration::from_secs(2), open.conn.cmd("QUIT")).await;
}

struct Conn<S> {
    io: BufReader<S>,
    timeout: Duration,
    /// The server said 421: it is closing the connection, which must not be reused.
    closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// One reply (all its lines): code and text, lines joined with '\n'.
    async fn reply(&mut self) -> Result<(u16, String), HostFailure> {
        let mut text = String::new();
        for _ in 0..200 {
            let mut line = Vec::new();
            let n = tokio::time::timeout(self.timeout, async {
                let mut limited = (&mut self.io).take(4096);
                limited.read_until(b'\n', &mut line).await
            })
            .await
            .map_err(|_| HostFailure("timed out waiting for a reply".into()))?
            .map_err(|e| HostFailure(e.to_string()))?;
            if n == 0 {
                return Err(HostFailure("connection closed".into()));
            }
            let l = String::from_utf8_lossy(&line).trim_end().to_string();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| HostFailure(format!("bad reply {l:?}")))?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(l.get(4..).unwrap_or(""));
            if l.as_bytes().get(3) != Some(&b'-') {
                self.closing |= code == 421;
                return Ok((code, text));
            }
        }
        Err(HostFailure("reply too long".into()))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), HostFailure> {
        tokio::time::timeout(self.timeout, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| HostFailure("timed out sending".into()))?
            .map_err(|e| HostFailure(e.to_string()))
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, String), HostFailure> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    async fn lmtp_transaction(
        &mut self,
        me: &str,
        host: &str,
        ip: IpAddr,
        out: &Outgoing<'_>,
    ) -> Result<Vec<Outcome>, HostFailure> {
        let (code, text) = self.reply().await?;
        if code != 220 {
            return Err(HostFailure(format!("greeting {code} {text}")));
        }
        let (code, text) = self.cmd(&format!("LHLO {me}")).await?;
        if code != 250 {
            return Err(HostFailure(format!("LHLO {code} {text}")));
        }
        let classify = |code: u16, text: &str| -> Outcome {
            match code {
                200..=299 => Outcome::Delivered(format!("LMTP {host} [{ip}]: {code} {text}")),
                400..=499 => Outcome::Temporary(format!("{host} [{ip}] said: {code} {text}")),
                _ => Outcome::Permanent(code, format!("{host} [{ip}] said: {code} {text}")),
            }
        };
        let (code, text) = self.cmd(&format!("MAIL FROM:<{}>", out.from)).await?;
        if code != 250 {
            let o = classify(code, &text);
            return Ok(vec![o; out.rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        for r in &out.rcpts {
            let (code, text) = self.cmd(&format!("RCPT TO:<{}>", r.address)).await?;
            outcomes.push((!(200..300).contains(&code)).then(|| classify(code, &text)));
        }
        let accepted = outcomes.iter().filter(|o| o.is_none()).count();
        if accepted == 0 {
            let _ = self.cmd("QUIT").await;
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let (code, text) = self.cmd("DATA").await?;
        if code != 354 {
            let o = classify(code, &text);
            return Ok(outcomes
                .into_iter()
                .map(|x| x.unwrap_or_else(|| o.clone()))
                .collect());
        }
        self.send(&dot_stuff(out.body)).await?;
        // One reply per accepted recipient, in RCPT order.
        let mut finals = Vec::new();
        for _ in 0..accepted {
            let (code, text) = self.reply().await?;
            finals.push(classify(code, &text));
        }
        let _ = self.cmd("QUIT").await;
        let mut finals = finals.into_iter();
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    finals
                        .next()
                        .unwrap_or(Outcome::Temporary("4.4.2 no reply".into()))
                })
            })
            .collect())
    }

    async fn transaction(
        &mut self,
        host: &str,
        ip: IpAddr,
        out: &Outgoing<'_>,
        exts: &[String],
    ) -> Result<Vec<Outcome>, HostFailure> {
        let has = |e: &str| {
            exts.iter()
                .any(|x| x == e || x.starts_with(&format!("{e} ")))
        };
        let dsn = has("DSN");
        let mut mail = format!("MAIL FROM:<{}>", out.from);
        if has("SIZE") {
            mail.push_str(&format!(" SIZE={}", out.body.len()));
        }
        if has("8BITMIME") && out.body.iter().any(|b| *b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        if has("SMTPUTF8") && out.params.contains_key("SMTPUTF8") {
            mail.push_str(" SMTPUTF8");
        }
        if dsn {
            if let Some(r) = out.params.get("RET") {
                mail.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = out.params.get("ENVID") {
                mail.push_str(&format!(" ENVID={e}"));
            }
        }
        let (code, text) = self.cmd(&mail).await?;
        let classify = |code: u16, text: &str| -> Outcome {
            match code {
                200..=299 => Outcome::Delivered(format!("relayed to {host} [{ip}]: {code} {text}")),
                400..=499 => Outcome::Temporary(format!("{host} [{ip}] said: {code} {text}")),
                _ => Outcome::Permanent(code, format!("{host} [{ip}] said: {code} {text}")),
            }
        };
        // The connection is left open after the transaction, whatever its outcome: the
        // next user resets it first, or it is closed with QUIT.
        if code != 250 {
            return Ok(vec![classify(code, &text); out.rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        for r in &out.rcpts {
            let mut rcpt = format!("RCPT TO:<{}>", r.address);
            if dsn {
                if !r.notify.is_empty() {
                    rcpt.push_str(&format!(" NOTIFY={}", r.notify.join(",")));
                }
                if let Some(o) = &r.orcpt {
                    rcpt.push_str(&format!(" ORCPT={o}"));
                }
            }
            let (code, text) = self.cmd(&rcpt).await?;
            outcomes.push(if (200..300).contains(&code) {
                None
            } else {
                Some(classify(code, &text))
            });
        }
        if outcomes.iter().all(Option::is_some) {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let (code, text) = self.cmd("DATA").await?;
        let fin = if code == 354 {
            self.send(&dot_stuff(out.body)).await?;
            let (code, text) = self.reply().await?;
            classify(code, &text)
        } else {
            classify(code, &text)
        };
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| fin.clone()))
            .collect())
    }
}

/// The message with leading dots doubled and the terminating `.` line (RFC 5321 §4.5.2).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
    }
}
