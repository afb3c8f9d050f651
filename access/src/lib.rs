//! # halyard-access — IMAP4rev1 and POP3 over the replicated store
//!
//! Sessions authenticate through the [`halyard_directory::Directory`] (LDAP or the embedded
//! directory), find the user's resource group (the directory's `mailHost`, else
//! the node's `default_group`), and serve it from this node when it leads that group. Every write
//! (APPEND, STORE, EXPUNGE, COPY, MOVE, CREATE, RENAME, DELETE, SUBSCRIBE) is a Raft proposal:
//! the tagged OK, APPENDUID and COPYUID are sent only after the entry is committed on a majority
//! and applied. SELECT and EXAMINE confirm leadership with a quorum (`ensure_linearizable`)
//! before reading; other sessions' changes reach a session through the group's change feed.
//!
//! **Multiplexor** (the seed's MMP): a session that reaches a node which is not the master of
//! the user's group authenticates there, then is handed to the master as that authenticated
//! user over the cluster's mutual-TLS RPC ([`RelayHop`], [`serve_relayed`]; see [`proxy`]):
//! no password and no message crosses the cluster network in clear, and logins through any
//! node work with `require_tls_for_login`. When the master changes, sessions served by the
//! old master end with `* BYE` (IMAP) or are closed (POP3), and clients reconnect.
//!
//! Commands are parsed and responses serialised with `imap-codec` (2.0 alpha: 1.0 lacks ID,
//! NAMESPACE, UID EXPUNGE and CONDSTORE).

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod imap;
pub mod limits;
pub mod mutf7;
pub mod pop3;
pub mod proxy;
pub(crate) mod sasl;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use halyard_directory::Directory;
use halyard_net::{Accepted, Admission, Listener, ListenerSet, Protocol, Refused, ServeFuture};
use halyard_raft_store::Group;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::AccessConfig;

/// What sessions need from the node.
pub struct Backend {
    /// Groups this node runs, by name.
    pub groups: HashMap<String, Group>,
    pub directory: Arc<dyn Directory>,
    /// Group of users whose directory entry names none (the node's `default_group`, the
    /// same the MTA delivers into).
    pub default_group: Option<String>,
    pub node_id: u64,
    /// The multiplexor's hop to other nodes; `None`: sessions of users whose master is
    /// another node are refused (a node without cluster RPC, in tests).
    pub relay: Option<Arc<dyn RelayHop>>,
}

/// Which protocol a relayed session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProtocol {
    Imap,
    Pop3,
}

impl RelayProtocol {
    pub fn name(self) -> &'static str {
        match self {
            RelayProtocol::Imap => "imap",
            RelayProtocol::Pop3 => "pop3",
        }
    }

    pub fn parse(s: &str) -> Option<RelayProtocol> {
        match s {
            "imap" => Some(RelayProtocol::Imap),
            "pop3" => Some(RelayProtocol::Pop3),
            _ => None,
        }
    }
}

/// What the accepting node tells the master about a session it relays (see [`proxy`]).
#[derive(Debug, Clone)]
pub struct RelayOpen {
    pub protocol: RelayProtocol,
    /// The user the accepting node authenticated.
    pub principal: halyard_directory::Principal,
    /// The client's address as the accepting node saw it.
    pub client: SocketAddr,
    /// The client reached the accepting node over TLS.
    pub client_tls: bool,
    pub via_node: u64,
}

/// The multiplexor's way to another node, implemented by the node over the cluster's
/// mutual-TLS RPC: opens a relayed session on the node at cluster address `addr` and returns
/// this side of a byte stream to it.
pub trait RelayHop: Send + Sync + 'static {
    fn open(
        &self,
        addr: String,
        open: RelayOpen,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tokio::io::DuplexStream, String>> + Send + '_>,
    >;
}

/// Serves a session another node relays to this one (the master of the user's group):
/// `io` carries the client's bytes, already authenticated there as `open.principal`.
pub async fn serve_relayed(shared: Arc<Shared>, io: tokio::io::DuplexStream, open: RelayOpen) {
    let write_timeout = Duration::from_secs(shared.cfg.write_timeout_secs);
    let stream = halyard_net::Stream::Relayed {
        io,
        client_tls: open.client_tls,
    };
    let conn = imap::conn::Conn::new(stream, open.client, write_timeout);
    match open.protocol {
        RelayProtocol::Imap => imap::serve_relayed(conn, shared, open).await,
        RelayProtocol::Pop3 => pop3::serve_relayed(conn, shared, open).await,
    }
}

/// The running listeners; [`AccessServer::shutdown`] stops them.
pub struct AccessServer {
    /// The IMAP and POP3 listeners as one service, to bind them on other addresses
    /// (floating addresses) too.
    pub service: halyard_net::Service,
    listeners: ListenerSet,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// What every session of this node shares: for [`serve_relayed`].
    pub shared: Arc<Shared>,
    /// Bound addresses (useful when a port 0 was configured).
    pub imap_addr: Option<SocketAddr>,
    pub imaps_addr: Option<SocketAddr>,
}

