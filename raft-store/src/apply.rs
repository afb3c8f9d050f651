//! Applying commands: the deterministic heart of the state machine.
//!
//! [`apply_command`] is a pure function of (current state, command) → (writes, reply, events).
//! It reads through a [`Txn`], which layers the writes of the entries applied so far in this
//! batch over a read view of the database, so a batch of log entries becomes one atomic
//! RocksDB write together with the new `last_applied`. No clock, no randomness, no I/O other
//! than the state machine's own reads.
//!
//! Column families and keys (all values are bincode):
//!
//! | cf | key | value |
//! |---|---|---|
//! | `meta` | `applied`, `membership`, `next_mailbox_id`, `uidvalidity_floor` | log id, membership, counters |
//! | `mailboxes` | user `\0` name | [`MailboxRecord`] |
//! | `messages` | mailbox id (u64 BE) ‖ uid (u32 BE) | [`MessageRecord`] |
//! | `bodies` | partition `\0` sha256-hex | raw bytes (RocksDB blob files) |
//! | `body_refs` | same as `bodies` | reference count (u64 BE) |
//! | `quota` | user | [`QuotaRecord`] |
//! | `queue` | queue id | [`QueueEntry`] |
//! | `deliveries` | queue id `\0` recipient | [`DeliveryRecord`] (the dedupe key of `Deliver`) |

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::model::*;

/// The column families of a state machine database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    Meta,
    Mailboxes,
    Messages,
    Bodies,
    BodyRefs,
    Quota,
    Queue,
    Deliveries,
    /// Bodies larger than [`BODY_CHUNK`], stored in chunks (so a partial FETCH reads only the
    /// chunks it needs): a manifest under the body key and the chunks under key + index.
    BodyChunks,
    /// The embedded directory (meta group only; see [`crate::directory`]).
    Directory,
    /// Sharing indexes: who was granted rights on which mailbox (so a user's LIST finds the
    /// mailboxes shared with them without scanning everyone's), and users' subscriptions to
    /// other users' mailboxes. See [`keys::grant`].
    Shares,
}

impl Cf {
    pub const ALL: [Cf; 11] = [
        Cf::Meta,
        Cf::Mailboxes,
        Cf::Messages,
        Cf::Bodies,
        Cf::BodyRefs,
        Cf::Quota,
        Cf::Queue,
        Cf::Deliveries,
        Cf::BodyChunks,
        Cf::Directory,
        Cf::Shares,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Mailboxes => "mailboxes",
            Cf::Messages => "messages",
            Cf::Bodies => "bodies",
            Cf::BodyRefs => "body_refs",
            Cf::Quota => "quota",
            Cf::Queue => "queue",
            Cf::Deliveries => "deliveries",
            Cf::BodyChunks => "body_chunks",
            Cf::Directory => "directory",
            Cf::Shares => "shares",
        }
    }
}

/// Key/value pairs in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;
/// A pending write: column family, key, and the new value (`None` deletes).
pub type Write = (Cf, Vec<u8>, Option<Vec<u8>>);

/// Read access to committed state machine data.
pub trait KvRead {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError>;
}

/// Pending writes of a batch layered over a read view.
pub struct Txn<'a, R: KvRead> {
    base: &'a R,
    overlay: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    pub(crate) events: Vec<Event>,
}

impl<'a, R: KvRead> Txn<'a, R> {
    pub fn new(base: &'a R) -> Self {
        Txn {
            base,
            overlay: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(&(cf, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(cf, key),
        }
    }

    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.base.scan(cf, prefix)?.into_iter().collect();
        for ((c, k), v) in self.overlay.range((cf, prefix.to_vec())..) {
            if *c != cf || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((cf, key), Some(value));
    }

    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.overlay.insert((cf, key), None);
    }

    fn get_de<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(cf, key)?.map(|v| decode(&v)).transpose()
    }

    fn put_ser<T: Serialize>(&mut self, cf: Cf, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        self.put(cf, key, encode(value)?);
        Ok(())
    }

    /// The writes accumulated so far, in key order (deterministic), and the events.
    pub fn into_parts(self) -> (Vec<Write>, Vec<Event>) {
        let writes = self
            .overlay
            .into_iter()
            .map(|((cf, k), v)| (cf, k, v))
            .collect();
        (writes, self.events)
    }
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(v).map_err(|e| StoreError::Codec(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(v).map_err(|e| StoreError::Codec(e.to_string()))
}

pub mod keys {
    //! Key layouts, shared by apply and by readers.
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
}

/// Canonical form of a mailbox name: `INBOX` is case-insensitive (RFC 3501 §5.1), so
/// `inbox` and `Inbox/Sub` become `INBOX` and `INBOX/Sub`.
pub fn canonical_mailbox(name: &str) -> String {
    let head_len = INBOX.len();
    if name.len() >= head_len
        && name.is_char_boundary(head_len)
        && name[..head_len].eq_ignore_ascii_case(INBOX)
        && (name.len() == head_len || name[head_len..].starts_with(HIERARCHY_DELIMITER))
    {
        format!("{INBOX}{}", &name[head_len..])
    } else {
        name.to_string()
    }
}

fn check_name(what: &str, s: &str) -> Result<(), ApplyError> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_control()) {
        return Err(ApplyError::InvalidName(format!("{what} {s:?}")));
    }
    Ok(())
}

fn check_mailbox_name(name: &str) -> Result<(), ApplyError> {
    check_name("mailbox", name)?;
    let d = HIERARCHY_DELIMITER;
    if name.starts_with(d) || name.ends_with(d) || name.contains(&format!("{d}{d}")) {
        return Err(ApplyError::InvalidName(format!("mailbox {name:?}")));
    }
    Ok(())
}

fn normalize_flags(flags: &[String]) -> Vec<String> {
    let mut f: Vec<String> = flags
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .map(|f| canonical_flag(f))
        .collect();
    f.sort();
    f.dedup();
    f
}

/// System flags are case-insensitive; store them in their RFC 3501 spelling.
fn canonical_flag(f: &str) -> String {
    for sys in ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"] {
        if f.eq_ignore_ascii_case(sys) {
            return sys.to_string();
        }
    }
    f.to_string()
}

/// Reference counts are stored as a big-endian u64.
pub fn decode_refcount(v: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        v.try_into()
            .map_err(|_| StoreError::Codec("refcount".into()))?,
    ))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Applies one command. `Err` is reserved for storage failures (fatal for the node); a
/// refused command is `Ok(Reply::Error(..))` and changes nothing.
pub fn apply_command<R: KvRead>(txn: &mut Txn<'_, R>, cmd: &Command) -> Result<Reply, StoreError> {
    if let Command::Batch(cmds) = cmd {
        let mut replies = Vec::with_capacity(cmds.len());
        for c in cmds {
            replies.push(match c {
                Command::Batch(_) => {
                    Reply::Error(ApplyError::Invalid("batches do not nest".into()))
                }
                c => apply_command(txn, c)?,
            });
        }
        return Ok(Reply::Batch(replies));
    }
    // Each command's writes go to a nested transaction over the batch's transaction, so a
    // refusal halfway through leaves no partial writes behind.
    let (overlay, events, outcome) = {
        let mut inner = Txn::new(&*txn);
        let outcome = apply_inner(&mut inner, cmd)?;
        (inner.overlay, inner.events, outcome)
    };
    match outcome {
        Ok(reply) => {
            txn.overlay.extend(overlay);
            txn.events.extend(events);
            Ok(reply)
        }
        Err(e) => Ok(Reply::Error(e)),
    }
}

