//! NAME
//!     node.toml — configuration of one `halyard serve` process.
//!
//! DESCRIPTION
//!     One TOML file per node. Unknown keys are errors (a typo must not silently fall back to a
//!     default). Every problem is reported as `<file>: <key>: <what is wrong>` and the process
//!     exits non-zero before touching the data directory. Relative paths are taken relative to
//!     the directory of the configuration file. `halyard serve --print-config` prints the
//!     effective configuration with every default filled in.
//!
//! EXAMPLE
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/halyard"
//! default_group = "rg1"            # mailboxes of users whose directory entry names no group
//!
//! [cluster]
//! listen = "0.0.0.0:7700"          # gRPC between nodes and for `halyard ctl`
//! advertise = "198.18.0.1:7700"    # what other nodes dial; defaults to `listen`
//! tls = { ca = "certs/ca.pem", cert = "certs/node-1.pem", key = "certs/node-1.key" }
//! # plaintext = true               # only for demos on loopback; never across a network
//!
//! [[cluster.nodes]]                # initial voters of the meta group
//! id = 1
//! addr = "198.18.0.1:7700"
//!
//! [[groups]]                       # resource groups this node runs
//! name = "rg1"
//! members = [1, 2, 3]              # initial voters; a node not listed joins later as learner
//!
//! [raft]
//! heartbeat_ms = 100
//! election_timeout_min_ms = 400
//! election_timeout_max_ms = 800
//! snapshot_every = 20000
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use halyard_raft_store::RaftTuning;
use serde::{Deserialize, Serialize};

/// Name of the cluster-wide group every node is a member of.
pub use halyard_raft_store::META_GROUP;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, > 0.
    pub node_id: u64,
    /// Where the Raft log, state machines and snapshots live.
    pub data_dir: PathBuf,
    /// The resource group holding the mailboxes of users whose directory entry names none
    /// (`mailHost`), and the queue entries of relayed mail. One setting for the MTA (which
    /// delivers there) and IMAP/POP3 (which read there), so the two cannot disagree; unset,
    /// a node that runs exactly one resource group uses that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_group: Option<String>,
    pub cluster: ClusterConfig,
    /// Resource groups this node runs (as initial member or as a joiner).
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    #[serde(default)]
    pub raft: RaftConfig,
    /// Where users and hosted domains come from: `[directory.ldap]`, else the embedded
    /// directory kept in the meta group.
    #[serde(default)]
    pub directory: DirectoryConfig,
    /// IMAP and POP3 listeners, TLS and limits.
    #[serde(default)]
    pub access: halyard_access::AccessConfig,
    /// SMTP and submission listeners, limits and the queue.
    #[serde(default)]
    pub mta: halyard_mta::MtaConfig,
    /// Floating addresses, leases, fence hook, failback.
    #[serde(default)]
    pub fencing: FencingConfig,
}

/// `[fencing]`: how this node holds the floating addresses of the groups it masters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingConfig {
    /// Interface floating addresses are added to (required when a group has an address).
    pub interface: Option<String>,
    /// How long a master keeps its address after the last heartbeat a quorum acknowledged.
    /// Must be below `raft.election_timeout_max_ms` (the followers' lease); default: that
    /// minus max(2 heartbeats, a quarter of it).
    pub lease_ms: Option<u64>,
    /// Program run before each acquisition; a non-zero exit refuses it (power fencing).
    pub hook: Option<PathBuf>,
    pub hook_timeout_ms: u64,
    /// Gratuitous ARP announcements after an acquisition, and the gap between them.
    pub announce_count: u32,
    pub announce_gap_ms: u64,
    /// A preferred master takes its group back once it has followed, caught up, this long.
    pub failback_after_ms: u64,
    /// How long a switchover lets SMTP transactions in progress finish.
    pub drain_ms: u64,
}

impl Default for FencingConfig {
    fn default() -> Self {
        FencingConfig {
            interface: None,
            lease_ms: None,
            hook: None,
            hook_timeout_ms: 5_000,
            announce_count: 3,
            announce_gap_ms: 200,
            failback_after_ms: 5_000,
            drain_ms: 2_000,
        }
    }
}

impl NodeConfig {
    /// The master lease in effect (see [`FencingConfig::lease_ms`]).
    pub fn lease_ms(&self) -> u64 {
        self.fencing.lease_ms.unwrap_or_else(|| {
            let max = self.raft.election_timeout_max_ms;
            max - (2 * self.raft.heartbeat_ms).max(max / 4).min(max / 2)
        })
    }

