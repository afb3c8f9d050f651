//! The inbound side: one SMTP/submission/LMTP session (RFC 5321 with ESMTP extensions), from
//! the greeting to the commit that precedes the `250`.
//!
//! Commands are parsed by `smtp-proto`; lines are framed here so that a hostile client can
//! never make the server buffer more than `max_line_bytes` of a command or more than
//! `max_message_bytes` of a message. Replies are batched while pipelined commands are still
//! waiting in the input buffer (RFC 2920) and flushed before the server waits for input.
//!
//! The one rule that matters: `250` at the end of DATA/BDAT is written only after every
//! `Enqueue` proposal carrying the message has been committed by a majority of its group
//! (each replica fsyncs the log entry before acknowledging it).
//!
//! This file holds the session's state, the read loop and the command dispatch; the
//! commands themselves are `impl Session` blocks in the files beside it, in the order a
//! message meets them: [`auth`] (STARTTLS, AUTH), [`envelope`] (MAIL, RCPT: who the message
//! is from and to, with directory lookups, list expansion and channel choice), [`data`]
//! (DATA, BDAT, and the commit to the queue).

mod auth;
mod data;
pub(crate) mod dataread;
mod envelope;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use halyard_raft_store::RecipientSpec;
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Kind, Shared};
use halyard_net::Stream;

/// Where the session is in a mail transaction.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    params: BTreeMap<String, String>,
    rcpts: Vec<Rcpt>,
    /// BDAT chunks received so far.
    chunks: Vec<u8>,
    /// A BDAT chunk or DATA went over the size limit: the rest is read and dropped.
    too_big: bool,
    /// Recipients accepted by RCPT, in order: LMTP answers once per each after the data.
    accepted: Vec<String>,
}

struct Rcpt {
    spec: RecipientSpec,
    group: String,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    stream: Stream,
    /// Set when the listener this session came from stops (node shutdown, or the group's
    /// floating address given up): a session between commands closes with 421.
    stop: tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
    buf: BytesMut,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    kind: Kind,
    trusted: bool,
    /// The authenticated user's primary address (AUTH).
    auth: Option<String>,
    auth_failures: u32,
    /// Error replies so far.
    errors: u32,
    /// When the command line now being received started to arrive.
    line_since: Option<tokio::time::Instant>,
    /// Reading commands (not data, not a SASL exchange).
    in_command_loop: bool,
    /// The client said QUIT (and was answered).
    quit: bool,
    tx: Transaction,
}

/// Takes the next command line (through its LF) out of `buf`. A line longer than `max`
/// (+ CRLF) is `TooLong`; when no LF has come within `max` bytes the buffer is dropped and
/// `skipping` remembers to drop the rest of that line, so `buf` never holds much more than
/// `max` bytes of a command line.
pub(crate) fn take_line(buf: &mut BytesMut, skipping: &mut bool, max: usize) -> Line {
    match buf.iter().position(|b| *b == b'\n') {
        Some(p) => {
            let line = buf.split_to(p + 1).to_vec();
            if std::mem::take(skipping) || line.len() > max + 2 {
                Line::TooLong
            } else {
                Line::Complete(line)
            }
        }
        None if buf.len() > max => {
            buf.clear();
            *skipping = true;
            Line::NeedMore
        }
        None => Line::NeedMore,
    }
}

