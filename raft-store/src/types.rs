//! openraft type configuration shared by every group.

use crate::model::{Command, Reply};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Halyard's Raft types: commands and replies of [`crate::model`], `u64` node ids,
    /// [`openraft::BasicNode`] carrying the node's cluster address, and snapshots as files
    /// (a packed RocksDB checkpoint, see [`crate::state_machine`]).
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