impl<R: KvRead> KvRead for Txn<'_, R> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Txn::get(self, cf, key)
    }
    fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError> {
        Txn::scan(self, cf, prefix)
    }
}

type Outcome = Result<Result<Reply, ApplyError>, StoreError>;

macro_rules! refuse {
    ($e:expr) => {
        return Ok(Err($e))
    };
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

fn apply_inner<R: KvRead>(t: &mut Txn<'_, R>, cmd: &Command) -> Outcome {
    match cmd {
        Command::Noop { .. } => Ok(Ok(Reply::None)),
        Command::Batch(_) => Ok(Err(ApplyError::Invalid(
            "batch applied as a single command".into(),
        ))),
        Command::CreateMailbox {
            user,
            name,
            uidvalidity,
            partition,
            special_use,
        } => {
            tri!(check_name("user", user));
            let name = canonical_mailbox(name);
            tri!(check_mailbox_name(&name));
            if t.get(Cf::Mailboxes, &keys::mailbox(user, &name))?.is_some() {
                refuse!(ApplyError::MailboxExists(name));
            }
            let mb = create_mailbox(t, user, &name, *uidvalidity, partition, special_use.clone())?;
            Ok(Ok(Reply::Created {
                uidvalidity: mb.uidvalidity,
            }))
        }
        Command::RenameMailbox { user, from, to } => rename_mailbox(t, user, from, to),
        Command::DeleteMailbox { user, name } => {
            let name = canonical_mailbox(name);
            let mb = tri!(mailbox(t, user, &name)?);
            let msgs = t.scan(Cf::Messages, &keys::messages_of(mb.id))?;
            let mut freed_bytes = 0;
            for (k, v) in msgs {
                let m: MessageRecord = decode(&v)?;
                freed_bytes += m.size;
                drop_body_ref(t, &m.body)?;
                t.delete(Cf::Messages, k);
            }
            adjust_quota(t, user, -(freed_bytes as i128), -(mb.exists as i128))?;
            move_grants(t, user, &mb.acl, &name, None);
            t.delete(Cf::Mailboxes, keys::mailbox(user, &name));
            t.events.push(Event::MailboxDeleted {
                user: user.clone(),
                mailbox: name,
            });
            Ok(Ok(Reply::Done))
        }
        Command::Subscribe {
            user,
            name,
            subscribed,
        } => {
            let name = canonical_mailbox(name);
            let mut mb = tri!(mailbox(t, user, &name)?);
            mb.subscribed = *subscribed;
            t.put_ser(Cf::Mailboxes, keys::mailbox(user, &name), &mb)?;
            Ok(Ok(Reply::Done))
        }
        Command::SetAcl {
            user,
            mailbox: name,
            identifier,
            rights,
        } => {
            let name = canonical_mailbox(name);
            let mut mb = tri!(mailbox(t, user, &name)?);
            tri!(check_name("identifier", identifier));
            let (who, negative) = crate::acl::split_identifier(identifier);
            if who.is_empty() {
                refuse!(ApplyError::InvalidName(format!(
                    "identifier {identifier:?}"
                )));
            }
            if who == user {
                refuse!(ApplyError::Invalid(
                    "the owner always has every right on their own mailboxes".into()
                ));
            }
            let current = mb
                .acl
                .get(identifier)
                .and_then(|r| crate::acl::Rights::parse(r).ok())
                .unwrap_or_default();
            let new = match rights {
                Some(r) => tri!(
                    crate::acl::Change::parse(r)
                        .map(|c| c.apply(current))
                        .map_err(ApplyError::Invalid)
                ),
                None => crate::acl::Rights::NONE,
            };
            if new.is_empty() {
                mb.acl.remove(identifier);
            } else {
                mb.acl.insert(identifier.clone(), new.letters());
            }
            if !negative {
                let key = keys::grant(who, user, &name);
                if new.is_empty() {
                    t.delete(Cf::Shares, key);
                } else {
                    t.put(Cf::Shares, key, new.letters().into_bytes());
                }
            }
            t.put_ser(Cf::Mailboxes, keys::mailbox(user, &name), &mb)?;
            t.events.push(Event::AclChanged {
                user: user.clone(),
                mailbox: name,
            });
            Ok(Ok(Reply::Done))
        }
        Command::Append {
            user,
            mailbox: name,
            flags,
            internal_date_ms,
            body,
            meta,
        } => {
            let name = canonical_mailbox(name);
            let mut mb = tri!(mailbox(t, user, &name)?);
            let size = body.len() as u64;
            tri!(check_quota(t, user, size, 1)?);
            let sha = sha256_hex(body);
            let body_ref = BodyRef {
                partition: mb.partition.clone(),
                sha256: sha,
            };
            add_body_ref(t, &body_ref, Some(body))?;
            let (uid, modseq) = insert_message(
                t,
                user,
                &mut mb,
                NewMessage {
                    flags: normalize_flags(flags),
                    internal_date_ms: *internal_date_ms,
                    size,
                    body: body_ref,
                    meta: meta.clone(),
                },
            )?;
            Ok(Ok(Reply::Appended {
                uidvalidity: mb.uidvalidity,
                uid,
                modseq,
            }))
        }
        Command::StoreFlags {
            user,
            mailbox: name,
            uids,
            action,
            flags,
            unchanged_since,
        } => store_flags(
            t,
            user,
            name,
            uids,
            *action,
            flags,
            *unchanged_since,
            crate::acl::Rights::ALL,
        ),
        Command::Expunge {
            user,
            mailbox: name,
            uids,
        } => {
            let name = canonical_mailbox(name);
            let mut mb = tri!(mailbox(t, user, &name)?);
            let wanted: Option<std::collections::BTreeSet<u32>> =
                uids.as_ref().map(|u| u.iter().copied().collect());
            let mut gone = Vec::new();
            for (k, v) in t.scan(Cf::Messages, &keys::messages_of(mb.id))? {
                let m: MessageRecord = decode(&v)?;
                let hit = match &wanted {
                    Some(set) => set.contains(&m.uid),
                    None => m.flags.iter().any(|f| f == "\\Deleted"),
                };
                if hit {
                    remove_message(t, user, &mut mb, k, &m)?;
                    gone.push(m.uid);
                }
            }
            if !gone.is_empty() {
                mb.highestmodseq += 1;
                t.events.push(Event::Expunged {
                    user: user.clone(),
                    mailbox: name.clone(),
                    uids: gone.clone(),
                    modseq: mb.highestmodseq,
                });
            }
            t.put_ser(Cf::Mailboxes, keys::mailbox(user, &name), &mb)?;
            Ok(Ok(Reply::Expunged {
                uids: gone,
                highestmodseq: mb.highestmodseq,
            }))
        }
        Command::Copy {
            user,
            from,
            to_user,
            to,
            uids,
        } => copy_messages(
            t,
            (user, from),
            (to_user.as_deref().unwrap_or(user), to),
            uids,
            false,
            crate::acl::Rights::ALL,
        ),
        Command::Move {
            user,
            from,
            to_user,
            to,
            uids,
        } => copy_messages(
            t,
            (user, from),
            (to_user.as_deref().unwrap_or(user), to),
            uids,
            true,
            crate::acl::Rights::ALL,
        ),
        Command::As { actor, cmd } => as_actor(t, actor, cmd),
        Command::Enqueue {
            queue_id,
            mail_from,
            params,
            recipients,
            partition,
            body,
            received_at_ms,
            expires_at_ms,
            priority,
            meta,
        } => {
            tri!(check_name("queue id", queue_id));
            if recipients.is_empty() {
                refuse!(ApplyError::Invalid("no recipients".into()));
            }
            if t.get(Cf::Queue, queue_id.as_bytes())?.is_some() {
                refuse!(ApplyError::QueueEntryExists(queue_id.clone()));
            }
            let body_ref = BodyRef {
                partition: partition.clone(),
                sha256: sha256_hex(body),
            };
            add_body_ref(t, &body_ref, Some(body))?;
            let entry = QueueEntry {
                queue_id: queue_id.clone(),
                mail_from: mail_from.clone(),
                params: params.clone(),
                recipients: recipients
                    .iter()
                    .map(|spec| RecipientRecord {
                        spec: spec.clone(),
                        state: RecipientState::Pending,
                        attempts: 0,
                        next_attempt_ms: *received_at_ms,
                        last_error: None,
                        notified: false,
                        delay_notified: false,
                    })
                    .collect(),
                body: body_ref,
                size: body.len() as u64,
                received_at_ms: *received_at_ms,
                expires_at_ms: *expires_at_ms,
                priority: *priority,
                meta: meta.clone(),
            };
            // Store-channel recipients are delivered in this same entry (one commit per
            // accepted message instead of two); one that cannot be (quota) stays pending for
            // the job controller, with the reason. `deliver_into` refuses before it writes
            // anything, so a refusal leaves the transaction and the entry as they were.
            let mut entry = entry;
            for idx in 0..entry.recipients.len() {
                if entry.recipients[idx].spec.channel != "store" {
                    continue;
                }
                let user = entry.recipients[idx].spec.address.clone();
                let target = LocalTarget {
                    user: &user,
                    mailbox: INBOX,
                    flags: &[],
                    internal_date_ms: *received_at_ms,
                    uidvalidity_if_created: (*received_at_ms / 1000).clamp(1, u32::MAX as i64)
                        as u32,
                };
                if let Err(e) = deliver_into(t, &mut entry, idx, &target)? {
                    let r = &mut entry.recipients[idx];
                    r.attempts += 1;
                    r.last_error = Some(format!("4.2.2 {e}"));
                }
            }
            // The job controller hears of entries that stay queued; one delivered whole in
            // this entry (the usual case for local mail) leaves nothing for it to look up.
            if !finished(&entry) {
                t.events.push(Event::Enqueued {
                    queue_id: queue_id.clone(),
                });
            }
            save_or_retire(t, entry)?;
            Ok(Ok(Reply::Enqueued {
                queue_id: queue_id.clone(),
            }))
        }
        Command::Deliver {
            queue_id,
            recipient,
            user,
            mailbox: name,
            flags,
            internal_date_ms,
            uidvalidity_if_created,
        } => {
            let dkey = keys::delivery(queue_id, recipient);
            let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
                refuse!(ApplyError::NoSuchQueueEntry(queue_id.clone()));
            };
            if let Some(done) = t.get_de::<DeliveryRecord>(Cf::Deliveries, &dkey)? {
                return Ok(Ok(Reply::Delivered {
                    uidvalidity: done.uidvalidity,
                    uid: done.uid,
                    duplicate: true,
                }));
            }
            let Some(idx) = entry
                .recipients
                .iter()
                .position(|r| r.spec.address == *recipient)
            else {
                refuse!(ApplyError::NoSuchRecipient {
                    queue_id: queue_id.clone(),
                    recipient: recipient.clone()
                });
            };
            let target = LocalTarget {
                user,
                mailbox: name,
                flags,
                internal_date_ms: *internal_date_ms,
                uidvalidity_if_created: *uidvalidity_if_created,
            };
            let (uidvalidity, uid) = tri!(deliver_into(t, &mut entry, idx, &target)?);
            save_or_retire(t, entry)?;
            Ok(Ok(Reply::Delivered {
                uidvalidity,
                uid,
                duplicate: false,
            }))
        }
        Command::UpdateRecipient {
            queue_id,
            recipient,
            state,
            next_attempt_ms,
            error,
        } => {
            let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
                refuse!(ApplyError::NoSuchQueueEntry(queue_id.clone()));
            };
            let Some(r) = entry
                .recipients
                .iter_mut()
                .find(|r| r.spec.address == *recipient)
            else {
                refuse!(ApplyError::NoSuchRecipient {
                    queue_id: queue_id.clone(),
                    recipient: recipient.clone()
                });
            };
            if r.state.is_final() {
                // A late report from an old master; the first final outcome stands.
                return Ok(Ok(Reply::Done));
            }
            r.attempts += 1;
            r.state = state.clone();
            r.next_attempt_ms = *next_attempt_ms;
            r.last_error = error.clone();
            save_or_retire(t, entry)?;
            Ok(Ok(Reply::Done))
        }
        Command::ReportDsn {
            queue_id,
            recipients,
            dsn,
            delay,
        } => {
            let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
                refuse!(ApplyError::NoSuchQueueEntry(queue_id.clone()));
            };
            let Command::Enqueue { mail_from, .. } = dsn.as_ref() else {
                refuse!(ApplyError::Invalid("a DSN is an Enqueue".into()));
            };
            if !mail_from.is_empty() {
                refuse!(ApplyError::Invalid(
                    "a DSN comes from the null sender".into()
                ));
            }
            let from = entry.mail_from.clone();
            for rcpt in recipients {
                match entry
                    .recipients
                    .iter_mut()
                    .find(|r| r.spec.address == *rcpt)
                {
                    Some(r) if !*delay && r.needs_dsn(&from) => r.notified = true,
                    // A delay report is only for a recipient still being retried: one whose
                    // outcome became final meanwhile gets the final report instead.
                    Some(r) if *delay && r.wants_delay_dsn(&from) => r.delay_notified = true,
                    // Already reported (a second master's attempt): nothing to do.
                    Some(_) => return Ok(Ok(Reply::Done)),
                    None => refuse!(ApplyError::NoSuchRecipient {
                        queue_id: queue_id.clone(),
                        recipient: rcpt.clone()
                    }),
                }
            }
            let reply = tri!(apply_inner(t, dsn)?);
            save_or_retire(t, entry)?;
            Ok(Ok(reply))
        }
        Command::Reschedule { queue_id, at_ms } => {
            let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
                refuse!(ApplyError::NoSuchQueueEntry(queue_id.clone()));
            };
            for r in entry.recipients.iter_mut() {
                if !r.state.is_final() {
                    r.next_attempt_ms = *at_ms;
                }
            }
            t.put_ser(Cf::Queue, queue_id.as_bytes().to_vec(), &entry)?;
            t.events.push(Event::QueueUpdated {
                queue_id: queue_id.clone(),
            });
            Ok(Ok(Reply::Done))
        }
        Command::RemoveQueueEntry { queue_id } => {
            let Some(entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
                refuse!(ApplyError::NoSuchQueueEntry(queue_id.clone()));
            };
            retire(t, &entry)?;
            Ok(Ok(Reply::Done))
        }
        Command::SetQuota {
            user,
            limit_bytes,
            limit_messages,
        } => {
            tri!(check_name("user", user));
            let mut q: QuotaRecord = t.get_de(Cf::Quota, user.as_bytes())?.unwrap_or_default();
            q.limit_bytes = *limit_bytes;
            q.limit_messages = *limit_messages;
            t.put_ser(Cf::Quota, user.as_bytes().to_vec(), &q)?;
            t.events.push(Event::QuotaChanged { user: user.clone() });
            Ok(Ok(Reply::Done))
        }
        Command::Directory(d) => crate::directory::apply_dir(t, d),
        Command::Fence(op) => apply_fence(t, op),
    }
}

