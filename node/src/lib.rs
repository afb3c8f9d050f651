//! # halyard-node — the `halyard` binary's library
//!
//! - [`config`] — `node.toml`, validated at start;
//! - [`runtime`] — a running node: groups, Raft RPC server;
//! - [`network`] — Raft RPCs to peers over tonic gRPC (mutual TLS);
//! - [`admin`] / [`client`] — the admin API and its client (`halyard ctl`, bench, tests);
//! - [`ctl`], [`demo`], [`bench`] — subcommands;
//! - [`tls`] — cluster CA and certificates.

pub mod admin;
pub mod bench;
pub mod bench_access;
pub mod bench_smtp;
pub mod chaos_cmd;
pub mod client;
pub mod cluster_cmd;
pub mod config;
pub mod ctl;
pub mod ctl_dir;
pub mod ctl_queue;
pub mod demo;
pub mod failover;
pub mod floating;
pub mod forward;
pub mod jepsen_cmd;
pub mod local_cluster;
pub mod network;
pub mod runtime;
pub mod tls;

/// Generated protobuf/gRPC code (proto/halyard.proto).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("halyard.v1");
}
