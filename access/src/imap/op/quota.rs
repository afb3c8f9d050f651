//! RFC 9208 QUOTA: GETQUOTAROOT and GETQUOTA report the user's one quota root (`""`, the
//! limits the directory sets); SETQUOTA is refused, quotas are set in the directory.

use std::io;

use imap_codec::imap_types::core::{AString, Tag, Vec1};
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;

use crate::imap::session::Session;

impl Session {
    pub(crate) async fn get_quota_root(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
    ) -> io::Result<()> {
        // Other users' quotas are theirs to see: a shared mailbox has no root here.
        let Some(target) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        let mine = target.owner == self.acct().user;
        let root = AString::try_from("").unwrap();
        self.send_data(Data::QuotaRoot {
            mailbox: mailbox.clone(),
            roots: if mine { vec![root.clone()] } else { vec![] },
        })
        .await?;
        if mine {
            self.quota_data(root).await?;
        }
        self.ok(tag, None, "GETQUOTAROOT completed").await
    }

    pub(crate) async fn get_quota(
        &mut self,
        tag: &Tag<'_>,
        root: AString<'static>,
    ) -> io::Result<()> {
        if !root.as_ref().is_empty() {
            return self.no(tag, None, "no such quota root").await;
        }
        self.quota_data(root).await?;
        self.ok(tag, None, "GETQUOTA completed").await
    }

    pub(crate) async fn set_quota(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        self.no(
            tag,
            None,
            "quotas are set in the directory (halyard ctl user set --quota)",
        )
        .await
    }

    async fn quota_data(&mut self, root: AString<'static>) -> io::Result<()> {
        let q = self
            .acct()
            .reader()
            .quota(&self.acct().user)
            .unwrap_or_default();
        let mut quotas = Vec::new();
        if let Some(l) = q.limit_bytes {
            quotas.push(QuotaGet::new(
                Resource::Storage,
                q.used_bytes / 1024,
                l / 1024,
            ));
        }
        if let Some(l) = q.limit_messages {
            quotas.push(QuotaGet::new(Resource::Message, q.used_messages, l));
        }
        if let Ok(quotas) = Vec1::try_from(quotas) {
            self.send_data(Data::Quota { root, quotas }).await?;
        }
        Ok(())
    }
}
