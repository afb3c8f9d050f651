//! One running node: its log database, its groups (meta + resource groups), and the gRPC
//! server that carries Raft RPCs between nodes and the admin API used by `halyard ctl`.
//!
//! Start-up order matters for clear errors: the data directory is checked and locked, then
//! the cluster port is bound (a port in use fails here, before any Raft state is touched),
//! then storage is opened, groups are started, the server begins accepting, and finally each
//! group this node is an initial member of is initialised if it never was.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use halyard_directory::Directory;
use halyard_directory::embedded::EmbeddedDirectory;
use halyard_directory::ldap::LdapDirectory;
use halyard_raft_store::openraft::BasicNode;
use halyard_raft_store::{Group, LogDb};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{META_GROUP, NodeConfig};
use crate::network::{ChannelPool, MAX_MESSAGE_BYTES, Network};
use crate::pb;
use crate::raft_rpc::RaftRpc;
use crate::shared::NodeShared;

/// A started node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    pub shared: Arc<NodeShared>,
    /// Groups this node is an initial member of, with their initial membership.
    to_init: Vec<(String, BTreeMap<u64, BasicNode>)>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    access: Option<halyard_access::AccessServer>,
    mta: Option<halyard_mta::MtaServer>,
    /// Stops the fencing controllers, floating listeners and failback watchers.
    fence_stop: watch::Sender<bool>,
    fence_tasks: Vec<JoinHandle<()>>,
    _lock: std::fs::File,
}

/// Version of the on-disk data, decided by raft-store's types (see there).
pub use halyard_raft_store::DATA_FORMAT;

/// Refuses a data directory written in another format (a directory holding data but no
/// FORMAT file predates versioning: format 1), with an error that says what to do; an
/// empty directory gets the current format.
fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join("FORMAT");
    let found = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .strip_prefix("halyard-data ")
            .and_then(|v| v.parse::<u32>().ok())
            .with_context(|| format!("data_dir {}: unreadable FORMAT file", dir.display()))?,
        Err(_) if dir.join("raft-log").exists() || dir.join("groups").exists() => 1,
        Err(_) => {
            std::fs::write(&path, format!("halyard-data {DATA_FORMAT}\n"))
                .with_context(|| format!("data_dir {}: cannot write FORMAT", dir.display()))?;
            DATA_FORMAT
        }
    };
    if found != DATA_FORMAT {
        bail!(
            "data_dir {}: holds data in format {found}, this halyard reads format {DATA_FORMAT}; \
             move it away (or start from an empty directory and let the node catch up from \
             the others)",
            dir.display()
        );
    }
    Ok(())
}

/// Checks that the data directory is usable and takes an exclusive lock on it, so two
/// processes never share one node's state.
fn prepare_data_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("data_dir {}: cannot create", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("data_dir {}: not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    let lock_path = dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("data_dir {}: cannot open lock file", dir.display()))?;
    match lock.try_lock() {
        Ok(()) => {
            check_format(dir)?;
            Ok(lock)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "data_dir {}: in use by another halyard process",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("data_dir {}: lock", dir.display()))
        }
    }
}

impl Node {
    /// Starts the node and creates the groups it is an initial member of (if new).
    pub async fn start(cfg: &NodeConfig) -> Result<Node> {
        let node = Node::start_uninitialized(cfg).await?;
        node.initialize().await?;
        Ok(node)
    }

    /// Creates, if never created, each group this node is an initial member of. Several
    /// nodes started in one process (the demo) call this once all of them listen, so the
    /// first election does not begin while peers are still starting.
    pub async fn initialize(&self) -> Result<()> {
        for (name, members) in &self.to_init {
            let g = &self.shared.groups[name];
            match g.initialize_if_new(members.clone()).await {
                Ok(true) => {
                    tracing::info!(group = %name, node = self.shared.node_id, "initialised new group")
                }
                Ok(false) => {}
                Err(e) => bail!("initialising group {name}: {e}"),
            }
        }
        Ok(())
    }