/// Fence records live in the `meta` column family: `fence/current` (the latest
/// [`HolderRecord`]) and `fence/log/` + sequence number (u64 BE) for the history, of which
/// the last [`FENCE_HISTORY`] are kept.
pub const FENCE_HISTORY: u64 = 1000;
pub(crate) const FENCE_CURRENT: &[u8] = b"fence/current";
pub(crate) const FENCE_SEQ: &[u8] = b"fence/seq";
pub(crate) const FENCE_LOG: &[u8] = b"fence/log/";

fn apply_fence<R: KvRead>(t: &mut Txn<'_, R>, op: &FenceOp) -> Outcome {
    let current: Option<HolderRecord> = t.get_de(Cf::Meta, FENCE_CURRENT)?;
    let next = match op {
        FenceOp::Acquire {
            token,
            address,
            at_ms,
        } => {
            if let Some(c) = &current {
                // One leader per term: a token of the same term from another node cannot be
                // real, and an older term is a deposed master.
                if token.term < c.token.term
                    || (token.term == c.token.term && token.node != c.token.node)
                {
                    refuse!(ApplyError::Invalid(format!(
                        "fencing token {token} does not supersede the holder's {}",
                        c.token
                    )));
                }
                if c.token == *token && c.released_at_ms.is_none() {
                    // The same holder again (a retried proposal): nothing changes.
                    return Ok(Ok(Reply::Fenced { previous: current }));
                }
            }
            HolderRecord {
                token: *token,
                address: address.clone(),
                acquired_at_ms: *at_ms,
                released_at_ms: None,
                release_reason: None,
            }
        }
        FenceOp::Release {
            token,
            at_ms,
            reason,
        } => match &current {
            Some(c) if c.token == *token => {
                if c.released_at_ms.is_some() {
                    return Ok(Ok(Reply::Fenced { previous: current }));
                }
                let mut c = c.clone();
                c.released_at_ms = Some(*at_ms);
                c.release_reason = Some(reason.clone());
                c
            }
            _ => refuse!(ApplyError::Invalid(format!(
                "fencing token {token} is not the current holder"
            ))),
        },
    };
    let seq: u64 = t.get_de(Cf::Meta, FENCE_SEQ)?.unwrap_or(0);
    let seq = match op {
        // A release updates the holder's history row in place.
        FenceOp::Release { .. } => seq,
        FenceOp::Acquire { .. } => seq + 1,
    };
    let mut key = FENCE_LOG.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    t.put_ser(Cf::Meta, key, &next)?;
    if seq > FENCE_HISTORY {
        let mut old = FENCE_LOG.to_vec();
        old.extend_from_slice(&(seq - FENCE_HISTORY).to_be_bytes());
        t.delete(Cf::Meta, old);
    }
    t.put_ser(Cf::Meta, FENCE_SEQ.to_vec(), &seq)?;
    t.put_ser(Cf::Meta, FENCE_CURRENT.to_vec(), &next)?;
    Ok(Ok(Reply::Fenced { previous: current }))
}

