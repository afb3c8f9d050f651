//! # halyard-node — the `halyard` binary's library
//!
//! The daemon and its operator's tools; the testbed, nemeses, Jepsen runner and benchmarks
//! live in `halyard-lab`, which uses this library but is not linked into `halyard`.
//!
//! # Layout
//! - [`config`] — `node.toml`, validated at start;
//! - [`runtime`] — a running node: groups, Raft RPC server, message access and the MTA,
//!   fencing controllers; shutdown on a signal;
//! - [`shared`] — [`shared::NodeShared`], the state every part of a running node reads;
//! - [`network`] — Raft RPCs to peers over tonic gRPC (mutual TLS); [`raft_rpc`] — their
//!   server side;
//! - [`admin`] — the admin API's server side (its schema, types and client are in
//!   `halyard-api`, which `ctl`, `halyard-lab` and the tests use);
//! - [`forward`] — proposals handed to a group's leader by the other members;
//! - [`floating`] — a group's listeners on its floating address while this node holds it;
//! - [`failover`] — switchover, forced failover and failback;
//! - [`purge`] — deleted users' store data purged after a grace period;
//! - [`ctl`], [`ctl_dir`], [`ctl_queue`] — `halyard ctl` and its subcommands;
//! - [`demo`] — `halyard demo`; [`local_cluster`] — nodes as local processes (tests, benches);
//! - [`tls`] — cluster CA and certificates.

pub mod admin;
pub mod audit;
pub mod config;
pub mod ctl;
pub mod ctl_dir;
pub mod ctl_queue;
pub mod demo;
pub mod failover;
pub mod floating;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod local_cluster;
pub mod network;
pub mod purge;
pub mod raft_rpc;
pub mod relay;
pub mod runtime;
pub mod runtimes;
pub mod scope;
pub mod shared;
pub mod tls;

/// Generated protobuf/gRPC code (halyard-api's proto/halyard.proto).
pub use halyard_api::pb;
