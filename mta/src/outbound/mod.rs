//! The outbound side: delivering queue entries to other servers, for the job controller
//! (`crate::queue::jobs`). [`relay`] is the channel (SMTP to the MX hosts or a smarthost,
//! LMTP to a host); `dns.rs` holds its DNS lookups, `pool.rs` its connection reuse and
//! `client.rs` the client dialogue on one connection.

mod client;
mod dns;
pub mod handover;
mod pool;
pub mod relay;
