//! # halyard-jepsen — the correctness harness (being built)
//!
//! Built the way Jepsen is: clients record every operation as an invocation and its
//! completion (`ok` / `fail` / `info`) in a [`history`]; checkers judge the history.
//!
//! Here so far: histories (JSON lines, invocation/completion pairing); the [`smtp`] workload
//! (unique tokens delivered through the floating address under a nemesis from
//! `halyard-chaos`, then read back over IMAP; `halyard jepsen run`); the checkers for SMTP
//! delivery as a set with multiplicities (lost, duplicated, unexpected, failed-but-delivered,
//! with the smallest excerpt that shows the first anomaly) and for a single address holder.
//! The IMAP list-append and flag-register workloads and checkers, campaigns, clock nemeses
//! and HTML/SVG reports are the rest of the issue "Jepsen-style harness and chaos nemeses".

pub mod checker;
pub mod history;
pub mod linearizable;
pub mod report;
pub mod smtp;
