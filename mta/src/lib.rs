//! # halyard-mta — message transfer
//!
//! - the SMTP server ([`session`]): RFC 5321 with PIPELINING, 8BITMIME, SIZE,
//!   ENHANCEDSTATUSCODES, SMTPUTF8, DSN parameters and CHUNKING/BDAT; submission with AUTH
//!   and STARTTLS; LMTP (RFC 2033) for two-tier delivery; recipients checked against the
//!   directory at RCPT time (unknown local user 550 5.1.1, directory down 451 4.4.3, other
//!   domains 554 5.7.1 unless the client is trusted or authenticated); a `Received:`
//!   header; `250` after the `Enqueue` entry is committed on a majority — proposed here on
//!   the group's master, or handed to the master through [`Forward`] on any other member;
//! - rewrite rules and channels ([`rewrite`]), DNSBL and sender-domain checks;
//! - the job controller ([`jobs`]): on the master of each group, runs the channels over due
//!   queue entries with idempotent proposals, retries with back-off, gives up after the
//!   queue lifetime, queues DSNs ([`dsn`]: failures, successes when asked, delays);
//! - the relay ([`relay`]): MX resolution, an SMTP client with opportunistic STARTTLS and
//!   connection reuse, an LMTP client.

pub mod config;
pub mod dsn;
pub mod jobs;
pub mod relay;
pub mod rewrite;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halyard_directory::{Directory, UserRecord};
use halyard_raft_store::Group;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::MtaConfig;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SMTP from anyone (MX).
    Smtp,
    /// Message submission: AUTH before MAIL.
    Submission,
    /// LMTP (RFC 2033) from trusted networks, local recipients only.
    Lmtp,
}

/// What the MTA needs from the node.
pub struct Backend {
    /// Groups this node runs, by name.
    pub groups: HashMap<String, Group>,
    pub directory: Arc<dyn Directory>,
    pub node_id: u64,
    /// Hands a proposal to a group's leader when this node is not it, so that SMTP, LMTP and
    /// submission are served by every member (see [`Forward`]); `None`: such mail gets 451.
    pub forward: Option<Arc<dyn Forward>>,
}

/// The outcome of a proposal forwarded to the leader: its reply once the entry is
/// committed, or why not — `Unavailable` when the leader could not be reached (nothing was
/// proposed), `Unknown` when its answer never came back.
pub type Forwarded = Result<halyard_raft_store::Reply, halyard_raft_store::ProposeError>;

