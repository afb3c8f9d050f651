//! APPEND: the message's ENVELOPE and MIME structure are computed once, for the index, and
//! it is appended through the group's log; the tagged OK carries APPENDUID (RFC 4315). The
//! message may come as a literal8 (RFC 3516), or as RFC 6855's `UTF8 (literal8)` once the
//! session gave ENABLE UTF8=ACCEPT (stored as given: the index reads UTF-8 headers as they
//! are). MULTIAPPEND (RFC 3502): the messages of one APPEND go in one
//! [`StoreCommand::Atomic`] entry, all committed or none.

use std::io;

use halyard_raft_store::{Command as StoreCommand, Reply};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use crate::imap::session::{Session, cannot, flag_strings, now_ms, nz};

/// A message as an APPEND command carries it: the bytes to store, or why not.
fn body_of(message: &LiteralOrLiteral8<'_>) -> Result<bytes::Bytes, &'static str> {
    // A literal8 (RFC 3516 §4.4) is stored as given, unless it holds a NUL: see
    // `binary::storable`.
    if let LiteralOrLiteral8::Literal8(l) = message
        && !crate::imap::binary::storable(&l.data)
    {
        return Err(
            "this server does not store messages containing NUL octets; \
                    send binary content base64-encoded",
        );
    }
    Ok(bytes::Bytes::copy_from_slice(match message {
        LiteralOrLiteral8::Literal(l) => l.as_ref(),
        LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
    }))
}

/// The replicated command that appends one message.
fn append_command(
    owner: &str,
    name: String,
    flags: &[Flag<'_>],
    date: Option<DateTime>,
    body: bytes::Bytes,
) -> StoreCommand {
    let date_ms = date
        .map(|d| d.as_ref().timestamp_millis())
        .unwrap_or_else(now_ms);
    let meta = halyard_raft_store::mime::message_meta(&body);
    StoreCommand::Append {
        user: owner.to_string(),
        mailbox: name,
        flags: flag_strings(flags),
        internal_date_ms: date_ms,
        body,
        meta: Some(meta),
    }
}

impl Session {
    pub(crate) async fn append(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        flags: Vec<Flag<'_>>,
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> io::Result<()> {
        let Some(n) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        let body = match body_of(&message) {
            Ok(b) => b,
            Err(text) => return self.no(tag, Some(Code::UnknownCte), text).await,
        };
        let cmd = append_command(&n.owner, n.name, &flags, date, body);
        let r = self.propose_on(&n.owner, cmd).await;
        match r {
            Ok(Reply::Appended {
                uidvalidity, uid, ..
            }) => {
                self.sync(true).await?;
                self.ok(
                    tag,
                    Some(Code::AppendUid {
                        uid_validity: nz(uidvalidity),
                        uid: nz(uid),
                    }),
                    "APPEND completed",
                )
                .await
            }
            Ok(other) => self.no(tag, None, &format!("{other:?}")).await,
            Err(f) => self.fail(tag, f).await,
        }
    }

    /// An APPEND `imap::multiappend` framed: one-message APPEND commands, parsed here by
    /// imap-codec. One message (with a UTF8 data item) is a plain APPEND; for several
    /// (MULTIAPPEND) one atomic entry appends them all, or nothing happens. A UTF8 data item
    /// before ENABLE UTF8=ACCEPT is refused with NO, as RFC 6855 §4 says.
    pub(crate) async fn multi_append(
        &mut self,
        tag: &Tag<'_>,
        appends: crate::imap::multiappend::Appends,
    ) -> io::Result<()> {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        use imap_codec::imap_types::command::CommandBody;
        if self.account.is_none() {
            return self.bad(tag, "APPEND needs a login first").await;
        }
        if appends.utf8 && !self.utf8_accept {
            let text = "a UTF8 data item needs ENABLE UTF8=ACCEPT first (RFC 6855)";
            return self.no(tag, Some(cannot()), text).await;
        }
        let parts = appends.parts;
        if let [one] = &parts[..] {
            let Ok((_, c)) = CommandCodec::default().decode(one) else {
                return self.bad(tag, "syntax error in APPEND").await;
            };
            let CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } = c.body
            else {
                return self.bad(tag, "not an APPEND").await;
            };
            return self.append(tag, &mailbox, flags, date, message).await;
        }
        if self.acct().group.command_level() < 2 {
            let text = "MULTIAPPEND is not available until every replica runs this version";
            return self.no(tag, None, text).await;
        }
        let mut target: Option<(String, String)> = None;
        let mut cmds = Vec::new();
        for p in &parts {
            let Ok((_, c)) = CommandCodec::default().decode(p) else {
                return self
                    .bad(tag, "syntax error in a message of MULTIAPPEND")
                    .await;
            };
            let CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } = c.body
            else {
                return self.bad(tag, "not an APPEND").await;
            };
            let (owner, name) = match &target {
                Some(t) => t.clone(),
                None => {
                    let Some(n) = self.target(tag, &mailbox).await? else {
                        return Ok(());
                    };
                    target = Some((n.owner.clone(), n.name.clone()));
                    (n.owner, n.name)
                }
            };
            let body = match body_of(&message) {
                Ok(b) => b,
                Err(text) => return self.no(tag, Some(Code::UnknownCte), text).await,
            };
            let cmd = append_command(&owner, name, &flags, date, body);
            cmds.push(if owner == self.acct().user {
                cmd
            } else {
                StoreCommand::As {
                    actor: self.acct().user.clone(),
                    cmd: Box::new(cmd),
                }
            });
        }
        match self.acct().propose(StoreCommand::Atomic(cmds)).await {
            Ok(Reply::Batch(replies)) => {
                let mut uidvalidity = 0;
                let mut uids = Vec::new();
                for r in replies {
                    if let Reply::Appended {
                        uidvalidity: v,
                        uid,
                        ..
                    } = r
                    {
                        uidvalidity = v;
                        uids.push(uid);
                    }
                }
                self.sync(true).await?;
                // imap-types' APPENDUID holds one UID; RFC 4315 gives MULTIAPPEND a set.
                let set = uids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let line = format!(
                    "{} OK [APPENDUID {uidvalidity} {set}] APPEND completed\r\n",
                    tag.as_ref()
                );
                self.send(line.as_bytes()).await
            }
            Ok(other) => self.no(tag, None, &format!("{other:?}")).await,
            Err(f) => self.fail(tag, f).await,
        }
    }
}
