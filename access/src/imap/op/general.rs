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

    /// ENABLE (RFC 5161): answers `* ENABLED` with what it turned on, of CONDSTORE, QRESYNC
    /// and UTF8=ACCEPT (RFC 6855); anything else is left out, as RFC 5161 §3.1 says.
    ///
    /// RFC 5161 makes ENABLE a command of the authenticated state, given before any SELECT.
    /// The server need not check that; for UTF8=ACCEPT it does, since a change of how
    /// mailbox names are read while one is selected is a client's mistake worth a BAD (the
    /// other extensions are enabled in the selected state, as they always were).
    pub(crate) async fn enable(
        &mut self,
        tag: &Tag<'_>,
        capabilities: Vec1<CapabilityEnable<'_>>,
    ) -> io::Result<()> {
        let accept = CapabilityEnable::Utf8(Utf8Kind::Accept);
        if self.sel.is_some() && capabilities.as_ref().contains(&accept) {
            let text = "ENABLE UTF8=ACCEPT must come before SELECT or EXAMINE (RFC 5161)";
            return self.bad(tag, text).await;
        }
        let mut enabled = Vec::new();
        for c in capabilities.as_ref() {
            if *c == accept {
                self.utf8 = true;
                enabled.push(accept.clone());
            } else if matches!(c, CapabilityEnable::CondStore) {
                self.condstore = true;
                enabled.push(CapabilityEnable::CondStore);
            } else if c.to_string().eq_ignore_ascii_case("QRESYNC") {
                // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                self.qresync = true;
                self.condstore = true;
                enabled.push(c.clone());
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