/// Proposal forwarding to a group's leader at `leader_addr` (its cluster RPC address), over
/// the node's authenticated cluster connection. A follower that accepted a message sends
/// the `Enqueue` there and answers `250` only when the leader reports it committed, so the
/// promise holds wherever the client connected.
pub trait Forward: Send + Sync {
    fn propose(
        &self,
        leader_addr: String,
        group: String,
        cmd: halyard_raft_store::Command,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Forwarded> + Send + '_>>;
}

pub(crate) struct Shared {
    pub backend: Backend,
    pub cfg: MtaConfig,
    pub trusted: Vec<config::Network>,
    /// `client_access` rules.
    pub access: Vec<(bool, config::Network)>,
    pub tls: Option<halyard_access::tls::Tls>,
    /// The relay channel; its resolver also serves DNSBL and sender-domain checks.
    pub relay: Arc<relay::Relay>,
    conns: std::sync::Mutex<(usize, HashMap<std::net::IpAddr, usize>)>,
    /// Recent connection times per client address (connection rate limit).
    rates:
        std::sync::Mutex<HashMap<std::net::IpAddr, std::collections::VecDeque<std::time::Instant>>>,
    /// Sessions alive, for the drain at shutdown.
    pub(crate) live: std::sync::atomic::AtomicUsize,
    counter: AtomicU64,
}

impl Shared {
    /// A queue id unique in the cluster: node id, milliseconds, and a per-process counter.
    pub(crate) fn next_queue_id(&self) -> String {
        let ms = chrono::Utc::now().timestamp_millis() as u64;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFFF;
        format!("{:X}{ms:011X}{n:04X}", self.backend.node_id)
    }
}

/// The resource group holding a user's mailboxes: the directory's mailHost, else the
/// configured default, else the only resource group this node runs.
pub(crate) fn group_of(shared: &Shared, user: &UserRecord) -> Option<String> {
    halyard_raft_store::home_group(
        user.mail_host.as_deref(),
        shared.cfg.default_group.as_deref(),
        shared.backend.groups.keys(),
    )
}

/// The resource group holding the queue entries of relayed mail: the configured default,
/// else the only resource group this node runs.
pub(crate) fn relay_group(shared: &Shared) -> Option<String> {
    halyard_raft_store::home_group(
        None,
        shared.cfg.default_group.as_deref(),
        shared.backend.groups.keys(),
    )
}

/// The running listeners and job controllers; [`MtaServer::shutdown`] stops them.
pub struct MtaServer {
    /// Binds the same listeners on other addresses (floating addresses).
    pub binder: Binder,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    pub smtp_addr: Option<SocketAddr>,
    pub submission_addr: Option<SocketAddr>,
    pub submissions_addr: Option<SocketAddr>,
}

impl MtaServer {
    /// Binds the configured listeners (a port in use is a clear error) and starts one job
    /// controller per resource group.
    pub async fn start(cfg: MtaConfig, backend: Backend) -> Result<MtaServer, String> {
        let trusted = cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => {
                Some(halyard_access::tls::Tls::load("mta", c, k).map_err(|e| format!("{e:#}"))?)
            }
            _ => None,
        };
        let relay = Arc::new(relay::Relay::new(&cfg)?);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            backend,
            cfg: cfg.clone(),
            trusted,
            access: cfg.access_rules().map_err(|(k, m)| format!("{k}: {m}"))?,
            tls,
            relay: relay.clone(),
            conns: Default::default(),
            rates: Default::default(),
            live: Default::default(),
            counter: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        let mut bound = HashMap::new();
        for (key, addr, kind, implicit) in listeners(&cfg) {
            let Some(addr) = addr else { continue };
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{key} {addr}: cannot bind: {e}"))?;
            bound.insert(key, l.local_addr().map_err(|e| e.to_string())?);
            tasks.push(tokio::spawn(accept_loop(
                l,
                shared.clone(),
                kind,
                implicit,
                stop_rx.clone(),
                None,
            )));
        }
        if let Some(t) = &shared.tls {
            tasks.push(tokio::spawn(t.clone().reload_on_sighup(stop_rx.clone())));
        }
        for (name, group) in &shared.backend.groups {
            if name == "meta" {
                continue;
            }
            let (name, group, node_id, directory, relay, cfg, stop) = (
                name.clone(),
                group.clone(),
                shared.backend.node_id,
                shared.backend.directory.clone(),
                relay.clone(),
                cfg.clone(),
                stop_rx.clone(),
            );
            tasks.push(tokio::spawn(async move {
                halyard_access::supervise::supervise(
                    format!("job controller of {name}"),
                    stop.clone(),
                    move || {
                        jobs::run(
                            name.clone(),
                            group.clone(),
                            node_id,
                            directory.clone(),
                            relay.clone(),
                            cfg.clone(),
                            stop.clone(),
                        )
                    },
                )
                .await;
            }));
        }
        tracing::info!(smtp = ?cfg.smtp_listen, submission = ?cfg.submission_listen, "MTA started");
        Ok(MtaServer {
            binder: Binder {
                shared: shared.clone(),
            },
            stop,
            tasks,
            shared: shared.clone(),
            smtp_addr: bound.get("mta.smtp_listen").copied(),
            submission_addr: bound.get("mta.submission_listen").copied(),
            submissions_addr: bound.get("mta.submissions_listen").copied(),
        })
    }

    /// Stops accepting, stops the job controllers, and gives sessions `drain_secs` to finish
    /// the transaction in progress (sessions waiting for a command get 421 at once).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_secs(self.shared.cfg.drain_secs);
        while self.shared.live.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let left = self.shared.live.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                sessions = left,
                "SMTP sessions still open after the drain period"
            );
        }
    }
}

