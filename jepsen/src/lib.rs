//! # halyard-jepsen — correctness harness (to be built; issue "Jepsen-style harness")
//!
//! Will own workloads (SMTP deliveries, IMAP APPEND/FETCH/STORE), histories
//! (invoke/ok/fail/info), checkers (lost, duplicated, order, UID, linearizability, address
//! holders) and reports.
