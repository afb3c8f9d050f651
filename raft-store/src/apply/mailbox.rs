//! Mailboxes: their names (canonical form, what is allowed), creation with strictly
//! increasing UIDVALIDITY, RENAME (INBOX's special case, inferiors), DELETE and SUBSCRIBE.

use std::collections::BTreeMap;

use super::Outcome;
use super::body::drop_body_ref;
use super::message::copy_messages;
use super::quota::adjust_quota;
use super::rights::move_grants;
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn, decode};
use crate::model::{
    ApplyError, Event, HIERARCHY_DELIMITER, INBOX, MailboxRecord, MessageRecord, PRIMARY_PARTITION,
    Reply,
};

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

pub(super) fn check_name(what: &str, s: &str) -> Result<(), ApplyError> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_control()) {
        return Err(ApplyError::InvalidName(format!("{what} {s:?}")));
    }
    Ok(())
}

pub(super) fn check_mailbox_name(name: &str) -> Result<(), ApplyError> {
    check_name("mailbox", name)?;
    let d = HIERARCHY_DELIMITER;
    if name.starts_with(d) || name.ends_with(d) || name.contains(&format!("{d}{d}")) {
        return Err(ApplyError::InvalidName(format!("mailbox {name:?}")));
    }
    Ok(())
}

/// [`Command::CreateMailbox`](crate::model::Command::CreateMailbox).
pub(super) fn create<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    uidvalidity: u32,
    partition: &str,
    special_use: &Option<String>,
) -> Outcome {
    tri!(check_name("user", user));
    let name = canonical_mailbox(name);
    tri!(check_mailbox_name(&name));
    if t.get(Cf::Mailboxes, &keys::mailbox(user, &name))?.is_some() {
        refuse!(ApplyError::MailboxExists(name));
    }
    let mb = create_mailbox(t, user, &name, uidvalidity, partition, special_use.clone())?;
    Ok(Ok(Reply::Created {
        uidvalidity: mb.uidvalidity,
    }))
}

/// [`Command::DeleteMailbox`](crate::model::Command::DeleteMailbox): its messages (their
/// bodies' references, the owner's quota), its grants and the mailbox itself.
pub(super) fn delete<R: KvRead>(t: &mut Txn<'_, R>, user: &str, name: &str) -> Outcome {
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
        user: user.to_string(),
        mailbox: name,
    });
    Ok(Ok(Reply::Done))
}

/// [`Command::PurgeUser`](crate::model::Command::PurgeUser).
pub(super) fn purge_user<R: KvRead>(t: &mut Txn<'_, R>, user: &str) -> Outcome {
    if user.is_empty() || user.contains('\0') {
        refuse!(ApplyError::Invalid(format!("bad user name {user:?}")));
    }
    let prefix = keys::user_mailboxes(user);
    for (k, v) in t.scan(Cf::Mailboxes, &prefix)? {
        let mb: MailboxRecord = decode(&v)?;
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        tri!(delete(t, user, &name)?);
        t.delete(Cf::Meta, keys::recent_mark(mb.id));
        for (vk, _) in t.scan(Cf::Meta, &keys::vanished_of(mb.id))? {
            t.delete(Cf::Meta, vk);
        }
        t.delete(Cf::Meta, keys::vanished_floor(mb.id));
    }
    // Rights others granted: out of their mailboxes' ACLs and out of the index.
    let granted = keys::grants_to(user);
    for (k, _) in t.scan(Cf::Shares, &granted)? {
        if let Some((owner, mailbox)) = keys::owner_and_mailbox(&k[granted.len()..]) {
            let key = keys::mailbox(&owner, &mailbox);
            if let Some(mut mb) = t.get_de::<MailboxRecord>(Cf::Mailboxes, &key)? {
                mb.acl.remove(user);
                t.put_ser(Cf::Mailboxes, key, &mb)?;
            }
        }
        t.delete(Cf::Shares, k);
    }
    for (k, _) in t.scan(Cf::Shares, &keys::shared_subscriptions_of(user))? {
        t.delete(Cf::Shares, k);
    }
    t.delete(Cf::Quota, user.as_bytes().to_vec());
    Ok(Ok(Reply::Done))
}

/// [`Command::Subscribe`](crate::model::Command::Subscribe) to one's own mailbox.
pub(super) fn subscribe<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    subscribed: bool,
) -> Outcome {
    let name = canonical_mailbox(name);
    let mut mb = tri!(mailbox(t, user, &name)?);
    mb.subscribed = subscribed;
    t.put_ser(Cf::Mailboxes, keys::mailbox(user, &name), &mb)?;
    Ok(Ok(Reply::Done))
}

pub(super) fn mailbox<R: KvRead>(
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

pub(super) fn create_mailbox<R: KvRead>(
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

/// [`Command::RenameMailbox`](crate::model::Command::RenameMailbox).
pub(super) fn rename<R: KvRead>(t: &mut Txn<'_, R>, user: &str, from: &str, to: &str) -> Outcome {
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
            super::message::Transfer::Move,
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