    pub fn is_witness(&self, id: u64) -> bool {
        self.cluster.nodes.iter().any(|n| n.id == id && n.witness)
    }

    /// Whether node `id` may lead group `g` (the meta group: any node but a witness).
    pub fn may_lead(&self, group: &str, id: u64) -> bool {
        if self.is_witness(id) {
            return false;
        }
        if group == META_GROUP {
            return true;
        }
        self.groups.iter().any(|g| {
            g.name == group
                && g.members.contains(&id)
                && g.leaders.as_ref().is_none_or(|l| l.contains(&id))
        })
    }
}

/// `[directory]`: with no `ldap` table the embedded, replicated directory is used (managed
/// with `halyard ctl domain|user|alias|list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    #[serde(default)]
    pub ldap: Option<halyard_directory::ldap::LdapConfig>,
    /// How long a user deleted with `ctl user del` keeps its mailboxes before they are purged
    /// (meanwhile the account is `deleted`: no logins, mail refused); `--purge-now` skips it.
    #[serde(default = "d_purge_grace")]
    pub purge_grace_secs: u64,
}

fn d_purge_grace() -> u64 {
    7 * 24 * 3600
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            ldap: None,
            purge_grace_secs: d_purge_grace(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Address the cluster gRPC server binds.
    pub listen: String,
    /// Address other nodes and `halyard ctl` dial; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Serve and dial without TLS. Only for the demo and loopback tests.
    #[serde(default)]
    pub plaintext: bool,
    /// Mutual TLS with the cluster CA (required unless `plaintext = true`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Initial voters of the meta group (all data nodes and witnesses).
    pub nodes: Vec<PeerConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the cluster CA certificate: peers must present a certificate it signed.
    pub ca: PathBuf,
    /// PEM certificate of this node (SANs `node-<id>.halyard.cluster` and `halyard.cluster`).
    pub cert: PathBuf,
    /// PEM private key of this node.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u64,
    pub addr: String,
    /// That node's IMAP (plain/STARTTLS) address as the other nodes reach it. No longer
    /// used: the multiplexor hands sessions to the master over the cluster RPC (`addr`, mutual
    /// TLS), never to its IMAP listener with the user's password. Still accepted, so that
    /// existing configuration files load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imap: Option<String>,
    /// Same for POP3 (no longer used either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop3: Option<String>,
    /// A witness votes and keeps the log but never leads or serves (the quorum device that
    /// lets two data nodes survive the loss of one).
    #[serde(default)]
    pub witness: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name: lower-case letters, digits and `-`, at most 64 characters.
    pub name: String,
    /// Initial voters. A node in this list creates the group on first start.
    pub members: Vec<u64>,
    /// The floating address (`198.18.0.100/24`) its master holds; none: address-less mode
    /// (clients use the nodes' own addresses and the multiplexor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The node that leads when it is healthy; after a failover the group returns to it
    /// once it has caught up (when `failback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<u64>,
    /// Members that may lead (default: every member that is not a witness). The others
    /// vote only: the spare of an N+1 topology leads every group, the other primaries none
    /// but their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<Vec<u64>>,
    #[serde(default = "yes")]
    pub failback: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in [min, max] starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Applied entries between snapshots; the log before a snapshot is then purged.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub keep_logs_after_snapshot: u64,
    /// Size of the chunks a snapshot is streamed in.
    pub snapshot_chunk_bytes: u64,
    /// Largest number of entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let t = RaftTuning::default();
        RaftConfig {
            heartbeat_ms: t.heartbeat_ms,
            election_timeout_min_ms: t.election_timeout_min_ms,
            election_timeout_max_ms: t.election_timeout_max_ms,
            snapshot_every: t.snapshot_every,
            keep_logs_after_snapshot: t.keep_logs_after_snapshot,
            snapshot_chunk_bytes: t.snapshot_chunk_bytes,
            max_payload_entries: t.max_payload_entries,
        }
    }
}

impl RaftConfig {
    pub fn tuning(&self) -> RaftTuning {
        RaftTuning {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every: self.snapshot_every,
            keep_logs_after_snapshot: self.keep_logs_after_snapshot,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            max_payload_entries: self.max_payload_entries,
        }
    }
}

