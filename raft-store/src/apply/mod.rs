//! Applying commands: the deterministic heart of the state machine.
//!
//! [`apply_command`] is a pure function of (current state, command) → (writes, reply, events).
//! It reads through a [`Txn`], which layers the writes of the entries applied so far in this
//! batch over a read view of the database, so a batch of log entries becomes one atomic
//! RocksDB write together with the new `last_applied`. No clock, no randomness, no I/O other
//! than the state machine's own reads.
//!
//! The layers below: [`crate::kv`] (column families, the transaction overlay, the codec, body
//! storage) and [`crate::keys`] (the key layout table). Here, [`apply_command`] and a short
//! dispatch that hands each command to the file of its concern: `mailbox` (create, rename,
//! delete, subscribe), `message` (append, store flags, expunge, copy/move), `body`
//! (single-copy bodies and their reference counts), `quota`, `rights` (ACLs, the grant
//! index, commands done on behalf of a user), `queue` (the mail queue and local delivery),
//! `fence` (the fencing-token register); directory commands go to [`crate::directory`].
//!
//! Everything the storage layer exports is re-exported here, so `apply::Cf`, `apply::Txn`,
//! `apply::keys::mailbox`, `apply::BODY_CHUNK`... keep working.

use crate::error::StoreError;
use crate::model::{ApplyError, Command, Reply};

/// The commands' outcome: `Err` a storage failure, `Ok(Err(..))` a refusal.
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

mod body;
mod fence;
mod mailbox;
mod message;
mod queue;
mod quota;
mod rights;
pub mod vanished;

pub use crate::keys;
pub use crate::kv::{
    BODY_CHUNK, Cf, KvPairs, KvRead, Txn, Write, body_bytes, body_len, body_range, chunks, decode,
    decode_refcount, encode,
};
pub use body::sha256_hex;
pub use fence::{AUDIT_KEEP, FENCE_HISTORY};
pub use mailbox::canonical_mailbox;

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

/// [`Command::Atomic`]: every command or none. Each applies over the writes of the ones
/// before it (all in `t`); the first refusal returns, and the caller's nested transaction
/// drops everything `t` holds.
fn atomic<R: KvRead>(t: &mut Txn<'_, R>, cmds: &[Command]) -> Outcome {
    let mut replies = Vec::with_capacity(cmds.len());
    for c in cmds {
        if matches!(c, Command::Batch(_) | Command::Atomic(_)) {
            refuse!(ApplyError::Invalid(
                "an atomic command holds plain commands".into()
            ));
        }
        match apply_inner(t, c)? {
            Ok(r) => replies.push(r),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(Reply::Batch(replies)))
}

/// One command, not a batch: each arm hands it to the function of its concern.
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
        } => mailbox::create(t, user, name, *uidvalidity, partition, special_use),
        Command::RenameMailbox { user, from, to } => mailbox::rename(t, user, from, to),
        Command::DeleteMailbox { user, name } => mailbox::delete(t, user, name),
        Command::PurgeUser { user } => mailbox::purge_user(t, user),
        Command::Audit(r) => fence::audit(t, r),
        Command::Subscribe {
            user,
            name,
            subscribed,
        } => mailbox::subscribe(t, user, name, *subscribed),
        Command::SetAcl {
            user,
            mailbox: name,
            identifier,
            rights,
        } => rights::set_acl(t, user, name, identifier, rights),
        Command::Append {
            user,
            mailbox: name,
            flags,
            internal_date_ms,
            body,
            meta,
        } => message::append(t, user, name, flags, *internal_date_ms, body, meta),
        Command::StoreFlags {
            user,
            mailbox: name,
            uids,
            action,
            flags,
            unchanged_since,
        } => message::store_flags(
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
        } => message::expunge(t, user, name, uids),
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
        } => message::copy_messages(
            t,
            (user, from),
            (to_user.as_deref().unwrap_or(user), to),
            uids,
            message::Transfer::of(cmd),
            crate::acl::Rights::ALL,
        ),
        Command::ClaimRecent { user, mailbox } => message::claim_recent(t, user, mailbox),
        Command::Tracked(cmd) => vanished::tracked(t, cmd),
        Command::Atomic(cmds) => atomic(t, cmds),
        Command::As { actor, cmd } => rights::as_actor(t, actor, cmd),
        Command::Enqueue { .. } => queue::enqueue(t, cmd),
        Command::Deliver { .. } => queue::deliver(t, cmd),
        Command::UpdateRecipient {
            queue_id,
            recipient,
            state,
            next_attempt_ms,
            error,
        } => queue::update_recipient(t, queue_id, recipient, state, *next_attempt_ms, error),
        Command::ReportDsn {
            queue_id,
            recipients,
            dsn,
            delay,
        } => queue::report_dsn(t, queue_id, recipients, dsn, *delay),
        Command::Reschedule { queue_id, at_ms } => queue::reschedule(t, queue_id, *at_ms),
        Command::RemoveQueueEntry { queue_id } => queue::remove_entry(t, queue_id),
        Command::SetQuota {
            user,
            limit_bytes,
            limit_messages,
        } => quota::set_quota(t, user, *limit_bytes, *limit_messages),
        Command::Directory(d) => crate::directory::apply_dir(t, d),
        Command::Fence(op) => fence::apply_fence(t, op),
    }
}
