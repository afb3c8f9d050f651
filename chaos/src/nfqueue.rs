//! A minimal NFQUEUE client over a raw `NETLINK_NETFILTER` socket: bind one queue in the
//! calling thread's network namespace, receive the ids of queued packets, and hand back
//! `NF_ACCEPT` verdicts for them in any order. The delay nemesis ([`crate::delay`]) is its
//! only user.
//!
//! Only metadata is copied to userspace (`NFQNL_COPY_META`): the delayer never looks at a
//! payload, it only decides *when* a packet may go on. The queue is configured with
//!
//! * `NFQA_CFG_QUEUE_MAXLEN` — at most this many packets wait in the kernel; and
//! * `NFQA_CFG_F_FAIL_OPEN` — a packet that finds the queue full (or the socket's buffer full)
//!   is accepted at once instead of dropped, so an overloaded delayer degrades to "no delay",
//!   never to loss the nemesis did not ask for;
//! * `NFQA_CFG_F_GSO` — large segments are queued whole rather than split first.
//!
//! Closing the socket unbinds the queue; the kernel then drops what was still waiting, which is
//! why [`crate::delay::run`] accepts everything it holds before it returns. Packets that reach
//! an `NFQUEUE --queue-bypass` rule while nobody is bound pass untouched.
//!
//! Message layout (from `linux/netfilter/nfnetlink_queue.h`): every message is a `nlmsghdr`
//! (16 bytes), a `nfgenmsg` (family, version, queue number big-endian) and attributes (`nlattr`:
//! length, type, payload padded to 4 bytes); multi-byte attribute payloads are big-endian.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// `NF_ACCEPT` from `linux/netfilter.h`.
const NF_ACCEPT: u32 = 1;

/// Verdicts sent per `sendto` (32 bytes each).
const VERDICT_BATCH: usize = 256;

/// Receive buffer asked for: room for tens of thousands of metadata-only messages, so a burst
/// does not overflow it (an overflow would fail open, i.e. pass undelayed).
const RCVBUF: libc::c_int = 8 << 20;

/// One bound queue.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// Packet ids that arrived while a configuration request waited for its acknowledgement.
    backlog: Vec<u32>,
    /// Error replies the kernel sent for verdicts (e.g. for a packet it no longer holds).
    pub verdict_errors: u64,
    /// Times the receive buffer overflowed (the kernel then accepted packets undelayed).
    pub overruns: u64,
}

fn msg_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_QUEUE << 8) | msg
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Appends one nfnetlink message for queue `num` (attributes already encoded) and returns it
/// framed: `nlmsghdr` + `nfgenmsg` + `attrs`.
fn push_msg(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, num: u16, attrs: &[u8]) {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&msg_type(msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(libc::AF_UNSPEC as u8);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&num.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// The verdict message accepting packet `id` of queue `num`.
fn push_accept(buf: &mut Vec<u8>, seq: u32, num: u16, id: u32) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    let mut attrs = Vec::with_capacity(12);
    push_attr(&mut attrs, NFQA_VERDICT_HDR, &hdr);
    push_msg(
        buf,
        NFQNL_MSG_VERDICT,
        libc::NLM_F_REQUEST as u16,
        seq,
        num,
        &attrs,
    );
}

/// What one message from the kernel says.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// A queued packet, by id.
    Packet(u32),
    /// An acknowledgement (0) or error (negative errno) for request `seq`.
    Ack {
        seq: u32,
        errno: i32,
    },
    Other,
}