/// A configuration problem, rendered as `<file>: <key>: <message>`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// A key that older configurations had and this one does not, with what to do about it
/// (clearer than toml's "unknown field").
fn retired_key(text: &str) -> Option<(String, String)> {
    let v: toml::Value = toml::from_str(text).ok()?;
    for section in ["mta", "access"] {
        if v.get(section)
            .and_then(|s| s.get("default_group"))
            .is_some()
        {
            return Some((
                format!("{section}.default_group"),
                "moved: set the top-level `default_group` instead (one setting for the MTA and \
                 IMAP/POP3)"
                    .into(),
            ));
        }
    }
    let groups = v.get("groups").and_then(|g| g.as_array());
    for (i, g) in groups.into_iter().flatten().enumerate() {
        if g.get("partitions").is_some() {
            return Some((
                format!("groups[{i}].partitions"),
                "removed: a resource group's store is one partition; delete this key".into(),
            ));
        }
    }
    None
}

impl NodeConfig {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err("-", format!("cannot read: {e}")))?;
        Self::from_text(&text, path)
    }

    /// Parses and validates the text of a configuration file read from `path` (relative
    /// paths in it are resolved against `path`'s directory).
    pub fn from_text(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            message,
        };
        if let Some((key, message)) = retired_key(text) {
            return Err(err(&key, message));
        }
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| {
            // toml's message names the key (or the line) and what was expected. Some of its
            // errors (a stray CR, found by the `config` fuzz target) have an empty message:
            // then its whole report, or at least something.
            let mut msg = e.message().trim().to_string();
            if msg.is_empty() {
                msg = e.to_string().trim().to_string();
            }
            if msg.is_empty() {
                msg = "not valid TOML".to_string();
            }
            let loc = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                }
                None => "-".to_string(),
            };
            err(&loc, msg)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.validate()
            .map_err(|(key, message)| err(&key, message))?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(h) = &mut self.fencing.hook {
            fix(h);
        }
        if let Some(t) = &mut self.cluster.tls {
            fix(&mut t.ca);
            fix(&mut t.cert);
            fix(&mut t.key);
        }
        for p in [
            &mut self.access.tls_cert,
            &mut self.access.tls_key,
            &mut self.access.tls_client_ca,
            &mut self.mta.tls_cert,
            &mut self.mta.tls_key,
            &mut self.mta.tls_client_ca,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(l) = &mut self.directory.ldap
            && let Some(ca) = &mut l.ca_file
        {
            fix(ca);
        }
    }

    /// The address other nodes dial.
    pub fn advertise(&self) -> &str {
        self.cluster
            .advertise
            .as_deref()
            .unwrap_or(&self.cluster.listen)
    }

    /// Checks everything that can be checked without side effects. Returns (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| Err((k.to_string(), m));
        if self.node_id == 0 {
            return e("node_id", "must be greater than 0".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return e("data_dir", "must not be empty".into());
        }
        if self.cluster.listen.parse::<SocketAddr>().is_err() {
            return e(
                "cluster.listen",
                format!("{:?} is not an IP:port socket address", self.cluster.listen),
            );
        }
        if let Some(a) = &self.cluster.advertise
            && !valid_host_port(a)
        {
            return e("cluster.advertise", format!("{a:?} is not host:port"));
        }
        match (&self.cluster.tls, self.cluster.plaintext) {
            (None, false) => {
                return e(
                    "cluster.tls",
                    "missing: set ca, cert and key (or plaintext = true for a loopback demo)"
                        .into(),
                );
            }
            (Some(_), true) => {
                return e(
                    "cluster.plaintext",
                    "cannot be true when cluster.tls is set".into(),
                );
            }
            (Some(t), false) => {
                for (k, p) in [
                    ("cluster.tls.ca", &t.ca),
                    ("cluster.tls.cert", &t.cert),
                    ("cluster.tls.key", &t.key),
                ] {
                    if let Err(err) = std::fs::metadata(p) {
                        return e(k, format!("{}: {err}", p.display()));
                    }
                }
            }
            (None, true) => {}
        }
        if self.cluster.nodes.is_empty() {
            return e("cluster.nodes", "must list at least this node".into());
        }
        let mut ids = BTreeSet::new();
        for (i, n) in self.cluster.nodes.iter().enumerate() {
            if n.id == 0 {
                return e(
                    &format!("cluster.nodes[{i}].id"),
                    "must be greater than 0".into(),
                );
            }
            if !ids.insert(n.id) {
                return e(
                    &format!("cluster.nodes[{i}].id"),
                    format!("node {} is listed twice", n.id),
                );
            }
            if !valid_host_port(&n.addr) {
                return e(
                    &format!("cluster.nodes[{i}].addr"),
                    format!("{:?} is not host:port", n.addr),
                );
            }
        }
        let mut names = BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let key = format!("groups[{i}]");
            if !valid_group_name(&g.name) {
                return e(
                    &format!("{key}.name"),
                    format!("{:?}: use 1-64 of a-z, 0-9 and '-'", g.name),
                );
            }
            if g.name == META_GROUP {
                return e(
                    &format!("{key}.name"),
                    "\"meta\" is reserved for the cluster-wide group".into(),
                );
            }
            if !names.insert(g.name.clone()) {
                return e(
                    &format!("{key}.name"),
                    format!("group {:?} is listed twice", g.name),
                );
            }
            if g.members.is_empty() {
                return e(&format!("{key}.members"), "must not be empty".into());
            }
            for m in &g.members {
                if !ids.contains(m) {
                    return e(
                        &format!("{key}.members"),
                        format!("node {m} is not in cluster.nodes"),
                    );
                }
            }
        }
        let mut addresses = BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let key = format!("groups[{i}]");
            if let Some(a) = &g.address {
                match a.parse::<halyard_fencing::Cidr>() {
                    Ok(c) => {
                        if !addresses.insert(c.addr) {
                            return e(
                                &format!("{key}.address"),
                                format!("{a} is used by two groups"),
                            );
                        }
                    }
                    Err(m) => return e(&format!("{key}.address"), m),
                }
            }
            if let Some(p) = g.preferred
                && (!g.members.contains(&p) || self.is_witness(p))
            {
                return e(
                    &format!("{key}.preferred"),
                    format!("node {p} is not a member that may lead"),
                );
            }
            if let Some(l) = &g.leaders {
                if let Some(x) = l
                    .iter()
                    .find(|x| !g.members.contains(x) || self.is_witness(**x))
                {
                    return e(
                        &format!("{key}.leaders"),
                        format!("node {x} is not a member of the group, or is a witness"),
                    );
                }
                if let Some(p) = g.preferred
                    && !l.contains(&p)
                {
                    return e(
                        &format!("{key}.leaders"),
                        format!("must include the preferred node {p}"),
                    );
                }
            }
            if !g.members.iter().any(|m| self.may_lead(&g.name, *m)) {
                return e(
                    &format!("{key}.members"),
                    "no member may lead this group".into(),
                );
            }
        }
        if !addresses.is_empty() {
            match &self.fencing.interface {
                None => {
                    return e(
                        "fencing.interface",
                        "missing: groups have floating addresses; name the interface they go on"
                            .into(),
                    );
                }
                Some(i) if i.is_empty() || i.len() > 15 => {
                    return e(
                        "fencing.interface",
                        format!("{i:?} is not an interface name"),
                    );
                }
                Some(_) => {}
            }
            // Listeners of a group bind the floating address with the node's ports; a node
            // listener on the wildcard address would take that port on every address.
            for (k, v) in [
                ("mta.smtp_listen", &self.mta.smtp_listen),
                ("mta.submission_listen", &self.mta.submission_listen),
                ("mta.submissions_listen", &self.mta.submissions_listen),
                ("mta.lmtp_listen", &self.mta.lmtp_listen),
                ("access.imap_listen", &self.access.imap_listen),
                ("access.imaps_listen", &self.access.imaps_listen),
                ("access.pop3_listen", &self.access.pop3_listen),
                ("access.pop3s_listen", &self.access.pop3s_listen),
            ] {
                if let Some(a) = v
                    && a.parse::<SocketAddr>()
                        .is_ok_and(|s| s.ip().is_unspecified())
                {
                    return e(
                        k,
                        format!(
                            "{a}: groups have floating addresses, so listen on this node's own address, not the wildcard"
                        ),
                    );
                }
            }
        }
        if self.fencing.announce_count > 20 {
            return e("fencing.announce_count", "at most 20".into());
        }
        if let Some(l) = &self.directory.ldap
            && let Err(m) = halyard_directory::ldap::LdapDirectory::new(l.clone())
        {
            return match m.split_once(": ") {
                Some((k, m)) if k.starts_with("directory.") => e(k, m.to_string()),
                _ => e("directory.ldap", m),
            };
        }
        self.access.validate()?;
        if let Err((k, m)) = self.mta.validate() {
            return e(&k, m);
        }
        if let Some(g) = &self.default_group
            && !self.groups.iter().any(|x| &x.name == g)
        {
            return e(
                "default_group",
                format!("{g:?} is not one of this node's groups"),
            );
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            return e("raft.heartbeat_ms", "must be greater than 0".into());
        }
        if r.election_timeout_min_ms <= r.heartbeat_ms {
            return e(
                "raft.election_timeout_min_ms",
                "must be greater than raft.heartbeat_ms".into(),
            );
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return e(
                "raft.election_timeout_max_ms",
                "must be greater than raft.election_timeout_min_ms".into(),
            );
        }
        if r.snapshot_every == 0 {
            return e("raft.snapshot_every", "must be greater than 0".into());
        }
        if r.snapshot_chunk_bytes < 4096 || r.snapshot_chunk_bytes > 64 << 20 {
            return e(
                "raft.snapshot_chunk_bytes",
                "must be between 4096 and 67108864".into(),
            );
        }
        if r.max_payload_entries == 0 {
            return e("raft.max_payload_entries", "must be greater than 0".into());
        }
        let lease = self.lease_ms();
        if lease <= self.raft.heartbeat_ms || lease >= self.raft.election_timeout_max_ms {
            return e(
                "fencing.lease_ms",
                format!(
                    "{lease} must be above raft.heartbeat_ms and below raft.election_timeout_max_ms ({})",
                    self.raft.election_timeout_max_ms
                ),
            );
        }
        Ok(())
    }
}

