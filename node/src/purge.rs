//! Purging deleted users (`halyard ctl user del`).
//!
//! Deleting a user is two steps, so that an operator's mistake can be undone for a while and a
//! new user with the same address never inherits the old one's mail:
//! 1. `ctl user del` sets the account's status to `deleted` (no logins; mail refused
//!    permanently) and records when, in the same atomic meta-group entry
//!    ([`DirCommand::SchedulePurge`]).
//! 2. On the meta group's leader, this sweeper finds entries older than
//!    `[directory] purge_grace_secs` (`--purge-now` records time 0, so at once) and, for each,
//!    proposes [`Command::PurgeUser`] to the group holding the user's mailboxes (mailboxes,
//!    messages, single-copy bodies dereferenced, quota, rights granted to the user), then
//!    removes the directory entry (user, aliases, SCRAM keys, schedule) atomically.
//!
//! Both proposals are idempotent, so a sweeper that dies between them (or a new meta leader
//! that repeats them) does no harm: the schedule is removed last. Until then the address is
//! still taken, so `ctl user add` cannot create a user that would see the old mailboxes.

use std::sync::Arc;
use std::time::Duration;

use halyard_raft_store::directory::DirCommand;
use halyard_raft_store::{Command, META_GROUP, Reply};
use tokio::sync::watch;

use crate::forward::AdminPool;
use crate::shared::NodeShared;

/// How often the meta leader looks for users due for purging.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs until `stop`: every [`SWEEP_EVERY`], purges the users that are due, when this node
/// leads the meta group.
pub async fn sweeper(node: Arc<NodeShared>, mut stop: watch::Receiver<bool>) {
    let pool = AdminPool::new(node.tls.clone());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Ok(meta) = node.group(META_GROUP) else {
            return;
        };
        if meta.raft().metrics().borrow().current_leader != Some(node.node_id) {
            continue;
        }
        let due = match meta.reader().directory(|r| r.scheduled_purges()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading scheduled purges");
                continue;
            }
        };
        let grace = node.config.directory.purge_grace_secs.saturating_mul(1000);
        for (address, deleted_at) in due {
            if deleted_at.saturating_add(grace) > now_ms() {
                continue;
            }
            match purge(&node, &pool, &address).await {
                Ok(group) => {
                    tracing::info!(user = %address, group, "deleted user purged")
                }
                Err(e) => {
                    tracing::warn!(user = %address, error = %e, "purging a deleted user failed; will retry");
                    pool.forget(&node.addr).await;
                }
            }
        }
    }
}

/// Purges one user's store data, then its directory entry; returns the group purged.
async fn purge(node: &NodeShared, pool: &AdminPool, address: &str) -> Result<String, String> {
    let admin = pool.get(&node.addr).await?;
    let record = node
        .directory
        .user(address)
        .await
        .map_err(|e| e.to_string())?;
    let group = record.as_ref().and_then(|r| {
        halyard_raft_store::home_group(
            r.mail_host.as_deref(),
            node.config.default_group.as_deref(),
            node.groups.keys(),
        )
    });
    if let (Some(r), Some(g)) = (&record, &group) {
        let cmd = Command::PurgeUser {
            user: r.mail.clone(),
        };
        expect_done(admin.propose_to_leader(g, &cmd).await)?;
    }
    let remove = Command::Atomic(vec![
        Command::Directory(DirCommand::SetScram {
            address: address.to_string(),
            keys: None,
        }),
        Command::Directory(DirCommand::SchedulePurge {
            address: address.to_string(),
            deleted_at_ms: None,
        }),
        Command::Directory(DirCommand::DeleteUser {
            address: address.to_string(),
        }),
    ]);
    let remove = if record.is_some() {
        remove
    } else {
        // The user is gone already (deleted by hand): only the schedule is left.
        Command::Directory(DirCommand::SchedulePurge {
            address: address.to_string(),
            deleted_at_ms: None,
        })
    };
    expect_done(admin.propose_to_leader(META_GROUP, &remove).await)?;
    Ok(group.unwrap_or_default())
}

fn expect_done(r: anyhow::Result<Reply>) -> Result<(), String> {
    match r.map_err(|e| format!("{e:#}"))? {
        Reply::Done => Ok(()),
        Reply::Batch(rs) if rs.iter().all(|r| *r == Reply::Done) => Ok(()),
        other => Err(format!("unexpected reply {other:?}")),
    }
}
