//! # halyard-api — the cluster's RPCs and the admin client
//!
//! One gRPC endpoint per node (the cluster port) carries the Raft messages of every group and
//! the admin API. This crate holds what both ends of those calls share, so that the daemon's
//! server modules and every client (`halyard ctl`, `halyard-lab`, the tests) depend on it and
//! not on each other:
//! - [`pb`] — the generated protobuf/gRPC code of `proto/halyard.proto` (the schema, with the
//!   rules for which records travel as bincode);
//! - [`types`] — the admin API's Rust types (node status, failover and election reports,
//!   digests, message summaries, user views) with their conversions to and from [`pb`];
//! - [`client`] — [`client::Admin`], the typed admin client;
//! - [`tls`] — the cluster's mutual-TLS material and names;
//! - the transport limits both ends configure alike ([`MAX_MESSAGE_BYTES`], the HTTP/2
//!   windows).

pub mod client;
pub mod tls;
pub mod types;

pub use client::Admin;
pub use types::{
    Digest, ElectReport, FailoverReport, MessageSummary, NodeStatus, Resolved, UserView,
};

/// Generated protobuf/gRPC code (proto/halyard.proto).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("halyard.v1");
}

/// Largest gRPC message accepted or sent: a batch of entries with large bodies, or a snapshot
/// chunk, must fit.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// HTTP/2 flow-control windows. The protocol default (64 KiB) would make every batch of
/// bodies wait for window updates, a round trip per 64 KiB; entries of several MiB are normal.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;
