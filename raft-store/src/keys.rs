//! Key layouts of the state machine's column families, shared by apply and by readers.
//!
//! Column families and keys (all values are bincode):
//!
//! | cf | key | value |
//! |---|---|---|
//! | `meta` | `applied`, `membership`, `next_mailbox_id`, `uidvalidity_floor` | log id, membership, counters |
//! | `meta` | `fence/current`, `fence/seq`, `fence/log/` ‖ seq (u64 BE) | [`HolderRecord`], counter (see [`crate::apply::FENCE_HISTORY`]) |
//! | `meta` | `audit/seq`, `audit/log/` ‖ seq (u64 BE) | counter, [`AuditRecord`](crate::model::AuditRecord) (meta group) |
//! | `meta` | `recent/` ‖ mailbox id (u64 BE) | the mailbox's recent mark: the lowest UID no session has claimed as `\Recent` (u32; absent: 1) |
//! | `meta` | `vanished/` ‖ mailbox id (u64 BE) ‖ modseq (u64 BE) | UIDs one expunge removed (QRESYNC tombstones; see [`crate::apply::vanished`]) |
//! | `meta` | `vanished-floor/` ‖ mailbox id (u64 BE) | (floor modseq, tombstoned UIDs): every expunge above the floor has a tombstone |
//! | `mailboxes` | user `\0` name | [`MailboxRecord`] |
//! | `messages` | mailbox id (u64 BE) ‖ uid (u32 BE) | [`MessageRecord`] |
//! | `bodies` | partition `\0` sha256-hex | raw bytes (RocksDB blob files) |
//! | `body_chunks` | same as `bodies`; key `\0` chunk index (u32 BE) | manifest; chunk bytes (see [`crate::kv::chunks`]) |
//! | `body_refs` | same as `bodies` | reference count (u64 BE) |
//! | `quota` | user | [`QuotaRecord`] |
//! | `queue` | queue id | [`QueueEntry`] |
//! | `deliveries` | queue id `\0` recipient | [`DeliveryRecord`] (the dedupe key of `Deliver`) |
//! | `shares` | see [`grant`] and [`shared_subscription`] | rights letters; empty |
//! | `directory` | see [`crate::directory`] | directory records |
//!
//! [`HolderRecord`]: crate::model::HolderRecord
//! [`MailboxRecord`]: crate::model::MailboxRecord
//! [`MessageRecord`]: crate::model::MessageRecord
//! [`QuotaRecord`]: crate::model::QuotaRecord
//! [`QueueEntry`]: crate::model::QueueEntry
//! [`DeliveryRecord`]: crate::model::DeliveryRecord

pub fn mailbox(user: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + name.len() + 1);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}
pub fn user_mailboxes(user: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k
}
pub fn message(mailbox_id: u64, uid: u32) -> Vec<u8> {
    let mut k = mailbox_id.to_be_bytes().to_vec();
    k.extend_from_slice(&uid.to_be_bytes());
    k
}
pub fn messages_of(mailbox_id: u64) -> Vec<u8> {
    mailbox_id.to_be_bytes().to_vec()
}
pub fn body(partition: &str, sha256: &str) -> Vec<u8> {
    let mut k = partition.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(sha256.as_bytes());
    k
}
pub fn delivery(queue_id: &str, recipient: &str) -> Vec<u8> {
    let mut k = queue_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(recipient.as_bytes());
    k
}
fn joined(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for p in parts {
        k.extend_from_slice(p.as_bytes());
        k.push(0);
    }
    k
}
/// `g\0grantee\0owner\0mailbox` → the rights granted (positive identifiers only).
pub fn grant(grantee: &str, owner: &str, mailbox: &str) -> Vec<u8> {
    let mut k = joined(&["g", grantee, owner]);
    k.extend_from_slice(mailbox.as_bytes());
    k
}
pub fn grants_to(grantee: &str) -> Vec<u8> {
    joined(&["g", grantee])
}
/// `s\0user\0owner\0mailbox`: `user` subscribed to `owner`'s mailbox.
pub fn shared_subscription(user: &str, owner: &str, mailbox: &str) -> Vec<u8> {
    let mut k = joined(&["s", user, owner]);
    k.extend_from_slice(mailbox.as_bytes());
    k
}
pub fn shared_subscriptions_of(user: &str) -> Vec<u8> {
    joined(&["s", user])
}
/// Splits the `owner\0mailbox` tail of a grant or subscription key.
pub fn owner_and_mailbox(tail: &[u8]) -> Option<(String, String)> {
    let nul = tail.iter().position(|b| *b == 0)?;
    let owner = std::str::from_utf8(&tail[..nul]).ok()?;
    let mailbox = std::str::from_utf8(&tail[nul + 1..]).ok()?;
    Some((owner.to_string(), mailbox.to_string()))
}
pub const APPLIED: &[u8] = b"applied";
pub const MEMBERSHIP: &[u8] = b"membership";
pub const NEXT_MAILBOX_ID: &[u8] = b"next_mailbox_id";
pub const UIDVALIDITY_FLOOR: &[u8] = b"uidvalidity_floor";

/// Fence records live in the `meta` column family: `fence/current` (the latest
/// [`HolderRecord`](crate::model::HolderRecord)), `fence/seq` (the last sequence number) and
/// `fence/log/` + sequence number (u64 BE) for the history (see
/// [`crate::apply::FENCE_HISTORY`]).
pub(crate) const FENCE_CURRENT: &[u8] = b"fence/current";
pub(crate) const FENCE_SEQ: &[u8] = b"fence/seq";
pub(crate) const FENCE_LOG: &[u8] = b"fence/log/";
/// Audit records (`audit/log/` + sequence number, u64 BE) and their counter.
pub(crate) const AUDIT_LOG: &[u8] = b"audit/log/";
pub(crate) const AUDIT_SEQ: &[u8] = b"audit/seq";

/// The recent mark of a mailbox (see [`crate::Command::ClaimRecent`]), by its id, which
/// RENAME keeps.
pub fn recent_mark(mailbox_id: u64) -> Vec<u8> {
    let mut k = b"recent/".to_vec();
    k.extend_from_slice(&mailbox_id.to_be_bytes());
    k
}

/// Prefix of a mailbox's QRESYNC tombstones; [`vanished`] adds the expunge's modseq.
pub fn vanished_of(mailbox_id: u64) -> Vec<u8> {
    let mut k = b"vanished/".to_vec();
    k.extend_from_slice(&mailbox_id.to_be_bytes());
    k
}
pub fn vanished(mailbox_id: u64, modseq: u64) -> Vec<u8> {
    let mut k = vanished_of(mailbox_id);
    k.extend_from_slice(&modseq.to_be_bytes());
    k
}
pub fn vanished_floor(mailbox_id: u64) -> Vec<u8> {
    let mut k = b"vanished-floor/".to_vec();
    k.extend_from_slice(&mailbox_id.to_be_bytes());
    k
}
