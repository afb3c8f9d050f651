//! POP3 (RFC 1939, CAPA from RFC 2449, SASL from RFC 5034, STLS from RFC 2595) over the
//! user's INBOX.
//!
//! - The maildrop is locked exclusively for the session (a second session for the same user
//!   gets `-ERR [IN-USE]`); the lock is per node, and only the master of the user's group
//!   serves mail, so it is exclusive cluster-wide.
//! - Message numbers and sizes are fixed at login; `DELE` only marks, and `QUIT` commits every
//!   deletion as one Raft proposal (one EXPUNGE of those UIDs) before answering `+OK`. A
//!   session that ends any other way deletes nothing.
//! - `UIDL` is `<UIDVALIDITY>.<UID>`: stable across sessions, restarts and failovers.
//! - APOP is not offered: it needs the cleartext password on the server, and Halyard keeps
//!   only Argon2id hashes (or binds to LDAP). Use AUTH SCRAM-SHA-256(-PLUS), EXTERNAL, or
//!   USER/PASS and AUTH PLAIN over TLS (the mechanisms are [`halyard_directory::sasl`]'s).

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use halyard_directory::sasl::{self, Mechanism, Outcome};
use halyard_raft_store::{Command as StoreCommand, MessageRecord};

use crate::Shared;
use crate::imap::conn::Conn;
use crate::store::{Account, StoreFail};

/// Longest POP3 command line (RFC 2449 allows 255 octets; SASL responses can be longer).
const MAX_LINE: usize = 8192;

/// Users with a POP3 session on this node.
static LOCKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

struct MaildropLock(String);

impl MaildropLock {
    fn take(user: &str) -> Option<MaildropLock> {
        let mut g = LOCKED.lock().unwrap_or_else(|e| e.into_inner());
        let set = g.get_or_insert_with(HashSet::new);
        set.insert(user.to_string())
            .then(|| MaildropLock(user.to_string()))
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut g = LOCKED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = g.as_mut() {
            set.remove(&self.0);
        }
    }
}

/// A session relayed from another node's multiplexor (see [`crate::serve_relayed`]).
pub(crate) async fn serve_relayed(conn: Conn, shared: Arc<Shared>, open: crate::RelayOpen) {
    let peer = conn.peer;
    let mut s = Pop3::new(shared, conn);
    if let Err(e) = s.run_relayed(open.principal, open.via_node).await {
        tracing::debug!(peer = %peer, error = %e, "relayed POP3 session ended");
    }
}

/// Serves one admitted connection (TLS already up on an implicit-TLS port).
pub(crate) async fn serve(accepted: halyard_net::Accepted, shared: Arc<Shared>) {
    let write_timeout = Duration::from_secs(shared.cfg.write_timeout_secs);
    let peer = accepted.peer;
    let conn = Conn::new(accepted.stream, peer, write_timeout);
    let mut s = Pop3::new(shared, conn);
    if let Err(e) = s.run().await {
        tracing::debug!(peer = %peer, error = %e, "POP3 session ended");
    }
}

struct Maildrop {
    acct: Account,
    _lock: MaildropLock,
    uidvalidity: u32,
    msgs: Vec<MessageRecord>,
    deleted: Vec<bool>,
}

struct Pop3 {
    shared: Arc<Shared>,
    conn: Conn,
    pending_user: Option<String>,
    drop: Option<Maildrop>,
    /// The session was relayed to the master and is over.
    relayed: bool,
}

enum Line {
    Text(String),
    Closed,
}

/// Takes the next command line out of `buf`, without its line end (invalid UTF-8 replaced):
/// `None` until a LF has come, `Err` once more than [`MAX_LINE`] bytes came without one.
pub(crate) fn take_line(buf: &mut bytes::BytesMut) -> Option<Result<String, ()>> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(p) => {
            let line = buf.split_to(p + 1);
            Some(Ok(String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string()))
        }
        None if buf.len() > MAX_LINE => Some(Err(())),
        None => None,
    }
}

/// A command line's keyword (upper case) and its argument.
pub(crate) fn command_of(line: &str) -> (String, String) {
    match line.split_once(' ') {
        Some((c, a)) => (c.to_ascii_uppercase(), a.to_string()),
        None => (line.to_ascii_uppercase(), String::new()),
    }
}