/// Admits a connection under the total and per-address limits; the guard releases it.
fn admit(shared: &Arc<Shared>, ip: std::net::IpAddr) -> Result<ConnGuard, &'static str> {
    let rate = shared.cfg.max_connection_rate_per_ip;
    if rate > 0 {
        let now = std::time::Instant::now();
        let mut r = shared.rates.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() > 100_000 {
            // Bounded memory under a flood of addresses: forget the history.
            r.clear();
        }
        let times = r.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > std::time::Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= rate as usize {
            return Err("421 4.7.0 too many connections from your address, slow down\r\n");
        }
        times.push_back(now);
    }
    let mut c = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    if c.0 >= shared.cfg.max_connections {
        return Err("421 4.7.0 too many connections, try again later\r\n");
    }
    let n = c.1.entry(ip).or_insert(0);
    if *n >= shared.cfg.max_connections_per_ip {
        return Err("421 4.7.0 too many connections from your address\r\n");
    }
    *n += 1;
    c.0 += 1;
    Ok(ConnGuard {
        shared: shared.clone(),
        ip,
    })
}

struct ConnGuard {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    kind: Kind,
    implicit_tls: bool,
    mut stop: watch::Receiver<bool>,
    sessions: Option<Arc<halyard_access::stream::Sessions>>,
) {
    use tokio::io::AsyncWriteExt;
    while let Some((mut tcp, peer)) =
        halyard_access::stream::next_connection(&listener, &mut stop, "smtp").await
    {
        let shared = shared.clone();
        let session_stop = stop.clone();
        let task = tokio::spawn(async move {
            let guard = match admit(&shared, peer.ip()) {
                Ok(g) => g,
                Err(msg) => {
                    let _ = tcp.write_all(msg.as_bytes()).await;
                    return;
                }
            };
            let mut stream = halyard_access::stream::Stream::Plain(tcp);
            if implicit_tls {
                let Some(tls) = shared.tls.clone() else {
                    return;
                };
                let t = std::time::Duration::from_secs(shared.cfg.command_timeout_secs);
                match tokio::time::timeout(t, stream.start_tls(tls.acceptor())).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            shared.live.fetch_add(1, Ordering::Relaxed);
            let live = shared.clone();
            let mut s = session::Session::new(shared, stream, peer, kind, session_stop);
            if let Err(e) = s.run().await {
                tracing::debug!(peer = %peer, error = %e, "SMTP session ended");
            }
            s.close().await;
            live.live.fetch_sub(1, Ordering::Relaxed);
            drop(guard);
        });
        if let Some(s) = &sessions {
            s.add(task.abort_handle());
        }
    }
}

pub use halyard_access::stream::ListenerSet;

/// Binds listeners on other addresses for a running [`MtaServer`].
#[derive(Clone)]
pub struct Binder {
    shared: Arc<Shared>,
}

impl Binder {
    /// Binds every configured SMTP/submission/LMTP listener's port on `ip`.
    pub async fn bind_on(&self, ip: std::net::IpAddr) -> Result<ListenerSet, String> {
        let shared = self.shared.clone();
        ListenerSet::bind_all(
            ip,
            listeners(&self.shared.cfg)
                .map(|(key, addr, kind, implicit)| (key, addr.clone(), (kind, implicit))),
            |l, (kind, implicit), stop, sessions| {
                tokio::spawn(accept_loop(
                    l,
                    shared.clone(),
                    kind,
                    implicit,
                    stop,
                    Some(sessions),
                ))
            },
        )
        .await
    }
}

/// The configured listeners: (config key, address, protocol, implicit TLS).
fn listeners(cfg: &MtaConfig) -> [(&'static str, &Option<String>, Kind, bool); 4] {
    [
        ("mta.smtp_listen", &cfg.smtp_listen, Kind::Smtp, false),
        (
            "mta.submission_listen",
            &cfg.submission_listen,
            Kind::Submission,
            false,
        ),
        ("mta.lmtp_listen", &cfg.lmtp_listen, Kind::Lmtp, false),
        (
            "mta.submissions_listen",
            &cfg.submissions_listen,
            Kind::Submission,
            true,
        ),
    ]
}
