//! `halyard ctl queue list|show|retry|delete|bounce` — the replicated mail queue (the
//! seed's `imsimta qm`).
//!
//! Entries are read on each group's leader (the master, whose job controller runs the
//! queue); changes are proposals to it, so every replica sees them.

use anyhow::{Result, bail};
use clap::Subcommand;
use halyard_raft_store::{Command, QueueEntry, RecipientState, Reply};

use crate::config::META_GROUP;
use halyard_api::Admin;

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Every queued message: id, group, sender, size, age, recipients still pending, next
    /// attempt and last error.
    List {
        /// Only this resource group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One message and the state of each recipient.
    Show {
        queue_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a message's pending recipients due now.
    Retry { queue_id: String },
    /// Remove a message from the queue without delivering it or bouncing it.
    Delete { queue_id: String },
    /// Give up on a message's pending recipients now (they are reported as failed).
    Bounce { queue_id: String },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (group, entry) for every entry of the selected groups, read on each group's leader.
async fn entries(admin: &Admin, only: Option<&str>) -> Result<Vec<(String, QueueEntry)>> {
    let status = admin.status().await?;
    let mut out = Vec::new();
    for g in status.groups.iter().filter(|g| g.name != META_GROUP) {
        if only.is_some_and(|o| o != g.name) {
            continue;
        }
        let leader = admin.leader_of(&g.name).await.unwrap_or(admin.clone());
        let q = leader.queue(&g.name).await?;
        out.extend(q.into_iter().map(|e| (g.name.clone(), e)));
    }
    if let Some(o) = only
        && !status.groups.iter().any(|g| g.name == o)
    {
        bail!("no group {o} on this node");
    }
    Ok(out)
}

async fn find(admin: &Admin, queue_id: &str) -> Result<(String, QueueEntry)> {
    entries(admin, None)
        .await?
        .into_iter()
        .find(|(_, e)| e.queue_id == queue_id)
        .ok_or_else(|| anyhow::anyhow!("no message {queue_id} in the queue"))
}

fn age(ms: i64) -> String {
    let s = ((now_ms() - ms) / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn state_text(s: &RecipientState) -> String {
    match s {
        RecipientState::Pending => "pending".into(),
        RecipientState::Delivered { detail } => format!("delivered ({detail})"),
        RecipientState::Failed { code, detail } => format!("failed {code} ({detail})"),
    }
}

async fn propose(admin: &Admin, group: &str, cmd: Command) -> Result<()> {
    match admin.propose_to_leader(group, &cmd).await? {
        Reply::Error(e) => bail!("{e}"),
        _ => Ok(()),
    }
}

pub async fn queue_cmd(admin: &Admin, cmd: &QueueCmd) -> Result<()> {
    match cmd {
        QueueCmd::List { group, json } => {
            let all = entries(admin, group.as_deref()).await?;
            if *json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|(g, e)| serde_json::json!({"group": g, "entry": e}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<8} {:<30} {:>9} {:>7} {:>9} {:>8}  LAST ERROR",
                "QUEUE ID", "GROUP", "FROM", "SIZE", "AGE", "PENDING", "NEXT"
            );
            for (g, e) in &all {
                let pending: Vec<_> = e
                    .recipients
                    .iter()
                    .filter(|r| !r.state.is_final())
                    .collect();
                let next = pending.iter().map(|r| r.next_attempt_ms).min();
                let err = pending
                    .iter()
                    .find_map(|r| r.last_error.clone())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<8} {:<30} {:>9} {:>7} {:>9} {:>8}  {}",
                    e.queue_id,
                    g,
                    if e.mail_from.is_empty() {
                        "<>"
                    } else {
                        &e.mail_from
                    },
                    e.size,
                    age(e.received_at_ms),
                    format!("{}/{}", pending.len(), e.recipients.len()),
                    next.map(|n| {
                        let s = (n - now_ms()) / 1000;
                        if s <= 0 {
                            "now".to_string()
                        } else {
                            format!("{s}s")
                        }
                    })
                    .unwrap_or("-".into()),
                    err
                );
            }
            println!("{} message(s)", all.len());
        }
        QueueCmd::Show { queue_id, json } => {
            let (g, e) = find(admin, queue_id).await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"group": g, "entry": e}))?
                );
                return Ok(());
            }
            println!("queue id:  {}", e.queue_id);
            println!("group:     {g}");
            println!("from:      <{}>", e.mail_from);
            println!(
                "size:      {} bytes, received {} ago",
                e.size,
                age(e.received_at_ms)
            );
            for (k, v) in &e.params {
                println!("param:     {k}={v}");
            }
            for r in &e.recipients {
                println!(
                    "rcpt:      <{}> channel {} attempts {} {}{}",
                    r.spec.address,
                    r.spec.channel,
                    r.attempts,
                    state_text(&r.state),
                    r.last_error
                        .as_ref()
                        .map(|x| format!("; last error: {x}"))
                        .unwrap_or_default()
                );
            }
        }
        QueueCmd::Retry { queue_id } => {
            let (g, _) = find(admin, queue_id).await?;
            propose(
                admin,
                &g,
                Command::Reschedule {
                    queue_id: queue_id.clone(),
                    at_ms: now_ms(),
                },
            )
            .await?;
            println!("{queue_id}: pending recipients are due now");
        }
        QueueCmd::Delete { queue_id } => {
            let (g, _) = find(admin, queue_id).await?;
            propose(
                admin,
                &g,
                Command::RemoveQueueEntry {
                    queue_id: queue_id.clone(),
                },
            )
            .await?;
            println!("{queue_id}: removed from the queue");
        }
        QueueCmd::Bounce { queue_id } => {
            let (g, e) = find(admin, queue_id).await?;
            let mut n = 0;
            for r in e.recipients.iter().filter(|r| !r.state.is_final()) {
                propose(
                    admin,
                    &g,
                    Command::UpdateRecipient {
                        queue_id: queue_id.clone(),
                        recipient: r.spec.address.clone(),
                        state: RecipientState::Failed {
                            code: 550,
                            detail: "5.0.0 returned by the postmaster".into(),
                        },
                        next_attempt_ms: now_ms(),
                        error: None,
                    },
                )
                .await?;
                n += 1;
            }
            println!("{queue_id}: {n} pending recipient(s) failed");
        }
    }
    Ok(())
}