/// Splits a datagram from the kernel into messages. Truncated trailing bytes are ignored.
fn parse(data: &[u8]) -> Vec<Incoming> {
    let mut out = Vec::new();
    let mut off = 0;
    // A message is at least a header long, so this loop runs at most data.len() / 16 times.
    while off + NLMSG_HDRLEN <= data.len() {
        let word =
            |at: usize| u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let len = word(off) as usize;
        if len < NLMSG_HDRLEN || off + len > data.len() {
            break;
        }
        let ty = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
        let body = &data[off + NLMSG_HDRLEN..off + len];
        if ty == libc::NLMSG_ERROR as u16 && body.len() >= 4 + NLMSG_HDRLEN {
            let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            // The original request's header follows; its sequence number is at offset 8.
            let seq = u32::from_ne_bytes([body[12], body[13], body[14], body[15]]);
            out.push(Incoming::Ack { seq, errno });
        } else if ty == msg_type(NFQNL_MSG_PACKET) && body.len() >= NFGENMSG_LEN {
            let mut id = None;
            let mut a = NFGENMSG_LEN;
            while a + 4 <= body.len() {
                let alen = u16::from_ne_bytes([body[a], body[a + 1]]) as usize;
                // The top bits of the type are the nested / byte-order flags.
                let aty = u16::from_ne_bytes([body[a + 2], body[a + 3]]) & 0x3fff;
                if alen < 4 || a + alen > body.len() {
                    break;
                }
                if aty == NFQA_PACKET_HDR && alen >= 4 + 4 {
                    id = Some(u32::from_be_bytes([
                        body[a + 4],
                        body[a + 5],
                        body[a + 6],
                        body[a + 7],
                    ]));
                    break;
                }
                a += (alen + 3) & !3;
            }
            out.push(id.map_or(Incoming::Other, Incoming::Packet));
        } else {
            out.push(Incoming::Other);
        }
        off += (len + 3) & !3;
    }
    out
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed along.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is the kernel's address.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a
}