/// What the framer found in the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Complete(Vec<u8>),
    NeedMore,
    /// Longer than the limit: dropped up to its end.
    TooLong,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: Stream,
        peer: SocketAddr,
        kind: Kind,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Session {
        let trusted = shared.trusted.iter().any(|n| n.contains(peer.ip()));
        Session {
            stop,
            shared,
            stream,
            peer,
            buf: BytesMut::with_capacity(4096),
            out: Vec::new(),
            helo: None,
            esmtp: false,
            kind,
            trusted,
            auth: None,
            auth_failures: 0,
            errors: 0,
            line_since: None,
            in_command_loop: false,
            quit: false,
            tx: Transaction::default(),
        }
    }

    fn reply(&mut self, code: u16, text: &str) {
        self.out
            .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
    }

    /// A refusal: waits the configured tarpit delay first.
    async fn refuse(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        self.errors += 1;
        let d = self.shared.cfg.reject_delay_ms;
        if d > 0 {
            self.flush().await?;
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        self.reply(code, text);
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let t = Duration::from_secs(self.shared.cfg.write_timeout_secs);
        match tokio::time::timeout(t, self.stream.write_all(&out)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other("client does not read")),
        }
    }

    /// Reads more input; false at end of stream or after the idle timeout (with 421).
    async fn read_more(&mut self) -> std::io::Result<bool> {
        self.flush().await?;
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(16 * 1024);
        }
        let t = Duration::from_secs(self.shared.cfg.command_timeout_secs);
        // A line must arrive whole within the timeout, not merely a byte at a time.
        let deadline = self
            .line_since
            .map_or(tokio::time::Instant::now() + t, |s| s + t);
        // At shutdown a session waiting for its next command is closed; one in the middle
        // of a command or of a message's data may finish it (within the drain period).
        let at_boundary = self.buf.is_empty() && self.line_since.is_none() && self.in_command_loop;
        let mut stop = self.stop.clone();
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => r,
            _ = async { let _ = stop.wait_for(|s| *s).await; }, if at_boundary => {
                self.reply(421, "4.3.2 shutting down, try again later");
                self.flush().await?;
                return Ok(false);
            }
        };
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.reply(421, "4.4.2 idle for too long, closing");
                self.flush().await?;
                Ok(false)
            }
        }
    }

    fn take_line(&mut self, skipping: &mut bool) -> Line {
        take_line(&mut self.buf, skipping, self.shared.cfg.max_line_bytes)
    }

    /// Ends the connection after [`Session::run`], without a reset that would destroy the
    /// last replies (see `Stream::linger_close`).
    pub(crate) async fn close(&mut self) {
        if self.quit && self.buf.is_empty() {
            self.stream.close_after_quit().await;
        } else {
            self.stream.linger_close().await;
        }
    }

    pub(crate) async fn run(&mut self) -> std::io::Result<()> {
        if self.kind == Kind::Lmtp && !self.trusted {
            self.reply(421, "4.7.0 LMTP is for trusted hosts only");
            return self.flush().await;
        }
        // Blocklists are for the MX port only: submission clients authenticate, and their
        // home addresses are often on policy lists (Spamhaus PBL) that would lock them out.
        if !self.trusted && self.kind == Kind::Smtp {
            for zone in self.shared.cfg.dnsbl_zones.clone() {
                if self.shared.relay.listed(self.peer.ip(), &zone).await == Some(true) {
                    tracing::info!(peer = %self.peer, %zone, "client refused: DNS blocklist");
                    self.reply(
                        554,
                        &format!(
                            "5.7.1 service unavailable; [{}] is listed by {zone}",
                            self.peer.ip()
                        ),
                    );
                    return self.flush().await;
                }
            }
        }
        let greeting = format!(
            "220 {} {} Halyard",
            self.shared.cfg.hostname,
            if self.kind == Kind::Lmtp {
                "LMTP"
            } else {
                "ESMTP"
            }
        );
        self.out.extend_from_slice(greeting.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        let mut skipping = false;
        loop {
            if self.errors >= self.shared.cfg.max_errors {
                self.reply(421, "4.7.0 too many errors, closing");
                self.flush().await?;
                return Ok(());
            }
            let line = match self.take_line(&mut skipping) {
                Line::Complete(l) => {
                    self.line_since = None;
                    l
                }
                Line::TooLong => {
                    self.line_since = None;
                    self.refuse(500, "5.5.2 line too long").await?;
                    continue;
                }
                Line::NeedMore => {
                    if (!self.buf.is_empty() || skipping) && self.line_since.is_none() {
                        self.line_since = Some(tokio::time::Instant::now());
                    }
                    self.in_command_loop = true;
                    let more = self.read_more().await?;
                    self.in_command_loop = false;
                    if !more {
                        return Ok(());
                    }
                    continue;
                }
            };
            if !self.command(&line).await? {
                self.flush().await?;
                return Ok(());
            }
        }
    }

    /// Handles one command line; false when the session is over.
    async fn command(&mut self, line: &[u8]) -> std::io::Result<bool> {
        if line.contains(&0) {
            self.refuse(500, "5.5.2 NUL in command").await?;
            return Ok(true);
        }
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                let text = match e {
                    smtp_proto::Error::UnknownCommand => "5.5.1 command unrecognized".into(),
                    smtp_proto::Error::InvalidSenderAddress => "5.1.7 bad sender address".into(),
                    smtp_proto::Error::InvalidRecipientAddress => {
                        "5.1.3 bad recipient address".into()
                    }
                    smtp_proto::Error::InvalidParameter { param } => {
                        format!("5.5.4 invalid parameter {param}")
                    }
                    smtp_proto::Error::UnsupportedParameter { param } => {
                        format!("5.5.4 unsupported parameter {param}")
                    }
                    _ => "5.5.2 syntax error".into(),
                };
                let code = if text.starts_with("5.5.1") { 500 } else { 501 };
                self.refuse(code, &text).await?;
                return Ok(true);
            }
        };
        let req_kind = req.name();
        match req {
            Request::Ehlo { .. } | Request::Helo { .. } if self.kind == Kind::Lmtp => {
                self.refuse(500, "5.5.1 this is LMTP: say LHLO").await?;
            }
            Request::Lhlo { host } | Request::Ehlo { host } => {
                if matches!(req_kind, "LHLO") && self.kind != Kind::Lmtp {
                    self.refuse(500, "5.5.1 LHLO is for LMTP").await?;
                    return Ok(true);
                }
                self.helo = Some(host);
                self.esmtp = true;
                self.tx = Transaction::default();
                let tls = self.stream.tls_info().is_some();
                let mut caps = vec![
                    self.shared.cfg.hostname.clone(),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    format!("SIZE {}", self.shared.cfg.max_message_bytes),
                    "ENHANCEDSTATUSCODES".into(),
                    "SMTPUTF8".into(),
                    "DSN".into(),
                    "CHUNKING".into(),
                ];
                if self.shared.tls.is_some() && !tls {
                    caps.push("STARTTLS".into());
                }
                let mechanisms = self.mechanisms();
                if !mechanisms.is_empty() {
                    let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
                    caps.push(format!("AUTH {}", names.join(" ")));
                }
                for (i, c) in caps.iter().enumerate() {
                    let sep = if i + 1 == caps.len() { ' ' } else { '-' };
                    self.out
                        .extend_from_slice(format!("250{sep}{c}\r\n").as_bytes());
                }
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.esmtp = false;
                self.tx = Transaction::default();
                let h = self.shared.cfg.hostname.clone();
                self.reply(250, &h);
            }
            Request::Mail { from } => self.mail(from).await?,
            Request::Rcpt { to } => self.rcpt(to).await?,
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = Transaction::default();
                self.reply(250, "2.0.0 OK");
            }
            Request::Noop { .. } => self.reply(250, "2.0.0 OK"),
            Request::Quit => {
                self.reply(221, "2.0.0 bye");
                self.quit = true;
                return Ok(false);
            }
            Request::Vrfy { .. } | Request::Expn { .. } => {
                self.reply(252, "2.5.0 cannot verify, but will accept and try");
            }
            Request::Help { .. } => self.reply(214, "2.0.0 https://www.rfc-editor.org/rfc/rfc5321"),
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.authenticate(mechanism, initial_response).await,
            other => {
                let name = other.name();
                self.refuse(502, &format!("5.5.1 {name} not implemented"))
                    .await?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input in any pieces: every complete short line comes out intact and in
        /// order, long ones are reported, the buffer stays bounded, and smtp-proto's parser
        /// never panics on what comes out.
        #[test]
        fn command_framing(
            lines in proptest::collection::vec(
                prop_oneof![
                    "[A-Za-z :<>@.=0-9-]{0,40}".prop_map(|s| s.into_bytes()),
                    proptest::collection::vec(any::<u8>(), 0..120),
                    Just(vec![b'x'; 700]),
                ],
                0..20,
            ),
            chunk in 1usize..300,
        ) {
            let max = 512;
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for l in &lines {
                let l: Vec<u8> = l.iter().copied().filter(|b| *b != b'\n').collect();
                let mut line = l.clone();
                line.extend_from_slice(b"\r\n");
                expected.push(if line.len() > max + 2 { None } else { Some(line.clone()) });
                input.extend_from_slice(&line);
            }
            let mut buf = BytesMut::new();
            let mut skipping = false;
            let mut got = Vec::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    match take_line(&mut buf, &mut skipping, max) {
                        Line::Complete(l) => {
                            let _ = Request::parse(&mut l.iter());
                            got.push(Some(l));
                        }
                        Line::TooLong => got.push(None),
                        Line::NeedMore => break,
                    }
                }
                prop_assert!(buf.len() <= max + chunk);
            }
            prop_assert_eq!(got, expected);
        }
    }
}