/// Shared by every session of a node.
pub struct Shared {
    pub backend: Backend,
    pub cfg: AccessConfig,
    pub tls: Option<halyard_net::Tls>,
    /// Failed-login throttling (connection admission is the network layer's).
    pub limits: limits::Limits,
}

/// IMAP4rev1 on an admitted connection.
struct Imap(Arc<Shared>);

impl Protocol for Imap {
    fn name(&self) -> &'static str {
        "imap"
    }
    fn refusal(&self, why: Refused, _peer: SocketAddr) -> Vec<u8> {
        format!("* BYE {}\r\n", why.reason()).into_bytes()
    }
    fn serve(&self, conn: Accepted) -> ServeFuture {
        Box::pin(imap::serve(conn, self.0.clone()))
    }
}

/// POP3 on an admitted connection.
struct Pop3(Arc<Shared>);

impl Protocol for Pop3 {
    fn name(&self) -> &'static str {
        "pop3"
    }
    fn refusal(&self, why: Refused, _peer: SocketAddr) -> Vec<u8> {
        format!("-ERR [SYS/TEMP] {}\r\n", why.reason()).into_bytes()
    }
    fn serve(&self, conn: Accepted) -> ServeFuture {
        Box::pin(pop3::serve(conn, self.0.clone()))
    }
}

/// The configured listeners: IMAP and POP3, each plain (STARTTLS/STLS) and implicit TLS.
fn listeners(cfg: &AccessConfig, shared: &Arc<Shared>) -> Vec<Listener> {
    let imap: Arc<dyn Protocol> = Arc::new(Imap(shared.clone()));
    let pop3: Arc<dyn Protocol> = Arc::new(Pop3(shared.clone()));
    // Validated at start.
    let rules = |r: &[String]| Arc::new(halyard_net::admission::parse_rules(r).unwrap_or_default());
    let (imap_rules, pop3_rules) = (
        rules(&cfg.imap_client_access),
        rules(&cfg.pop3_client_access),
    );
    let l = |key, addr: &Option<String>, implicit_tls, protocol: &Arc<dyn Protocol>| Listener {
        key,
        addr: addr.clone(),
        implicit_tls,
        protocol: protocol.clone(),
        rules: if Arc::ptr_eq(protocol, &imap) {
            imap_rules.clone()
        } else {
            pop3_rules.clone()
        },
    };
    vec![
        l("access.imap_listen", &cfg.imap_listen, false, &imap),
        l("access.imaps_listen", &cfg.imaps_listen, true, &imap),
        l("access.pop3_listen", &cfg.pop3_listen, false, &pop3),
        l("access.pop3s_listen", &cfg.pop3s_listen, true, &pop3),
    ]
}

impl AccessServer {
    /// Binds every configured listener (failing early and clearly on a port in use) and
    /// starts accepting.
    pub async fn start(cfg: AccessConfig, backend: Backend) -> anyhow::Result<AccessServer> {
        cfg.validate()
            .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(halyard_net::Tls::load_with_client_ca(
                "access",
                c,
                k,
                cfg.tls_client_ca.as_deref(),
            )?),
            _ => None,
        };
        let shared = Arc::new(Shared {
            limits: limits::Limits::new(&cfg),
            backend,
            cfg: cfg.clone(),
            tls: tls.clone(),
        });
        let admission = Admission::new(halyard_net::Limits {
            max_connections: cfg.max_connections,
            max_connections_per_ip: cfg.max_connections_per_ip,
            max_connection_rate_per_ip: cfg.max_connection_rate_per_ip,
            rules: halyard_net::admission::parse_rules(&cfg.client_access)
                .map_err(|e| anyhow::anyhow!("access.client_access: {e}"))?,
        });
        let service = halyard_net::Service::new(
            "access",
            listeners(&cfg, &shared),
            admission,
            tls,
            Duration::from_secs(cfg.write_timeout_secs),
        );
        let listeners = service.start().await.map_err(anyhow::Error::msg)?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(t) = &shared.tls {
            tasks.push(tokio::spawn(t.clone().reload_on_sighup(stop_rx.clone())));
        }
        tracing::info!(imap = ?cfg.imap_listen, imaps = ?cfg.imaps_listen, pop3 = ?cfg.pop3_listen, pop3s = ?cfg.pop3s_listen, "message access started");
        Ok(AccessServer {
            shared,
            imap_addr: listeners.addr("access.imap_listen"),
            imaps_addr: listeners.addr("access.imaps_listen"),
            service,
            listeners,
            stop,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.listeners.stop(Duration::ZERO).await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
