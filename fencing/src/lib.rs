//! # halyard-fencing — floating addresses, leases and fencing tokens
//!
//! Each resource group has a floating logical address. The group's Raft leader — and only
//! it, and only while a quorum keeps acknowledging it — holds the address and runs the
//! group's listeners and job controller.
//!
//! - [`netlink`]: add/remove/query an IPv4 address on an interface (rtnetlink, no `ip`).
//! - [`arp`]: gratuitous ARP announcements (the address as sender *and* target, or hosts
//!   keep the old MAC) and the "who has this address" probe used by tests.
//! - [`holder`]: the lease watchdog, a plain OS thread that removes the address the moment
//!   the lease runs out, whatever the async runtime is doing.
//! - [`controller`]: leadership → `Fence::Acquire` committed → hook → address → serving; and
//!   back on leadership loss, lease expiry, a higher-term vote request, or a switchover.
//!
//! ## Why at most one node holds an address
//!
//! Fencing token = (Raft term, node id). A master holds the address only while
//! `now < t_ack + lease`, where `t_ack` is the send time of the latest heartbeat a quorum
//! acknowledged (openraft's `millis_since_quorum_ack`) and `lease` is shorter than openraft's
//! follower lease (`election_timeout_max`). A follower that acknowledged a heartbeat refuses
//! to vote for anyone else for that follower lease after receiving it (openraft checks this
//! in `handle_vote_req`), and any quorum that elects a new master shares a member with the
//! quorum that acknowledged the old master's `t_ack`. So a new master is elected only after
//! the old master's lease ended — by its own clock, with the margin `election_timeout_max -
//! lease` for clock-rate differences and the removal itself — and it can take the address as
//! soon as its `Fence::Acquire` entry commits (which also proves its leadership is committed
//! in its term). Two gaps are closed explicitly:
//!
//! - an openraft leader's own vote is not protected by that follower lease: a leader that
//!   receives a vote request of a newer term would grant it. The node's Raft RPC server calls
//!   [`controller::Controller::before_vote`] first, which removes the address before the
//!   vote is granted;
//! - a switchover (`halyard ctl failover`) has the old master remove the address and commit a
//!   `Fence::Release` before the new master is asked to stand for election.
//!
//! An address outlives the process that added it, so [`guard`] — a helper process with a
//! pipe from the node — removes it when the node dies (end-of-file) and when the lease the
//! node last reported runs out (a node frozen by SIGSTOP). What software alone cannot do:
//! a frozen guard too, or a hung kernel, keeps the address configured and answering ARP.
//! Sites that need a guarantee against that configure a fence hook (power fencing, a switch
//! port shutdown): a program the new master runs before every acquisition, which may refuse
//! it.
//!
//! Every acquisition and explicit release is a replicated entry, so `halyard ctl status`
//! shows the history of holders.

pub mod arp;
pub mod controller;
pub mod guard;
pub mod holder;
pub mod netlink;

pub use controller::{Controller, FenceConfig, FenceStatus};
pub use guard::Guard;
pub use holder::{AddressSpec, Holder};
pub use netlink::Cidr;
