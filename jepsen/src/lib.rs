//! # halyard-jepsen — the correctness harness
//!
//! Built the way Jepsen is: clients record every operation as an invocation and its
//! completion (`ok` / `fail` / `info`) in a [`history`]; checkers judge the history.
//!
//! - [`runner`]: client threads drive a [`runner::Workload`] while the nemesis injects one
//!   fault per interval from `halyard-chaos` (kill, partitions of several shapes, pause,
//!   loss, delay/reordering, clock skew and strobe, membership changes, or a mix); every
//!   fault is healed at the end, even on panic; then the final reads.
//! - Workloads: [`smtp`] (unique tokens delivered through the floating address, read back
//!   over IMAP), [`append`] (IMAP mailboxes as append-only lists: APPEND + whole-mailbox
//!   reads), [`register`] (the flags of a few messages as read/write registers).
//! - Checkers: [`checker::set`] (lost, duplicated, unexpected, failed-but-delivered),
//!   [`append::check`] (order, stale reads, UID ↔ token, UIDVALIDITY, UIDNEXT/MODSEQ
//!   monotonic, lost, duplicated), [`linearizable`] (a WGL search for the flag registers,
//!   crashed operations included) and [`checker::single_holder`] (the ARP probe's rounds);
//!   each reports the smallest excerpt of history that shows its first anomaly.
//! - [`report`]: an HTML timeline and SVG latency/throughput plots with nemesis intervals
//!   shaded.
//!
//! `halyard-lab jepsen run|campaign` (crate `halyard-node`) runs them on a `halyard-lab cluster up`
//! testbed.

pub mod append;
pub mod checker;
pub mod history;
pub mod imap;
pub mod linearizable;
pub mod register;
pub mod report;
pub mod runner;
pub mod smtp;
