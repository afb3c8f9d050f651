//! One SMTP/submission session (RFC 5321 with ESMTP extensions).
//!
//! Commands are parsed by `smtp-proto`; lines are framed here so that a hostile client can
//! never make the server buffer more than `max_line_bytes` of a command or more than
//! `max_message_bytes` of a message. Replies are batched while pipelined commands are still
//! waiting in the input buffer (RFC 2920) and flushed before the server waits for input.
//!
//! The one rule that matters: `250` at the end of DATA/BDAT is written only after every
//! `Enqueue` proposal carrying the message has been committed by a majority of its group
//! (each replica fsyncs the log entry before acknowledging it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BytesMut};
use halyard_directory::{DirectoryError, Resolution};
use halyard_raft_store::{Command, ProposeError, RecipientSpec, Reply};
use smtp_proto::Request;
use smtp_proto::request::receiver::DataReceiver;
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
                if self.auth_offered() {
                    caps.push("AUTH PLAIN LOGIN".into());
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

    /// AUTH is offered when TLS is active, or when it is not required (or not configured).
    fn auth_offered(&self) -> bool {
        self.stream.tls_info().is_some()
            || self.shared.tls.is_none()
            || !self.shared.cfg.require_tls_for_auth
    }

    /// Whether `address` is one of `user`'s addresses (submission sender check).
    async fn owns(&self, user: &str, address: &str) -> bool {
        if address.eq_ignore_ascii_case(user) {
            return true;
        }
        matches!(
            self.shared.backend.directory.resolve(address).await,
            Ok(Resolution::User { user: u, .. }) if u.mail == user
        )
    }

    async fn starttls(&mut self) -> std::io::Result<bool> {
        let Some(tls) = self.shared.tls.clone() else {
            self.refuse(502, "5.5.1 STARTTLS not offered here").await?;
            return Ok(true);
        };
        if self.stream.tls_info().is_some() {
            self.refuse(503, "5.5.1 TLS already active").await?;
            return Ok(true);
        }
        self.reply(220, "2.0.0 ready to start TLS");
        self.flush().await?;
        // RFC 3207 §4.2: nothing the client sent before the handshake may be used after it
        // (it would be a command injected in the clear).
        self.buf.clear();
        let t = Duration::from_secs(self.shared.cfg.command_timeout_secs);
        match tokio::time::timeout(t, self.stream.start_tls(tls.acceptor())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return Ok(false);
            }
            Err(_) => return Ok(false),
        }
        // A fresh start: the client must say EHLO again.
        self.helo = None;
        self.esmtp = false;
        self.tx = Transaction::default();
        Ok(true)
    }

    /// Reads one SASL response line (base64); `None` when the client cancelled with `*`.
    async fn sasl_line(&mut self) -> std::io::Result<Option<Option<Vec<u8>>>> {
        let mut skipping = false;
        loop {
            match self.take_line(&mut skipping) {
                Line::Complete(l) => {
                    let l = String::from_utf8_lossy(&l).trim_end().to_string();
                    if l == "*" {
                        return Ok(Some(None));
                    }
                    return Ok(Some(Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(l.as_bytes())
                            .unwrap_or_default(),
                    )));
                }
                Line::TooLong => return Ok(Some(Some(Vec::new()))),
                Line::NeedMore => {
                    if !self.read_more().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn authenticate(&mut self, mechanism: u64, initial: String) -> std::io::Result<bool> {
        if self.helo.is_none() || !self.esmtp {
            self.refuse(503, "5.5.1 say EHLO first").await?;
            return Ok(true);
        }
        if self.auth.is_some() {
            self.refuse(503, "5.5.1 already authenticated").await?;
            return Ok(true);
        }
        if self.tx.from.is_some() {
            self.refuse(503, "5.5.1 AUTH not allowed during a transaction")
                .await?;
            return Ok(true);
        }
        if !self.auth_offered() {
            self.refuse(538, "5.7.11 encryption required: use STARTTLS first")
                .await?;
            return Ok(true);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| b64.decode(s.as_bytes()).ok();
        // One SASL round: challenge, then the client's answer (or the end of the session).
        macro_rules! step {
            ($challenge:expr) => {{
                self.reply(334, $challenge);
                match self.sasl_line().await? {
                    None => return Ok(false),
                    Some(None) => {
                        self.refuse(501, "5.0.0 authentication cancelled").await?;
                        return Ok(true);
                    }
                    Some(Some(d)) => d,
                }
            }};
        }
        let (login, password) = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let data = if initial.is_empty() {
                    Some(step!(""))
                } else if initial == "=" {
                    Some(Vec::new())
                } else {
                    decode(&initial)
                };
                let parts: Vec<Vec<u8>> = data
                    .unwrap_or_default()
                    .split(|b| *b == 0)
                    .map(<[u8]>::to_vec)
                    .collect();
                if parts.len() != 3 || (!parts[0].is_empty() && parts[0] != parts[1]) {
                    self.refuse(501, "5.5.2 malformed PLAIN response").await?;
                    return Ok(true);
                }
                (
                    String::from_utf8_lossy(&parts[1]).into_owned(),
                    String::from_utf8_lossy(&parts[2]).into_owned(),
                )
            }
            smtp_proto::AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    step!("VXNlcm5hbWU6")
                } else {
                    decode(&initial).unwrap_or_default()
                };
                let pw = step!("UGFzc3dvcmQ6");
                (
                    String::from_utf8_lossy(&user).into_owned(),
                    String::from_utf8_lossy(&pw).into_owned(),
                )
            }
            _ => {
                self.refuse(504, "5.5.4 mechanism not supported (PLAIN, LOGIN)")
                    .await?;
                return Ok(true);
            }
        };
        match self
            .shared
            .backend
            .directory
            .authenticate(&login, &password)
            .await
        {
            Ok(Some(p)) => {
                tracing::info!(user = %p.mail, peer = %self.peer, "SMTP AUTH");
                self.auth = Some(p.mail);
                self.reply(235, "2.7.0 authentication successful");
                Ok(true)
            }
            Ok(None) => {
                self.auth_failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.reply(535, "5.7.8 authentication credentials invalid");
                if self.auth_failures >= self.shared.cfg.max_auth_failures {
                    self.reply(421, "4.7.0 too many failed authentications, closing");
                    return Ok(false);
                }
                Ok(true)
            }
            Err(DirectoryError::Unavailable(_)) => {
                self.refuse(454, "4.7.0 temporary authentication failure")
                    .await?;
                Ok(true)
            }
        }
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> std::io::Result<()> {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1 say EHLO first").await;
        }
        if self.tx.from.is_some() {
            return self.refuse(503, "5.5.1 nested MAIL command").await;
        }
        if self.kind == Kind::Submission && self.auth.is_none() {
            return self
                .refuse(530, "5.7.0 authentication required on submission")
                .await;
        }
        if let Some(user) = self.auth.clone()
            && !self.owns(&user, &from.address).await
        {
            return self
                .refuse(
                    553,
                    &format!("5.7.1 <{}> is not an address of {user}", from.address),
                )
                .await;
        }
        if self.shared.cfg.mailfromdnsverify
            && self.auth.is_none()
            && let Some((_, domain)) = from.address.rsplit_once('@')
            && !matches!(
                self.shared.backend.directory.domain(domain).await,
                Ok(Some(_))
            )
        {
            match self.shared.relay.domain_exists(domain).await {
                Ok(true) => {}
                Ok(false) => {
                    return self
                        .refuse(
                            550,
                            &format!("5.1.8 <{}>: sender domain does not exist", from.address),
                        )
                        .await;
                }
                Err(_) => {
                    return self
                        .refuse(451, "4.4.3 cannot verify the sender domain now")
                        .await;
                }
            }
        }
        let max = self.shared.cfg.max_message_bytes;
        if from.size as u64 > max {
            return self
                .refuse(
                    552,
                    &format!("5.3.4 message size exceeds the limit of {max} bytes"),
                )
                .await;
        }
        let mut params = BTreeMap::new();
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            params.insert("BODY".into(), "8BITMIME".into());
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            params.insert("SMTPUTF8".into(), String::new());
        }
        if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            params.insert("RET".into(), "FULL".into());
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            params.insert("RET".into(), "HDRS".into());
        }
        if let Some(envid) = &from.env_id {
            params.insert("ENVID".into(), envid.clone());
        }
        self.tx = Transaction {
            from: Some(from.address),
            params,
            ..Default::default()
        };
        self.reply(250, "2.1.0 sender OK");
        Ok(())
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> std::io::Result<()> {
        if self.tx.from.is_none() {
            return self.refuse(503, "5.5.1 MAIL first").await;
        }
        if self.tx.rcpts.len() >= self.shared.cfg.max_recipients {
            return self.refuse(452, "4.5.3 too many recipients").await;
        }
        // Rewrite rules first; the address as given is kept as ORCPT for reports.
        let mut to = to;
        let address = crate::rewrite::rewrite(&self.shared.cfg.rewrite, &to.address);
        if address != to.address {
            tracing::debug!(from = %to.address, to = %address, "recipient rewritten");
            to.orcpt = to.orcpt.or_else(|| Some(format!("rfc822;{}", to.address)));
            to.address = address.clone();
        }
        let dir = self.shared.backend.directory.clone();
        let user = match dir.resolve(&address).await {
            Ok(Resolution::User { user, .. }) => user,
            Ok(Resolution::Unknown) => {
                let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                return match dir.domain(domain).await {
                    Ok(Some(_)) => {
                        self.refuse(550, &format!("5.1.1 <{address}>: no such user here"))
                            .await
                    }
                    Ok(None)
                        if let Some(ch) =
                            crate::rewrite::channel_for(&self.shared.cfg.channels, domain) =>
                    {
                        let name = ch.name.clone();
                        self.channel_rcpt(&to, &name).await
                    }
                    Ok(None) if self.kind == Kind::Lmtp => {
                        self.refuse(550, &format!("5.1.1 <{address}>: not a local recipient"))
                            .await
                    }
                    Ok(None) if self.trusted || self.auth.is_some() => {
                        self.channel_rcpt(&to, "smtp").await
                    }
                    Ok(None) => {
                        self.refuse(554, &format!("5.7.1 <{address}>: relay access denied"))
                            .await
                    }
                    Err(DirectoryError::Unavailable(_)) => {
                        self.refuse(451, "4.4.3 directory unavailable, try again later")
                            .await
                    }
                };
            }
            Ok(Resolution::Forward { to: targets, .. })
            | Ok(Resolution::List {
                members: targets, ..
            }) => {
                return match self.expand(targets, &address).await {
                    Ok(list) if list.is_empty() => {
                        self.refuse(550, &format!("5.1.1 <{address}>: nobody to deliver to"))
                            .await
                    }
                    Ok(list) => {
                        self.tx.rcpts.extend(list);
                        self.tx.accepted.push(address.clone());
                        self.reply(250, "2.1.5 recipient OK (expanded)");
                        Ok(())
                    }
                    Err(_) => {
                        self.refuse(451, "4.4.3 directory unavailable, try again later")
                            .await
                    }
                };
            }
            Err(DirectoryError::Unavailable(_)) => {
                return self
                    .refuse(451, "4.4.3 directory unavailable, try again later")
                    .await;
            }
        };
        match user.status {
            halyard_directory::UserStatus::Active => {}
            halyard_directory::UserStatus::Inactive => {
                return self
                    .refuse(450, &format!("4.2.1 <{address}>: mailbox disabled for now"))
                    .await;
            }
            halyard_directory::UserStatus::Deleted => {
                return self
                    .refuse(550, &format!("5.1.1 <{address}>: no such user here"))
                    .await;
            }
        }
        let Some(group) = crate::group_of(&self.shared, &user) else {
            return self
                .refuse(451, "4.3.0 no mailbox group configured for this recipient")
                .await;
        };
        if !self.shared.backend.groups.contains_key(&group) {
            return self
                .refuse(
                    451,
                    &format!("4.3.0 mailbox group {group} is not served here"),
                )
                .await;
        }
        // The directory's quota is what the store enforces: bring it over if it changed, and
        // refuse new mail for a mailbox that is already full (RFC 5321 452 4.2.2).
        if let Some(g) = self.shared.backend.groups.get(&group) {
            let q = g.reader().quota(&user.mail).unwrap_or_default();
            if q.limit_bytes != user.quota_bytes || q.limit_messages != user.quota_messages {
                let _ = g
                    .propose(Command::SetQuota {
                        user: user.mail.clone(),
                        limit_bytes: user.quota_bytes,
                        limit_messages: user.quota_messages,
                    })
                    .await;
            }
            let full = user.quota_bytes.is_some_and(|l| q.used_bytes >= l)
                || user.quota_messages.is_some_and(|l| q.used_messages >= l);
            if full {
                return self
                    .refuse(452, &format!("4.2.2 <{address}>: mailbox full"))
                    .await;
            }
        }
        let notify = notify_of(to.flags);
        let orcpt = to
            .orcpt
            .clone()
            .or_else(|| (user.mail != address).then(|| format!("rfc822;{address}")));
        let forwards = if user.delivery_options.iter().any(|o| o == "forward") {
            user.forwarding.clone()
        } else {
            Vec::new()
        };
        self.tx.rcpts.push(Rcpt {
            spec: RecipientSpec {
                address: user.mail.clone(),
                orcpt,
                notify,
                channel: "store".into(),
            },
            group,
        });
        // Forwarding in addition to the mailbox (delivery options `mailbox` + `forward`).
        if !forwards.is_empty() {
            match self.expand(forwards, &address).await {
                Ok(list) => self.tx.rcpts.extend(list),
                Err(_) => {
                    self.tx.rcpts.pop();
                    return self
                        .refuse(451, "4.4.3 directory unavailable, try again later")
                        .await;
                }
            }
        }
        self.tx.accepted.push(address.clone());
        self.reply(250, "2.1.5 recipient OK");
        Ok(())
    }

    /// The recipients a distribution list or a forwarding entry stands for: local users'
    /// mailboxes (store channel) and addresses elsewhere (relay), expanded through nested
    /// lists and forwarding up to 8 levels and 1,000 addresses, each at most once. The
    /// original address goes into ORCPT for DSNs. Mail keeps its envelope sender (no SRS).
    async fn expand(&self, targets: Vec<String>, original: &str) -> Result<Vec<Rcpt>, ()> {
        use std::collections::{HashSet, VecDeque};
        let dir = self.shared.backend.directory.clone();
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(original.to_ascii_lowercase());
        let mut queue: VecDeque<(String, u32)> = targets.into_iter().map(|t| (t, 1)).collect();
        let mut out = Vec::new();
        let orcpt = Some(format!("rfc822;{original}"));
        while let Some((a, depth)) = queue.pop_front() {
            if out.len() >= 1000 || !seen.insert(a.to_ascii_lowercase()) {
                continue;
            }
            match dir.resolve(&a).await {
                Ok(Resolution::User { user, .. }) => {
                    if user.status != halyard_directory::UserStatus::Active {
                        continue;
                    }
                    if user.delivery_options.iter().any(|o| o == "forward") && depth < 8 {
                        queue.extend(user.forwarding.iter().map(|f| (f.clone(), depth + 1)));
                    }
                    if !user.delivers_to_mailbox() {
                        continue;
                    }
                    let Some(group) = crate::group_of(&self.shared, &user) else {
                        continue;
                    };
                    if !seen.insert(format!("\0{}", user.mail)) {
                        continue;
                    }
                    out.push(Rcpt {
                        spec: RecipientSpec {
                            address: user.mail.clone(),
                            orcpt: orcpt.clone(),
                            notify: vec![],
                            channel: "store".into(),
                        },
                        group,
                    });
                }
                Ok(Resolution::Forward { to, .. }) | Ok(Resolution::List { members: to, .. }) => {
                    if depth < 8 {
                        queue.extend(to.into_iter().map(|t| (t, depth + 1)));
                    }
                }
                Ok(Resolution::Unknown) => {
                    let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                    match dir.domain(domain).await {
                        // An address of a hosted domain that does not exist: skipped.
                        Ok(Some(_)) => {
                            tracing::info!(member = %a, list = %original, "expansion skips an unknown local address")
                        }
                        Ok(None) => {
                            if let Some(group) = crate::relay_group(&self.shared) {
                                out.push(Rcpt {
                                    spec: RecipientSpec {
                                        address: a.clone(),
                                        orcpt: orcpt.clone(),
                                        notify: vec![],
                                        channel: "smtp".into(),
                                    },
                                    group,
                                });
                            }
                        }
                        Err(_) => return Err(()),
                    }
                }
                Err(_) => return Err(()),
            }
        }
        Ok(out)
    }

    /// A recipient in another domain going out through `channel`: a configured channel
    /// routing its domain (accepted from anyone), or `smtp`, the MX relay (for clients
    /// allowed to relay).
    async fn channel_rcpt(
        &mut self,
        to: &smtp_proto::RcptTo<String>,
        channel: &str,
    ) -> std::io::Result<()> {
        let Some(group) = crate::relay_group(&self.shared) else {
            return self
                .refuse(451, "4.3.0 no resource group configured for outgoing mail")
                .await;
        };
        self.tx.rcpts.push(Rcpt {
            spec: RecipientSpec {
                address: to.address.clone(),
                orcpt: to.orcpt.clone(),
                notify: notify_of(to.flags),
                channel: channel.into(),
            },
            group,
        });
        self.tx.accepted.push(to.address.clone());
        self.reply(250, &format!("2.1.5 recipient OK ({channel})"));
        Ok(())
    }

    async fn data(&mut self) -> std::io::Result<bool> {
        if self.tx.from.is_none() || self.tx.rcpts.is_empty() {
            self.refuse(503, "5.5.1 no valid recipients").await?;
            return Ok(true);
        }
        if !self.tx.chunks.is_empty() {
            self.refuse(503, "5.5.1 DATA after BDAT").await?;
            return Ok(true);
        }
        self.reply(354, "end data with <CR><LF>.<CR><LF>");
        let max = self.shared.cfg.max_message_bytes as usize;
        let mut rx = data_receiver();
        let mut body = Vec::new();
        let mut too_big = false;
        loop {
            let mut it = self.buf.iter();
            let before = self.buf.len();
            let done = if too_big {
                let mut sink = Vec::new();
                let d = rx.ingest(&mut it, &mut sink);
                drop(sink);
                d
            } else {
                rx.ingest(&mut it, &mut body)
            };
            let used = before - it.as_slice().len();
            self.buf.advance(used);
            if body.len() > max {
                too_big = true;
                body = Vec::new();
            }
            if done {
                break;
            }
            if !self.read_more().await? {
                return Ok(false);
            }
        }
        if too_big {
            self.tx = Transaction::default();
            self.refuse(552, "5.3.4 message exceeds the size limit")
                .await?;
            return Ok(true);
        }
        self.finish(body).await?;
        Ok(true)
    }

    async fn bdat(&mut self, size: usize, last: bool) -> std::io::Result<bool> {
        let max = self.shared.cfg.max_message_bytes as usize;
        if size > max {
            // Reading (and dropping) gigabytes to stay in step is what the client wants us
            // to do; refuse and hang up instead.
            self.reply(552, "5.3.4 chunk exceeds the message size limit, closing");
            return Ok(false);
        }
        // The chunk is read whatever the state, so that the stream stays in step.
        let over = self.tx.too_big || self.tx.chunks.len().saturating_add(size) > max;
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() && !self.read_more().await? {
                return Ok(false);
            }
            let n = left.min(self.buf.len());
            let part = self.buf.split_to(n);
            if !over {
                self.tx.chunks.extend_from_slice(&part);
            }
            left -= n;
        }
        if self.tx.from.is_none() || self.tx.rcpts.is_empty() {
            self.tx.chunks.clear();
            self.refuse(503, "5.5.1 no valid recipients").await?;
            return Ok(true);
        }
        if over {
            self.tx.too_big = true;
            self.tx.chunks = Vec::new();
            if last {
                self.tx = Transaction::default();
            }
            self.refuse(552, "5.3.4 message exceeds the size limit")
                .await?;
            return Ok(true);
        }
        if !last {
            self.reply(250, &format!("2.0.0 {size} bytes received"));
            return Ok(true);
        }
        let body = std::mem::take(&mut self.tx.chunks);
        self.finish(body).await?;
        Ok(true)
    }

    /// End of a message: `Received:` trace header, one `Enqueue` per group holding
    /// recipients, `250` only when every one of them is committed.
    async fn finish(&mut self, body: Vec<u8>) -> std::io::Result<()> {
        let tx = std::mem::take(&mut self.tx);
        let queue_id = self.shared.next_queue_id();
        let tls = self.stream.tls_info();
        let proto = match (self.esmtp, tls.is_some(), self.auth.is_some()) {
            _ if self.kind == Kind::Lmtp => "LMTP",
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let tls_clause = tls
            .map(|t| format!("\r\n\t(using {t})"))
            .unwrap_or_default();
        let now = chrono::Utc::now();
        let for_clause = match tx.rcpts.as_slice() {
            [one] => format!("\r\n\tfor <{}>", one.spec.address),
            _ => String::new(),
        };
        let received = format!(
            "Received: from {} ([{}]){tls_clause}\r\n\tby {} (Halyard) with {proto} id {queue_id}{for_clause};\r\n\t{}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            self.peer.ip(),
            self.shared.cfg.hostname,
            now.to_rfc2822(),
        );
        let mut message = Vec::with_capacity(received.len() + body.len());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(&body);
        let message = bytes::Bytes::from(message);
        let meta = halyard_raft_store::mime::message_meta(&message);
        let mut by_group: BTreeMap<String, Vec<RecipientSpec>> = BTreeMap::new();
        for r in tx.rcpts {
            // The same mailbox reached twice (an alias and a list, say) gets one copy.
            let list = by_group.entry(r.group).or_default();
            if !list.iter().any(|x| x.address == r.spec.address) {
                list.push(r.spec);
            }
        }
        let received_ms = now.timestamp_millis();
        let expires = received_ms + (self.shared.cfg.queue_lifetime_secs as i64) * 1000;
        let several = by_group.len() > 1;
        let mut failed = None;
        for (i, (group_name, recipients)) in by_group.into_iter().enumerate() {
            let Some(group) = self.shared.backend.groups.get(&group_name).cloned() else {
                failed = Some(format!("group {group_name} is not served here"));
                break;
            };
            let id = if several {
                format!("{queue_id}.{i}")
            } else {
                queue_id.clone()
            };
            let cmd = Command::Enqueue {
                queue_id: id.clone(),
                mail_from: tx.from.clone().unwrap_or_default(),
                params: tx.params.clone(),
                recipients,
                partition: halyard_raft_store::PRIMARY_PARTITION.into(),
                body: message.clone(),
                received_at_ms: received_ms,
                expires_at_ms: expires,
                priority: halyard_raft_store::PRIORITY_MAIL,
                meta: Some(meta.clone()),
            };
            // Not the master: the master proposes it for us, and says when it is committed.
            let proposed = match (group.leader_elsewhere(), &self.shared.backend.forward) {
                (Some(addr), Some(forward)) => forward.propose(addr, group_name.clone(), cmd).await,
                #[cfg(not(feature = "jepsen-broken-ack"))]
                _ => group.propose(cmd).await,
                // The deliberately broken build the Jepsen harness must catch: the 250 goes
                // out before the entry is committed (never enable this feature elsewhere).
                #[cfg(feature = "jepsen-broken-ack")]
                _ => {
                    let g = group.clone();
                    tokio::spawn(async move {
                        let _ = g.propose(cmd).await;
                    });
                    Ok(Reply::Enqueued {
                        queue_id: id.clone(),
                    })
                }
            };
            match proposed {
                Ok(Reply::Enqueued { .. }) => {
                    tracing::info!(queue_id = %id, group = %group_name, size = message.len(), peer = %self.peer, "message accepted");
                }
                Ok(other) => {
                    failed = Some(format!("not queued: {other:?}"));
                    break;
                }
                Err(ProposeError::NotLeader { leader_id, .. }) => {
                    failed = Some(format!(
                        "this node is not the master of {group_name} now (master: {})",
                        leader_id.map_or("being elected".into(), |l| format!("node {l}"))
                    ));
                    break;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        // LMTP: one reply per accepted recipient (RFC 2033 §4.2); all share the commit.
        let replies = if self.kind == Kind::Lmtp {
            tx.accepted.clone()
        } else {
            vec![String::new()]
        };
        for rcpt in replies {
            let who = if rcpt.is_empty() {
                String::new()
            } else {
                format!("<{rcpt}> ")
            };
            match &failed {
                None => self.reply(250, &format!("2.0.0 {who}OK queued as {queue_id}")),
                Some(why) => {
                    tracing::warn!(queue_id = %queue_id, error = %why, "message not queued");
                    self.refuse(451, &format!("4.3.0 {who}not queued, try again: {why}"))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// smtp-proto's DATA receiver, primed with the CRLF that ended the DATA command: the
/// receiver only un-stuffs a dot that follows a CRLF it has seen, so without this a message
/// whose first line starts with "." would keep the stuffing dot (found by the round-trip
/// property test below).
fn data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

/// RFC 3461 NOTIFY values from smtp-proto's flags.
fn notify_of(flags: u64) -> Vec<String> {
    [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
        (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, n)| n.to_string())
    .collect()
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

        /// What the relay channel sends (dot-stuffed, terminated) is read back by the DATA
        /// receiver as exactly the message (normalised to end in CRLF).
        #[test]
        fn dot_stuffing_round_trip(
            body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..200),
            chunk in 1usize..50,
        ) {
            // Messages are CRLF text: no bare CR or LF (those are refused upstream).
            let text: Vec<u8> = String::from_utf8(body).unwrap().replace('\r', "").replace('\n', "\r\n").into_bytes();
            let wire = crate::relay::dot_stuff(&text);
            let mut rx = data_receiver();
            let mut out = Vec::new();
            let mut done = false;
            for piece in wire.chunks(chunk) {
                let mut it = piece.iter();
                if rx.ingest(&mut it, &mut out) {
                    done = true;
                    prop_assert!(it.as_slice().is_empty());
                }
            }
            prop_assert!(done);
            let mut want = text.clone();
            if !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(out, want);
        }
    }
}
