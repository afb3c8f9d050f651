//! [`NodeShared`]: what every part of a running node reaches for — its groups, log database,
//! directory, fencing controllers, configuration and cluster TLS — and the status it
//! reports. The runtime builds it; the Raft and admin RPC servers, failover and the
//! listeners read it. It depends on none of them, so no module circle runs through it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use halyard_api::NodeStatus;
use halyard_directory::Directory;
use halyard_raft_store::{Group, GroupStatus, LogDb};
use tonic::Status;

use crate::config::{META_GROUP, NodeConfig};
use crate::tls::TlsMaterial;

pub struct NodeShared {
    pub node_id: u64,
    pub addr: String,
    pub groups: HashMap<String, Group>,
    pub log_db: Arc<LogDb>,
    /// Users and hosted domains: LDAP when configured, else the embedded directory.
    pub directory: Arc<dyn Directory>,
    /// "ldap" or "embedded".
    pub directory_kind: &'static str,
    /// Fencing controllers of the resource groups this node may lead.
    pub fences: HashMap<String, halyard_fencing::Controller>,
    /// When each group last received an AppendEntries from a leader (for a forced
    /// failover, which must not start an election while the master may still hold a lease).
    pub last_heard: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The node's configuration (topology: witnesses, preferred masters, who may lead).
    pub config: NodeConfig,
    /// Cluster TLS material, for admin calls to other nodes.
    pub tls: Option<TlsMaterial>,
    /// This node's IMAP/POP3 server, once started: where sessions relayed by other nodes'
    /// multiplexors are served (see [`crate::relay`]).
    pub access: std::sync::OnceLock<Arc<halyard_access::Shared>>,
}

impl NodeShared {
    pub fn group(&self, name: &str) -> Result<&Group, Status> {
        self.groups
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no group {name:?} on node {}", self.node_id)))
    }

    pub fn status(&self) -> NodeStatus {
        let mut groups: Vec<GroupStatus> = self.groups.values().map(|g| g.status()).collect();
        groups
            .sort_by(|a, b| (a.name != META_GROUP, &a.name).cmp(&(b.name != META_GROUP, &b.name)));
        NodeStatus {
            node_id: self.node_id,
            addr: self.addr.clone(),
            groups,
            fencing: self
                .fences
                .iter()
                .map(|(n, c)| (n.clone(), c.status()))
                .collect(),
            log_syncs: self.log_db.stats.syncs.load(Ordering::Relaxed),
            log_entries_synced: self.log_db.stats.entries_synced.load(Ordering::Relaxed),
        }
    }
}
