//! Commands about the session rather than a mailbox: CAPABILITY, NOOP/CHECK, LOGOUT and ID
//! (valid in any state), ENABLE (of CONDSTORE, QRESYNC and UTF8=ACCEPT) and COMPRESS
//! (RFC 4978).

use std::io;

use imap_codec::imap_types::core::{IString, NString, Tag, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::utf8::Utf8Kind;
use imap_codec::imap_types::response::Data;

use crate::imap::bye;
use crate::imap::session::{Res, Session};

impl Session {
    pub(crate) async fn capability(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        let caps = Vec1::try_from(self.caps()).map_err(|_| io::Error::other("caps"))?;
        self.send_data(Data::Capability(caps)).await?;
        self.ok(tag, None, "CAPABILITY completed").await
    }

    /// NOOP and CHECK: report what changed in the selected mailbox.
    pub(crate) async fn noop(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        self.sync(true).await?;
        self.ok(tag, None, "done").await
    }

    /// LOGOUT; false: the session is over.
    pub(crate) async fn logout(&mut self, tag: &Tag<'_>) -> Res {
        self.send(&bye("logging out")).await?;
        self.ok(tag, None, "LOGOUT completed").await?;
        Ok(false)
    }

    /// ID (RFC 2971): the server's name and version, whatever the client sent.
    pub(crate) async fn id(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        let params = vec![
            (
                IString::try_from("name").unwrap(),
                NString::try_from("Halyard").unwrap(),
            ),
            (
                IString::try_from("version").unwrap(),
                NString::try_from(env!("CARGO_PKG_VERSION")).unwrap(),
            ),
        ];
        self.send_data(Data::Id {
            parameters: Some(params),
        })
        .await?;
        self.ok(tag, None, "ID completed").await
    }

    /// ENABLE (RFC 5161): answers `* ENABLED` with what this command turned on, of
    /// CONDSTORE, QRESYNC, UTF8=ACCEPT (RFC 6855) and IMAP4rev2 (RFC 9051); anything else,
    /// and what was on already, is left out (RFC 5161 §3.1, RFC 9051 §6.3.1).
    ///
    /// RFC 5161 makes ENABLE a command of the authenticated state, given before any SELECT.
    /// The server need not check that; for UTF8=ACCEPT and IMAP4rev2 it does, since a change
    /// of how mailbox names are read while one is selected is a client's mistake worth a BAD
    /// (the other extensions are enabled in the selected state, as they always were).
    ///
    /// What IMAP4rev2 changes in this session, from then on:
    /// - mailbox names and strings are UTF-8 (as under UTF8=ACCEPT; SEARCH keeps its CHARSET,
    ///   which rev2 allows, and APPEND its plain literals);
    /// - nothing is `\Recent`: SELECT sends no `* n RECENT` and no `[UNSEEN n]`, claims no
    ///   recent messages (they stay recent for the next IMAP4rev1 session), and no FETCH,
    ///   STATUS or SEARCH shows one;
    /// - SEARCH answers `* ESEARCH` (RETURN (ALL) when it names no options), never `* SEARCH`;
    /// - SELECT and EXAMINE send the mailbox's `* LIST` line (§6.3.2).
    ///
    /// The rest of IMAP4rev2 is what the server does in either mode: `[CLOSED]`, STATUS
    /// DELETED and SIZE, UID EXPUNGE, MOVE, LIST-EXTENDED, BINARY, unsolicited FETCH with UID.
    pub(crate) async fn enable(
        &mut self,
        tag: &Tag<'_>,
        capabilities: Vec1<CapabilityEnable<'_>>,
    ) -> io::Result<()> {
        let accept = CapabilityEnable::Utf8(Utf8Kind::Accept);
        let is = |c: &CapabilityEnable<'_>, name: &str| c.to_string().eq_ignore_ascii_case(name);
        let names_change = capabilities
            .as_ref()
            .iter()
            .find(|c| **c == accept || is(c, "IMAP4rev2"));
        if self.sel.is_some()
            && let Some(c) = names_change
        {
            let text = format!("ENABLE {c} must come before SELECT or EXAMINE (RFC 5161)");
            return self.bad(tag, &text).await;
        }
        let mut enabled: Vec<CapabilityEnable<'static>> = Vec::new();
        for c in capabilities.as_ref() {
            let flag = if *c == accept {
                self.utf8 = true;
                &mut self.utf8_accept
            } else if matches!(c, CapabilityEnable::CondStore) {
                &mut self.condstore
            } else if is(c, "QRESYNC") {
                // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                self.condstore = true;
                &mut self.qresync
            } else if is(c, "IMAP4rev2") {
                self.utf8 = true;
                &mut self.rev2
            } else {
                continue;
            };
            let newly = !std::mem::replace(flag, true);
            let c = imap_codec::imap_types::IntoStatic::into_static(c.clone());
            if newly && !enabled.contains(&c) {
                enabled.push(c);
            }
        }
        self.send_data(Data::Enabled {
            capabilities: enabled,
        })
        .await?;
        self.ok(tag, None, "ENABLE completed").await
    }

    /// COMPRESS DEFLATE (the one algorithm the parser accepts): the tagged OK is the last
    /// plain byte; DEFLATE both ways from then on, also through the multiplexor's relay,
    /// which copies bytes.
    pub(crate) async fn compress(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        if self.conn.is_compressed() {
            let b = crate::imap::status(
                crate::imap::Kind::No,
                Some(tag),
                Some(imap_codec::imap_types::response::Code::CompressionActive),
                "DEFLATE is already active",
            );
            return self.conn.write(&b).await;
        }
        self.ok(tag, None, "DEFLATE active").await?;
        self.conn.start_deflate();
        Ok(())
    }
}
