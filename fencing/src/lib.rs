//! # halyard-fencing — floating addresses and fencing (to be built; issue "Floating logical
//! address, fencing, topologies")
//!
//! Will own acquiring and releasing a resource group's logical IP address (netlink +
//! gratuitous ARP), the leader lease and the fencing token (term, node id), and starting and
//! stopping a group's services when mastership changes.
//!
//! Seam already in place: `halyard-raft-store`'s `Group::status` (leader, term,
//! `millis_since_quorum_ack`) and `Group::raft().metrics()` to watch mastership.
