//! Reading a group's applied state: what IMAP/POP sessions, the job controller and
//! `halyard ctl` see. Reads on the leader are linearizable only after
//! [`crate::Group::linearizable_reader`] confirmed leadership; followers' reads may be stale.

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, decode};
use crate::model::{
    BodyRef, DeliveryRecord, MailboxRecord, MessageRecord, QueueEntry, QuotaRecord,
};
use crate::state_machine::{DbView, SmShared};

/// One row of [`SmShared::dump`]: column family name, key, value.
pub type DumpRow = (&'static str, Vec<u8>, Vec<u8>);

impl SmShared {
    fn get_de<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let db = self.db();
        DbView(&db).get(cf, key)?.map(|v| decode(&v)).transpose()
    }

    fn scan_de<T: serde::de::DeserializeOwned>(
        &self,
        cf: Cf,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        let db = self.db();
        DbView(&db)
            .scan(cf, prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    pub fn mailbox(&self, user: &str, name: &str) -> Result<Option<MailboxRecord>, StoreError> {
        self.get_de(
            Cf::Mailboxes,
            &keys::mailbox(user, &crate::apply::canonical_mailbox(name)),
        )
    }

    /// QRESYNC: the UIDs of the mailbox (by id) expunged after MODSEQ `since`, ascending,
    /// when its tombstones reach back that far; `None` when they do not (no tracked expunge
    /// yet, or pruned past `since`): the caller then falls back to "every UID the client may
    /// know that is gone" (see [`crate::apply::vanished`]).
    pub fn vanished_since(
        &self,
        mailbox_id: u64,
        since: u64,
    ) -> Result<Option<Vec<u32>>, StoreError> {
        let floor: Option<crate::apply::vanished::Floor> =
            self.get_de(Cf::Meta, &keys::vanished_floor(mailbox_id))?;
        match floor {
            Some((floor, _)) if floor <= since => {}
            _ => return Ok(None),
        }
        let db = self.db();
        let mut uids = Vec::new();
        for (k, v) in DbView(&db)
            .scan(Cf::Meta, &keys::vanished_of(mailbox_id))?
            .iter()
        {
            let at = k.len().checked_sub(8).map(|i| &k[i..]).unwrap_or_default();
            if u64::from_be_bytes(at.try_into().unwrap_or([0; 8])) > since {
                uids.extend(decode::<Vec<u32>>(v)?);
            }
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(Some(uids))
    }

    /// The lowest UID of the mailbox (by id) that no session has claimed as `\Recent`.
    pub fn recent_mark(&self, mailbox_id: u64) -> Result<u32, StoreError> {
        Ok(self
            .get_de::<u32>(Cf::Meta, &keys::recent_mark(mailbox_id))?
            .unwrap_or(1))
    }

    pub fn mailboxes(&self, user: &str) -> Result<Vec<MailboxRecord>, StoreError> {
        self.scan_de(Cf::Mailboxes, &keys::user_mailboxes(user))
    }

    /// Other users' mailboxes `user` may see (the `l` right, directly or through `anyone`):
    /// (owner, mailbox record, `user`'s effective rights), ordered by owner and name.
    pub fn shared_with(
        &self,
        user: &str,
    ) -> Result<Vec<(String, MailboxRecord, crate::acl::Rights)>, StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        {
            let db = self.db();
            for grantee in [user, crate::acl::ANYONE] {
                let prefix = keys::grants_to(grantee);
                for (k, _) in DbView(&db).scan(Cf::Shares, &prefix)? {
                    if let Some(pair) = keys::owner_and_mailbox(&k[prefix.len()..])
                        && pair.0 != user
                    {
                        seen.insert(pair);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (owner, name) in seen {
            if let Some(mb) = self.mailbox(&owner, &name)? {
                let r = crate::acl::effective(&owner, user, &mb.acl);
                if r.has('l') {
                    out.push((owner, mb, r));
                }
            }
        }
        Ok(out)
    }

    /// `user`'s subscriptions to other users' mailboxes: (owner, mailbox).
    pub fn shared_subscriptions(&self, user: &str) -> Result<Vec<(String, String)>, StoreError> {
        let db = self.db();
        let prefix = keys::shared_subscriptions_of(user);
        Ok(DbView(&db)
            .scan(Cf::Shares, &prefix)?
            .iter()
            .filter_map(|(k, _)| keys::owner_and_mailbox(&k[prefix.len()..]))
            .collect())
    }

    /// Messages of a mailbox in UID order, or `None` if the mailbox does not exist.
    pub fn messages(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<Vec<MessageRecord>>, StoreError> {
        match self.mailbox(user, name)? {
            Some(mb) => Ok(Some(self.scan_de(Cf::Messages, &keys::messages_of(mb.id))?)),
            None => Ok(None),
        }
    }

    /// The index entries of the given UIDs of a mailbox (missing UIDs are skipped), in the
    /// order given; `None` if the mailbox does not exist. Point reads: the cost does not grow
    /// with the mailbox.
    pub fn messages_by_uid(
        &self,
        user: &str,
        name: &str,
        uids: &[u32],
    ) -> Result<Option<Vec<MessageRecord>>, StoreError> {
        let Some(mb) = self.mailbox(user, name)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(uids.len());
        for uid in uids {
            if let Some(m) = self.get_de(Cf::Messages, &keys::message(mb.id, *uid))? {
                out.push(m);
            }
        }
        Ok(Some(out))
    }

    pub fn body(&self, body: &BodyRef) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db();
        crate::kv::body_bytes(&DbView(&db), &keys::body(&body.partition, &body.sha256))
    }

    /// Bytes `[from, to)` of a body (clamped to its length); large bodies are stored in
    /// chunks and only the chunks overlapping the range are read.
    pub fn body_range(
        &self,
        body: &BodyRef,
        from: u64,
        to: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db();
        crate::kv::body_range(
            &DbView(&db),
            &keys::body(&body.partition, &body.sha256),
            from,
            to,
        )
    }

    /// How many messages and queue entries share this stored body (0 = not stored).
    pub fn body_refcount(&self, body: &BodyRef) -> Result<u64, StoreError> {
        let db = self.db();
        match DbView(&db).get(Cf::BodyRefs, &keys::body(&body.partition, &body.sha256))? {
            Some(v) => crate::kv::decode_refcount(&v),
            None => Ok(0),
        }
    }

    /// Number of distinct stored bodies.
    pub fn body_count(&self) -> Result<usize, StoreError> {
        let db = self.db();
        Ok(DbView(&db).scan(Cf::BodyRefs, b"")?.len())
    }

    pub fn quota(&self, user: &str) -> Result<QuotaRecord, StoreError> {
        Ok(self.get_de(Cf::Quota, user.as_bytes())?.unwrap_or_default())
    }

    /// The latest holder of the group's floating address (open while it holds it).
    pub fn fence_holder(&self) -> Result<Option<crate::model::HolderRecord>, StoreError> {
        self.get_de(Cf::Meta, keys::FENCE_CURRENT)
    }

    /// The recorded holders, oldest first (the last [`crate::apply::FENCE_HISTORY`]).
    pub fn fence_history(&self) -> Result<Vec<crate::model::HolderRecord>, StoreError> {
        self.scan_de(Cf::Meta, keys::FENCE_LOG)
    }

    /// The audit records kept (meta group), oldest first.
    pub fn audit(&self) -> Result<Vec<crate::model::AuditRecord>, StoreError> {
        self.scan_de(Cf::Meta, keys::AUDIT_LOG)
    }
    pub fn queue(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.scan_de(Cf::Queue, b"")
    }

    pub fn queue_entry(&self, queue_id: &str) -> Result<Option<QueueEntry>, StoreError> {
        self.get_de(Cf::Queue, queue_id.as_bytes())
    }

    pub fn delivery(
        &self,
        queue_id: &str,
        recipient: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        self.get_de(Cf::Deliveries, &keys::delivery(queue_id, recipient))
    }

    /// Runs `f` over the embedded directory of this replica (meta group).
    pub fn directory<T>(
        &self,
        f: impl FnOnce(&crate::directory::DirReader<'_, DbView<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db();
        let view = DbView(&db);
        f(&crate::directory::DirReader(&view))
    }

    /// Every key and value of every column family, in order (for tests and digests).
    pub fn dump(&self) -> Result<Vec<DumpRow>, StoreError> {
        let db = self.db();
        let v = DbView(&db);
        let mut out = Vec::new();
        for cf in Cf::ALL {
            for (k, val) in v.scan(cf, b"")? {
                out.push((cf.name(), k, val));
            }
        }
        Ok(out)
    }

    /// SHA-256 over the mail data (everything but Raft bookkeeping): equal digests at equal
    /// applied indexes mean replicas agree byte for byte.
    pub fn digest(&self) -> Result<String, StoreError> {
        let mut h = Sha256::new();
        for (cf, k, v) in self.dump()? {
            if cf == Cf::Meta.name() && (k == keys::APPLIED || k == keys::MEMBERSHIP) {
                continue;
            }
            for part in [cf.as_bytes(), &k, &v] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}
