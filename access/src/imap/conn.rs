//! A client connection: plain TCP or TLS (implicit or after STARTTLS), a small read buffer
//! that is released while the session is idle, and writes bounded by a timeout so a client
//! that never reads cannot hold a session (and its memory) forever.
//!
//! After `COMPRESS DEFLATE` (RFC 4978) both directions are raw DEFLATE streams: every write
//! is compressed and sync-flushed (IMAP is interactive), every read inflated. Inflation is
//! bounded per read ([`INFLATE_STEP`]): a few compressed bytes that expand to gigabytes only
//! ever become as much plain input as the session's framer asks for, with its own limits.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use halyard_net::Stream;

pub struct Conn {
    pub stream: Stream,
    pub buf: BytesMut,
    pub peer: SocketAddr,
    pub write_timeout: Duration,
    /// COMPRESS=DEFLATE state, once negotiated.
    deflate: Option<Box<Deflate>>,
}

/// Both directions of an RFC 4978 DEFLATE session.
struct Deflate {
    out: flate2::Compress,
    inflate: flate2::Decompress,
    /// Compressed input not inflated yet.
    raw: BytesMut,
}

/// At most this much plain input is inflated per read.
const INFLATE_STEP: usize = 64 * 1024;

/// Read granularity; a connection's buffer only grows past it while a command is arriving.
const READ_CHUNK: usize = 2048;

impl Conn {
    pub fn new(stream: Stream, peer: SocketAddr, write_timeout: Duration) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            peer,
            write_timeout,
            deflate: None,
        }
    }

    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Starts COMPRESS=DEFLATE: from the next byte on, both directions are raw DEFLATE.
    /// Input already buffered was sent before the command's answer, so it is plain.
    pub fn start_deflate(&mut self) {
        self.deflate = Some(Box::new(Deflate {
            out: flate2::Compress::new(flate2::Compression::default(), false),
            inflate: flate2::Decompress::new(false),
            raw: BytesMut::new(),
        }));
    }

    pub fn is_tls(&self) -> bool {
        matches!(
            self.stream,
            Stream::Tls(..)
                | Stream::Relayed {
                    client_tls: true,
                    ..
                }
        )
    }

    /// Writes everything or fails (including on timeout).
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deflated;
        let bytes = match &mut self.deflate {
            Some(d) => {
                deflated = deflate(&mut d.out, bytes)?;
                &deflated[..]
            }
            None => bytes,
        };
        match tokio::time::timeout(self.write_timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client does not read",
            )),
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let Some(d) = &mut self.deflate else {
            return self.stream.read_buf(&mut self.buf).await;
        };
        loop {
            // What is already here first; read only when it gives nothing.
            let n = inflate(d, &mut self.buf)?;
            if n > 0 {
                return Ok(n);
            }
            d.raw.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut d.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Gives back the buffer's memory when nothing is pending (idle sessions stay small).
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Upgrades to TLS in place (STARTTLS/STLS). Any bytes the client sent after the command
    /// and before the handshake are discarded (RFC 3501 §6.2.1: no plaintext injection).
    pub async fn start_tls(&mut self, acceptor: halyard_net::Acceptor) -> io::Result<()> {
        self.buf.clear();
        tokio::time::timeout(self.write_timeout, self.stream.start_tls(acceptor))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// `bytes` compressed and sync-flushed, so the peer can inflate all of it now.
fn deflate(c: &mut flate2::Compress, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
    let start = c.total_in();
    loop {
        let done = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        c.compress_vec(&bytes[done..], &mut out, flate2::FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // All input taken and output room left over: the flush is complete (as with zlib,
        // a flush that filled the output may have more to write).
        if (c.total_in() - start) as usize == bytes.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// Inflates up to [`INFLATE_STEP`] bytes of `d.raw` into `buf`; how many came out.
fn inflate(d: &mut Deflate, buf: &mut BytesMut) -> io::Result<usize> {
    if d.raw.is_empty() {
        return Ok(0);
    }
    let mut out = Vec::with_capacity(INFLATE_STEP);
    let before = d.inflate.total_in();
    d.inflate
        .decompress_vec(&d.raw, &mut out, flate2::FlushDecompress::None)
        .map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad DEFLATE data: {e}"))
        })?;
    let used = (d.inflate.total_in() - before) as usize;
    let _ = d.raw.split_to(used);
    buf.extend_from_slice(&out);
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_deflates_the_other_inflates_message_by_message() {
        let mut out = flate2::Compress::new(flate2::Compression::default(), false);
        let mut d = Deflate {
            out: flate2::Compress::new(flate2::Compression::default(), false),
            inflate: flate2::Decompress::new(false),
            raw: BytesMut::new(),
        };
        let mut buf = BytesMut::new();
        for msg in [
            &b"a1 NOOP\r\n"[..],
            b"",
            &[b'x'; 100_000][..],
            b"a2 LOGOUT\r\n",
        ] {
            d.raw.extend_from_slice(&deflate(&mut out, msg).unwrap());
            buf.clear();
            // Each message is complete after its sync flush, in steps of INFLATE_STEP.
            while inflate(&mut d, &mut buf).unwrap() > 0 {}
            assert_eq!(&buf[..], msg);
            assert!(d.raw.is_empty());
        }
    }

    #[test]
    fn a_deflate_bomb_is_inflated_a_step_at_a_time() {
        let mut out = flate2::Compress::new(flate2::Compression::best(), false);
        let zeros = vec![0u8; 8 << 20];
        let bomb = deflate(&mut out, &zeros).unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut d = Deflate {
            out: flate2::Compress::new(flate2::Compression::default(), false),
            inflate: flate2::Decompress::new(false),
            raw: BytesMut::from(&bomb[..]),
        };
        let mut buf = BytesMut::new();
        assert!(inflate(&mut d, &mut buf).unwrap() <= INFLATE_STEP);
        assert!(buf.len() <= INFLATE_STEP);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Deflate {
            out: flate2::Compress::new(flate2::Compression::default(), false),
            inflate: flate2::Decompress::new(false),
            raw: BytesMut::from(&[0xffu8; 64][..]),
        };
        let mut buf = BytesMut::new();
        assert!(inflate(&mut d, &mut buf).is_err());
    }
}