fn mailbox<R: KvRead>(
    t: &Txn<'_, R>,
    user: &str,
    name: &str,
) -> Result<Result<MailboxRecord, ApplyError>, StoreError> {
    Ok(
        t.get_de::<MailboxRecord>(Cf::Mailboxes, &keys::mailbox(user, name))?
            .ok_or_else(|| ApplyError::NoSuchMailbox(name.to_string())),
    )
}

fn next_counter<R: KvRead>(
    t: &mut Txn<'_, R>,
    key: &[u8],
    at_least: u64,
) -> Result<u64, StoreError> {
    let cur: u64 = t.get_de(Cf::Meta, key)?.unwrap_or(0);
    let next = (cur + 1).max(at_least);
    t.put_ser(Cf::Meta, key.to_vec(), &next)?;
    Ok(next)
}

fn create_mailbox<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    proposed_uidvalidity: u32,
    partition: &str,
    special_use: Option<String>,
) -> Result<MailboxRecord, StoreError> {
    let id = next_counter(t, keys::NEXT_MAILBOX_ID, 1)?;
    // Strictly increasing per group: a mailbox deleted and created again under the same
    // name can never get back its old UIDVALIDITY, so (UIDVALIDITY, UID) is never reused.
    let uidvalidity = next_counter(
        t,
        keys::UIDVALIDITY_FLOOR,
        proposed_uidvalidity.max(1) as u64,
    )?;
    let uidvalidity = u32::try_from(uidvalidity).unwrap_or(u32::MAX);
    let mb = MailboxRecord {
        id,
        name: name.to_string(),
        uidvalidity,
        uidnext: 1,
        highestmodseq: 1,
        subscribed: true,
        acl: BTreeMap::new(),
        partition: if partition.is_empty() {
            PRIMARY_PARTITION.into()
        } else {
            partition.to_string()
        },
        special_use,
        exists: 0,
        bytes: 0,
    };
    t.put_ser(Cf::Mailboxes, keys::mailbox(user, name), &mb)?;
    t.events.push(Event::MailboxCreated {
        user: user.to_string(),
        mailbox: name.to_string(),
    });
    Ok(mb)
}

