//! Raw ARP on an Ethernet interface (`AF_PACKET`): gratuitous announcements that move a
//! floating address to this node's MAC, and the probe that asks who answers for an address.
//!
//! A gratuitous ARP moves the neighbour entries of the hosts on the segment only when it
//! carries the floating address itself as both sender and target protocol address (what
//! `arping -U -S addr addr` sends): a request from the node's own address changes nothing and
//! peers keep talking to the old MAC.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A raw ARP socket bound to one interface.
pub struct ArpSocket {
    fd: OwnedFd,
    index: i32,
    pub mac: Mac,
}

impl ArpSocket {
    pub fn open(ifname: &str) -> io::Result<ArpSocket> {
        let index = crate::netlink::if_index(ifname)? as i32;
        // SAFETY: plain socket(2); checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (ETH_P_ARP).to_be() as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sa = link_addr(index, BROADCAST);
        // SAFETY: `sa` is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mac = hw_addr(&fd, ifname)?;
        Ok(ArpSocket { fd, index, mac })
    }

    /// Announces that `addr` is at this interface's MAC: a gratuitous ARP request with
    /// `addr` as sender and target, to the broadcast address.
    pub fn announce(&self, addr: Ipv4Addr) -> io::Result<()> {
        self.send(&frame(1, self.mac, addr, Mac([0; 6]), addr, BROADCAST))
    }

    /// Asks who has `target`, from `sender` (this host's own address on the segment).
    pub fn ask(&self, sender: Ipv4Addr, target: Ipv4Addr) -> io::Result<()> {
        self.send(&frame(1, self.mac, sender, Mac([0; 6]), target, BROADCAST))
    }

    /// The MACs that answer for `target` until `until` (ARP replies with `target` as sender
    /// protocol address), each once, in order of arrival.
    pub fn replies(&self, target: Ipv4Addr, until: Instant) -> io::Result<Vec<Mac>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1600];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                continue;
            }
            if let Some((op, sha, spa)) = parse(&buf[..n as usize])
                && op == 2
                && spa == target
                && !out.contains(&sha)
            {
                out.push(sha);
            }
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sa = link_addr(self.index, BROADCAST);
        // SAFETY: `frame` and `sa` are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn link_addr(index: i32, dest: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ARP.to_be();
    sa.sll_ifindex = index;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&dest);
    sa
}

fn hw_addr(fd: &OwnedFd, ifname: &str) -> io::Result<Mac> {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills `req.ifr_ifru.ifru_hwaddr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member written by SIOCGIFHWADDR.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(data.iter()) {
        *d = *s as u8;
    }
    Ok(Mac(m))
}

/// An Ethernet frame carrying an ARP packet.
fn frame(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr, dest: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dest);
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.push(6);
    f.push(4);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha.0);
    f.extend_from_slice(&tpa.octets());
    f
}

/// (operation, sender MAC, sender IP) of an ARP frame.
fn parse(f: &[u8]) -> Option<(u16, Mac, Ipv4Addr)> {
    if f.len() < 42 || f[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let a = &f[14..];
    if a[0..2] != [0, 1] || a[2..4] != [8, 0] || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha = Mac(a[8..14].try_into().ok()?);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    Some((op, sha, spa))
}

/// Announces `addr` on `ifname` `count` times, `gap` apart (frames get lost; hosts that
/// missed the first learn from the next). Returns after the first frame is sent; the rest
/// go from a background thread.
pub fn announce(ifname: &str, addr: Ipv4Addr, count: u32, gap: Duration) -> io::Result<()> {
    let sock = ArpSocket::open(ifname)?;
    sock.announce(addr)?;
    if count > 1 {
        std::thread::Builder::new()
            .name("garp".into())
            .spawn(move || {
                for _ in 1..count {
                    std::thread::sleep(gap);
                    if let Err(e) = sock.announce(addr) {
                        tracing::warn!(%addr, error = %e, "gratuitous ARP failed");
                    }
                }
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_frame_carries_the_address_as_sender_and_target() {
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let a = Ipv4Addr::new(198, 18, 0, 100);
        let f = frame(1, mac, a, Mac([0; 6]), a, BROADCAST);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &mac.0);
        assert_eq!(&f[28..32], &a.octets(), "sender protocol address");
        assert_eq!(&f[38..42], &a.octets(), "target protocol address");
        assert_eq!(parse(&f), Some((1, mac, a)));
        assert_eq!(parse(&f[..41]), None);
        assert_eq!(mac.to_string(), "02:00:00:00:00:07");
    }
}