/// The answer to RETR (`top`: `None`) or TOP (the header and `top` lines of the body):
/// `+OK`, the text dot-stuffed with CRLF line ends, and the terminating ".".
pub(crate) fn retr_response(raw: &[u8], top: Option<usize>) -> Vec<u8> {
    let raw: &[u8] = match top {
        None => raw,
        Some(n) => {
            let hdr_end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(raw.len());
            let mut end = hdr_end;
            for _ in 0..n {
                match raw[end..].iter().position(|b| *b == b'\n') {
                    Some(p) => end += p + 1,
                    None => {
                        end = raw.len();
                        break;
                    }
                }
            }
            &raw[..end]
        }
    };
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(b"+OK message follows\r\n");
    // Dot-stuffing, and CRLF line ends on the wire.
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl Pop3 {
    fn new(shared: Arc<Shared>, conn: Conn) -> Pop3 {
        Pop3 {
            shared,
            conn,
            pending_user: None,
            drop: None,
            relayed: false,
        }
    }

    async fn send(&mut self, s: &str) -> io::Result<()> {
        self.conn.write(s.as_bytes()).await
    }

    async fn read_line(&mut self) -> io::Result<Line> {
        // RFC 1939: the autologout timer is at least 10 minutes.
        let idle = Duration::from_secs(self.shared.cfg.autologout_secs.max(600));
        loop {
            match take_line(&mut self.conn.buf) {
                Some(Ok(text)) => return Ok(Line::Text(text)),
                Some(Err(())) => {
                    self.send("-ERR line too long\r\n").await?;
                    return Ok(Line::Closed);
                }
                None => {}
            }
            self.conn.release_idle_buffer();
            let node = self.shared.backend.node_id;
            let group = self.drop.as_ref().map(|d| d.acct.group.clone());
            let lost = async {
                match &group {
                    Some(g) => crate::store::lost_mastership(g, node).await,
                    None => std::future::pending().await,
                }
            };
            let r = tokio::select! {
                r = tokio::time::timeout(idle, self.conn.read_more()) => r,
                _ = lost => {
                    // Deletions are not committed: the client reconnects to the new master.
                    let _ = self.send("-ERR [SYS/TEMP] the master of your mailbox moved; reconnect\r\n").await;
                    return Ok(Line::Closed);
                }
            };
            match r {
                Ok(Ok(0)) | Err(_) => return Ok(Line::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    fn capa(&self) -> String {
        let mut c = String::from(
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION Halyard\r\n",
        );
        if self.drop.is_none() {
            let tls = self.conn.is_tls();
            if self.shared.tls.is_some() && !tls {
                c.push_str("STLS\r\n");
            }
            if !self.shared.cfg.require_tls_for_login || tls {
                c.push_str("USER\r\nSASL");
                for m in crate::sasl::offered(&self.shared, &self.conn) {
                    c.push(' ');
                    c.push_str(m.name());
                }
                c.push_str("\r\n");
            }
        }
        c.push_str(".\r\n");
        c
    }

    async fn run(&mut self) -> io::Result<()> {
        self.send("+OK Halyard POP3 ready\r\n").await?;
        self.commands().await
    }

    /// A session another node's multiplexor authenticated and relays here: the answer to its
    /// PASS (or AUTH) comes from this node, the master, which opens the maildrop; then
    /// commands, in the TRANSACTION state. No greeting: the client had it from that node.
    async fn run_relayed(
        &mut self,
        principal: halyard_directory::Principal,
        via: u64,
    ) -> io::Result<()> {
        let acct = match crate::store::relayed_account(&self.shared, principal).await {
            Ok(a) => a,
            Err(e) => return self.send(&format!("-ERR [SYS/TEMP] {e}\r\n")).await,
        };
        tracing::info!(user = %acct.user, via, "POP3 login (relayed)");
        self.open_maildrop(acct).await?;
        if self.drop.is_none() {
            return Ok(());
        }
        self.commands().await
    }

    /// Reads and answers commands until the session ends.
    async fn commands(&mut self) -> io::Result<()> {
        loop {
            if self.relayed {
                return Ok(());
            }
            let Line::Text(line) = self.read_line().await? else {
                return Ok(());
            };
            let (cmd, arg) = command_of(&line);
            let authed = self.drop.is_some();
            match (cmd.as_str(), authed) {
                ("CAPA", _) => {
                    let c = self.capa();
                    self.send(&c).await?
                }
                ("NOOP", true) => self.send("+OK\r\n").await?,
                ("QUIT", _) => {
                    return self.quit().await;
                }
                ("STLS", false) => {
                    let Some(tls) = self.shared.tls.clone() else {
                        self.send("-ERR STLS is not offered here\r\n").await?;
                        continue;
                    };
                    if self.conn.is_tls() {
                        self.send("-ERR TLS is already active\r\n").await?;
                        continue;
                    }
                    self.send("+OK begin TLS negotiation\r\n").await?;
                    self.conn.start_tls(tls.acceptor()).await?;
                    self.pending_user = None;
                }
                ("USER", false) => {
                    if let Some(e) = self.login_refused() {
                        self.send(&e).await?;
                        continue;
                    }
                    if arg.is_empty() {
                        self.send("-ERR USER needs a name\r\n").await?;
                        continue;
                    }
                    self.pending_user = Some(arg);
                    self.send("+OK send PASS\r\n").await?;
                }
                ("PASS", false) => {
                    let Some(user) = self.pending_user.take() else {
                        self.send("-ERR USER first\r\n").await?;
                        continue;
                    };
                    self.login(&user, &arg).await?;
                }
                ("AUTH", false) => self.auth(&arg).await?,
                ("APOP", false) => {
                    self.send("-ERR APOP is not supported (passwords are stored hashed); use USER/PASS or AUTH over TLS\r\n")
                        .await?
                }
                ("STAT", true) => {
                    let d = self.drop.as_ref().expect("auth");
                    let (n, size) = d
                        .msgs
                        .iter()
                        .zip(&d.deleted)
                        .filter(|(_, del)| !**del)
                        .fold((0, 0u64), |(n, s), (m, _)| (n + 1, s + m.size));
                    self.send(&format!("+OK {n} {size}\r\n")).await?;
                }
                ("LIST", true) | ("UIDL", true) => {
                    let uidl = cmd == "UIDL";
                    let d = self.drop.as_ref().expect("auth");
                    let show = |i: usize, m: &MessageRecord| {
                        if uidl {
                            format!("{} {}.{}", i + 1, d.uidvalidity, m.uid)
                        } else {
                            format!("{} {}", i + 1, m.size)
                        }
                    };
                    if arg.is_empty() {
                        let mut out = String::from("+OK\r\n");
                        for (i, m) in d.msgs.iter().enumerate() {
                            if !d.deleted[i] {
                                out.push_str(&show(i, m));
                                out.push_str("\r\n");
                            }
                        }
                        out.push_str(".\r\n");
                        self.send(&out).await?;
                    } else {
                        match self.msg_index(&arg) {
                            Ok(i) => {
                                let line = format!("+OK {}\r\n", show(i, &d.msgs[i]));
                                self.send(&line).await?
                            }
                            Err(e) => self.send(&e).await?,
                        }
                    }
                }
                ("RETR", true) | ("TOP", true) => {
                    let mut parts = arg.split_whitespace();
                    let n = parts.next().unwrap_or("");
                    let top = if cmd == "TOP" {
                        match parts.next().and_then(|x| x.parse::<usize>().ok()) {
                            Some(l) => Some(l),
                            None => {
                                self.send("-ERR TOP needs a message number and a line count\r\n")
                                    .await?;
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    match self.msg_index(n) {
                        Ok(i) => self.retr(i, top).await?,
                        Err(e) => self.send(&e).await?,
                    }
                }
                ("DELE", true) => match self.msg_index(&arg) {
                    Ok(i) => {
                        self.drop.as_mut().expect("auth").deleted[i] = true;
                        self.send(&format!("+OK message {} deleted\r\n", i + 1))
                            .await?
                    }
                    Err(e) => self.send(&e).await?,
                },
                ("RSET", true) => {
                    let d = self.drop.as_mut().expect("auth");
                    d.deleted.iter_mut().for_each(|x| *x = false);
                    let n = d.msgs.len();
                    self.send(&format!("+OK maildrop has {n} messages\r\n"))
                        .await?
                }
                (_, false) if ["STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP"]
                    .contains(&cmd.as_str()) =>
                {
                    self.send("-ERR log in first\r\n").await?
                }
                (_, true) if ["USER", "PASS", "AUTH", "APOP", "STLS"].contains(&cmd.as_str()) => {
                    self.send("-ERR already logged in\r\n").await?
                }
                _ => self.send("-ERR unknown command\r\n").await?,
            }
        }
    }

    fn login_refused(&self) -> Option<String> {
        (self.shared.cfg.require_tls_for_login && !self.conn.is_tls())
            .then(|| "-ERR [AUTH] use STLS first\r\n".to_string())
    }

    fn msg_index(&self, arg: &str) -> Result<usize, String> {
        let d = self.drop.as_ref().expect("auth");
        match arg.trim().parse::<usize>() {
            Ok(n) if n >= 1 && n <= d.msgs.len() && !d.deleted[n - 1] => Ok(n - 1),
            Ok(n) if n >= 1 && n <= d.msgs.len() => {
                Err(format!("-ERR message {n} already deleted\r\n"))
            }
            _ => Err("-ERR no such message\r\n".into()),
        }
    }

    async fn retr(&mut self, i: usize, top: Option<usize>) -> io::Result<()> {
        let d = self.drop.as_ref().expect("auth");
        let raw = match d.acct.reader().body(&d.msgs[i].body) {
            Ok(Some(b)) => b,
            _ => {
                return self
                    .send("-ERR [SYS/TEMP] message unavailable now\r\n")
                    .await;
            }
        };
        let out = retr_response(&raw, top);
        self.conn.write(&out).await
    }

    async fn auth(&mut self, arg: &str) -> io::Result<()> {
        if let Some(e) = self.login_refused() {
            return self.send(&e).await;
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let offered = crate::sasl::offered(&self.shared, &self.conn);
        if mech.is_empty() {
            let mut list = String::from("+OK\r\n");
            for m in &offered {
                list.push_str(m.name());
                list.push_str("\r\n");
            }
            list.push_str(".\r\n");
            return self.send(&list).await;
        }
        let Some(m) = Mechanism::parse(&mech).filter(|m| offered.contains(m)) else {
            return self
                .send(&format!("-ERR mechanism {mech} is not supported\r\n"))
                .await;
        };
        let initial = match initial.as_deref() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(i) => match base64::engine::general_purpose::STANDARD.decode(i.trim()) {
                Ok(d) => Some(d),
                Err(_) => return self.send("-ERR malformed base64\r\n").await,
            },
        };
        let facts = crate::sasl::tls_facts(&self.shared, &self.conn);
        let dir = self.shared.backend.directory.clone();
        let gate = crate::sasl::gate(self.shared.clone(), self.conn.peer.ip());
        let mut x = Pop3Sasl(self, false);
        let outcome = sasl::run(&*dir, m, initial, &mut x, &facts, &gate).await?;
        if x.1 {
            return Ok(()); // the client went away mid-exchange
        }
        self.authenticated(outcome).await
    }

    async fn login(&mut self, login: &str, password: &str) -> io::Result<()> {
        if let Some(e) = self.login_refused() {
            return self.send(&e).await;
        }
        let dir = self.shared.backend.directory.clone();
        let gate = crate::sasl::gate(self.shared.clone(), self.conn.peer.ip());
        let outcome = sasl::password(&*dir, login, password, &gate).await?;
        self.authenticated(outcome).await
    }

    /// Answers an authentication, whatever the mechanism (see the IMAP session's).
    async fn authenticated(&mut self, outcome: Outcome) -> io::Result<()> {
        let principal = match outcome {
            Outcome::Success(p) => p,
            Outcome::Failed { login, why } => {
                tracing::info!(login = %login, peer = %self.conn.peer, why, "POP3 authentication failed");
                let delay = self.shared.limits.login_failed(self.conn.peer.ip(), &login);
                tokio::time::sleep(delay).await;
                return self.send("-ERR [AUTH] authentication failed\r\n").await;
            }
            Outcome::Throttled { .. } => {
                return self
                    .send("-ERR [SYS/TEMP] too many failed logins; try again later\r\n")
                    .await;
            }
            Outcome::Cancelled => return self.send("-ERR authentication cancelled\r\n").await,
            Outcome::Malformed(m) => return self.send(&format!("-ERR {m}\r\n")).await,
            Outcome::Unavailable(e) => {
                return self
                    .send(&format!("-ERR [SYS/TEMP] directory unavailable: {e}\r\n"))
                    .await;
            }
        };
        let acct = match crate::store::account(&self.shared, principal).await {
            Ok(a) => a,
            Err(e) => return self.send(&format!("-ERR [SYS/TEMP] {e}\r\n")).await,
        };
        crate::sasl::succeeded(&self.shared, &acct.principal);
        if acct.master() != Some(self.shared.backend.node_id) {
            return self.relay(&acct).await;
        }
        self.open_maildrop(acct).await
    }

    /// Locks and reads the maildrop of a user this node is the master for; answers the
    /// login with `+OK` and the maildrop's size, or `-ERR`.
    async fn open_maildrop(&mut self, acct: Account) -> io::Result<()> {
        let Some(lock) = MaildropLock::take(&acct.user) else {
            return self
                .send("-ERR [IN-USE] maildrop already locked by another session\r\n")
                .await;
        };
        let reader = match acct.linearizable().await {
            Ok(r) => r,
            Err(e) => return self.send(&format!("-ERR [SYS/TEMP] {e}\r\n")).await,
        };
        let (uidvalidity, msgs) = match (
            reader.mailbox(&acct.user, "INBOX"),
            reader.messages(&acct.user, "INBOX"),
        ) {
            (Ok(Some(mb)), Ok(Some(m))) => (mb.uidvalidity, m),
            (Ok(None), _) | (_, Ok(None)) => (0, Vec::new()),
            _ => return self.send("-ERR [SYS/TEMP] store unavailable\r\n").await,
        };
        let n = msgs.len();
        let size: u64 = msgs.iter().map(|m| m.size).sum();
        tracing::info!(user = %acct.user, peer = %self.conn.peer, messages = n, "POP3 login");
        self.drop = Some(Maildrop {
            deleted: vec![false; n],
            acct,
            _lock: lock,
            uidvalidity,
            msgs,
        });
        self.send(&format!(
            "+OK maildrop locked and ready, {n} messages ({size} octets)\r\n"
        ))
        .await
    }

    /// The multiplexor: hand the authenticated session to the master (over the cluster's
    /// mutual TLS, see [`crate::proxy`]), forward its answer, and relay the rest.
    async fn relay(&mut self, acct: &Account) -> io::Result<()> {
        let open = crate::RelayOpen {
            protocol: crate::RelayProtocol::Pop3,
            principal: acct.principal.clone(),
            client: self.conn.peer,
            client_tls: self.conn.is_tls(),
            via_node: self.shared.backend.node_id,
        };
        match crate::proxy::upstream(&self.shared, acct, open).await {
            Ok((master, answer, up)) => {
                // The master's answer to the login (its maildrop lock and size, or why not).
                if !answer.starts_with("+OK") {
                    return self.send(&format!("{answer}\r\n")).await;
                }
                let via = self.shared.backend.node_id;
                self.send(&format!("{answer} (via node {via})\r\n")).await?;
                tracing::info!(user = %acct.user, master, "POP3 session relayed to the master");
                self.relayed = true;
                crate::proxy::relay(&mut self.conn, up).await
            }
            Err(e) => self.send(&format!("-ERR [SYS/TEMP] {e}\r\n")).await,
        }
    }

    /// UPDATE state: commits the deletions as one proposal, then says goodbye.
    async fn quit(&mut self) -> io::Result<()> {
        let Some(d) = self.drop.take() else {
            return self.send("+OK bye\r\n").await;
        };
        let uids: Vec<u32> = d
            .msgs
            .iter()
            .zip(&d.deleted)
            .filter(|(_, del)| **del)
            .map(|(m, _)| m.uid)
            .collect();
        if uids.is_empty() {
            return self.send("+OK bye\r\n").await;
        }
        let n = uids.len();
        let r = d
            .acct
            .propose(StoreCommand::Expunge {
                user: d.acct.user.clone(),
                mailbox: "INBOX".into(),
                uids: Some(uids),
            })
            .await;
        match r {
            Ok(_) => {
                self.send(&format!("+OK {n} messages deleted, bye\r\n"))
                    .await
            }
            Err(StoreFail::Refused(e)) => self.send(&format!("-ERR {e}\r\n")).await,
            Err(StoreFail::Unavailable(e)) => {
                self.send(&format!("-ERR [SYS/TEMP] deletions not committed: {e}\r\n"))
                    .await
            }
        }
    }
}

/// POP3's continuations (`+ base64`, RFC 5034) as a SASL exchange; `.1` is set when the
/// client closed the connection mid-exchange.
struct Pop3Sasl<'a>(&'a mut Pop3, bool);

#[async_trait::async_trait]
impl sasl::Exchange for Pop3Sasl<'_> {
    async fn challenge(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.0.send(&format!("+ {}\r\n", b64.encode(data))).await?;
        match self.0.read_line().await? {
            Line::Closed => {
                self.1 = true;
                Ok(None)
            }
            Line::Text(t) if t.trim() == "*" => Ok(None),
            Line::Text(t) => b64
                .decode(t.trim())
                .map(Some)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not base64")),
        }
    }
}