fn rename_mailbox<R: KvRead>(t: &mut Txn<'_, R>, user: &str, from: &str, to: &str) -> Outcome {
    let from = canonical_mailbox(from);
    let to = canonical_mailbox(to);
    tri!(check_mailbox_name(&to));
    let mb = tri!(mailbox(t, user, &from)?);
    if t.get(Cf::Mailboxes, &keys::mailbox(user, &to))?.is_some() {
        refuse!(ApplyError::MailboxExists(to));
    }
    if from == INBOX {
        // RFC 3501: renaming INBOX moves its messages to a new mailbox and leaves INBOX empty.
        let mut target = create_mailbox(t, user, &to, mb.uidvalidity, &mb.partition, None)?;
        let uids: Vec<u32> = t
            .scan(Cf::Messages, &keys::messages_of(mb.id))?
            .iter()
            .map(|(_, v)| decode::<MessageRecord>(v).map(|m| m.uid))
            .collect::<Result<_, _>>()?;
        target.subscribed = mb.subscribed;
        t.put_ser(Cf::Mailboxes, keys::mailbox(user, &to), &target)?;
        return copy_messages(
            t,
            (user, INBOX),
            (user, &to),
            &uids,
            true,
            crate::acl::Rights::ALL,
        )
        .map(|r| r.map(|_| Reply::Done));
    }
    // Move the mailbox and its inferiors; ids (and so messages and UIDVALIDITY) stay.
    let child_prefix = format!("{from}{HIERARCHY_DELIMITER}");
    let mut moves = vec![(from.clone(), to.clone(), mb)];
    for (_, v) in t.scan(Cf::Mailboxes, &keys::user_mailboxes(user))? {
        let child: MailboxRecord = decode(&v)?;
        if let Some(rest) = child.name.strip_prefix(&child_prefix) {
            let new_name = format!("{to}{HIERARCHY_DELIMITER}{rest}");
            if t.get(Cf::Mailboxes, &keys::mailbox(user, &new_name))?
                .is_some()
            {
                refuse!(ApplyError::MailboxExists(new_name));
            }
            moves.push((child.name.clone(), new_name, child));
        }
    }
    for (old, new, mut rec) in moves {
        t.delete(Cf::Mailboxes, keys::mailbox(user, &old));
        move_grants(t, user, &rec.acl, &old, Some(&new));
        rec.name = new.clone();
        t.put_ser(Cf::Mailboxes, keys::mailbox(user, &new), &rec)?;
        t.events.push(Event::MailboxRenamed {
            user: user.to_string(),
            from: old,
            to: new,
        });
    }
    Ok(Ok(Reply::Done))
}

/// A reference to `body` in `partition`: one more reference to the same stored copy when
/// it is already there (one copy of a body per partition), else a copy into it.
fn share_body<R: KvRead>(
    t: &mut Txn<'_, R>,
    body: &BodyRef,
    partition: &str,
) -> Result<BodyRef, StoreError> {
    let r = BodyRef {
        partition: partition.to_string(),
        sha256: body.sha256.clone(),
    };
    if r.partition == body.partition {
        add_body_ref(t, &r, None)?;
    } else {
        let bytes = read_body(t, body)?;
        add_body_ref(t, &r, Some(&bytes))?;
    }
    Ok(r)
}

/// Where a local delivery goes.
struct LocalTarget<'a> {
    user: &'a str,
    mailbox: &'a str,
    flags: &'a [String],
    internal_date_ms: i64,
    uidvalidity_if_created: u32,
}

/// Delivers recipient `idx` of `entry` into a mailbox (created if missing), records the
/// dedupe key and marks the recipient delivered in `entry` (the caller saves it).
/// `(uidvalidity, uid)`, or why not (quota, bad name) with nothing changed.
fn deliver_into<R: KvRead>(
    t: &mut Txn<'_, R>,
    entry: &mut QueueEntry,
    idx: usize,
    target: &LocalTarget<'_>,
) -> Result<Result<(u32, u32), ApplyError>, StoreError> {
    let user = target.user;
    tri!(check_name("user", user));
    let name = canonical_mailbox(target.mailbox);
    tri!(check_mailbox_name(&name));
    tri!(check_quota(t, user, entry.size, 1)?);
    let mut mb = match t.get_de::<MailboxRecord>(Cf::Mailboxes, &keys::mailbox(user, &name))? {
        Some(mb) => mb,
        None => create_mailbox(
            t,
            user,
            &name,
            target.uidvalidity_if_created,
            &entry.body.partition,
            None,
        )?,
    };
    let body_ref = share_body(t, &entry.body, &mb.partition)?;
    let (uid, _) = insert_message(
        t,
        user,
        &mut mb,
        NewMessage {
            flags: normalize_flags(target.flags),
            internal_date_ms: target.internal_date_ms,
            size: entry.size,
            body: body_ref,
            meta: entry.meta.clone(),
        },
    )?;
    let recipient = entry.recipients[idx].spec.address.clone();
    let record = DeliveryRecord {
        user: user.to_string(),
        mailbox: name.clone(),
        uidvalidity: mb.uidvalidity,
        uid,
    };
    t.put_ser(
        Cf::Deliveries,
        keys::delivery(&entry.queue_id, &recipient),
        &record,
    )?;
    let r = &mut entry.recipients[idx];
    r.attempts += 1;
    r.state = RecipientState::Delivered {
        detail: format!("{user}/{name} uid {uid}"),
    };
    Ok(Ok((mb.uidvalidity, uid)))
}

/// Keeps the grant index in step when `owner`'s mailbox `from` is renamed to `to` (or
/// deleted: `None`).
fn move_grants<R: KvRead>(
    t: &mut Txn<'_, R>,
    owner: &str,
    acl: &BTreeMap<String, String>,
    from: &str,
    to: Option<&str>,
) {
    for (id, rights) in acl {
        if id.starts_with('-') {
            continue;
        }
        t.delete(Cf::Shares, keys::grant(id, owner, from));
        if let Some(to) = to {
            t.put(
                Cf::Shares,
                keys::grant(id, owner, to),
                rights.clone().into_bytes(),
            );
        }
    }
}

/// The parent of a mailbox name, if it has one.
fn parent_of(name: &str) -> Option<&str> {
    name.rfind(HIERARCHY_DELIMITER).map(|i| &name[..i])
}

