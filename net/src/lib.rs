//! # halyard-net — what every protocol needs to accept connections
//!
//! IMAP, POP3, SMTP/submission/LMTP (and later ManageSieve and HTTP) are served the same
//! way: each implements [`Protocol`] (a name, a refusal text, `serve(Accepted)`), and a
//! [`Service`] binds its listeners, admits connections and hands them over. Nothing here
//! knows a protocol; the protocol crates (`access`, `mta`) know nothing of each other.
//!
//! # Layout
//! - [`stream`] — a client connection, plain or TLS, STARTTLS upgrade, polite closes;
//! - [`tls`] — server TLS from PEM files, re-read on SIGHUP;
//! - [`admission`] — allow/deny networks, per-address rate, total and per-address caps;
//! - [`listen`] — [`Protocol`], [`Service`], the one accept loop, listener sets on node and
//!   floating addresses;
//! - [`supervise`] — restart of internal services that fail.

pub mod admission;
pub mod listen;
pub mod stream;
pub mod supervise;
pub mod tls;

pub use admission::{AccessRule, Admission, ConnGuard, Limits, Network, Refused};
pub use listen::{Accepted, Listener, ListenerSet, Protocol, ServeFuture, Service, Sessions};
pub use stream::Stream;
pub use tls::{Acceptor, ExternalIdentity, Tls, certificate_identity};
