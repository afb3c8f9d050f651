//! # halyard-chaos — fault injection (to be built; issue "Jepsen-style harness and chaos
//! nemeses")
//!
//! Will own the network-namespace testbed and the nemeses: partitions (nftables), delay and
//! loss, kill -9 and SIGSTOP, clock skew through libfaketime, membership changes.
