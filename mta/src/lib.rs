//! # halyard-mta — message transfer
//!
//! The source follows a message's path, inbound → queue → outbound:
//!
//! - `inbound/`, the SMTP server: RFC 5321 with PIPELINING, 8BITMIME, SIZE,
//!   ENHANCEDSTATUSCODES, SMTPUTF8, DSN parameters and CHUNKING/BDAT; submission with AUTH
//!   and STARTTLS; LMTP (RFC 2033) for two-tier delivery; recipients checked against the
//!   directory at RCPT time (unknown local user 550 5.1.1, directory down 451 4.4.3, other
//!   domains 554 5.7.1 unless the client is trusted or authenticated); a `Received:`
//!   header; `250` after the `Enqueue` entry is committed on a majority — proposed here on
//!   the group's master, or handed to the master through [`Forward`] on any other member;
//!   DNSBL and sender-domain checks (their lookups through the relay's resolver).
//!   `inbound/mod.rs` is the session (its state, the read loop, the command dispatch);
//!   `auth.rs` STARTTLS and AUTH, `envelope.rs` MAIL and RCPT, `data.rs` DATA, BDAT and
//!   the commit to the queue;
//! - rewrite rules and channels ([`rewrite`]), shared by both sides: RCPT picks each
//!   recipient's channel, the job controller runs it;
//! - `queue/`, the job controller ([`jobs`]): on the master of each group, runs the channels
//!   over due queue entries with idempotent proposals, retries with back-off, gives up after
//!   the queue lifetime, queues DSNs ([`dsn`]: failures, successes when asked, delays);
//! - `outbound/`, the relay ([`relay`]): MX resolution, an SMTP client with opportunistic
//!   STARTTLS and connection reuse, an LMTP client.
//!
//! Here: the listeners ([`MtaServer`]), what the MTA needs from the node ([`Backend`],
//! [`Forward`]) and the state its sessions share. `jobs`, `dsn` and `relay` are re-exported
//! at the crate root, so their public paths (`halyard_mta::relay::...`) are those they had
//! before this layout.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod outbound;
mod queue;
pub mod rewrite;

pub use outbound::relay;
pub use queue::{dsn, jobs};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halyard_directory::{Directory, UserRecord};
use halyard_net::{Accepted, Listener, ListenerSet, Protocol, Refused, ServeFuture};
use halyard_raft_store::Group;
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
    /// Group of users whose directory entry names none, and of relayed mail's queue
    /// entries (the node's `default_group`, the same IMAP and POP3 read from).
    pub default_group: Option<String>,
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
    pub tls: Option<halyard_net::Tls>,
    /// The relay channel; its resolver also serves DNSBL and sender-domain checks.
    pub relay: Arc<relay::Relay>,
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
        shared.backend.default_group.as_deref(),
        shared.backend.groups.keys(),
    )
}

/// The resource group holding the queue entries of relayed mail: the configured default,
/// else the only resource group this node runs.
pub(crate) fn relay_group(shared: &Shared) -> Option<String> {
    halyard_raft_store::home_group(
        None,
        shared.backend.default_group.as_deref(),
        shared.backend.groups.keys(),
    )
}

