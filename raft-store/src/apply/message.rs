//! Messages in mailboxes: APPEND, STORE of flags (and flags' canonical spelling), EXPUNGE,
//! COPY and MOVE, and the two primitives every path uses to index a message into a mailbox and
//! out of it, keeping UIDs, MODSEQs, counters and quota in step.

use super::Outcome;
use super::body::{add_body_ref, drop_body_ref, sha256_hex, share_body};
use super::mailbox::{canonical_mailbox, mailbox};
use super::quota::{adjust_quota, check_quota};
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn, decode};
use crate::model::{
    ApplyError, BodyRef, Event, FlagAction, MailboxRecord, MessageMeta, MessageRecord, Reply,
};

/// [`Command::Append`](crate::model::Command::Append).
pub(super) fn append<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    flags: &[String],
    internal_date_ms: i64,
    body: &[u8],
    meta: &Option<MessageMeta>,
) -> Outcome {
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
            internal_date_ms,
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

/// [`Command::Expunge`](crate::model::Command::Expunge): the given UIDs, or every message
/// flagged `\\Deleted`.
pub(super) fn expunge<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    uids: &Option<Vec<u32>>,
) -> Outcome {
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
        super::vanished::record(t, &mb, &gone, mb.highestmodseq)?;
        t.events.push(Event::Expunged {
            user: user.to_string(),
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

/// What [`copy_messages`] does with the source messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transfer {
    Copy,
    /// [`crate::Command::Move`]: refuses the source mailbox as target, as it always did.
    Move,
    /// [`crate::Command::MoveAny`]: the target may be the source mailbox.
    MoveAny,
}

/// COPY/MOVE from `(owner, mailbox)` to `(owner, mailbox)`; `dst_rights` limits the flags the
/// copies keep (RFC 4314: flags the actor may not set in the target are dropped). Quota is
/// charged to the target's owner.
impl Transfer {
    /// The transfer a COPY or MOVE command asks for (`Copy` for any other command).
    pub(super) fn of(cmd: &crate::model::Command) -> Transfer {
        match cmd {
            crate::model::Command::Move { .. } => Transfer::Move,
            crate::model::Command::MoveAny { .. } => Transfer::MoveAny,
            _ => Transfer::Copy,
        }
    }
}

pub(super) fn copy_messages<R: KvRead>(
    t: &mut Txn<'_, R>,
    (user, from): (&str, &str),
    (to_user, to): (&str, &str),
    uids: &[u32],
    how: Transfer,
    dst_rights: crate::acl::Rights,
) -> Outcome {
    let is_move = how != Transfer::Copy;
    let from = canonical_mailbox(from);
    let to = canonical_mailbox(to);
    let mut src = tri!(mailbox(t, user, &from)?);
    let mut dst = tri!(mailbox(t, to_user, &to)?);
    if src.id == dst.id && how == Transfer::Move {
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
            // COPY (or MOVE) into the same mailbox: keep `src` in step with `dst`.
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
        super::vanished::record(t, &src, &gone, src.highestmodseq)?;
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
pub(super) fn store_flags<R: KvRead>(
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

pub(super) fn normalize_flags(flags: &[String]) -> Vec<String> {
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

/// A message about to be indexed into a mailbox.
pub(super) struct NewMessage {
    pub(super) flags: Vec<String>,
    pub(super) internal_date_ms: i64,
    pub(super) size: u64,
    pub(super) body: BodyRef,
    pub(super) meta: Option<MessageMeta>,
}

pub(super) fn insert_message<R: KvRead>(
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

pub(super) fn remove_message<R: KvRead>(
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

/// RFC 3501 `\Recent`: hands the claiming session every UID from the mailbox's recent mark
/// up to UIDNEXT and moves the mark there, so no other session sees them as recent.
pub(super) fn claim_recent<R: KvRead>(t: &mut Txn<'_, R>, user: &str, name: &str) -> Outcome {
    let name = canonical_mailbox(name);
    let mb = tri!(mailbox(t, user, &name)?);
    let key = keys::recent_mark(mb.id);
    let from = t.get_de::<u32>(Cf::Meta, &key)?.unwrap_or(1);
    if mb.uidnext > from {
        t.put_ser(Cf::Meta, key, &mb.uidnext)?;
    }
    Ok(Ok(Reply::RecentClaimed {
        uidvalidity: mb.uidvalidity,
        from,
        to: mb.uidnext.max(from),
    }))
}
