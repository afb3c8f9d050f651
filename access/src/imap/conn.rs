//! A client connection: plain TCP or TLS (implicit or after STARTTLS), a small read buffer
//! that is released while the session is idle, and writes bounded by a timeout so a client
//! that never reads cannot hold a session (and its memory) forever.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

pub use halyard_net::Stream;

pub struct Conn {
    pub stream: Stream,
    pub buf: BytesMut,
    pub peer: SocketAddr,
    pub write_timeout: Duration,
}

/// Read granularity; a connection's buffer only grows past it while a command is arriving.
const READ_CHUNK: usize = 2048;

impl Conn {
    pub fn new(stream: Stream, peer: SocketAddr, write_timeout: Duration) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            peer,
            write_timeout,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Writes everything or fails (including on timeout).
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
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
        self.stream.read_buf(&mut self.buf).await
    }

    /// Gives back the buffer's memory when nothing is pending (idle sessions stay small).
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Upgrades to TLS in place (STARTTLS/STLS). Any bytes the client sent after the command
    /// and before the handshake are discarded (RFC 3501 §6.2.1: no plaintext injection).
    pub async fn start_tls(&mut self, acceptor: TlsAcceptor) -> io::Result<()> {
        self.buf.clear();
        tokio::time::timeout(self.write_timeout, self.stream.start_tls(acceptor))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}
