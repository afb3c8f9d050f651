//! A Raft group as the rest of Halyard sees it: propose a command, read applied state, follow
//! the change feed, change membership, report status. `mta`, `access` and `node` use this;
//! they never touch openraft or RocksDB directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{ProposeError, StoreError};
use crate::log_store::{LogDb, LogStore};
use crate::model::{Change, Command, Reply};
use crate::state_machine::{SmShared, StateMachineStore};
use crate::types::{NodeId, Raft, TypeConfig};

/// Timing and log-compaction settings of a group (from the node's `[raft]` config).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers catch up from the log.
    pub keep_logs_after_snapshot: u64,
    /// Snapshot chunk size streamed to followers.
    pub snapshot_chunk_bytes: u64,
    /// Maximum entries per AppendEntries RPC.
    pub max_payload_entries: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every: 20_000,
            keep_logs_after_snapshot: 1_000,
            snapshot_chunk_bytes: 4 << 20,
            max_payload_entries: 256,
        }
    }
}

impl RaftTuning {
    pub fn openraft_config(&self, group: &str) -> Result<Arc<openraft::Config>, String> {
        let c = openraft::Config {
            cluster_name: group.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_payload_entries: self.max_payload_entries,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        c.validate().map(Arc::new).map_err(|e| e.to_string())
    }
}

/// How long a linearizable read may wait for the leader to confirm its leadership and apply
/// up to the read index before it is refused as unavailable.
pub const LINEARIZABLE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Role of a member in a group's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub role: Role,
    /// Highest log index known replicated on this member (leader's view; `None` elsewhere or
    /// when nothing matched yet).
    pub matched_index: Option<u64>,
    /// Leader's last log index minus `matched_index`.
    pub lag: Option<u64>,
}

/// What `halyard ctl status` shows for a group, from this node's point of view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub node_id: NodeId,
    /// This node's state in the group: leader, follower, candidate, learner, shutdown.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: u64,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub members: Vec<MemberStatus>,
}

struct GroupInner {
    name: String,
    node_id: NodeId,
    raft: Raft,
    sm: Arc<SmShared>,
    log: LogStore,
    /// Queue of the proposal batcher (see [`batcher`]).
    proposals: mpsc::Sender<Pending>,
    /// This node's fencing token while it holds the group's lease (and floating address):
    /// set by the fencing controller, read by whatever may only run on the holder (the job
    /// controller, the group's listeners, sessions that end when the lease is lost).
    serving: tokio::sync::watch::Sender<Option<crate::model::FenceToken>>,
    /// Command levels the other members reported (see [`Group::command_level`]).
    peer_levels: PeerLevels,
}

/// The command levels (see [`crate::COMMAND_LEVEL`]) other nodes reported in their Raft
/// RPCs, requests and answers alike, so a node knows its peers' levels whether it leads or
/// follows, and a new master knows the level of the one it replaced. Filled by the network
/// layer, read by [`Group::command_level`]. A peer that reports nothing (a build older than
/// command levels) counts as level 1.
#[derive(Clone, Default, Debug)]
pub struct PeerLevels(Arc<std::sync::Mutex<BTreeMap<NodeId, u32>>>);

impl PeerLevels {
    /// Records what `node` reported; 0 (an older build's absent field) means level 1.
    pub fn record(&self, node: NodeId, level: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, level.max(1));
    }

    pub fn get(&self, node: NodeId) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .copied()
    }
}

type MembershipError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

type Pending = (Command, oneshot::Sender<Result<Reply, ProposeError>>);