/// The running listeners and job controllers; [`MtaServer::shutdown`] stops them.
pub struct MtaServer {
    /// The SMTP, submission and LMTP listeners as one service, to bind them on other
    /// addresses (floating addresses) too.
    pub service: halyard_net::Service,
    listeners: ListenerSet,
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
            (Some(c), Some(k)) => Some(
                halyard_net::Tls::load_with_client_ca("mta", c, k, cfg.tls_client_ca.as_deref())
                    .map_err(|e| format!("{e:#}"))?,
            ),
            _ => None,
        };
        let relay = Arc::new(relay::Relay::new(&cfg)?);
        let _ = relay.handover.set(outbound::handover::Handover {
            groups: backend.groups.clone(),
            forward: backend.forward.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            backend,
            cfg: cfg.clone(),
            trusted,
            tls: tls.clone(),
            relay: relay.clone(),
            live: Default::default(),
            counter: AtomicU64::new(0),
        });
        let admission = halyard_net::Admission::new(halyard_net::Limits {
            max_connections: cfg.max_connections,
            max_connections_per_ip: cfg.max_connections_per_ip,
            max_connection_rate_per_ip: cfg.max_connection_rate_per_ip,
            rules: cfg.access_rules().map_err(|(k, m)| format!("{k}: {m}"))?,
        });
        let service = halyard_net::Service::new(
            "mta",
            listeners(&cfg, &shared),
            admission,
            tls,
            std::time::Duration::from_secs(cfg.command_timeout_secs),
        );
        let listeners = service.start().await?;
        let mut tasks = Vec::new();
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
                halyard_net::supervise::supervise(
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
            smtp_addr: listeners.addr("mta.smtp_listen"),
            submission_addr: listeners.addr("mta.submission_listen"),
            submissions_addr: listeners.addr("mta.submissions_listen"),
            service,
            listeners,
            stop,
            tasks,
            shared: shared.clone(),
        })
    }

    /// Stops accepting, stops the job controllers, and gives sessions `drain_secs` to finish
    /// the transaction in progress (sessions waiting for a command get 421 at once).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.listeners.stop(std::time::Duration::ZERO).await;
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

/// SMTP, submission or LMTP on an admitted connection.
struct Smtp {
    shared: Arc<Shared>,
    kind: Kind,
}

impl Protocol for Smtp {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Smtp => "smtp",
            Kind::Submission => "submission",
            Kind::Lmtp => "lmtp",
        }
    }

    fn refusal(&self, why: Refused, peer: SocketAddr) -> Vec<u8> {
        match why {
            Refused::Denied => {
                tracing::info!(peer = %peer, "client refused: client_access");
                format!("554 5.7.1 [{}] is not allowed to connect\r\n", peer.ip()).into_bytes()
            }
            Refused::Rate => {
                b"421 4.7.0 too many connections from your address, slow down\r\n".to_vec()
            }
            Refused::Total => b"421 4.7.0 too many connections, try again later\r\n".to_vec(),
            Refused::PerIp => b"421 4.7.0 too many connections from your address\r\n".to_vec(),
        }
    }

    fn serve(&self, conn: Accepted) -> ServeFuture {
        let (shared, kind) = (self.shared.clone(), self.kind);
        Box::pin(async move {
            shared.live.fetch_add(1, Ordering::Relaxed);
            let live = shared.clone();
            let peer = conn.peer;
            let mut s = inbound::Session::new(shared, conn.stream, peer, kind, conn.stop);
            if let Err(e) = s.run().await {
                tracing::debug!(peer = %peer, error = %e, "SMTP session ended");
            }
            s.close().await;
            live.live.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

/// The configured listeners: (config key, address, protocol, implicit TLS).
fn listeners(cfg: &MtaConfig, shared: &Arc<Shared>) -> Vec<Listener> {
    // Validated at start.
    let rules = |kind| {
        let r = match kind {
            Kind::Smtp => &cfg.smtp_client_access,
            Kind::Submission => &cfg.submission_client_access,
            Kind::Lmtp => &cfg.lmtp_client_access,
        };
        Arc::new(halyard_net::admission::parse_rules(r).unwrap_or_default())
    };
    let l = |key, addr: &Option<String>, kind, implicit_tls| Listener {
        key,
        addr: addr.clone(),
        implicit_tls,
        protocol: Arc::new(Smtp {
            shared: shared.clone(),
            kind,
        }),
        rules: rules(kind),
    };
    vec![
        l("mta.smtp_listen", &cfg.smtp_listen, Kind::Smtp, false),
        l(
            "mta.submission_listen",
            &cfg.submission_listen,
            Kind::Submission,
            false,
        ),
        l("mta.lmtp_listen", &cfg.lmtp_listen, Kind::Lmtp, false),
        l(
            "mta.submissions_listen",
            &cfg.submissions_listen,
            Kind::Submission,
            true,
        ),
    ]
}