/// [`Command::As`]: `actor`'s rights on the mailboxes `cmd` touches, then `cmd`.
fn as_actor<R: KvRead>(t: &mut Txn<'_, R>, actor: &str, cmd: &Command) -> Outcome {
    use crate::acl::{Rights, effective};
    tri!(check_name("actor", actor));
    // The actor's rights on `owner`'s mailbox `name`; refuses like a missing mailbox when the
    // actor may not even see it (`l`), so names do not leak.
    let rights = |t: &Txn<'_, R>,
                  owner: &str,
                  name: &str|
     -> Result<Result<(Rights, MailboxRecord), ApplyError>, StoreError> {
        let name = canonical_mailbox(name);
        Ok(
            match t.get_de::<MailboxRecord>(Cf::Mailboxes, &keys::mailbox(owner, &name))? {
                Some(mb) => {
                    let r = effective(owner, actor, &mb.acl);
                    if r.has('l') || r.has('r') || owner == actor {
                        Ok((r, mb))
                    } else {
                        Err(ApplyError::NoSuchMailbox(name))
                    }
                }
                None => Err(ApplyError::NoSuchMailbox(name)),
            },
        )
    };
    let need = |have: Rights, letters: &str, what: &str| -> Result<(), ApplyError> {
        if have.contains(Rights::of(letters)) {
            Ok(())
        } else {
            Err(ApplyError::NoPermission(format!(
                "{what} needs the {letters:?} right"
            )))
        }
    };
    // A new name in someone else's tree needs the `k` right on its parent.
    let may_create_under = |t: &Txn<'_, R>,
                            owner: &str,
                            name: &str,
                            what: &str|
     -> Result<Result<(), ApplyError>, StoreError> {
        let name = canonical_mailbox(name);
        let Some(parent) = parent_of(&name) else {
            return Ok(Err(ApplyError::NoPermission(
                "only the owner creates top-level mailboxes".into(),
            )));
        };
        Ok(rights(t, owner, parent)?.and_then(|(r, _)| need(r, "k", what)))
    };
    match cmd {
        Command::CreateMailbox { user, name, .. } => {
            if user != actor {
                tri!(may_create_under(t, user, name, "creating a mailbox")?);
            }
            apply_inner(t, cmd)
        }
        Command::RenameMailbox { user, from, to } => {
            let (r, _) = tri!(rights(t, user, from)?);
            tri!(need(r, "x", "RENAME"));
            if user != actor {
                tri!(may_create_under(t, user, to, "RENAME into this mailbox")?);
            }
            apply_inner(t, cmd)
        }
        Command::Subscribe {
            user,
            name,
            subscribed,
        } if user != actor => {
            // A subscription to someone else's mailbox belongs to the subscriber.
            let name = canonical_mailbox(name);
            let (r, _) = tri!(rights(t, user, &name)?);
            tri!(need(r, "l", "SUBSCRIBE"));
            let key = keys::shared_subscription(actor, user, &name);
            if *subscribed {
                t.put(Cf::Shares, key, Vec::new());
            } else {
                t.delete(Cf::Shares, key);
            }
            Ok(Ok(Reply::Done))
        }
        Command::Subscribe { .. } => apply_inner(t, cmd),
        Command::Append {
            user,
            mailbox,
            flags,
            internal_date_ms,
            body,
            meta,
        } => {
            let (r, _) = tri!(rights(t, user, mailbox)?);
            tri!(need(r, "i", "APPEND"));
            apply_inner(
                t,
                &Command::Append {
                    user: user.clone(),
                    mailbox: mailbox.clone(),
                    flags: crate::acl::filter_flags(r, flags),
                    internal_date_ms: *internal_date_ms,
                    body: body.clone(),
                    meta: meta.clone(),
                },
            )
        }
        Command::StoreFlags {
            user,
            mailbox,
            uids,
            action,
            flags,
            unchanged_since,
        } => {
            let (r, _) = tri!(rights(t, user, mailbox)?);
            if !flags.is_empty() && crate::acl::filter_flags(r, flags).is_empty() {
                refuse!(ApplyError::NoPermission(
                    "STORE of these flags needs the \"s\", \"t\" or \"w\" right".into()
                ));
            }
            if flags.is_empty() && !(r.has('s') || r.has('t') || r.has('w')) {
                refuse!(ApplyError::NoPermission(
                    "STORE needs the \"s\", \"t\" or \"w\" right".into()
                ));
            }
            store_flags(t, user, mailbox, uids, *action, flags, *unchanged_since, r)
        }
        // Commands that need one right on one mailbox and change nothing else.
        Command::DeleteMailbox {
            user,
            name: mailbox,
        }
        | Command::SetAcl { user, mailbox, .. }
        | Command::Expunge { user, mailbox, .. } => {
            let (letter, what) = match cmd {
                Command::DeleteMailbox { .. } => ("x", "DELETE"),
                Command::SetAcl { .. } => ("a", "changing the ACL"),
                _ => ("e", "EXPUNGE"),
            };
            let (r, _) = tri!(rights(t, user, mailbox)?);
            tri!(need(r, letter, what));
            apply_inner(t, cmd)
        }
        Command::Copy {
            user,
            from,
            to_user,
            to,
            uids,
        }
        | Command::Move {
            user,
            from,
            to_user,
            to,
            uids,
        } => {
            let is_move = matches!(cmd, Command::Move { .. });
            let to_user = to_user.as_deref().unwrap_or(user);
            let (src, _) = tri!(rights(t, user, from)?);
            tri!(need(src, "r", "COPY from this mailbox"));
            if is_move {
                tri!(need(src, "te", "MOVE from this mailbox"));
            }
            let (dst, _) = tri!(rights(t, to_user, to)?);
            tri!(need(dst, "i", "COPY into this mailbox"));
            copy_messages(t, (user, from), (to_user, to), uids, is_move, dst)
        }
        other => Ok(Err(ApplyError::Invalid(format!(
            "{} cannot be done on behalf of a user",
            other.kind()
        )))),
    }
}

/// COPY/MOVE from `(owner, mailbox)` to `(owner, mailbox)`; `dst_rights` limits the flags the
/// copies keep (RFC 4314: flags the actor may not set in the target are dropped). Quota is
/// charged to the target's owner.
fn copy_messages<R: KvRead>(
    t: &mut Txn<'_, R>,
    (user, from): (&str, &str),
    (to_user, to): (&str, &str),
    uids: &[u32],
    is_move: bool,
    dst_rights: crate::acl::Rights,
) -> Outcome {
    let from = canonical_mailbox(from);
    let to = canonical_mailbox(to);
    let mut src = tri!(mailbox(t, user, &from)?);
    let mut dst = tri!(mailbox(t, to_user, &to)?);
    if src.id == dst.id && is_move {
        refuse!(ApplyError::Invalid(
            "cannot move a mailbox's messages into itself".into()
        ));
    }
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    let mut found = Vec::new();
    for uid in uids {
        if let Some(m) = t.get_de::<MessageRecord>(Cf::Messages, &keys::message(src.id, uid))? {
            found.push(m);
        }
    }
    if !is_move || to_user != user {
        let bytes: u64 = found.iter().map(|m| m.size).sum();
        tri!(check_quota(t, to_user, bytes, found.len() as u64)?);
    }
    let mut pairs = Vec::new();
    for m in &found {
        let body_ref = share_body(t, &m.body, &dst.partition)?;
        let (new_uid, _) = insert_message(
            t,
            to_user,
            &mut dst,
            NewMessage {
                flags: crate::acl::filter_flags(dst_rights, &m.flags),
                internal_date_ms: m.internal_date_ms,
                size: m.size,
                body: body_ref,
                meta: m.meta.clone(),
            },
        )?;
        if src.id == dst.id && to_user == user {
            // COPY into the same mailbox: keep `src` in step with `dst`.
            src = dst.clone();
        }
        pairs.push((m.uid, new_uid));
    }
    if is_move && !found.is_empty() {
        let mut gone = Vec::new();
        for m in &found {
            let key = keys::message(src.id, m.uid);
            remove_message(t, user, &mut src, key, m)?;
            gone.push(m.uid);
        }
        src.highestmodseq += 1;
        t.events.push(Event::Expunged {
            user: user.to_string(),
            mailbox: from.clone(),
            uids: gone,
            modseq: src.highestmodseq,
        });
        t.put_ser(Cf::Mailboxes, keys::mailbox(user, &from), &src)?;
    }
    Ok(Ok(Reply::Copied {
        uidvalidity: dst.uidvalidity,
        pairs,
    }))
}

