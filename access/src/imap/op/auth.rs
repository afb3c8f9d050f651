//! Getting authenticated: STARTTLS, LOGIN and AUTHENTICATE (PLAIN and LOGIN, with SASL-IR),
//! the login throttle, and the multiplexor: a user whose mailboxes are mastered by another
//! node is logged in there and the rest of the session is relayed to it.

use std::io;
use std::time::Duration;

use base64::Engine;
use halyard_directory::sasl::{self, Mechanism, Outcome};
use halyard_raft_store::Command as StoreCommand;
use imap_codec::AuthenticateDataCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::response::Code;

use crate::imap::session::{Session, capabilities, now_uidvalidity};
use crate::store::Account;

impl Session {
    pub(crate) async fn starttls(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        let Some(tls) = self.shared.tls.clone() else {
            self.bad(tag, "STARTTLS is not offered here").await?;
            return Ok(());
        };
        if self.conn.is_tls() {
            self.bad(tag, "TLS is already active").await?;
            return Ok(());
        }
        self.ok(tag, None, "begin TLS negotiation now").await?;
        self.conn.start_tls(tls.acceptor()).await?;
        Ok(())
    }

    pub(crate) async fn login(
        &mut self,
        tag: &Tag<'_>,
        login: &str,
        password: &str,
    ) -> io::Result<()> {
        if self.shared.cfg.require_tls_for_login && !self.conn.is_tls() {
            return self
                .no(tag, Some(code("PRIVACYREQUIRED")), "use STARTTLS first")
                .await;
        }
        let dir = self.shared.backend.directory.clone();
        let gate = crate::sasl::gate(self.shared.clone(), self.conn.peer.ip());
        let outcome = sasl::password(&*dir, login, password, &gate).await?;
        self.authenticated(tag, outcome).await
    }

    /// Answers an authentication, whatever the mechanism: a success logs in here or hands
    /// the session to the master; a failure counts against the login and the address alike.
    async fn authenticated(&mut self, tag: &Tag<'_>, outcome: Outcome) -> io::Result<()> {
        let ip = self.conn.peer.ip();
        match outcome {
            Outcome::Success(p) => match crate::store::account(&self.shared, p).await {
                Ok(acct) if acct.master() != Some(self.shared.backend.node_id) => {
                    crate::sasl::succeeded(&self.shared, &acct.principal);
                    self.relay(tag, &acct).await
                }
                Ok(acct) => {
                    crate::sasl::succeeded(&self.shared, &acct.principal);
                    tracing::info!(user = %acct.user, group = acct.group.name(), peer = %self.conn.peer, "IMAP login");
                    self.ensure_inbox_and_quota(&acct).await;
                    self.account = Some(acct);
                    let caps = Vec1::try_from(self.caps()).map_err(|_| io::Error::other("caps"))?;
                    self.ok(tag, Some(Code::Capability(caps)), "logged in")
                        .await
                }
                Err(e) => self.no(tag, Some(code("UNAVAILABLE")), &e).await,
            },
            Outcome::Failed { login, why } => {
                tracing::info!(login = %login, peer = %self.conn.peer, why, "IMAP authentication failed");
                let delay = self.shared.limits.login_failed(ip, &login);
                tokio::time::sleep(delay).await;
                self.no(
                    tag,
                    Some(code("AUTHENTICATIONFAILED")),
                    "authentication failed",
                )
                .await
            }
            Outcome::Throttled { .. } => {
                self.no(
                    tag,
                    Some(code("UNAVAILABLE")),
                    "too many failed logins; try again later",
                )
                .await
            }
            Outcome::Cancelled => self.bad(tag, "authentication cancelled").await,
            Outcome::Malformed(m) => self.bad(tag, &m).await,
            Outcome::Unavailable(e) => {
                self.no(
                    tag,
                    Some(code("UNAVAILABLE")),
                    &format!("directory unavailable: {e}"),
                )
                .await
            }
        }
    }

    /// The multiplexor: this node is not the master of the user's group; hand the
    /// authenticated session to the master (over the cluster's mutual TLS, as the user this
    /// node authenticated: no password travels, see [`crate::proxy`]) and relay the rest.
    async fn relay(&mut self, tag: &Tag<'_>, acct: &Account) -> io::Result<()> {
        let unavailable = || {
            Code::Other(imap_codec::imap_types::response::CodeOther::unvalidated(
                b"UNAVAILABLE".as_slice(),
            ))
        };
        let open = crate::RelayOpen {
            protocol: crate::RelayProtocol::Imap,
            principal: acct.principal.clone(),
            client: self.conn.peer,
            client_tls: self.conn.is_tls(),
            via_node: self.shared.backend.node_id,
        };
        match crate::proxy::upstream(&self.shared, acct, open).await {
            Ok((_, answer, _)) if answer != "+OK" => {
                let why = answer.trim_start_matches("-ERR ").to_string();
                self.no(tag, Some(unavailable()), &why).await
            }
            Ok((master, _, up)) => {
                tracing::info!(user = %acct.user, master, peer = %self.conn.peer, "IMAP session relayed to the master");
                let caps = Vec1::try_from(capabilities(&self.shared, true, true, &[]))
                    .map_err(|_| io::Error::other("caps"))?;
                self.ok(
                    tag,
                    Some(Code::Capability(caps)),
                    &format!("logged in (via node {})", self.shared.backend.node_id),
                )
                .await?;
                self.relayed = true;
                crate::proxy::relay(&mut self.conn, up).await
            }
            Err(e) => self.no(tag, Some(unavailable()), &e).await,
        }
    }

