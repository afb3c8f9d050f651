//! The relay's client side of one connection: reading multi-line replies, sending commands,
//! and one SMTP or LMTP (RFC 2033) transaction with the ESMTP parameters the server
//! advertises; the dot-stuffing of the message (RFC 5321 §4.5.2).

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::relay::{Outcome, Outgoing};

/// A byte stream to a server, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection-level failure: try the next host.
pub(super) struct HostFailure(pub(super) String);

pub(super) struct Conn<S> {
    pub(super) io: BufReader<S>,
    pub(super) timeout: Duration,
    /// The server said 421: it is closing the connection, which must not be reused.
    pub(super) closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// One reply (all its lines): code and text, lines joined with '\n'.
    pub(super) async fn reply(&mut self) -> Result<(u16, String), HostFailure> {
        let mut text = String::new();
        for _ in 0..200 {
            let mut line = Vec::new();
            let n = tokio::time::timeout(self.timeout, async {
                let mut limited = (&mut self.io).take(4096);
                limited.read_until(b'\n', &mut line).await
            })
            .await
            .map_err(|_| HostFailure("timed out waiting for a reply".into()))?
            .map_err(|e| HostFailure(e.to_string()))?;
            if n == 0 {
                return Err(HostFailure("connection closed".into()));
            }
            let l = String::from_utf8_lossy(&line).trim_end().to_string();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| HostFailure(format!("bad reply {l:?}")))?;
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(l.get(4..).unwrap_or(""));
            if l.as_bytes().get(3) != Some(&b'-') {
                self.closing |= code == 421;
                return Ok((code, text));
            }
        }
        Err(HostFailure("reply too long".into()))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), HostFailure> {
        tokio::time::timeout(self.timeout, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| HostFailure("timed out sending".into()))?
            .map_err(|e| HostFailure(e.to_string()))
    }

    pub(super) async fn cmd(&mut self, line: &str) -> Result<(u16, String), HostFailure> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    pub(super) async fn lmtp_transaction(
        &mut self,
        me: &str,
        host: &str,
        ip: IpAddr,
        out: &Outgoing<'_>,
    ) -> Result<Vec<Outcome>, HostFailure> {
        let (code, text) = self.reply().await?;
        if code != 220 {
            return Err(HostFailure(format!("greeting {code} {text}")));
        }
        let (code, text) = self.cmd(&format!("LHLO {me}")).await?;
        if code != 250 {
            return Err(HostFailure(format!("LHLO {code} {text}")));
        }
        let classify = |code: u16, text: &str| -> Outcome {
            match code {
                200..=299 => Outcome::Delivered(format!("LMTP {host} [{ip}]: {code} {text}")),
                400..=499 => Outcome::Temporary(format!("{host} [{ip}] said: {code} {text}")),
                _ => Outcome::Permanent(code, format!("{host} [{ip}] said: {code} {text}")),
            }
        };
        let (code, text) = self.cmd(&format!("MAIL FROM:<{}>", out.from)).await?;
        if code != 250 {
            let o = classify(code, &text);
            return Ok(vec![o; out.rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        for r in &out.rcpts {
            let (code, text) = self.cmd(&format!("RCPT TO:<{}>", r.address)).await?;
            outcomes.push((!(200..300).contains(&code)).then(|| classify(code, &text)));
        }
        let accepted = outcomes.iter().filter(|o| o.is_none()).count();
        if accepted == 0 {
            let _ = self.cmd("QUIT").await;
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let (code, text) = self.cmd("DATA").await?;
        if code != 354 {
            let o = classify(code, &text);
            return Ok(outcomes
                .into_iter()
                .map(|x| x.unwrap_or_else(|| o.clone()))
                .collect());
        }
        self.send(&dot_stuff(out.body)).await?;
        // One reply per accepted recipient, in RCPT order.
        let mut finals = Vec::new();
        for _ in 0..accepted {
            let (code, text) = self.reply().await?;
            finals.push(classify(code, &text));
        }
        let _ = self.cmd("QUIT").await;
        let mut finals = finals.into_iter();
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    finals
                        .next()
                        .unwrap_or(Outcome::Temporary("4.4.2 no reply".into()))
                })
            })
            .collect())
    }

    pub(super) async fn transaction(
        &mut self,
        host: &str,
        ip: IpAddr,
        out: &Outgoing<'_>,
        exts: &[String],
    ) -> Result<Vec<Outcome>, HostFailure> {
        let has = |e: &str| {
            exts.iter()
                .any(|x| x == e || x.starts_with(&format!("{e} ")))
        };
        let dsn = has("DSN");
        let mut mail = format!("MAIL FROM:<{}>", out.from);
        if has("SIZE") {
            mail.push_str(&format!(" SIZE={}", out.body.len()));
        }
        if has("8BITMIME") && out.body.iter().any(|b| *b >= 0x80) {
            mail.push_str(" BODY=8BITMIME");
        }
        if has("SMTPUTF8") && out.params.contains_key("SMTPUTF8") {
            mail.push_str(" SMTPUTF8");
        }
        if dsn {
            if let Some(r) = out.params.get("RET") {
                mail.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = out.params.get("ENVID") {
                mail.push_str(&format!(" ENVID={e}"));
            }
        }
        let (code, text) = self.cmd(&mail).await?;
        let classify = |code: u16, text: &str| -> Outcome {
            match code {
                200..=299 => Outcome::Delivered(format!("relayed to {host} [{ip}]: {code} {text}")),
                400..=499 => Outcome::Temporary(format!("{host} [{ip}] said: {code} {text}")),
                _ => Outcome::Permanent(code, format!("{host} [{ip}] said: {code} {text}")),
            }
        };
        // The connection is left open after the transaction, whatever its outcome: the
        // next user resets it first, or it is closed with QUIT.
        if code != 250 {
            return Ok(vec![classify(code, &text); out.rcpts.len()]);
        }
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        for r in &out.rcpts {
            let mut rcpt = format!("RCPT TO:<{}>", r.address);
            if dsn {
                if !r.notify.is_empty() {
                    rcpt.push_str(&format!(" NOTIFY={}", r.notify.join(",")));
                }
                if let Some(o) = &r.orcpt {
                    rcpt.push_str(&format!(" ORCPT={o}"));
                }
            }
            let (code, text) = self.cmd(&rcpt).await?;
            outcomes.push(if (200..300).contains(&code) {
                None
            } else {
                Some(classify(code, &text))
            });
        }
        if outcomes.iter().all(Option::is_some) {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let (code, text) = self.cmd("DATA").await?;
        let fin = if code == 354 {
            self.send(&dot_stuff(out.body)).await?;
            let (code, text) = self.reply().await?;
            classify(code, &text)
        } else {
            classify(code, &text)
        };
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| fin.clone()))
            .collect())
    }
}

/// The message with leading dots doubled and the terminating `.` line (RFC 5321 §4.5.2).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
    }
}
