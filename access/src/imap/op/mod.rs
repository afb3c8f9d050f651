//! The IMAP commands, one file per command family. Each file is an `impl Session` block; the
//! session itself (`super::session`) keeps the state, the read loop and the dispatch tables
//! that call into these files.

mod append;
mod auth;
mod general;
mod idle;
mod list_ext;
mod mailbox;
pub(crate) mod qresync;
mod quota;
pub(crate) mod select;
mod store;
