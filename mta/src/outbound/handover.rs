//! The channel between resource groups: recipients of one SMTP transaction whose mailboxes
//! live in another group than the first recipient's.
//!
//! The receiving node commits the whole message as one `Enqueue` in one group (the first
//! recipient's), so the client's `250` covers every recipient or none: a failure after a
//! first group had committed used to answer `451`, and the client's retry delivered the first
//! group's copies twice. Recipients of another group `G` get the channel `group:G`; the job
//! controller of the receiving group hands them over as an `Enqueue` in `G` whose queue id
//! is derived (`<queue id>.<G>`), so a repeated hand-over (a new master, a lost answer) is
//! refused as `QueueEntryExists` and counts as done: never two copies. Delivery into the
//! mailboxes then happens in `G`'s own entry, with its own one-commit path and dedupe.

use std::collections::HashMap;
use std::sync::Arc;

use halyard_raft_store::{ApplyError, Command, Group, QueueEntry, RecipientSpec, Reply};

use super::relay::Outcome;
use crate::Forward;

/// Channel names `group:<name>` route to the group `<name>`.
pub const PREFIX: &str = "group:";

/// The groups a job controller can hand recipients to, and how to reach their leaders.
pub struct Handover {
    pub groups: HashMap<String, Group>,
    pub forward: Option<Arc<dyn Forward>>,
}

/// Hands `rcpts` of `entry` to group `target`; one outcome per recipient.
pub async fn hand_over(
    h: Option<&Handover>,
    target: &str,
    entry: &QueueEntry,
    rcpts: &[&RecipientSpec],
    body: &[u8],
) -> Vec<Outcome> {
    let all = |o: Outcome| vec![o; rcpts.len()];
    let Some(g) = h.and_then(|h| h.groups.get(target)) else {
        return all(Outcome::Temporary(format!(
            "4.3.5 group {target} is not served on this node"
        )));
    };
    let id = format!("{}.{target}", entry.queue_id);
    let cmd = Command::Enqueue {
        queue_id: id.clone(),
        mail_from: entry.mail_from.clone(),
        params: entry.params.clone(),
        recipients: rcpts
            .iter()
            .map(|r| RecipientSpec {
                channel: "store".into(),
                ..(*r).clone()
            })
            .collect(),
        partition: entry.body.partition.clone(),
        body: bytes::Bytes::copy_from_slice(body),
        received_at_ms: entry.received_at_ms,
        expires_at_ms: entry.expires_at_ms,
        priority: entry.priority,
        meta: entry.meta.clone(),
    };
    let forward = h.and_then(|h| h.forward.as_ref());
    let r = match (g.leader_elsewhere(), forward) {
        (Some(addr), Some(f)) => f.propose(addr, target.to_string(), cmd).await,
        _ => g.propose(cmd).await,
    };
    match r {
        Ok(Reply::Enqueued { .. }) | Ok(Reply::Error(ApplyError::QueueEntryExists(_))) => {
            tracing::info!(queue_id = %entry.queue_id, to = %id, group = target, "recipients handed over to their group");
            all(Outcome::Delivered(format!(
                "handed to group {target} as {id}"
            )))
        }
        Ok(other) => all(Outcome::Temporary(format!(
            "4.3.0 group {target} refused the hand-over: {other:?}"
        ))),
        Err(e) => all(Outcome::Temporary(format!("4.3.0 group {target}: {e}"))),
    }
}