/// STORE: `allowed` limits which flags may change (RFC 4314: `\\Seen` needs `s`,
/// `\\Deleted` `t`, others `w`); flags outside it keep their current state, even under
/// `Replace`.
#[allow(clippy::too_many_arguments)]
fn store_flags<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    uids: &[u32],
    action: FlagAction,
    flags: &[String],
    unchanged_since: Option<u64>,
    allowed: crate::acl::Rights,
) -> Outcome {
    let name = canonical_mailbox(name);
    let mut mb = tri!(mailbox(t, user, &name)?);
    let flags = normalize_flags(flags);
    let mut updated = Vec::new();
    let mut modified = Vec::new();
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    for uid in uids {
        let key = keys::message(mb.id, uid);
        let Some(mut m) = t.get_de::<MessageRecord>(Cf::Messages, &key)? else {
            continue;
        };
        if unchanged_since.is_some_and(|since| m.modseq > since) {
            modified.push(uid);
            continue;
        }
        let new_flags = match action {
            FlagAction::Replace => normalize_flags(
                &[
                    m.flags
                        .iter()
                        .filter(|f| !crate::acl::flag_allowed(allowed, f))
                        .cloned()
                        .collect::<Vec<_>>(),
                    crate::acl::filter_flags(allowed, &flags),
                ]
                .concat(),
            ),
            FlagAction::Add => normalize_flags(
                &[m.flags.clone(), crate::acl::filter_flags(allowed, &flags)].concat(),
            ),
            FlagAction::Remove => m
                .flags
                .iter()
                .filter(|f| !flags.contains(f) || !crate::acl::flag_allowed(allowed, f))
                .cloned()
                .collect(),
        };
        if new_flags == m.flags {
            continue;
        }
        mb.highestmodseq += 1;
        m.modseq = mb.highestmodseq;
        m.flags = new_flags;
        t.put_ser(Cf::Messages, key, &m)?;
        t.events.push(Event::FlagsChanged {
            user: user.to_string(),
            mailbox: name.clone(),
            uid,
            modseq: m.modseq,
            flags: m.flags.clone(),
        });
        updated.push((uid, m.modseq, m.flags));
    }
    t.put_ser(Cf::Mailboxes, keys::mailbox(user, &name), &mb)?;
    Ok(Ok(Reply::FlagsStored { updated, modified }))
}

/// A message about to be indexed into a mailbox.
struct NewMessage {
    flags: Vec<String>,
    internal_date_ms: i64,
    size: u64,
    body: BodyRef,
    meta: Option<MessageMeta>,
}

fn insert_message<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    mb: &mut MailboxRecord,
    new: NewMessage,
) -> Result<(u32, u64), StoreError> {
    let NewMessage {
        flags,
        internal_date_ms,
        size,
        body,
        meta,
    } = new;
    let uid = mb.uidnext;
    mb.uidnext = mb
        .uidnext
        .checked_add(1)
        .ok_or_else(|| StoreError::Invariant("UID space exhausted".into()))?;
    // UIDs only grow and a (UIDVALIDITY, UID) pair is never reused: the slot at `uidnext`
    // must be empty, or UIDNEXT went backwards.
    if uid == 0 || t.get(Cf::Messages, &keys::message(mb.id, uid))?.is_some() {
        return Err(StoreError::Invariant(format!(
            "mailbox {} of {user}: UID {uid} is already taken (UIDNEXT went backwards)",
            mb.name
        )));
    }
    mb.highestmodseq = mb
        .highestmodseq
        .checked_add(1)
        .ok_or_else(|| StoreError::Invariant("MODSEQ space exhausted".into()))?;
    mb.exists = mb
        .exists
        .checked_add(1)
        .ok_or_else(|| StoreError::Invariant("message count overflows".into()))?;
    mb.bytes = mb
        .bytes
        .checked_add(size)
        .ok_or_else(|| StoreError::Invariant("mailbox size overflows".into()))?;
    let rec = MessageRecord {
        uid,
        modseq: mb.highestmodseq,
        flags,
        internal_date_ms,
        size,
        body,
        meta,
    };
    t.put_ser(Cf::Messages, keys::message(mb.id, uid), &rec)?;
    t.put_ser(Cf::Mailboxes, keys::mailbox(user, &mb.name), mb)?;
    adjust_quota(t, user, size as i128, 1)?;
    t.events.push(Event::MessageAdded {
        user: user.to_string(),
        mailbox: mb.name.clone(),
        uid,
        modseq: rec.modseq,
    });
    Ok((uid, rec.modseq))
}

fn remove_message<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    mb: &mut MailboxRecord,
    key: Vec<u8>,
    m: &MessageRecord,
) -> Result<(), StoreError> {
    t.delete(Cf::Messages, key);
    drop_body_ref(t, &m.body)?;
    let underflow = || {
        StoreError::Invariant(format!(
            "mailbox {} of {user}: counters underflow removing UID {}",
            mb.name, m.uid
        ))
    };
    mb.exists = mb.exists.checked_sub(1).ok_or_else(underflow)?;
    mb.bytes = mb.bytes.checked_sub(m.size).ok_or_else(underflow)?;
    adjust_quota(t, user, -(m.size as i128), -1)
}

fn check_quota<R: KvRead>(
    t: &Txn<'_, R>,
    user: &str,
    bytes: u64,
    messages: u64,
) -> Result<Result<(), ApplyError>, StoreError> {
    let q: QuotaRecord = t.get_de(Cf::Quota, user.as_bytes())?.unwrap_or_default();
    let over_bytes = q
        .limit_bytes
        .is_some_and(|l| q.used_bytes.saturating_add(bytes) > l);
    let over_msgs = q
        .limit_messages
        .is_some_and(|l| q.used_messages.saturating_add(messages) > l);
    Ok(if over_bytes || over_msgs {
        Err(ApplyError::OverQuota)
    } else {
        Ok(())
    })
}

fn adjust_quota<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    bytes: i128,
    messages: i128,
) -> Result<(), StoreError> {
    let mut q: QuotaRecord = t.get_de(Cf::Quota, user.as_bytes())?.unwrap_or_default();
    // Usage is the sum of the user's message sizes: going below zero means a message was
    // uncounted or removed twice — a bug to stop on, never a value to clamp.
    let apply = |used: u64, delta: i128, what: &str| {
        u64::try_from(used as i128 + delta).map_err(|_| {
            StoreError::Invariant(format!(
                "quota of {user}: {what} usage {used} cannot change by {delta}"
            ))
        })
    };
    q.used_bytes = apply(q.used_bytes, bytes, "byte")?;
    q.used_messages = apply(q.used_messages, messages, "message")?;
    t.put_ser(Cf::Quota, user.as_bytes().to_vec(), &q)
}

/// Bodies up to this size are one value; larger ones are split into chunks of this size.
pub const BODY_CHUNK: usize = 256 * 1024;

pub mod chunks {
    //! Layout of chunked bodies in [`super::Cf::BodyChunks`].
    /// Manifest value: total length and number of chunks, big-endian.
    pub fn manifest(len: u64, n: u32) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
    pub fn parse(v: &[u8]) -> Option<(u64, u32)> {
        (v.len() == 12).then(|| {
            (
                u64::from_be_bytes(v[..8].try_into().unwrap_or_default()),
                u32::from_be_bytes(v[8..].try_into().unwrap_or_default()),
            )
        })
    }
    pub fn key(body_key: &[u8], i: u32) -> Vec<u8> {
        let mut k = body_key.to_vec();
        k.push(0);
        k.extend_from_slice(&i.to_be_bytes());
        k
    }
}

