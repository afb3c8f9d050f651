//! The address guard: a small helper process that removes this node's floating addresses
//! the moment the node process dies, however it dies.
//!
//! An address added to an interface outlives the process that added it: after a `kill -9`
//! the node's kernel would keep answering ARP for the group's address while the new master
//! announces it too, and clients whose ARP entry expires could pick the dead node. The node
//! therefore starts `halyard fence-guard` with a pipe on its standard input and tells it
//! which addresses it holds (`+ eth0 198.18.0.100/24`, `- eth0 198.18.0.100/24`). When the
//! node exits for any reason the kernel closes the pipe; the guard reads end-of-file, removes
//! every address it was told about, and exits.
//!
//! The guard also enforces the lease itself: each announcement carries the time left on the
//! lease (`+ eth0 198.18.0.100/24 275`), renewed as the node extends it, and the guard removes
//! an address whose lease ran out [`GRACE`] after the node's own deadline. A live node's own
//! watchdog always acts first; a node frozen by SIGSTOP (whose kernel would otherwise keep
//! answering ARP for the address) loses it all the same, before a new master can be elected.
//! Only freezing the guard too (the whole process group) defeats this — what the fence hook
//! is for.

use std::io::Write;
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

    /// The address is held, with `left` of lease.
    pub fn hold(&self, interface: &str, cidr: Cidr, left: std::time::Duration) {
        self.tell(&format!("+ {interface} {cidr} {}", left.as_millis()));
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

/// How long after the node's own lease deadline the guard removes an address.
pub const GRACE: std::time::Duration = std::time::Duration::from_millis(25);

/// The guard process itself: follows the node's announcements on standard input, removes an
/// address whose lease ran out, and removes the addresses still held at end-of-file.
pub fn run_guard() -> std::io::Result<()> {
    use std::time::{Duration, Instant};
    let mut held: Vec<(String, Cidr, Instant)> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let now = Instant::now();
        // Leases that ran out.
        held.retain(|(iface, cidr, deadline)| {
            if *deadline > now {
                return true;
            }
            match crate::netlink::del_address(iface, *cidr) {
                Ok(()) => eprintln!(
                    "halyard fence-guard: lease of {cidr} ran out, removed it from {iface}"
                ),
                Err(e) => eprintln!(
                    "halyard fence-guard: lease of {cidr} ran out, could not remove it: {e}"
                ),
            }
            false
        });
        let timeout = held
            .iter()
            .map(|h| h.2.saturating_duration_since(now))
            .min()
            .map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32);
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on standard input.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            continue;
        }
        // SAFETY: `chunk` is valid for writes of its length.
        let n = unsafe { libc::read(0, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len()) };
        if n <= 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
        while let Some(p) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=p).collect();
            let line = String::from_utf8_lossy(&line);
            let mut parts = line.split_whitespace();
            let (Some(op), Some(iface), Some(cidr)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(cidr) = cidr.parse::<Cidr>() else {
                continue;
            };
            held.retain(|(i, c, _)| !(i == iface && *c == cidr));
            if op == "+" {
                let left = parts
                    .next()
                    .and_then(|m| m.parse::<u64>().ok())
                    .map_or(Duration::from_secs(3600), Duration::from_millis);
                held.push((iface.to_string(), cidr, Instant::now() + left + GRACE));
            }
        }
    }
    for (iface, cidr, _) in held {
        match crate::netlink::del_address(&iface, cidr) {
            Ok(()) => eprintln!("halyard fence-guard: node gone, removed {cidr} from {iface}"),
            Err(e) => eprintln!(
                "halyard fence-guard: node gone, could not remove {cidr} from {iface}: {e}"
            ),
        }
    }
    Ok(())
}