/// Most commands in one batched log entry.
pub const MAX_BATCH_COMMANDS: usize = 512;
/// Most (approximate) bytes in one batched log entry; a larger single command goes alone.
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// The proposal batcher: group commit above openraft.
///
/// openraft 0.9's leader appends (and so fsyncs) each client write separately and waits for
/// the flush before taking the next, so throughput would be bounded by one fsync per
/// proposal. The batcher takes every proposal queued while the previous batch was being
/// committed and proposes them as one [`Command::Batch`] entry: one append, one fsync per
/// node, one replication round for all of them. Each caller still gets its reply only after
/// the entry is committed on a majority and applied.
///
/// One batch is in flight at a time: proposals that arrive while a batch is being committed
/// wait for it and then go together in the next. A second batch in flight would only
/// overlap the leader's own append with the first batch's replication (openraft 0.9 sends a
/// peer one AppendEntries at a time, so it could not be replicated any sooner), at the price
/// of twice as many log entries, fsyncs, AppendEntries round trips and thread wake-ups per
/// message. Measured side by side under `smtp-source` (10 sessions, 3-node release demo,
/// 2026-12-06): one batch in flight took 6.0 instead of 8.5 context switches and 0.57-0.60
/// instead of 0.67 ms of CPU per message, and accepted 2,211 / 2,387 instead of 2,133 /
/// 2,153 msg/s (connection reused); with a new connection per message 7.9 instead of 10.7
/// context switches and 5-16 % less CPU per message. (Before the `TCP_NODELAY` fix the
/// machine was latency-bound and the two did equally well.)
async fn batcher(raft: Raft, group: String, mut rx: mpsc::Receiver<Pending>) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Everything that queued while the previous batch was committed joins this one.
        let mut bytes = first.0.approx_size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            match rx.try_recv() {
                Ok(p) => {
                    let size = p.0.approx_size();
                    if bytes + size > MAX_BATCH_BYTES {
                        carry = Some(p);
                        break;
                    }
                    bytes += size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        submit(&raft, &group, batch).await;
    }
}