    /// Every user has an INBOX; the store enforces the directory's quota.
    pub(crate) async fn ensure_inbox_and_quota(&self, acct: &Account) {
        let r = acct.reader();
        if let Ok(None) = r.mailbox(&acct.user, "INBOX") {
            let _ = acct
                .propose(StoreCommand::CreateMailbox {
                    user: acct.user.clone(),
                    name: "INBOX".into(),
                    uidvalidity: now_uidvalidity(),
                    partition: halyard_raft_store::PRIMARY_PARTITION.into(),
                    special_use: None,
                })
                .await;
        }
        if let Ok(q) = r.quota(&acct.user)
            && (q.limit_bytes != acct.record.quota_bytes
                || q.limit_messages != acct.record.quota_messages)
        {
            let _ = acct
                .propose(StoreCommand::SetQuota {
                    user: acct.user.clone(),
                    limit_bytes: acct.record.quota_bytes,
                    limit_messages: acct.record.quota_messages,
                })
                .await;
        }
    }

    pub(crate) async fn authenticate(
        &mut self,
        tag: &Tag<'_>,
        mechanism: AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
    ) -> io::Result<()> {
        if self.shared.cfg.require_tls_for_login && !self.conn.is_tls() {
            return self
                .no(tag, Some(code("PRIVACYREQUIRED")), "use STARTTLS first")
                .await;
        }
        let offered = crate::sasl::offered(&self.shared, &self.conn);
        let Some(mech) = Mechanism::parse(mechanism.as_ref()).filter(|m| offered.contains(m))
        else {
            return self
                .no(
                    tag,
                    None,
                    &format!("mechanism {mechanism} is not supported here"),
                )
                .await;
        };
        let facts = crate::sasl::tls_facts(&self.shared, &self.conn);
        let dir = self.shared.backend.directory.clone();
        let gate = crate::sasl::gate(self.shared.clone(), self.conn.peer.ip());
        let outcome = sasl::run(&*dir, mech, initial, &mut ImapSasl(self), &facts, &gate).await?;
        self.authenticated(tag, outcome).await
    }

    /// One SASL round: sends a challenge, returns the decoded answer (None: cancelled; an
    /// answer that is not base64 is an `InvalidData` error).
    async fn sasl_step(&mut self, challenge_b64: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut line = b"+ ".to_vec();
        line.extend_from_slice(challenge_b64);
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let autologout = Duration::from_secs(60);
        loop {
            match AuthenticateDataCodec::default().decode_static(&self.conn.buf) {
                Ok((rest, data)) => {
                    let used = self.conn.buf.len() - rest.len();
                    let _ = self.conn.buf.split_to(used);
                    return Ok(match data {
                        AuthenticateData::Continue(d) => Some(d.declassify().to_vec()),
                        AuthenticateData::Cancel => None,
                    });
                }
                Err(imap_codec::decode::AuthenticateDataDecodeError::Incomplete) => {
                    if self.conn.buf.len() > self.shared.cfg.max_line_bytes {
                        return Err(io::Error::other("SASL line too long"));
                    }
                    if !self.read(autologout).await? {
                        return Err(io::Error::other("closed during SASL"));
                    }
                }
                Err(_) => {
                    let end = self.conn.buf.windows(2).position(|w| w == b"\r\n");
                    if let Some(e) = end {
                        let _ = self.conn.buf.split_to(e + 2);
                    } else {
                        self.conn.buf.clear();
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "SASL response is not base64",
                    ));
                }
            }
        }
    }
}

fn code(c: &'static str) -> Code<'static> {
    Code::Other(imap_codec::imap_types::response::CodeOther::unvalidated(
        c.as_bytes(),
    ))
}

/// IMAP's continuation requests (`+ base64`) as a SASL exchange.
struct ImapSasl<'a>(&'a mut Session);

#[async_trait::async_trait]
impl sasl::Exchange for ImapSasl<'_> {
    async fn challenge(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.0.sasl_step(b64.as_bytes()).await
    }
}