    /// Opens storage, starts the groups and the server; initialises nothing.
    pub async fn start_uninitialized(cfg: &NodeConfig) -> Result<Node> {
        let lock = prepare_data_dir(&cfg.data_dir)?;
        let listen: SocketAddr = cfg.cluster.listen.parse().context("cluster.listen")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cluster.listen {listen}: cannot bind"))?;
        let tls = match (&cfg.cluster.tls, cfg.cluster.plaintext) {
            (Some(t), false) => Some(crate::tls::load(t)?),
            _ => None,
        };
        let pool = ChannelPool::new(tls.clone());
        let log_db = LogDb::open(&cfg.data_dir.join("raft-log"))
            .with_context(|| format!("data_dir {}: opening raft log", cfg.data_dir.display()))?;
        let tuning = cfg.raft.tuning();

        let mut groups = HashMap::new();
        let mut to_init: Vec<(String, BTreeMap<u64, BasicNode>)> = Vec::new();
        let addr_of: BTreeMap<u64, String> = cfg
            .cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let mut specs: Vec<(String, Vec<u64>)> = vec![(
            META_GROUP.to_string(),
            cfg.cluster.nodes.iter().map(|n| n.id).collect(),
        )];
        specs.extend(
            cfg.groups
                .iter()
                .map(|g| (g.name.clone(), g.members.clone())),
        );
        for (name, members) in specs {
            let dir = cfg.data_dir.join("groups").join(&name);
            let network = Network::for_group(&name, &pool, cfg.node_id);
            let levels = network.levels.clone();
            let group = Group::open(&name, cfg.node_id, &tuning, &log_db, &dir, network, levels)
                .await
                .with_context(|| format!("opening group {name}"))?;
            // openraft's initialize also starts an election: only members that may lead
            // the group initialise it (the others receive the membership from the leader).
            if members.contains(&cfg.node_id) && cfg.may_lead(&name, cfg.node_id) {
                let m = members
                    .iter()
                    .map(|id| (*id, BasicNode::new(addr_of[id].clone())))
                    .collect();
                to_init.push((name.clone(), m));
            }
            groups.insert(name, group);
        }
        // Who may lead: witnesses never, and in each group only its `leaders`.
        for (name, g) in &groups {
            if !cfg.may_lead(name, cfg.node_id) {
                g.raft().runtime_config().elect(false);
                tracing::info!(group = %name, node = cfg.node_id, "this node votes in the group but never stands for election");
            }
        }
        let (fence_stop, fence_stop_rx) = watch::channel(false);
        let mut fence_tasks = Vec::new();
        let mut fences = HashMap::new();
        let mine_with_address: Vec<&crate::config::GroupConfig> = cfg
            .groups
            .iter()
            .filter(|g| g.address.is_some() && cfg.may_lead(&g.name, cfg.node_id))
            .collect();
        let guard = if mine_with_address.is_empty() {
            None
        } else {
            // Nothing is held at start: an address left configured by a previous run of this
            // node (its guard killed too) goes now.
            let iface = cfg.fencing.interface.clone().unwrap_or_default();
            for g in &mine_with_address {
                let cidr: halyard_fencing::Cidr = g
                    .address
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!(e))?;
                halyard_fencing::netlink::del_address(&iface, cidr).with_context(|| {
                    format!("fencing.interface {iface}: removing a stale {cidr}")
                })?;
            }
            let exe = std::env::current_exe().context("locating the halyard binary")?;
            Some(Arc::new(
                halyard_fencing::Guard::spawn(&exe).context("starting the address guard")?,
            ))
        };
        for gc in &cfg.groups {
            if !cfg.may_lead(&gc.name, cfg.node_id) {
                continue;
            }
            let spec = match &gc.address {
                Some(a) => Some(halyard_fencing::AddressSpec {
                    interface: cfg.fencing.interface.clone().unwrap_or_default(),
                    cidr: a.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                    announce_count: cfg.fencing.announce_count,
                    announce_gap: std::time::Duration::from_millis(cfg.fencing.announce_gap_ms),
                }),
                None => None,
            };
            let holder = halyard_fencing::Holder::new(&gc.name, spec, guard.clone())
                .with_context(|| format!("group {}: starting the lease watchdog", gc.name))?;
            let (c, t) = halyard_fencing::Controller::start(
                groups[&gc.name].clone(),
                holder,
                halyard_fencing::FenceConfig {
                    lease: std::time::Duration::from_millis(cfg.lease_ms()),
                    hook: cfg.fencing.hook.clone(),
                    hook_timeout: std::time::Duration::from_millis(cfg.fencing.hook_timeout_ms),
                },
                fence_stop_rx.clone(),
            );
            fences.insert(gc.name.clone(), c);
            fence_tasks.push(t);
        }
        let (directory, directory_kind): (Arc<dyn Directory>, _) = match &cfg.directory.ldap {
            Some(l) => (
                Arc::new(LdapDirectory::new(l.clone()).map_err(|m| anyhow::anyhow!(m))?),
                "ldap",
            ),
            None => (
                Arc::new(EmbeddedDirectory::new(groups[META_GROUP].reader())),
                "embedded",
            ),
        };
        let shared = Arc::new(NodeShared {
            node_id: cfg.node_id,
            addr: cfg.advertise().to_string(),
            groups,
            log_db,
            directory,
            directory_kind,
            fences,
            last_heard: Default::default(),
            config: cfg.clone(),
            tls: tls.clone(),
            access: Default::default(),
        });

