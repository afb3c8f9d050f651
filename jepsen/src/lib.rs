//! # halyard-jepsen — the correctness harness (being built)
//!
//! Built the way Jepsen is: clients record every operation as an invocation and its
//! completion (`ok` / `fail` / `info`) in a [`history`]; checkers judge the history.
//!
//! Here so far: histories (JSON lines, invocation/completion pairing) and the checkers for
//! SMTP delivery as a set with multiplicities (lost, duplicated, unexpected,
//! failed-but-delivered, with the smallest excerpt that shows the first anomaly) and for a
//! single address holder. Workloads, the run/campaign commands, the IMAP list-append and flag
//! register checkers and reports are the rest of the issue "Jepsen-style harness and chaos
//! nemeses".

pub mod checker;
pub mod history;
