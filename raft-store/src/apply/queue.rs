//! The mail queue: ENQUEUE (with store-channel recipients delivered in the same entry),
//! DELIVER into a local mailbox with its dedupe record, recipients' outcomes, delivery status
//! notifications, rescheduling, and retiring an entry once nothing more is owed.

use super::Outcome;
use super::body::{add_body_ref, drop_body_ref, sha256_hex, share_body};
use super::mailbox::{canonical_mailbox, check_mailbox_name, check_name, create_mailbox};
use super::message::{NewMessage, insert_message, normalize_flags};
use super::quota::check_quota;
use crate::error::StoreError;
use crate::keys;
use crate::kv::{Cf, KvRead, Txn};
use crate::model::{
    ApplyError, BodyRef, Command, DeliveryRecord, Event, INBOX, MailboxRecord, QueueEntry,
    RecipientRecord, RecipientState, Reply,
};

/// [`Command::Enqueue`].
pub(super) fn enqueue<R: KvRead>(t: &mut Txn<'_, R>, cmd: &Command) -> Outcome {
    let Command::Enqueue {
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
    } = cmd
    else {
        refuse!(ApplyError::Invalid(format!(
            "{} is not an enqueue",
            cmd.kind()
        )));
    };
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
            uidvalidity_if_created: (*received_at_ms / 1000).clamp(1, u32::MAX as i64) as u32,
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

/// [`Command::Deliver`]: recipient `recipient` of the entry into a local mailbox, once (a
/// second one returns the first's UID).
pub(super) fn deliver<R: KvRead>(t: &mut Txn<'_, R>, cmd: &Command) -> Outcome {
    let Command::Deliver {
        queue_id,
        recipient,
        user,
        mailbox: name,
        flags,
        internal_date_ms,
        uidvalidity_if_created,
    } = cmd
    else {
        refuse!(ApplyError::Invalid(format!(
            "{} is not a delivery",
            cmd.kind()
        )));
    };
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

/// [`Command::UpdateRecipient`]: an attempt's outcome; the first final one stands.
pub(super) fn update_recipient<R: KvRead>(
    t: &mut Txn<'_, R>,
    queue_id: &str,
    recipient: &str,
    state: &RecipientState,
    next_attempt_ms: i64,
    error: &Option<String>,
) -> Outcome {
    let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
        refuse!(ApplyError::NoSuchQueueEntry(queue_id.to_string()));
    };
    let Some(r) = entry
        .recipients
        .iter_mut()
        .find(|r| r.spec.address == *recipient)
    else {
        refuse!(ApplyError::NoSuchRecipient {
            queue_id: queue_id.to_string(),
            recipient: recipient.to_string()
        });
    };
    if r.state.is_final() {
        // A late report from an old master; the first final outcome stands.
        return Ok(Ok(Reply::Done));
    }
    r.attempts += 1;
    r.state = state.clone();
    r.next_attempt_ms = next_attempt_ms;
    r.last_error = error.clone();
    save_or_retire(t, entry)?;
    Ok(Ok(Reply::Done))
}

/// [`Command::ReportDsn`]: marks the recipients reported and enqueues the report `dsn`.
pub(super) fn report_dsn<R: KvRead>(
    t: &mut Txn<'_, R>,
    queue_id: &str,
    recipients: &[String],
    dsn: &Command,
    delay: bool,
) -> Outcome {
    let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
        refuse!(ApplyError::NoSuchQueueEntry(queue_id.to_string()));
    };
    let Command::Enqueue { mail_from, .. } = dsn else {
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
            Some(r) if !delay && r.needs_dsn(&from) => r.notified = true,
            // A delay report is only for a recipient still being retried: one whose
            // outcome became final meanwhile gets the final report instead.
            Some(r) if delay && r.wants_delay_dsn(&from) => r.delay_notified = true,
            // Already reported (a second master's attempt): nothing to do.
            Some(_) => return Ok(Ok(Reply::Done)),
            None => refuse!(ApplyError::NoSuchRecipient {
                queue_id: queue_id.to_string(),
                recipient: rcpt.clone()
            }),
        }
    }
    let reply = tri!(super::apply_inner(t, dsn)?);
    save_or_retire(t, entry)?;
    Ok(Ok(reply))
}

/// [`Command::Reschedule`]: every recipient not yet final is tried at `at_ms`.
pub(super) fn reschedule<R: KvRead>(t: &mut Txn<'_, R>, queue_id: &str, at_ms: i64) -> Outcome {
    let Some(mut entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
        refuse!(ApplyError::NoSuchQueueEntry(queue_id.to_string()));
    };
    for r in entry.recipients.iter_mut() {
        if !r.state.is_final() {
            r.next_attempt_ms = at_ms;
        }
    }
    t.put_ser(Cf::Queue, queue_id.as_bytes().to_vec(), &entry)?;
    t.events.push(Event::QueueUpdated {
        queue_id: queue_id.to_string(),
    });
    Ok(Ok(Reply::Done))
}

/// [`Command::RemoveQueueEntry`].
pub(super) fn remove_entry<R: KvRead>(t: &mut Txn<'_, R>, queue_id: &str) -> Outcome {
    let Some(entry) = t.get_de::<QueueEntry>(Cf::Queue, queue_id.as_bytes())? else {
        refuse!(ApplyError::NoSuchQueueEntry(queue_id.to_string()));
    };
    retire(t, &entry)?;
    Ok(Ok(Reply::Done))
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
