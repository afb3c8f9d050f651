//! Helpers shared by the directory crate's integration tests (a private slapd).
pub mod slapd;