async fn submit(raft: &Raft, group: &str, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let (cmd, tx) = batch.remove(0);
        let _ = tx.send(write(raft, group, cmd).await);
        return;
    }
    let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
    let n = cmds.len();
    match write(raft, group, Command::Batch(cmds)).await {
        Ok(Reply::Batch(replies)) if replies.len() == n => {
            for (tx, r) in txs.into_iter().zip(replies) {
                let _ = tx.send(Ok(r));
            }
        }
        Ok(other) => {
            for tx in txs {
                let _ = tx.send(Err(ProposeError::Unknown(format!(
                    "unexpected reply to a batch: {other:?}"
                ))));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

async fn write(raft: &Raft, group: &str, cmd: Command) -> Result<Reply, ProposeError> {
    let kind = cmd.kind();
    match raft.client_write(cmd).await {
        Ok(resp) => {
            tracing::debug!(
                group,
                kind,
                index = resp.log_id.index,
                term = resp.log_id.leader_id.term,
                "committed"
            );
            Ok(resp.data)
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                group: group.to_string(),
                leader_id: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            })
        }
        Err(RaftError::APIError(e)) => Err(ProposeError::Unknown(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(ProposeError::Unavailable(f.to_string())),
    }
}

/// One Raft group on this node. Cheap to clone.
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
}

impl Group {
    /// Opens the group's storage under `dir` and starts its Raft node.
    pub async fn open<N: RaftNetworkFactory<TypeConfig>>(
        name: &str,
        node_id: NodeId,
        tuning: &RaftTuning,
        log_db: &Arc<LogDb>,
        dir: &Path,
        network: N,
        peer_levels: PeerLevels,
    ) -> Result<Group, StoreError> {
        let config = tuning
            .openraft_config(name)
            .map_err(StoreError::Invariant)?;
        let sm = StateMachineStore::open(name, dir)?;
        let shared = sm.shared();
        let log = log_db.store(name);
        let raft = Raft::new(node_id, config, network, log.clone(), sm)
            .await
            .map_err(|e| StoreError::Invariant(format!("starting raft for group {name}: {e}")))?;
        let (proposals, rx) = mpsc::channel(MAX_BATCH_COMMANDS * 8);
        tokio::spawn(batcher(raft.clone(), name.to_string(), rx));
        Ok(Group {
            inner: Arc::new(GroupInner {
                name: name.to_string(),
                node_id,
                raft,
                sm: shared,
                log,
                proposals,
                serving: tokio::sync::watch::channel(None).0,
                peer_levels,
            }),
        })
    }

    /// Watches this node's fencing token for the group: `Some` while it holds the lease.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<Option<crate::model::FenceToken>> {
        self.inner.serving.subscribe()
    }

    /// Whether this node holds the group's lease now.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.borrow().is_some()
    }

    /// Set by the fencing controller only.
    pub fn set_serving(&self, token: Option<crate::model::FenceToken>) {
        self.inner.serving.send_if_modified(|t| {
            let changed = *t != token;
            *t = token;
            changed
        });
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where the network layer records the levels peers report.
    pub fn peer_levels(&self) -> &PeerLevels {
        &self.inner.peer_levels
    }

    /// The highest command level every member of the group (voters and learners: all of
    /// them apply the log) can apply: this build's [`crate::COMMAND_LEVEL`] for this node,
    /// what the others last reported, 1 for a member not heard from yet. A command of a
    /// higher level than this must not be proposed.
    pub fn command_level(&self) -> u32 {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, _)| {
                if *id == self.inner.node_id {
                    crate::COMMAND_LEVEL
                } else {
                    self.inner.peer_levels.get(*id).unwrap_or(1)
                }
            })
            .min()
            .unwrap_or(1)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The cluster address of the group's leader when it is known and is another node
    /// (where a proposal made here would be refused with `NotLeader`).
    pub fn leader_elsewhere(&self) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.filter(|l| *l != self.inner.node_id)?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// The underlying openraft handle, for the RPC server and membership tooling.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Applied state on this node, possibly stale.
    pub fn reader(&self) -> Arc<SmShared> {
        self.inner.sm.clone()
    }

    /// Applied state after confirming with a quorum that this node is still the leader and
    /// has applied everything committed before the call (openraft `ensure_linearizable`).
    pub async fn linearizable_reader(&self) -> Result<Arc<SmShared>, ProposeError> {
        // openraft 0.9 confirms leadership with one heartbeat round and then waits for the
        // state machine to reach the read index, with no deadline of its own; a read caught in
        // a replication stall was seen to wait forever (a benchmark's SELECTs under a
        // 16-client APPEND load). A read that cannot be confirmed in time is refused as
        // unavailable, which a client retries, rather than holding its session.
        let confirmed = tokio::time::timeout(
            LINEARIZABLE_READ_TIMEOUT,
            self.inner.raft.ensure_linearizable(),
        )
        .await;
        let Ok(confirmed) = confirmed else {
            return Err(ProposeError::Unavailable(format!(
                "group {}: leadership not confirmed within {} s",
                self.inner.name,
                LINEARIZABLE_READ_TIMEOUT.as_secs()
            )));
        };
        match confirmed {
            Ok(_) => Ok(self.inner.sm.clone()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.not_leader_from(Some(&f)))
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Unknown(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(ProposeError::Unavailable(f.to_string())),
        }
    }

    fn not_leader_from(
        &self,
        f: Option<&openraft::error::ForwardToLeader<NodeId, BasicNode>>,
    ) -> ProposeError {
        ProposeError::NotLeader {
            group: self.inner.name.clone(),
            leader_id: f.and_then(|f| f.leader_id),
            leader_addr: f.and_then(|f| f.leader_node.as_ref().map(|n| n.addr.clone())),
        }
    }

    /// Proposes a command and waits until it is committed (fsynced on a majority) and applied
    /// here. Only an `Ok` means the command took effect.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.inner.proposals.send((cmd, tx)).await.map_err(|_| {
            ProposeError::Unavailable(format!("group {} is shutting down", self.inner.name))
        })?;
        rx.await.map_err(|_| {
            ProposeError::Unknown("proposal dropped before an outcome was known".into())
        })?
    }

    /// Applied changes of this group, as they happen on this node.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.inner.sm.subscribe()
    }

    /// Creates the group's first membership if this node has never been part of it. Returns
    /// whether it did. Every initial member may call this with the same membership.
    pub async fn initialize_if_new(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<bool, String> {
        let raft = &self.inner.raft;
        if raft.is_initialized().await.map_err(|e| e.to_string())? {
            return Ok(false);
        }
        match raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Adds a node as a learner and waits (bounded) until it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), ProposeError> {
        let fut = self.inner.raft.add_learner(id, BasicNode::new(addr), true);
        self.membership_result(tokio::time::timeout(Duration::from_secs(120), fut).await)
            .await
    }

    /// Makes a learner a voter (joint consensus handled by openraft).
    pub async fn promote(&self, id: NodeId) -> Result<(), ProposeError> {
        let fut = self
            .inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false);
        self.membership_result(tokio::time::timeout(Duration::from_secs(60), fut).await)
            .await
    }

    /// Removes a voter or learner from the group.
    pub async fn remove(&self, id: NodeId) -> Result<(), ProposeError> {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        let is_voter = m.membership().voter_ids().any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let fut = self.inner.raft.change_membership(change, false);
        self.membership_result(tokio::time::timeout(Duration::from_secs(60), fut).await)
            .await
    }

    async fn membership_result<T>(
        &self,
        r: Result<Result<T, MembershipError>, tokio::time::error::Elapsed>,
    ) -> Result<(), ProposeError> {
        match r {
            Err(_) => Err(ProposeError::Unknown("membership change timed out".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_leader_from(Some(&f)))
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Unknown(e.to_string())),
            Ok(Err(RaftError::Fatal(f))) => Err(ProposeError::Unavailable(f.to_string())),
        }
    }

    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// Group commit counters of this node's log database.
    pub fn log_stats(&self) -> Arc<crate::log_store::LogStats> {
        self.inner.log.stats()
    }

    pub fn status(&self) -> GroupStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index);
                let matched = if *id == m.id && m.state == ServerState::Leader {
                    last
                } else {
                    matched
                };
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    role: if voters.contains(id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    },
                    matched_index: matched,
                    lag: match (last, matched) {
                        (Some(l), Some(mi)) if m.state == ServerState::Leader => {
                            Some(l.saturating_sub(mi))
                        }
                        _ => None,
                    },
                }
            })
            .collect();
        GroupStatus {
            name: self.inner.name.clone(),
            node_id: m.id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: last,
            commit_index: self.inner.log.committed_index(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members,
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(group = %self.inner.name, error = %e, "raft shutdown");
        }
    }
}

