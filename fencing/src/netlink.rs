//! IPv4 addresses on an interface, over an rtnetlink socket (`RTM_NEWADDR`, `RTM_DELADDR`,
//! `RTM_GETADDR`), synchronously: the lease watchdog removes an address from a plain thread
//! that must not depend on the async runtime being responsive.
//!
//! Only what floating addresses need: add one address with a prefix length to a named
//! interface (already present is fine), remove it (already absent is fine), and ask whether
//! it is there. Every call opens its own socket and waits at most two seconds for the kernel.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An IPv4 address with its prefix length, as in `198.18.0.100/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| {
            format!("{s:?}: not an IPv4 address (IPv6 floating addresses are not supported)")
        })?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-32"))?;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(format!("{s:?}: not a unicast address"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The index of interface `name`.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface {name:?}"),
        ));
    }
    Ok(idx)
}

const NLMSG_HDRLEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call and the length matches its type.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A request: header, ifaddrmsg, attributes.
fn request(kind: u16, flags: u16, seq: u32, index: u32, cidr: Option<Cidr>) -> Vec<u8> {
    let mut b = vec![0u8; NLMSG_HDRLEN];
    // struct ifaddrmsg
    b.push(libc::AF_INET as u8);
    b.push(cidr.map_or(0, |c| c.prefix));
    b.push(0); // flags
    b.push(0); // scope: universe
    b.extend_from_slice(&index.to_ne_bytes());
    if let Some(c) = cidr {
        push_attr(&mut b, libc::IFA_LOCAL, &c.addr.octets());
        push_attr(&mut b, libc::IFA_ADDRESS, &c.addr.octets());
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; the kernel is pid 0.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `sa` are valid for the lengths given.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One netlink message from a datagram: (type, flags, seq, payload).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u16, u32, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().ok()?);
        let flags = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().ok()?);
        let payload = &buf[off + NLMSG_HDRLEN..off + len];
        off += (len + 3) & !3;
        Some((kind, flags, seq, payload))
    })
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends a request with NLM_F_ACK and returns the kernel's errno (0 = success).
fn transact(kind: u16, flags: u16, index: u32, cidr: Cidr) -> io::Result<i32> {
    let fd = socket()?;
    let seq = std::process::id() ^ 0x4859_4c44;
    send(
        &fd,
        &request(
            kind,
            flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16,
            seq,
            index,
            Some(cidr),
        ),
    )?;
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..16 {
        let n = recv(&fd, &mut buf)?;
        for (t, _, s, payload) in messages(&buf[..n]) {
            if s != seq || t != libc::NLMSG_ERROR as u16 || payload.len() < 4 {
                continue;
            }
            let err = i32::from_ne_bytes(payload[0..4].try_into().unwrap_or([0; 4]));
            return Ok(-err);
        }
    }
    Err(io::Error::other(
        "netlink: no acknowledgement from the kernel",
    ))
}

/// Adds `cidr` to interface `ifname`; an address already there is success.
pub fn add_address(ifname: &str, cidr: Cidr) -> io::Result<()> {
    let index = if_index(ifname)?;
    match transact(
        libc::RTM_NEWADDR,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        index,
        cidr,
    )? {
        0 | libc::EEXIST => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Removes `cidr` from interface `ifname`; an address already gone is success.
pub fn del_address(ifname: &str, cidr: Cidr) -> io::Result<()> {
    let index = if_index(ifname)?;
    match transact(libc::RTM_DELADDR, 0, index, cidr)? {
        0 | libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Whether interface `ifname` has the IPv4 address `addr` (any prefix length).
pub fn has_address(ifname: &str, addr: Ipv4Addr) -> io::Result<bool> {
    let index = if_index(ifname)?;
    let fd = socket()?;
    let seq = std::process::id() ^ 0x4744_4154;
    send(
        &fd,
        &request(
            libc::RTM_GETADDR,
            (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            seq,
            0,
            None,
        ),
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut found = false;
    for _ in 0..1024 {
        let n = recv(&fd, &mut buf)?;
        for (t, _, s, payload) in messages(&buf[..n]) {
            if s != seq {
                continue;
            }
            if t == libc::NLMSG_DONE as u16 {
                return Ok(found);
            }
            if t == libc::NLMSG_ERROR as u16 {
                let err = payload
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])));
                return Err(io::Error::from_raw_os_error(-err));
            }
            if t != libc::RTM_NEWADDR || payload.len() < IFADDRMSG_LEN {
                continue;
            }
            let family = payload[0];
            let idx = u32::from_ne_bytes(payload[4..8].try_into().unwrap_or([0; 4]));
            if family != libc::AF_INET as u8 || idx != index {
                continue;
            }
            let mut a = IFADDRMSG_LEN;
            while a + 4 <= payload.len() {
                let len = u16::from_ne_bytes([payload[a], payload[a + 1]]) as usize;
                let kind = u16::from_ne_bytes([payload[a + 2], payload[a + 3]]);
                if len < 4 || a + len > payload.len() {
                    break;
                }
                if (kind == libc::IFA_LOCAL || kind == libc::IFA_ADDRESS)
                    && len == 8
                    && payload[a + 4..a + 8] == addr.octets()
                {
                    found = true;
                }
                a += (len + 3) & !3;
            }
        }
    }
    Err(io::Error::other("netlink: address dump did not end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_refuses_clearly() {
        let c: Cidr = "198.18.0.100/24".parse().unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(c.prefix, 24);
        assert_eq!(c.to_string(), "198.18.0.100/24");
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix, 32);
        for bad in [
            "198.18.0.100/33",
            "fd00::1/64",
            "nothing",
            "0.0.0.0/0",
            "224.0.0.1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        let c: Cidr = "198.18.0.100/24".parse().unwrap();
        let r = request(libc::RTM_NEWADDR, 5, 9, 3, Some(c));
        // header 16 + ifaddrmsg 8 + two 8-byte attributes
        assert_eq!(r.len(), 40);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 40);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 24);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        assert_eq!(&r[28..32], &[198, 18, 0, 100]);
        let msgs: Vec<_> = messages(&r).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, libc::RTM_NEWADDR);
        assert_eq!(msgs[0].2, 9);
    }
}
