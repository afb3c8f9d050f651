//! Error types of the replicated core.

use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::types::NodeId;

/// A failure of local storage or of an internal invariant. These are fatal for the group on
/// this node (openraft stops the group); they never describe a refused command, which is a
/// [`crate::model::Reply::Error`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("encoding: {0}")]
    Codec(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("invariant violated: {0}")]
    Invariant(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Rocks(e.into_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl StoreError {
    pub(crate) fn raft(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageError::IO {
            source: StorageIOError::new(subject, verb, &self),
        }
    }
    pub(crate) fn logs_read(self) -> StorageError<NodeId> {
        self.raft(ErrorSubject::Logs, ErrorVerb::Read)
    }
    pub(crate) fn logs_write(self) -> StorageError<NodeId> {
        self.raft(ErrorSubject::Logs, ErrorVerb::Write)
    }
    pub(crate) fn sm_read(self) -> StorageError<NodeId> {
        self.raft(ErrorSubject::StateMachine, ErrorVerb::Read)
    }
    pub(crate) fn sm_write(self) -> StorageError<NodeId> {
        self.raft(ErrorSubject::StateMachine, ErrorVerb::Write)
    }
    pub(crate) fn snapshot(self, verb: ErrorVerb) -> StorageError<NodeId> {
        self.raft(ErrorSubject::Snapshot(None), verb)
    }
}

/// Why a proposal did not produce a reply from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the group's leader; retry at the leader (if known).
    #[error("not the leader of group {group}; leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        group: String,
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// No such group on this node.
    #[error("no such group: {0}")]
    NoSuchGroup(String),
    /// The outcome is unknown (e.g. leadership lost while the entry was in flight): the entry
    /// may or may not commit. Callers must not report success, and must not assume failure.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The group cannot serve (shutting down, fatal storage error).
    #[error("unavailable: {0}")]
    Unavailable(String),
}
