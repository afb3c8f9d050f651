//! A client connection, plain or TLS (implicit, or after STARTTLS/STLS), as every protocol
//! sees it, and the ways of ending one without destroying replies still in flight.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub enum Stream {
    Plain(TcpStream),
    /// With the `tls-server-end-point` channel binding of the certificate it was accepted
    /// with (a reload may change the acceptor's since).
    Tls(Box<TlsStream<TcpStream>>, std::sync::Arc<Vec<u8>>),
    /// A session the multiplexor of another node relays to this one over the cluster's
    /// mutual TLS: the client's bytes, already authenticated there. `client_tls`: the client
    /// reached that node over TLS.
    Relayed {
        io: tokio::io::DuplexStream,
        client_tls: bool,
    },
    /// Only while the handshake is in progress.
    Gone,
}

impl Stream {
    /// Protocol and cipher suite, for the `Received:` header and logs.
    pub fn tls_info(&self) -> Option<String> {
        match self {
            Stream::Tls(t, _) => {
                let (_, c) = t.get_ref();
                Some(format!(
                    "{} with cipher {}",
                    c.protocol_version()
                        .map(|v| format!("{v:?}").replace('_', "."))
                        .unwrap_or_default(),
                    c.negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default()
                ))
            }
            _ => None,
        }
    }

    /// `tls-exporter` channel binding data (RFC 9266): 32 bytes of keying material under
    /// the label `EXPORTER-Channel-Binding`. TLS 1.3 only: under TLS 1.2 the exporter is only
    /// unique with the extended master secret, which the session does not tell.
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        let Stream::Tls(t, _) = self else {
            return None;
        };
        let (_, c) = t.get_ref();
        if c.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        c.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok()
    }

    /// `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash of this
    /// server's certificate.
    pub fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        match self {
            Stream::Tls(_, ep) if !ep.is_empty() => Some(ep.as_ref().clone()),
            _ => None,
        }
    }

    /// The verified client certificate (DER), when the client presented one (only asked
    /// for where a client CA is configured).
    pub fn client_certificate(&self) -> Option<Vec<u8>> {
        let Stream::Tls(t, _) = self else {
            return None;
        };
        let (_, c) = t.get_ref();
        c.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
    }

    /// Ends the conversation politely: sends what is buffered, half-closes, then reads and
    /// discards what the client still sends (at most 250 ms and 256 KiB). Closing a socket with
    /// unread input makes the kernel answer with a reset, and a reset destroys the replies
    /// still in flight to the client — a pipelining client would lose the `250` of a message
    /// that was committed just before the server hung up on later junk.
    pub async fn linger_close(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(250);
        if tokio::time::timeout_at(deadline, async {
            let _ = self.flush().await;
            let _ = self.shutdown().await;
        })
        .await
        .is_err()
        {
            return;
        }
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match tokio::time::timeout_at(deadline, self.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => break,
            }
        }
    }

    /// Ends a conversation the client closed with QUIT. A client that sent nothing after its
    /// QUIT (the usual case; RFC 5321 §4.1.1.10 makes QUIT the last command) has no input for
    /// a reset to be provoked by, so the connection is closed at once instead of waiting for
    /// the client's FIN — one wake-up and timer less per connection, which a sender that
    /// opens a connection per message pays every time. Anything pending, or TLS (whose
    /// close_notify is still to be sent), gets [`Stream::linger_close`].
    pub async fn close_after_quit(&mut self) {
        if let Stream::Plain(tcp) = self {
            let mut probe = [0u8; 1];
            match tcp.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Ok(0) => return,
                _ => {}
            }
        }
        self.linger_close().await
    }

    /// TLS handshake on the plain connection.
    pub async fn start_tls(&mut self, acceptor: crate::Acceptor) -> io::Result<()> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(tcp) => {
                let tls = acceptor.inner.accept(tcp).await?;
                *self = Stream::Tls(Box::new(tls), acceptor.end_point);
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("TLS already active"))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Relayed { io, .. } => Pin::new(io).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::Error::other("connection is upgrading"))),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Relayed { io, .. } => Pin::new(io).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::Error::other("connection is upgrading"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Relayed { io, .. } => Pin::new(io).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Relayed { io, .. } => Pin::new(io).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server side that reads the client's QUIT line (and nothing more), answers 221 and
    /// closes with [`Stream::close_after_quit`]; returns what the client read until the end.
    async fn quit_exchange(client_sends: &'static [u8]) -> io::Result<Vec<u8>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut s = Stream::Plain(tcp);
            let mut line = [0u8; 6];
            s.read_exact(&mut line).await?;
            assert_eq!(&line, b"QUIT\r\n");
            // Let the rest of what the client sent arrive in the socket's buffer.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.write_all(b"221 2.0.0 bye\r\n").await?;
            s.close_after_quit().await;
            io::Result::Ok(())
        });
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(client_sends).await?;
        let mut got = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut buf = [0u8; 256];
            loop {
                match c.read(&mut buf).await? {
                    0 => return io::Result::Ok(()),
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the server closes the connection");
        server.await.expect("server task")?;
        read.map(|_| got)
    }

    /// After a plain QUIT the server closes without waiting for the client, and the client
    /// reads the whole 221 and an orderly end of stream.
    #[tokio::test]
    async fn quit_alone_is_answered_and_closed_at_once() {
        let got = quit_exchange(b"QUIT\r\n").await.expect("no reset");
        assert_eq!(got, b"221 2.0.0 bye\r\n");
    }

    /// A client that sent more after QUIT (not allowed, but seen) still gets its 221: the
    /// unread input is drained instead of provoking a reset that would destroy the reply.
    #[tokio::test]
    async fn input_after_quit_is_drained_not_reset() {
        let got = quit_exchange(b"QUIT\r\nNOOP\r\nNOOP\r\nRSET\r\n")
            .await
            .expect("no reset: the 221 must arrive");
        assert_eq!(got, b"221 2.0.0 bye\r\n");
    }
}
