//! The audit trail of administrative changes (`halyard ctl audit`).
//!
//! Every change made through a node's admin API is recorded in the meta group as a
//! [`Command::Audit`] entry — who (the caller's certificate name and address), what (a
//! summary that never holds a password hash or a key), when, on which node, and whether it
//! was refused:
//! - a change of the embedded directory carries its record in the same atomic entry, so the
//!   change and its record commit together or not at all;
//! - other administrative changes (queue commands: reschedule, remove, recipient updates;
//!   purges; membership, snapshots, switchovers — a preferred master's automatic failback
//!   included — and forced elections) are recorded right after, in their own entry (best
//!   effort: a meta group without a quorum loses that record, not the change, and the node
//!   logs it).
//!
//! Proposals that are mail, not administration (forwarded `Enqueue`s and the like), are not
//! recorded. The caller is named by its certificate: `ctl` run with a node's configuration
//! acts with that node's certificate and is recorded as that node; give each administrator
//! their own certificate to tell them apart. Without TLS the caller is `plaintext`.

use std::sync::Arc;

use halyard_raft_store::directory::DirCommand;
use halyard_raft_store::{AuditRecord, Command, Reply};

use crate::config::META_GROUP;
use crate::shared::NodeShared;

/// Who called, from a request's peer certificate and address.
pub fn caller<T>(req: &tonic::Request<T>) -> String {
    let from = req
        .remote_addr()
        .map(|a| format!(" from {a}"))
        .unwrap_or_default();
    let certs = req.peer_certs();
    let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
        return format!("plaintext{from}");
    };
    let name = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|n| n.as_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unnamed certificate".into());
    format!("{name}{from}")
}

/// Whether a proposal other than a directory change is administrative (and recorded).
pub fn administrative(cmd: &Command) -> bool {
    match cmd {
        Command::Reschedule { .. }
        | Command::RemoveQueueEntry { .. }
        | Command::UpdateRecipient { .. }
        | Command::PurgeUser { .. } => true,
        Command::Atomic(cmds) | Command::Batch(cmds) => cmds.iter().any(administrative),
        _ => false,
    }
}

/// A summary of `cmd` for the trail: names and addresses, never hashes or keys.
pub fn summary(group: &str, cmd: &Command) -> String {
    let what = match cmd {
        Command::Directory(d) => directory(d),
        Command::Atomic(cmds) | Command::Batch(cmds) => cmds
            .iter()
            .map(summary_inner)
            .collect::<Vec<_>>()
            .join("; "),
        other => summary_inner(other),
    };
    format!("{group}: {what}")
}

fn summary_inner(cmd: &Command) -> String {
    match cmd {
        Command::Directory(d) => directory(d),
        Command::PurgeUser { user } => format!("purge the store data of {user}"),
        other => other.kind().replace('_', " "),
    }
}

fn directory(d: &DirCommand) -> String {
    match d {
        DirCommand::AddDomain(x) => format!("add domain {}", x.name),
        DirCommand::UpdateDomain(x) => format!("update domain {}", x.name),
        DirCommand::DeleteDomain { name } => format!("delete domain {name}"),
        DirCommand::AddUser(u) => format!("add user {} (login {})", u.address, u.login),
        DirCommand::UpdateUser { address, patch } => {
            let mut what = Vec::new();
            if patch.password_hash.is_some() {
                what.push("password".to_string());
            }
            if let Some(s) = patch.status {
                what.push(format!("status {s:?}").to_lowercase());
            }
            if patch.quota_bytes.is_some() || patch.quota_messages.is_some() {
                what.push("quota".into());
            }
            if patch.forwarding.is_some() || patch.delivery_options.is_some() {
                what.push("forwarding".into());
            }
            if patch.mail_host.is_some() {
                what.push("mail host".into());
            }
            format!("update user {address} ({})", what.join(", "))
        }
        DirCommand::DeleteUser { address } => format!("delete user {address}"),
        DirCommand::AddAlias { alias, target } => format!("add alias {alias} -> {target}"),
        DirCommand::DeleteAlias { alias } => format!("delete alias {alias}"),
        DirCommand::AddList { address, members } => {
            format!("add list {address} ({} members)", members.len())
        }
        DirCommand::ChangeListMembers {
            address,
            add,
            remove,
        } => format!("change list {address} (+{} -{})", add.len(), remove.len()),
        DirCommand::DeleteList { address } => format!("delete list {address}"),
        DirCommand::SetScram { address, keys } => match keys {
            Some(_) => format!("set SCRAM keys of {address}"),
            None => format!("remove SCRAM keys of {address}"),
        },
        DirCommand::SchedulePurge {
            address,
            deleted_at_ms,
        } => match deleted_at_ms {
            Some(_) => format!("schedule the purge of {address}"),
            None => format!("unschedule the purge of {address}"),
        },
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A record of `what` by `who` on this node.
pub fn record(node: &NodeShared, who: &str, what: String) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        who: who.to_string(),
        node: node.node_id,
        what,
        refused: String::new(),
    }
}

/// `cmd` with `audit` in the same atomic entry (flattening an atomic `cmd`).
pub fn with_record(cmd: Command, audit: AuditRecord) -> Command {
    let mut cmds = match cmd {
        Command::Atomic(cmds) => cmds,
        other => vec![other],
    };
    cmds.push(Command::Audit(audit));
    Command::Atomic(cmds)
}

/// The reply `cmd` would have had without its record (see [`with_record`]).
pub fn without_record(was_atomic: bool, reply: Reply) -> Reply {
    match reply {
        Reply::Batch(mut replies) => {
            replies.pop();
            if was_atomic {
                Reply::Batch(replies)
            } else {
                replies.into_iter().next().unwrap_or(Reply::Done)
            }
        }
        other => other,
    }
}

/// Records `audit` in the meta group in the background (through its leader, wherever that
/// is); a failure is logged.
pub fn record_later(node: Arc<NodeShared>, audit: AuditRecord) {
    tokio::spawn(async move {
        let r = async {
            let admin = halyard_api::Admin::connect(&node.addr, node.tls.clone()).await?;
            admin
                .propose_to_leader(META_GROUP, &Command::Audit(audit.clone()))
                .await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(what = %audit.what, who = %audit.who, error = %format!("{e:#}"), "audit record lost");
        }
    });
}