impl Queue {
    /// Binds queue `num` in this thread's network namespace with room for `maxlen` packets in
    /// the kernel. Fails with `EBUSY` if another process has bound the same queue.
    pub fn bind(num: u16, maxlen: u32) -> io::Result<Queue> {
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let local = kernel_addr(); // nl_pid 0: the kernel picks our port id
        // SAFETY: `local` is a valid sockaddr_nl and its size is passed along.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // Best effort: FORCE needs CAP_NET_ADMIN (we have it, or binding a queue would fail),
        // and a missing NO_ENOBUFS only means overruns are reported as errors we count.
        let raw = fd.as_raw_fd();
        if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        let _ = setsockopt_int(raw, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1);
        let mut q = Queue {
            fd,
            num,
            seq: 0,
            buf: vec![0u8; 1 << 16],
            out: Vec::with_capacity(VERDICT_BATCH * 32),
            backlog: Vec::new(),
            verdict_errors: 0,
            overruns: 0,
        };
        // Bind (the pf field is ignored by kernels since 3.8, but must be present).
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        cmd[2..].copy_from_slice(&(libc::AF_INET as u16).to_be_bytes());
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFQA_CFG_CMD, &cmd);
        q.request(&attrs)?;
        // Metadata only, and the kernel-side bound.
        let mut params = [0u8; 5];
        params[4] = NFQNL_COPY_META;
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFQA_CFG_PARAMS, &params);
        push_attr(&mut attrs, NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes());
        q.request(&attrs)?;
        // Flags on their own: a kernel without one of them refuses the whole request.
        let flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFQA_CFG_MASK, &flags.to_be_bytes());
        push_attr(&mut attrs, NFQA_CFG_FLAGS, &flags.to_be_bytes());
        if q.request(&attrs).is_err() {
            let mut attrs = Vec::new();
            let f = NFQA_CFG_F_FAIL_OPEN;
            push_attr(&mut attrs, NFQA_CFG_MASK, &f.to_be_bytes());
            push_attr(&mut attrs, NFQA_CFG_FLAGS, &f.to_be_bytes());
            q.request(&attrs)?;
        }
        Ok(q)
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        let to = kernel_addr();
        // SAFETY: `buf` and `to` are valid for the duration of the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends a configuration message and waits (at most two seconds) for its acknowledgement.
    fn request(&mut self, attrs: &[u8]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut m = Vec::with_capacity(64);
        push_msg(
            &mut m,
            NFQNL_MSG_CONFIG,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            seq,
            self.num,
            attrs,
        );
        self.send(&m)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        // Bounded by the deadline; each round waits in poll.
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nfqueue: no answer to a configuration request",
                ));
            }
            if !self.wait(left)? {
                continue;
            }
            let n = self.recv_raw()?;
            for msg in parse(&self.buf[..n]) {
                match msg {
                    Incoming::Ack { seq: s, errno } if s == seq => {
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    Incoming::Packet(id) => self.backlog.push(id),
                    _ => {}
                }
            }
        }
    }

    /// Waits until the socket is readable or `timeout` passes; false on timeout or a signal.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up: waking a little late is fine, waking early only spins.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }

    /// One datagram into `self.buf` without blocking; its length.
    fn recv_raw(&mut self) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Appends the ids of packets that are waiting (without blocking, at most `max_reads`
    /// datagrams) to `out`.
    pub fn recv(&mut self, out: &mut Vec<u32>, max_reads: usize) -> io::Result<()> {
        out.append(&mut self.backlog);
        for _ in 0..max_reads {
            let n = match self.recv_raw() {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overruns += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for msg in parse(&self.buf[..n]) {
                match msg {
                    Incoming::Packet(id) => out.push(id),
                    Incoming::Ack { errno, .. } if errno != 0 => self.verdict_errors += 1,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Accepts the packets `ids` (in this order).
    pub fn accept(&mut self, ids: &[u32]) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        let mut r = Ok(());
        for chunk in ids.chunks(VERDICT_BATCH) {
            out.clear();
            for id in chunk {
                self.seq = self.seq.wrapping_add(1);
                push_accept(&mut out, self.seq, self.num, *id);
            }
            r = self.send(&out);
            if r.is_err() {
                break;
            }
        }
        self.out = out;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_the_documented_layout() {
        let mut b = Vec::new();
        push_accept(&mut b, 7, 0x1234, 0xdead_beef);
        assert_eq!(b.len(), 32);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(b[4..6].try_into().unwrap()),
            (3 << 8) | 1
        );
        assert_eq!(u16::from_ne_bytes(b[6..8].try_into().unwrap()), 1); // NLM_F_REQUEST
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[0, 0, 0x12, 0x34]); // AF_UNSPEC, v0, queue (BE)
        assert_eq!(u16::from_ne_bytes(b[20..22].try_into().unwrap()), 12);
        assert_eq!(
            u16::from_ne_bytes(b[22..24].try_into().unwrap()),
            NFQA_VERDICT_HDR
        );
        assert_eq!(&b[24..28], &[0, 0, 0, 1]); // NF_ACCEPT (BE)
        assert_eq!(&b[28..32], &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn packets_and_acks_are_parsed_and_junk_is_not_trusted() {
        // A packet message: nfgenmsg, then an unrelated attribute, then the packet header.
        let mut attrs = Vec::new();
        push_attr(&mut attrs, 3, &[1, 2, 3]); // NFQA_MARK, odd length: padded
        push_attr(&mut attrs, NFQA_PACKET_HDR, &[0, 0, 1, 2, 0x08, 0x00, 3]);
        let mut d = Vec::new();
        push_msg(&mut d, NFQNL_MSG_PACKET, 0, 0, 5, &attrs);
        // An error reply for request 9: errno, then the request's header.
        let mut e = Vec::new();
        e.extend_from_slice(&(-16i32).to_ne_bytes());
        push_msg(&mut e, NFQNL_MSG_CONFIG, 5, 9, 5, &[]);
        let mut err = Vec::new();
        err.extend_from_slice(&((NLMSG_HDRLEN + e.len()) as u32).to_ne_bytes());
        err.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        err.extend_from_slice(&[0u8; 10]);
        err.extend_from_slice(&e);
        d.extend_from_slice(&err);
        assert_eq!(
            parse(&d),
            vec![Incoming::Packet(258), Incoming::Ack { seq: 9, errno: -16 }]
        );
        // Truncations and lies about lengths stop the parse instead of reading past the end.
        for cut in 0..d.len() {
            let _ = parse(&d[..cut]);
        }
        let mut bad = d.clone();
        bad[0] = 0xff;
        assert!(parse(&bad).is_empty());
    }
}
