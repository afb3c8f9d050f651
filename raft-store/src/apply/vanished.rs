//! QRESYNC tombstones (RFC 7162): which UIDs each expunge removed, under its MODSEQ, so a
//! client that knows a mailbox up to some MODSEQ can be told exactly what vanished since.
//!
//! Only expunges applied inside a [`Command::Tracked`] record tombstones: what an existing
//! command does never changes in place (ARCHITECTURE.md), so tracking is a command-level-2
//! wrapper that sessions put around every command that may expunge once every member
//! applies level 2. A mailbox's *floor* says from where the record is complete: the first
//! tracked expunge sets it just below its own MODSEQ, and pruning raises it. A client whose
//! MODSEQ is below the floor (or a mailbox without one) gets the RFC's fallback: every UID
//! it may know that is no longer there.
//!
//! Bounded: at most [`MAX_TOMBSTONES`] UIDs per mailbox; beyond that the oldest entries go
//! (down to half) and the floor rises to the newest MODSEQ removed.

use super::Outcome;
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn, decode};
use crate::model::{Command, MailboxRecord};

/// UIDs of expunged messages kept per mailbox.
pub const MAX_TOMBSTONES: u64 = 20_000;

/// `(floor modseq, tombstoned UIDs)` of a mailbox, if it was ever tracked.
pub(crate) type Floor = (u64, u64);

/// Records that `uids` of `mb` were expunged at `modseq` (`mb.highestmodseq` after the
/// expunge), when the applying command is tracked.
pub(super) fn record<R: KvRead>(
    t: &mut Txn<'_, R>,
    mb: &MailboxRecord,
    uids: &[u32],
    modseq: u64,
) -> Result<(), StoreError> {
    if !t.track_vanished || uids.is_empty() {
        return Ok(());
    }
    let floor_key = keys::vanished_floor(mb.id);
    let (mut floor, mut count) = t
        .get_de::<Floor>(Cf::Meta, &floor_key)?
        .unwrap_or((modseq.saturating_sub(1), 0));
    t.put_ser(Cf::Meta, keys::vanished(mb.id, modseq), &uids.to_vec())?;
    count += uids.len() as u64;
    if count > MAX_TOMBSTONES {
        for (k, v) in t.scan(Cf::Meta, &keys::vanished_of(mb.id))? {
            if count <= MAX_TOMBSTONES / 2 {
                break;
            }
            let gone: Vec<u32> = decode(&v)?;
            count -= gone.len() as u64;
            let at = k.len().checked_sub(8).map(|i| &k[i..]).unwrap_or_default();
            floor = floor.max(u64::from_be_bytes(at.try_into().unwrap_or([0; 8])));
            t.delete(Cf::Meta, k);
        }
    }
    t.put_ser(Cf::Meta, floor_key, &(floor, count))
}

/// Drops every tombstone of a deleted mailbox.
pub(super) fn forget<R: KvRead>(t: &mut Txn<'_, R>, mailbox_id: u64) -> Result<(), StoreError> {
    for (k, _) in t.scan(Cf::Meta, &keys::vanished_of(mailbox_id))? {
        t.delete(Cf::Meta, k);
    }
    t.delete(Cf::Meta, keys::vanished_floor(mailbox_id));
    Ok(())
}

/// The id of the mailbox `cmd` deletes (also on someone's behalf), read before it applies.
fn deleted_mailbox<R: KvRead>(t: &Txn<'_, R>, cmd: &Command) -> Result<Option<u64>, StoreError> {
    Ok(match cmd {
        Command::DeleteMailbox { user, name } => t
            .get_de::<MailboxRecord>(
                Cf::Mailboxes,
                &keys::mailbox(user, &super::canonical_mailbox(name)),
            )?
            .map(|mb| mb.id),
        Command::As { cmd, .. } => deleted_mailbox(t, cmd)?,
        _ => None,
    })
}

/// [`Command::Tracked`]: `cmd` with tombstones recorded for what it expunges (and dropped
/// for a mailbox it deletes).
pub(super) fn tracked<R: KvRead>(t: &mut Txn<'_, R>, cmd: &Command) -> Outcome {
    if matches!(cmd, Command::Tracked(_) | Command::Batch(_)) {
        refuse!(crate::model::ApplyError::Invalid(
            "a tracked command wraps one plain command".into()
        ));
    }
    let doomed = deleted_mailbox(t, cmd)?;
    t.track_vanished = true;
    let outcome = super::apply_inner(t, cmd);
    t.track_vanished = false;
    let outcome = outcome?;
    if let (Ok(_), Some(id)) = (&outcome, doomed) {
        forget(t, id)?;
    }
    Ok(outcome)
}