/// Name of the group holding cluster-wide data (the embedded directory); never a mailbox
/// group.
pub const META_GROUP: &str = "meta";

/// The resource group holding a user's mailboxes (and the queue of mail for them): the
/// directory's `mailHost` when set, else the configured default group, else the only
/// resource group among `served` (the groups this node runs; the meta group is not one).
/// `None` when that leaves a choice. IMAP/POP3 and the MTA place users by this one rule.
pub fn home_group<'a>(
    mail_host: Option<&str>,
    default_group: Option<&str>,
    served: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    mail_host.or(default_group).map(str::to_string).or_else(|| {
        let mut names = served.into_iter().filter(|n| n.as_str() != META_GROUP);
        match (names.next(), names.next()) {
            (Some(n), None) => Some(n.clone()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod home_group_tests {
    use super::*;

    #[test]
    fn mail_host_then_default_then_the_only_group() {
        let one = vec!["meta".to_string(), "rg1".to_string()];
        let two = vec!["meta".to_string(), "rg1".to_string(), "rg2".to_string()];
        assert_eq!(
            home_group(Some("rg2"), Some("rg1"), &one).as_deref(),
            Some("rg2")
        );
        assert_eq!(home_group(None, Some("rg2"), &one).as_deref(), Some("rg2"));
        assert_eq!(home_group(None, None, &one).as_deref(), Some("rg1"));
        assert_eq!(home_group(None, None, &two), None);
        assert_eq!(home_group(None, None, &["meta".to_string()]), None);
    }
}
