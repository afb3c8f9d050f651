//! A logged-in user's view of the store: the group that holds the mailboxes, proposals with
//! clear errors, and reads of the leader's applied state.

use std::sync::Arc;

use halyard_directory::{DirectoryError, Principal, UserRecord};
use halyard_raft_store::{ApplyError, Command, Group, ProposeError, Reply, SmShared};

use crate::Shared;

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreFail {
    /// Refused by the state machine (deterministic): no such mailbox, over quota, ...
    #[error("{0}")]
    Refused(ApplyError),
    /// The group cannot commit now (no leader, this node lost leadership, shutting down): a
    /// temporary failure; the client should retry, possibly on another connection.
    #[error("{0}")]
    Unavailable(String),
}

pub struct Account {
    pub principal: Principal,
    /// The key of the user's mailboxes in the group: the primary address.
    pub user: String,
    pub group: Group,
    pub record: UserRecord,
}

/// The account of a session another node's multiplexor authenticated and relays here: only
/// while this node is the master of the user's group (else the why, for `-ERR`).
pub async fn relayed_account(shared: &Shared, principal: Principal) -> Result<Account, String> {
    let acct = account(shared, principal).await?;
    if acct.master() != Some(shared.backend.node_id) {
        return Err("this node is no longer the master of your mailboxes; try again".into());
    }
    Ok(acct)
}

/// Finds where `principal`'s mailboxes live and checks this node may serve them.
pub async fn account(shared: &Shared, principal: Principal) -> Result<Account, String> {
    let record = match shared.backend.directory.user(&principal.mail).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err("account not found in the directory".into()),
        Err(DirectoryError::Unavailable(e)) => return Err(format!("directory unavailable: {e}")),
    };
    let group_name =
        group_of(shared, &record).ok_or("no mailbox group configured for this account")?;
    let group = shared
        .backend
        .groups
        .get(&group_name)
        .cloned()
        .ok_or_else(|| format!("mailbox group {group_name} is not served by this node"))?;
    Ok(Account {
        user: record.mail.clone(),
        principal,
        group,
        record,
    })
}

/// The resource group holding a user's mailboxes: the directory's mailHost, else the
/// configured default, else the only resource group there is.
pub fn group_of(shared: &Shared, record: &UserRecord) -> Option<String> {
    halyard_raft_store::home_group(
        record.mail_host.as_deref(),
        shared.backend.default_group.as_deref(),
        shared.backend.groups.keys(),
    )
}

impl Account {
    /// The node currently leading the user's group (the master), if known.
    pub fn master(&self) -> Option<u64> {
        self.group.raft().metrics().borrow().current_leader
    }

    /// Resolves once `node` is no longer the master of the user's group.
    pub async fn lost_mastership(&self, node: u64) {
        lost_mastership(&self.group, node).await
    }
}

/// Resolves once `node` no longer leads `group`, or loses the group's lease after holding
/// it (a master cut off from its quorum ends its sessions before a new master may start).
pub async fn lost_mastership(group: &Group, node: u64) {
    let leader = async {
        let mut m = group.raft().metrics();
        loop {
            if m.borrow().current_leader != Some(node) {
                return;
            }
            if m.changed().await.is_err() {
                return;
            }
        }
    };
    let lease = async {
        let mut s = group.serving();
        let mut held = s.borrow_and_update().is_some();
        loop {
            if s.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = s.borrow_and_update().is_some();
            if held && !now {
                return;
            }
            held = now;
        }
    };
    tokio::select! {
        _ = leader => {}
        _ = lease => {}
    }
}

impl Account {
    pub async fn propose(&self, cmd: Command) -> Result<Reply, StoreFail> {
        let cmd = self.tracked(cmd);
        match self.group.propose(cmd).await {
            Ok(Reply::Error(e)) => Err(StoreFail::Refused(e)),
            Ok(r) => Ok(r),
            Err(ProposeError::NotLeader { leader_id, .. }) => Err(StoreFail::Unavailable(format!(
                "this server is not the master of your mailboxes now (master: {})",
                leader_id.map_or("being elected".into(), |l| format!("node {l}"))
            ))),
            Err(e) => Err(StoreFail::Unavailable(e.to_string())),
        }
    }

    /// A command that may expunge goes in [`Command::Tracked`] once every member of the group
    /// applies it, so QRESYNC can name exactly what vanished (RFC 7162).
    fn tracked(&self, cmd: Command) -> Command {
        fn expunges(c: &Command) -> bool {
            match c {
                Command::Expunge { .. }
                | Command::Move { .. }
                | Command::MoveAny { .. }
                | Command::RenameMailbox { .. }
                | Command::DeleteMailbox { .. } => true,
                Command::As { cmd, .. } => expunges(cmd),
                _ => false,
            }
        }
        if expunges(&cmd) && self.group.command_level() >= 2 {
            Command::Tracked(Box::new(cmd))
        } else {
            cmd
        }
    }

    /// The applied state after confirming leadership with a quorum.
    pub async fn linearizable(&self) -> Result<Arc<SmShared>, StoreFail> {
        self.group
            .linearizable_reader()
            .await
            .map_err(|e| StoreFail::Unavailable(e.to_string()))
    }

    /// The applied state of this replica (includes every write this session committed).
    pub fn reader(&self) -> Arc<SmShared> {
        self.group.reader()
    }
}
