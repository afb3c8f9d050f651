//! # halyard-lab — the testbed, the nemeses, the Jepsen runner and the benchmarks
//!
//! Everything an operator or a test uses to prove Halyard, kept out of the daemon: the
//! `halyard` binary (`serve`, `ctl`, `certs`, `demo`) links none of it. `halyard-lab` drives
//! `halyard` processes: it finds the daemon next to itself (or takes `--binary`).
//!
//! # Layout
//! - [`cluster_cmd`] — `cluster up|down|status|kill|start|probe|drill`: nodes in network
//!   namespaces joined by a bridge, floating addresses, an ARP probe (root);
//! - [`chaos_cmd`] — `chaos ...`: one fault at a time on a testbed, and the hidden helper
//!   processes it starts (`chaos-delayd`, `chaos-strobed`);
//! - [`jepsen_cmd`] — `jepsen run|campaign`: workload + nemesis + checker on a testbed;
//! - [`bench`], [`bench_access`], [`bench_smtp`] — commit, IMAP and SMTP benchmarks.

pub mod bench;
pub mod bench_access;
pub mod bench_smtp;
pub mod chaos_cmd;
pub mod cluster_cmd;
pub mod jepsen_cmd;

use std::path::PathBuf;

/// The `halyard` daemon binary: next to this program (both are built together), else the
/// one on `PATH`.
pub fn halyard_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("halyard");
    if sibling.exists() {
        return Ok(sibling);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("halyard"))
            .find(|p| p.exists())
    });
    on_path.ok_or_else(|| {
        anyhow::anyhow!(
            "no halyard binary next to {} or on PATH (build the workspace, or pass --binary)",
            me.display()
        )
    })
}
