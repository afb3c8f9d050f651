//! # halyard-raft-store — the replicated core
//!
//! Every resource group (store partitions + mail queue) and the cluster-wide meta group is a
//! Raft group built from three parts kept apart, as in openraft's examples:
//!
//! - [`log_store`] — the Raft log on RocksDB, one database per node shared by all groups,
//!   fsynced before openraft is told an append is durable, with group commit;
//! - [`state_machine`] — the group's state on RocksDB: apply, snapshots (RocksDB checkpoints
//!   streamed in chunks), atomic snapshot install, and the change feed;
//! - the network, which lives in the `node` crate (tonic gRPC over mutual TLS) and is passed in
//!   as an [`openraft::network::RaftNetworkFactory`].
//!
//! The meaning of the data — mailboxes, UIDs, flags, single-copy bodies, quotas, the queue —
//! is in [`model`] (commands, replies, records) and [`apply`] (the deterministic apply
//! function). Callers use [`Group`]: `propose(Command) -> Reply` returns only after the entry
//! is committed on a majority, `linearizable_reader()` for reads on the leader, `subscribe()`
//! for the change feed.
//!
//! The modules are layered: besides the data types of [`model`] and [`error`], which every
//! layer uses, each uses only those below it:
//!
//! - at the bottom, [`kv`] (column families, the [`kv::KvRead`] trait, the [`kv::Txn`]
//!   transaction overlay, the bincode codec, body storage in chunks) and [`keys`] (the key
//!   layout of every column family); they know nothing of what commands do (a `Txn` only
//!   carries the model's events along with its writes);
//! - above them, [`apply`] (the deterministic apply function, split by concern under a short
//!   dispatch) and [`directory`] (the embedded directory's records and their apply);
//! - on top, [`state_machine`], [`log_store`], [`read`] and [`group`], which run it all on
//!   RocksDB and openraft.

pub mod acl;
pub mod apply;
pub mod directory;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod keys;
pub mod kv;
pub mod log_store;
pub mod mime;
pub mod model;
pub mod read;
pub mod state_machine;
pub mod types;

pub use error::{ProposeError, StoreError};
pub use group::{
    Group, GroupStatus, META_GROUP, MemberStatus, PeerLevels, RaftTuning, Role, home_group,
};
pub use log_store::{LogDb, LogStats, LogStore};
pub use model::*;
pub use state_machine::{SmShared, StateMachineStore};
pub use types::{NodeId, TypeConfig};

/// Re-exported so callers can name openraft's RPC types without depending on openraft.
pub use openraft;

/// Version of the on-disk data: Raft log entries and state machine records are bincode of
/// the types in [`model`] and [`directory`], so a change to one of them (a field, a variant,
/// their order) changes it. A node writes it in `data_dir/FORMAT` and refuses a directory of
/// another format. `tests/golden_encoding.rs` pins the bytes of every command and record:
/// it fails on an encoding change until this is raised and the golden file re-blessed.
pub const DATA_FORMAT: u32 = 3;
