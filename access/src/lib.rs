//! # halyard-access — IMAP4rev1 and POP3 over the replicated store
//!
//! Sessions authenticate through the [`halyard_directory::Directory`] (LDAP or the embedded
//! directory), find the user's resource group (the directory's `mailHost`, else
//! `access.default_group`), and serve it from this node when it leads that group. Every write
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
pub mod stream;
pub mod supervise;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use halyard_directory::Directory;
use halyard_raft_store::Group;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::AccessConfig;

/// What sessions need from the node.
pub struct Backend {
    /// Groups this node runs, by name.
    pub groups: HashMap<String, Group>,
    pub directory: Arc<dyn Directory>,
    /// Group of users whose directory entry names none.
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
    /// Binds the same listeners on other addresses (floating addresses).
    pub binder: Binder,
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
    pub tls: Option<tls::Tls>,
    pub limits: limits::Limits,
}

#[derive(Debug, Clone, Copy)]
enum Proto {
    Imap,
    Pop3,
}

/// Accepts connections until `stop`; each is served in its own task.
async fn accept_loop(
    proto: Proto,
    listener: TcpListener,
    shared: Arc<Shared>,
    implicit_tls: bool,
    mut stop: watch::Receiver<bool>,
    sessions: Option<Arc<stream::Sessions>>,
) {
    let what = match proto {
        Proto::Imap => "imap",
        Proto::Pop3 => "pop3",
    };
    while let Some((tcp, peer)) = stream::next_connection(&listener, &mut stop, what).await {
        let shared = shared.clone();
        let task = tokio::spawn(async move {
            match proto {
                Proto::Imap => imap::serve(tcp, peer, shared, implicit_tls).await,
                Proto::Pop3 => pop3::serve(tcp, peer, shared, implicit_tls).await,
            }
        });
        if let Some(s) = &sessions {
            s.add(task.abort_handle());
        }
    }
}

pub use stream::ListenerSet;

/// Binds listeners on other addresses for a running [`AccessServer`].
#[derive(Clone)]
pub struct Binder {
    shared: Arc<Shared>,
}

impl Binder {
    /// Binds every configured IMAP/POP3 listener's port on `ip`.
    pub async fn bind_on(&self, ip: std::net::IpAddr) -> anyhow::Result<ListenerSet> {
        let shared = self.shared.clone();
        ListenerSet::bind_all(
            ip,
            listeners(&self.shared.cfg)
                .map(|(key, addr, proto, implicit)| (key, addr.clone(), (proto, implicit))),
            |l, (proto, implicit), stop, sessions| {
                tokio::spawn(accept_loop(
                    proto,
                    l,
                    shared.clone(),
                    implicit,
                    stop,
                    Some(sessions),
                ))
            },
        )
        .await
        .map_err(anyhow::Error::msg)
    }
}

/// The configured listeners: (config key, address, protocol, implicit TLS).
fn listeners(cfg: &AccessConfig) -> [(&'static str, &Option<String>, Proto, bool); 4] {
    [
        ("access.imap_listen", &cfg.imap_listen, Proto::Imap, false),
        ("access.imaps_listen", &cfg.imaps_listen, Proto::Imap, true),
        ("access.pop3_listen", &cfg.pop3_listen, Proto::Pop3, false),
        ("access.pop3s_listen", &cfg.pop3s_listen, Proto::Pop3, true),
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
        use anyhow::Context;
        cfg.validate()
            .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls::Tls::load("access", c, k)?),
            _ => None,
        };
        let shared = Arc::new(Shared {
            limits: limits::Limits::new(&cfg),
            backend,
            cfg: cfg.clone(),
            tls,
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut bound = HashMap::new();
        for (key, addr, proto, implicit) in listeners(&cfg) {
            let Some(addr) = addr else { continue };
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("{key} {addr}: cannot bind"))?;
            bound.insert(key, l.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(
                proto,
                l,
                shared.clone(),
                implicit,
                stop_rx.clone(),
                None,
            )));
        }
        if let Some(t) = &shared.tls {
            tasks.push(tokio::spawn(t.clone().reload_on_sighup(stop_rx.clone())));
        }
        tracing::info!(imap = ?cfg.imap_listen, imaps = ?cfg.imaps_listen, pop3 = ?cfg.pop3_listen, pop3s = ?cfg.pop3s_listen, "message access started");
        Ok(AccessServer {
            binder: Binder {
                shared: shared.clone(),
            },
            stop,
            tasks,
            imap_addr: bound.get("access.imap_listen").copied(),
            imaps_addr: bound.get("access.imaps_listen").copied(),
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
