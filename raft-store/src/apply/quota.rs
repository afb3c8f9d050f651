//! Quotas: a user's limits (SETQUOTA), the check before anything is added, and the usage
//! kept in step with every message added or removed.

use super::Outcome;
use super::mailbox::check_name;
use crate::error::StoreError;
use crate::kv::{Cf, KvRead, Txn};
use crate::model::{ApplyError, Event, QuotaRecord, Reply};

/// [`Command::SetQuota`](crate::model::Command::SetQuota).
pub(super) fn set_quota<R: KvRead>(
    t: &mut Txn<'_, R>,
    user: &str,
    limit_bytes: Option<u64>,
    limit_messages: Option<u64>,
) -> Outcome {
    tri!(check_name("user", user));
    let mut q: QuotaRecord = t.get_de(Cf::Quota, user.as_bytes())?.unwrap_or_default();
    q.limit_bytes = limit_bytes;
    q.limit_messages = limit_messages;
    t.put_ser(Cf::Quota, user.as_bytes().to_vec(), &q)?;
    t.events.push(Event::QuotaChanged {
        user: user.to_string(),
    });
    Ok(Ok(Reply::Done))
}

pub(super) fn check_quota<R: KvRead>(
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

pub(super) fn adjust_quota<R: KvRead>(
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