/// Stores a body: one value when small, else a manifest and chunks.
fn put_body<R: KvRead>(t: &mut Txn<'_, R>, key: &[u8], bytes: &[u8]) {
    if bytes.len() <= BODY_CHUNK {
        t.put(Cf::Bodies, key.to_vec(), bytes.to_vec());
        return;
    }
    let n = bytes.len().div_ceil(BODY_CHUNK) as u32;
    t.put(
        Cf::BodyChunks,
        key.to_vec(),
        chunks::manifest(bytes.len() as u64, n),
    );
    for (i, c) in bytes.chunks(BODY_CHUNK).enumerate() {
        t.put(Cf::BodyChunks, chunks::key(key, i as u32), c.to_vec());
    }
}

/// Reads bytes `[from, to)` of a stored body (clamped to its length), reading only the chunks
/// that overlap the range. `None` if the body is not stored.
pub fn body_range<R: KvRead + ?Sized>(
    r: &R,
    key: &[u8],
    from: u64,
    to: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(v) = r.get(Cf::Bodies, key)? {
        let len = v.len() as u64;
        let (a, b) = (
            from.min(len) as usize,
            to.min(len).max(from.min(len)) as usize,
        );
        return Ok(Some(v[a..b].to_vec()));
    }
    let Some(m) = r.get(Cf::BodyChunks, key)? else {
        return Ok(None);
    };
    let (len, n) = chunks::parse(&m).ok_or_else(|| StoreError::Codec("body manifest".into()))?;
    let (from, to) = (from.min(len), to.min(len).max(from.min(len)));
    let mut out = Vec::with_capacity((to - from) as usize);
    let chunk = BODY_CHUNK as u64;
    let first = (from / chunk) as u32;
    let last = if to == from {
        first
    } else {
        ((to - 1) / chunk) as u32
    };
    for i in first..=last.min(n.saturating_sub(1)) {
        if to == from {
            break;
        }
        let c = r
            .get(Cf::BodyChunks, &chunks::key(key, i))?
            .ok_or_else(|| StoreError::Invariant(format!("body chunk {i} missing")))?;
        let start = i as u64 * chunk;
        let a = from.saturating_sub(start).min(c.len() as u64) as usize;
        let b = (to - start).min(c.len() as u64) as usize;
        out.extend_from_slice(&c[a..b]);
    }
    Ok(Some(out))
}

/// The whole stored body, or `None`.
pub fn body_bytes<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    body_range(r, key, 0, u64::MAX)
}

/// Length of a stored body, or `None`.
pub fn body_len<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<u64>, StoreError> {
    if let Some(v) = r.get(Cf::Bodies, key)? {
        return Ok(Some(v.len() as u64));
    }
    match r.get(Cf::BodyChunks, key)? {
        Some(m) => Ok(chunks::parse(&m).map(|(len, _)| len)),
        None => Ok(None),
    }
}

fn delete_body<R: KvRead>(t: &mut Txn<'_, R>, key: Vec<u8>) -> Result<(), StoreError> {
    if let Some(m) = t.get(Cf::BodyChunks, &key)? {
        let (_, n) = chunks::parse(&m).ok_or_else(|| StoreError::Codec("body manifest".into()))?;
        for i in 0..n {
            t.delete(Cf::BodyChunks, chunks::key(&key, i));
        }
        t.delete(Cf::BodyChunks, key.clone());
    }
    t.delete(Cf::Bodies, key);
    Ok(())
}

fn add_body_ref<R: KvRead>(
    t: &mut Txn<'_, R>,
    body: &BodyRef,
    bytes: Option<&[u8]>,
) -> Result<(), StoreError> {
    let key = keys::body(&body.partition, &body.sha256);
    let count = match t.get(Cf::BodyRefs, &key)? {
        Some(v) => decode_refcount(&v)?,
        None => 0,
    };
    if count == 0 {
        let bytes =
            bytes.ok_or_else(|| StoreError::Invariant(format!("body {} missing", body.sha256)))?;
        put_body(t, &key, bytes);
    }
    t.put(Cf::BodyRefs, key, (count + 1).to_be_bytes().to_vec());
    Ok(())
}

fn drop_body_ref<R: KvRead>(t: &mut Txn<'_, R>, body: &BodyRef) -> Result<(), StoreError> {
    let key = keys::body(&body.partition, &body.sha256);
    let count = match t.get(Cf::BodyRefs, &key)? {
        Some(v) => decode_refcount(&v)?,
        None => {
            return Err(StoreError::Invariant(format!(
                "refcount of body {} underflows",
                body.sha256
            )));
        }
    };
    if count <= 1 {
        t.delete(Cf::BodyRefs, key.clone());
        delete_body(t, key)?;
    } else {
        t.put(Cf::BodyRefs, key, (count - 1).to_be_bytes().to_vec());
    }
    Ok(())
}

fn read_body<R: KvRead>(t: &Txn<'_, R>, body: &BodyRef) -> Result<Vec<u8>, StoreError> {
    body_bytes(t, &keys::body(&body.partition, &body.sha256))?
        .ok_or_else(|| StoreError::Invariant(format!("body {} missing", body.sha256)))
}

/// An entry stays queued until every recipient is final and every report it owes is queued.
fn finished(entry: &QueueEntry) -> bool {
    entry
        .recipients
        .iter()
        .all(|r| r.state.is_final() && !r.needs_dsn(&entry.mail_from))
}

fn save_or_retire<R: KvRead>(t: &mut Txn<'_, R>, entry: QueueEntry) -> Result<(), StoreError> {
    if finished(&entry) {
        retire(t, &entry)
    } else {
        t.put_ser(Cf::Queue, entry.queue_id.as_bytes().to_vec(), &entry)?;
        t.events.push(Event::QueueUpdated {
            queue_id: entry.queue_id.clone(),
        });
        Ok(())
    }
}

/// Removes a queue entry, its body reference and its dedupe records. Dedupe records are only
/// needed while the entry exists: `Deliver` for a missing entry is refused, never re-applied.
/// A dedupe record exists only for a recipient a `Deliver` (or an `Enqueue` delivering to the
/// store) marked delivered, under that recipient's key, so those keys are deleted directly
/// rather than found by a scan (a RocksDB iterator per retired message on every node).
fn retire<R: KvRead>(t: &mut Txn<'_, R>, entry: &QueueEntry) -> Result<(), StoreError> {
    t.delete(Cf::Queue, entry.queue_id.as_bytes().to_vec());
    drop_body_ref(t, &entry.body)?;
    for r in &entry.recipients {
        if matches!(r.state, RecipientState::Delivered { .. }) {
            t.delete(
                Cf::Deliveries,
                keys::delivery(&entry.queue_id, &r.spec.address),
            );
        }
    }
    t.events.push(Event::QueueRemoved {
        queue_id: entry.queue_id.clone(),
    });
    Ok(())
}