pub fn valid_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = r#"
node_id = 1
data_dir = "data"
[cluster]
listen = "127.0.0.1:7700"
plaintext = true
[[cluster.nodes]]
id = 1
addr = "127.0.0.1:7700"
[[groups]]
name = "rg1"
members = [1]
"#;

    #[test]
    fn good_config_loads_with_defaults_and_resolved_paths() {
        let d = tempfile::tempdir().unwrap();
        let c = NodeConfig::load(&write(d.path(), GOOD)).unwrap();
        assert_eq!(c.data_dir, d.path().join("data"));
        assert_eq!(c.default_group, None);
        assert_eq!(c.raft.heartbeat_ms, 100);
    }

    #[test]
    fn errors_name_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (
                GOOD.replace("listen = \"127.0.0.1:7700\"", "listen = \"nowhere\""),
                "cluster.listen",
            ),
            (GOOD.replace("node_id = 1", "node_id = 0"), "node_id"),
            (
                GOOD.replace("members = [1]", "members = [7]"),
                "groups[0].members",
            ),
            (
                GOOD.replace("name = \"rg1\"", "name = \"Bad Name\""),
                "groups[0].name",
            ),
            (GOOD.replace("plaintext = true", ""), "cluster.tls"),
            (GOOD.replace("[[groups]]", "bogus = 1\n[[groups]]"), "line"),
            // One routing key for the MTA and access; partitions are gone.
            (
                GOOD.replace(
                    "data_dir = \"data\"",
                    "data_dir = \"data\"\ndefault_group = \"rg9\"",
                ),
                "default_group",
            ),
            (
                format!("{GOOD}[mta]\ndefault_group = \"rg1\"\n"),
                "mta.default_group",
            ),
            (
                format!("{GOOD}[access]\ndefault_group = \"rg1\"\n"),
                "access.default_group",
            ),
            (
                GOOD.replace("members = [1]", "members = [1]\npartitions = [\"primary\"]"),
                "groups[0].partitions",
            ),
            // Floating addresses and topology.
            (
                GOOD.replace("members = [1]", "members = [1]\naddress = \"fd00::1/64\""),
                "groups[0].address",
            ),
            (
                GOOD.replace(
                    "members = [1]",
                    "members = [1]\naddress = \"198.18.0.100/24\"",
                ),
                "fencing.interface",
            ),
            (
                GOOD.replace("members = [1]", "members = [1]\npreferred = 2"),
                "groups[0].preferred",
            ),
            (
                GOOD.replace("members = [1]", "members = [1]\nleaders = [3]"),
                "groups[0].leaders",
            ),
            (
                GOOD.replace(
                    "addr = \"127.0.0.1:7700\"",
                    "addr = \"127.0.0.1:7700\"\nwitness = true",
                ),
                "groups[0].members",
            ),
            (
                format!(
                    "{}\n[mta]\nsmtp_listen = \"0.0.0.0:25\"\n[fencing]\ninterface = \"eth0\"\n",
                    GOOD.replace(
                        "members = [1]",
                        "members = [1]\naddress = \"198.18.0.100/24\""
                    )
                ),
                "mta.smtp_listen",
            ),
            (
                format!("{GOOD}\n[fencing]\nlease_ms = 900\n"),
                "fencing.lease_ms",
            ),
        ];
        for (text, key) in cases {
            let p = write(d.path(), &text);
            let e = NodeConfig::load(&p).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&p.display().to_string()), "{s}");
            assert!(e.key.starts_with(key), "expected key {key}, got {s}");
        }
    }
}
