//! The queue: what happens to a message between its commit and its delivery. The inbound
//! session proposes the `Enqueue` entry (`crate::inbound`); the replicated queue itself is
//! state of the resource group (halyard-raft-store). Here, on the group's master, the job
//! controller ([`jobs`]) runs each due recipient's channel — the store, or the outbound
//! relay (`crate::outbound`) — retries with back-off, and queues delivery status
//! notifications ([`dsn`]).

pub mod dsn;
pub mod jobs;
