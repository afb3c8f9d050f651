//! # halyard-access — message access (to be built; issue "IMAP4rev1 and POP3")
//!
//! Will own IMAP4 (imap-codec), POP3, SASL, TLS and the multiplexor that proxies a session to
//! the master of the user's resource group.
//!
//! Seam already in place: `halyard-raft-store`'s `Group::propose` for writes (APPEND, STORE,
//! EXPUNGE, COPY, MOVE, CREATE, RENAME, DELETE, SETACL, SETQUOTA), `Group::linearizable_reader`
//! for reads at SELECT/EXAMINE, and `Group::subscribe` for IDLE and unsolicited responses.
