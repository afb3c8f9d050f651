//! Rights on mailboxes (RFC 4314): SETACL and the grant index that lets a user find the
//! mailboxes shared with them, and [`Command::As`], a command done on behalf of a user, checked
//! against that user's rights before it is applied. The rights themselves (letters, parsing,
//! effective rights) are [`crate::acl`].

use std::collections::BTreeMap;

use super::mailbox::{canonical_mailbox, check_name, mailbox};
use super::message::{Transfer, claim_recent, copy_messages, store_flags};
use super::{Outcome, apply_inner};
use crate::acl::{Rights, effective};
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn};
use crate::model::{ApplyError, Command, Event, HIERARCHY_DELIMITER, MailboxRecord, Reply};

/// [`Command::SetAcl`]: changes `identifier`'s rights on `user`'s mailbox `name`, and the
/// grant index with them.
pub(super) fn set_acl<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    name: &str,
    identifier: &str,
    rights: &Option<String>,
) -> Outcome {
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
        mb.acl.insert(identifier.to_string(), new.letters());
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
        user: user.to_string(),
        mailbox: name,
    });
    Ok(Ok(Reply::Done))
}

/// Keeps the grant index in step when `owner`'s mailbox `from` is renamed to `to` (or
/// deleted: `None`).
pub(super) fn move_grants<R: KvRead>(
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
pub(super) fn as_actor<R: KvRead>(t: &mut Txn<'_, R>, actor: &str, cmd: &Command) -> Outcome {
    tri!(check_name("actor", actor));
    match cmd {
        Command::CreateMailbox { user, name, .. } => {
            if user != actor {
                tri!(may_create_under(
                    t,
                    actor,
                    user,
                    name,
                    "creating a mailbox"
                )?);
            }
            apply_inner(t, cmd)
        }
        Command::RenameMailbox { user, from, to } => {
            let (r, _) = tri!(rights(t, actor, user, from)?);
            tri!(need(r, "x", "RENAME"));
            if user != actor {
                tri!(may_create_under(
                    t,
                    actor,
                    user,
                    to,
                    "RENAME into this mailbox"
                )?);
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
            let (r, _) = tri!(rights(t, actor, user, &name)?);
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
            let (r, _) = tri!(rights(t, actor, user, mailbox)?);
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
            let (r, _) = tri!(rights(t, actor, user, mailbox)?);
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
            let (r, _) = tri!(rights(t, actor, user, mailbox)?);
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
        }
        | Command::MoveAny {
            user,
            from,
            to_user,
            to,
            uids,
        } => {
            let how = Transfer::of(cmd);
            let is_move = how != Transfer::Copy;
            let to_user = to_user.as_deref().unwrap_or(user);
            let (src, _) = tri!(rights(t, actor, user, from)?);
            tri!(need(src, "r", "COPY from this mailbox"));
            if is_move {
                tri!(need(src, "te", "MOVE from this mailbox"));
            }
            let (dst, _) = tri!(rights(t, actor, to_user, to)?);
            tri!(need(dst, "i", "COPY into this mailbox"));
            copy_messages(t, (user, from), (to_user, to), uids, how, dst)
        }
        Command::ClaimRecent { user, mailbox } => {
            let (r, _) = tri!(rights(t, actor, user, mailbox)?);
            tri!(need(r, "r", "SELECT"));
            claim_recent(t, user, mailbox)
        }
        other => Ok(Err(ApplyError::Invalid(format!(
            "{} cannot be done on behalf of a user",
            other.kind()
        )))),
    }
}

/// The actor's rights on `owner`'s mailbox `name`; refuses like a missing mailbox when the
/// actor may not even see it (`l`), so names do not leak.
fn rights<R: KvRead>(
    t: &Txn<'_, R>,
    actor: &str,
    owner: &str,
    name: &str,
) -> Result<Result<(Rights, MailboxRecord), ApplyError>, StoreError> {
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
}

/// Refuses unless `have` holds every right in `letters`.
fn need(have: Rights, letters: &str, what: &str) -> Result<(), ApplyError> {
    if have.contains(Rights::of(letters)) {
        Ok(())
    } else {
        Err(ApplyError::NoPermission(format!(
            "{what} needs the {letters:?} right"
        )))
    }
}

/// A new name in someone else's tree needs the `k` right on its parent.
fn may_create_under<R: KvRead>(
    t: &Txn<'_, R>,
    actor: &str,
    owner: &str,
    name: &str,
    what: &str,
) -> Result<Result<(), ApplyError>, StoreError> {
    let name = canonical_mailbox(name);
    let Some(parent) = parent_of(&name) else {
        return Ok(Err(ApplyError::NoPermission(
            "only the owner creates top-level mailboxes".into(),
        )));
    };
    Ok(rights(t, actor, owner, parent)?.and_then(|(r, _)| need(r, "k", what)))
}
