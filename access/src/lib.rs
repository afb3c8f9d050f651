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
//! the user's group authenticates there, then is relayed byte for byte to the master's
//! IMAP/POP3 listener (`[[cluster.nodes]] imap`/`pop3`), where the multiplexor logs in with the
//! same credentials. When the master changes, sessions served by the old master end with
//! `* BYE` (IMAP) or are closed (POP3), and clients reconnect. The relay between nodes is
//! plaintext on the cluster network (as the seed's MMP to its back ends); put that network on
//! a private segment.
//!
//! Commands are parsed and responses serialised with `imap-codec` (2.0 alpha: 1.0 lacks ID,
//! NAMESPACE, UID EXPUNGE and CONDSTORE).

pub mod config;
pub mod imap;
pub mod limits;
pub mod mutf7;
pub mod pop3;
pub mod proxy;
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
    /// Where the other nodes serve IMAP and POP3, for the multiplexor.
    pub peers: HashMap<u64, PeerAccess>,
}

/// A node's mail access addresses as the other nodes reach them.
#[derive(Debug, Clone, Default)]
pub struct PeerAccess {
    pub imap: Option<String>,
    pub pop3: Option<String>,
}

/// The running listeners; [`AccessServer::shutdown`] stops them.
pub struct AccessServer {
    /// The IMAP and POP3 listeners as one service, to bind them on other addresses
    /// (floating addresses) too.
    pub service: halyard_net::Service,
    listeners: ListenerSet,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
    let l = |key, addr: &Option<String>, implicit_tls, protocol: &Arc<dyn Protocol>| Listener {
        key,
        addr: addr.clone(),
        implicit_tls,
        protocol: protocol.clone(),
    };
    vec![
        l("access.imap_listen", &cfg.imap_listen, false, &imap),
        l("access.imaps_listen", &cfg.imaps_listen, true, &imap),
        l("access.pop3_listen", &cfg.pop3_listen, false, &pop3),
        l("access.pop3s_listen", &cfg.pop3s_listen, true, &pop3),
    ]
}

/// Where the multiplexor sends a session: the master's address for `proto`, or why not.
pub(crate) fn master_address(
    shared: &Shared,
    acct: &store::Account,
    pop3: bool,
) -> Result<(u64, String), String> {
    let Some(master) = acct.master() else {
        return Err("the master of your mailboxes is being elected; try again".into());
    };
    let peer = shared.backend.peers.get(&master);
    let addr = if pop3 {
        peer.and_then(|p| p.pop3.clone())
    } else {
        peer.and_then(|p| p.imap.clone())
    };
    addr.map(|a| (master, a)).ok_or_else(|| {
        format!(
            "node {master} (master of your mailboxes) has no {} address configured",
            if pop3 { "POP3" } else { "IMAP" }
        )
    })
}

impl AccessServer {
    /// Binds every configured listener (failing early and clearly on a port in use) and
    /// starts accepting.
    pub async fn start(cfg: AccessConfig, backend: Backend) -> anyhow::Result<AccessServer> {
        cfg.validate()
            .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(halyard_net::Tls::load("access", c, k)?),
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