        let (stop, mut stop_rx) = watch::channel(false);
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::network::STREAM_WINDOW)
            .initial_connection_window_size(crate::network::CONNECTION_WINDOW);
        if let Some(t) = &tls {
            builder = builder.tls_config(t.server()).context("cluster.tls")?;
        }
        let raft_svc = pb::raft_server::RaftServer::new(RaftRpc {
            node: shared.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin_svc = pb::admin_server::AdminServer::new(crate::admin::AdminRpc {
            node: shared.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // tonic ignores the builder's tcp_nodelay for a listener handed to it: set it here, or
        // a follower's small AppendEntries answers can wait behind Nagle for an ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(
            builder
                .add_service(raft_svc)
                .add_service(admin_svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                }),
        );

        // Client-facing servers run on the service runtime (see `runtimes`).
        let access = crate::runtimes::on_service(halyard_access::AccessServer::start(
            cfg.access.clone(),
            halyard_access::Backend {
                groups: shared.groups.clone(),
                directory: shared.directory.clone(),
                default_group: cfg.default_group.clone(),
                node_id: cfg.node_id,
                relay: Some(Arc::new(crate::relay::GrpcRelay::new(tls.clone()))),
            },
        ))
        .await?;
        let _ = shared.access.set(access.shared.clone());
        let mta = crate::runtimes::on_service(halyard_mta::MtaServer::start(
            cfg.mta.clone(),
            halyard_mta::Backend {
                groups: shared.groups.clone(),
                directory: shared.directory.clone(),
                node_id: cfg.node_id,
                default_group: cfg.default_group.clone(),
                forward: Some(std::sync::Arc::new(crate::forward::LeaderForward::new(
                    tls.clone(),
                ))),
            },
        ))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        for gc in &cfg.groups {
            let (Some(addr), Some(c)) = (&gc.address, shared.fences.get(&gc.name)) else {
                continue;
            };
            let cidr: halyard_fencing::Cidr =
                addr.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let f = crate::floating::Floating {
                controller: c.clone(),
                ip: std::net::IpAddr::V4(cidr.addr),
                mta: Some(mta.service.clone()),
                access: Some(access.service.clone()),
                drain: std::time::Duration::from_millis(cfg.fencing.drain_ms),
            };
            let stop = fence_stop_rx.clone();
            fence_tasks.push(crate::runtimes::service().spawn(async move {
                halyard_net::supervise::supervise(
                    format!(
                        "floating-address listeners of {}",
                        f.controller.group().name()
                    ),
                    stop.clone(),
                    move || f.clone().run(stop.clone()),
                )
                .await;
            }));
        }
        for gc in &cfg.groups {
            if gc.preferred == Some(cfg.node_id) && gc.failback {
                let (node, name, tls, after, stop) = (
                    shared.clone(),
                    gc.name.clone(),
                    tls.clone(),
                    std::time::Duration::from_millis(cfg.fencing.failback_after_ms),
                    fence_stop_rx.clone(),
                );
                fence_tasks.push(tokio::spawn(async move {
                    halyard_net::supervise::supervise(
                        format!("failback watcher of {name}"),
                        stop.clone(),
                        move || {
                            crate::failover::failback(
                                node.clone(),
                                name.clone(),
                                tls.clone(),
                                after,
                                stop.clone(),
                            )
                        },
                    )
                    .await;
                }));
            }
        }
        if directory_kind != "ldap" && shared.groups.contains_key(crate::config::META_GROUP) {
            let (node, stop) = (shared.clone(), fence_stop_rx.clone());
            fence_tasks.push(tokio::spawn(crate::purge::sweeper(node, stop)));
        }
        tracing::info!(node = cfg.node_id, listen = %listen, groups = shared.groups.len(), tls = tls.is_some(), directory = directory_kind, "node started");
        Ok(Node {
            shared,
            to_init,
            stop,
            server,
            access: Some(access),
            mta: Some(mta),
            fence_stop,
            fence_tasks,
            _lock: lock,
        })
    }

    /// Stops the groups (which stop replicating and voting) and then the server.
    pub async fn shutdown(mut self) {
        // Floating addresses first: release them (and close their listeners, draining SMTP
        // transactions) while the group can still record the release.
        let _ = self.fence_stop.send(true);
        let tasks = std::mem::take(&mut self.fence_tasks);
        let drain = std::time::Duration::from_millis(self.shared.config.fencing.drain_ms)
            + std::time::Duration::from_secs(2);
        if tokio::time::timeout(drain, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("fencing tasks still running at shutdown");
        }
        for c in self.shared.fences.values() {
            c.holder().close();
        }
        if let Some(m) = self.mta.take() {
            m.shutdown().await;
        }
        if let Some(a) = self.access.take() {
            a.shutdown().await;
        }
        for g in self.shared.groups.values() {
            g.shutdown().await;
        }
        let _ = self.stop.send(true);
        let _ = self.server.await;
        tracing::info!(node = self.shared.node_id, "node stopped");
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
