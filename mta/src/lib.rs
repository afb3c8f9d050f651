//! # halyard-mta — message transfer (to be built; issue "MTA")
//!
//! Will own, per ARCHITECTURE.md: the dispatcher (listeners, connection limits, per-IP
//! throttling), the SMTP/ESMTP/submission/LMTP servers, rewrite rules and channels, the job
//! controller over the replicated queue, delivery agents (store, SMTP relay via MX, LMTP,
//! pipe), DSN, anti-relay and DNSBL.
//!
//! Seam already in place: the replicated queue of `halyard-raft-store` — `Command::Enqueue`
//! (commit = the right to answer `250`), `Command::Deliver` (idempotent per queue id +
//! recipient), `Command::UpdateRecipient`, and the group's change feed for the job controller.
