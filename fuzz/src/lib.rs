//! # halyard-fuzz — the fuzz targets
//!
//! Every parser that reads what a client, a peer or an operator sends, as a function of
//! arbitrary bytes that panics when the parser misbehaves. Each target runs the crate's own
//! code (a `fuzzing` module in that crate, so nothing private has to become an API) and
//! checks more than "no panic": framing that makes progress and stays within its limits,
//! round trips, offsets within bounds, an honest SCRAM client always getting in.
//!
//! - AFL++ runs them, instrumented on the stable toolchain by `cargo afl`, through the
//!   one-binary crate in `fuzz/afl` (its own workspace, so the normal build never needs
//!   AFL): `scripts/fuzz.sh TARGET SECONDS`.
//! - Seed inputs are in `fuzz/corpus/TARGET/`; every input that ever crashed a target is
//!   kept in `fuzz/regressions/TARGET/`. `tests/replay.rs` runs all of them, and random
//!   inputs, through every target in the normal test run.

/// A fuzz target: panics when its checks fail.
pub type Target = fn(&[u8]);

/// Every target, by the name `scripts/fuzz.sh` and the corpus directories use.
pub const TARGETS: &[(&str, Target)] = &[
    ("smtp_session", halyard_mta::fuzzing::smtp_session),
    ("smtp_data", halyard_mta::fuzzing::smtp_data),
    ("imap_command", halyard_access::fuzzing::imap_command),
    ("mailbox_name", halyard_access::fuzzing::mailbox_name),
    ("pop3", halyard_access::fuzzing::pop3),
    ("message_meta", halyard_raft_store::fuzzing::message_meta),
    ("sasl", halyard_directory::fuzzing::sasl),
    ("config", halyard_node::fuzzing::config),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
