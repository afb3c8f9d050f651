//! APPEND: the message's ENVELOPE and MIME structure are computed once, for the index, and
//! it is appended through the group's log; the tagged OK carries APPENDUID (RFC 4315). The
//! message may come as a literal8 (RFC 3516).

use std::io;

use halyard_raft_store::{Command as StoreCommand, Reply};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use crate::imap::session::{Session, flag_strings, now_ms, nz};

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
        // A literal8 (RFC 3516 §4.4) is stored as given, unless it holds a NUL: see
        // `binary::storable`.
        if let LiteralOrLiteral8::Literal8(l) = &message
            && !crate::imap::binary::storable(&l.data)
        {
            let text = "this server does not store messages containing NUL octets; \
                        send binary content base64-encoded";
            return self.no(tag, Some(Code::UnknownCte), text).await;
        }
        let body = bytes::Bytes::copy_from_slice(match &message {
            LiteralOrLiteral8::Literal(l) => l.as_ref(),
            LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
        });
        let date_ms = date
            .map(|d| d.as_ref().timestamp_millis())
            .unwrap_or_else(now_ms);
        let meta = halyard_raft_store::mime::message_meta(&body);
        let r = self
            .propose_on(
                &n.owner,
                StoreCommand::Append {
                    user: n.owner.clone(),
                    mailbox: n.name,
                    flags: flag_strings(&flags),
                    internal_date_ms: date_ms,
                    body,
                    meta: Some(meta),
                },
            )
            .await;
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
}
