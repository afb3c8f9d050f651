//! The address guard: a small helper process that removes this node's floating addresses
//! the moment the node process dies, however it dies.
//!
//! An address added to an interface outlives the process that added it: after a `kill -9`
//! the node's kernel would keep answering ARP for the group's address while the new master
//! announces it too, and clients whose ARP entry expires could pick the dead node. The node
//! therefore starts `halyard fence-guard` with a pipe on its standard input and tells it
//! which addresses it holds (`+ eth0 198.18.0.100/24`, `- eth0 198.18.0.100/24`). When the
//! node exits for any reason the kernel closes the pipe; the guard reads end-of-file, removes
//! every address it was told about, and exits. (A node frozen by SIGSTOP keeps the pipe open:
//! see the crate documentation on fence hooks.)

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use crate::netlink::Cidr;

pub struct Guard {
    child: Mutex<(Child, Option<ChildStdin>)>,
}

impl Guard {
    /// Starts `exe fence-guard` (the same binary, normally `/proc/self/exe`).
    pub fn spawn(exe: &std::path::Path) -> std::io::Result<Guard> {
        let mut child = Command::new(exe)
            .arg("fence-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Guard {
            child: Mutex::new((child, stdin)),
        })
    }

    fn tell(&self, line: &str) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = c.1.as_mut()
            && let Err(e) = writeln!(s, "{line}").and_then(|_| s.flush())
        {
            tracing::error!(error = %e, "the address guard is gone: a crash of this node would leave its floating addresses behind");
            c.1 = None;
        }
    }

    pub fn hold(&self, interface: &str, cidr: Cidr) {
        self.tell(&format!("+ {interface} {cidr}"));
    }

    pub fn release(&self, interface: &str, cidr: Cidr) {
        self.tell(&format!("- {interface} {cidr}"));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        c.1 = None; // EOF: the guard removes what is left and exits
        let _ = c.0.wait();
    }
}

/// The guard process itself: follows the node's announcements on standard input and
/// removes the addresses still held when it reaches end-of-file.
pub fn run_guard() -> std::io::Result<()> {
    let mut held: Vec<(String, Cidr)> = Vec::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut parts = line.split_whitespace();
        let (Some(op), Some(iface), Some(cidr)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(cidr) = cidr.parse::<Cidr>() else {
            continue;
        };
        match op {
            "+" if !held.iter().any(|(i, c)| i == iface && *c == cidr) => {
                held.push((iface.to_string(), cidr));
            }
            "-" => held.retain(|(i, c)| !(i == iface && *c == cidr)),
            _ => {}
        }
    }
    for (iface, cidr) in held {
        match crate::netlink::del_address(&iface, cidr) {
            Ok(()) => eprintln!("halyard fence-guard: node gone, removed {cidr} from {iface}"),
            Err(e) => eprintln!(
                "halyard fence-guard: node gone, could not remove {cidr} from {iface}: {e}"
            ),
        }
    }
    Ok(())
}
