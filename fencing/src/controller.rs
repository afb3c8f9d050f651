//! The fencing controller of one resource group on one node: turns Raft leadership into
//! holding the group's lease and floating address, and back.
//!
//! ```text
//!   follower ──(leader in term t)──▶ propose Fence::Acquire{(t, me)} ──(committed)──▶
//!   run the fence hook ──▶ add address, gratuitous ARP ──▶ serving (t, me)
//!   serving ──(leadership lost | quorum silent for the lease | higher-term vote request |
//!              switchover)──▶ stop serving, remove address
//! ```
//!
//! See the crate documentation for why a new master need not wait after its `Acquire`
//! commits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_raft_store::openraft::ServerState;
use halyard_raft_store::{Command, FenceOp, FenceToken, Group, HolderRecord, Reply};
use tokio::sync::{Notify, watch};

use crate::holder::Holder;

/// How the controller of a group behaves on this node.
#[derive(Debug, Clone)]
pub struct FenceConfig {
    /// How long after the last quorum acknowledgement a master keeps the address. Must be
    /// shorter than Raft's follower lease (openraft: `election_timeout_max`), with margin for
    /// clock-rate differences and the time removal takes.
    pub lease: Duration,
    /// A program run before every acquisition (`HALYARD_GROUP`, `HALYARD_ADDRESS`,
    /// `HALYARD_TOKEN`, `HALYARD_PREVIOUS` in its environment); a non-zero exit refuses the
    /// acquisition, which is retried.
    pub hook: Option<PathBuf>,
    pub hook_timeout: Duration,
}

/// What the controller reports (for `halyard ctl status`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FenceStatus {
    pub address: Option<String>,
    /// This node's token while it holds the lease.
    pub holding: Option<FenceToken>,
    /// Lease time left, in milliseconds.
    pub lease_left_ms: Option<u64>,
    /// The holder recorded in the group's log (this replica's view).
    pub recorded: Option<HolderRecord>,
    /// Set while a switchover has paused acquisition on this node.
    pub paused: bool,
    /// Times the watchdog removed the address because a lease ran out.
    pub expiries: u64,
}

struct Shared {
    group: Group,
    holder: Holder,
    cfg: FenceConfig,
    /// Set during a switchover: do not (re)acquire while it is.
    paused: watch::Sender<Option<Instant>>,
    /// Wakes the holding loop (a vote request released the address).
    kick: Notify,
}

/// Handle to a running controller.
#[derive(Clone)]
pub struct Controller {
    s: Arc<Shared>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Controller {
    /// Starts the controller of `group` (runs until `stop`).
    pub fn start(
        group: Group,
        holder: Holder,
        cfg: FenceConfig,
        stop: watch::Receiver<bool>,
    ) -> (Controller, tokio::task::JoinHandle<()>) {
        let c = Controller {
            s: Arc::new(Shared {
                group,
                holder,
                cfg,
                paused: watch::channel(None).0,
                kick: Notify::new(),
            }),
        };
        let task = tokio::spawn(c.clone().run(stop));
        (c, task)
    }

    pub fn group(&self) -> &Group {
        &self.s.group
    }

    pub fn holder(&self) -> &Holder {
        &self.s.holder
    }

    pub fn status(&self) -> FenceStatus {
        FenceStatus {
            address: self.s.holder.spec().map(|s| s.cidr.to_string()),
            holding: *self.s.group.serving().borrow(),
            lease_left_ms: self.s.holder.remaining().map(|d| d.as_millis() as u64),
            recorded: self.s.group.reader().fence_holder().ok().flatten(),
            paused: self.s.paused.borrow().is_some_and(|u| Instant::now() < u),
            expiries: self.s.holder.expiries(),
        }
    }

    /// Called before a vote request of `term` reaches Raft: a holder that might grant a
    /// vote to another candidate lets the address go first, so that there is no moment at
    /// which the new leader could take it while this node still has it.
    pub fn before_vote(&self, term: u64) {
        let serving = *self.s.group.serving().borrow();
        if let Some(t) = serving
            && term > t.term
        {
            if let Err(e) = self.s.holder.release() {
                tracing::error!(group = %self.s.group.name(), error = %e, "releasing the address before a vote failed");
            }
            self.s.group.set_serving(None);
            tracing::info!(group = %self.s.group.name(), term = t.term, vote_term = term, "address released: a candidate of a newer term asks for votes");
            self.s.kick.notify_one();
        }
    }

    /// Switchover, first half: stop serving, remove the address and record the release,
    /// then refrain from taking it again for `pause` (or until [`Controller::resume`]).
    /// Returns the token that was released.
    pub async fn release_for_switchover(
        &self,
        pause: Duration,
        reason: &str,
    ) -> Result<FenceToken, String> {
        let token = (*self.s.group.serving().borrow())
            .ok_or_else(|| "this node does not hold the group's address".to_string())?;
        self.s.paused.send_replace(Some(Instant::now() + pause));
        self.s.group.set_serving(None);
        self.s.kick.notify_one();
        self.s
            .holder
            .release()
            .map_err(|e| format!("removing the address: {e}"))?;
        let r = self
            .s
            .group
            .propose(Command::Fence(FenceOp::Release {
                token,
                at_ms: now_ms(),
                reason: reason.to_string(),
            }))
            .await;
        match r {
            Ok(Reply::Fenced { .. }) => Ok(token),
            Ok(other) => Err(format!("recording the release: {other:?}")),
            Err(e) => Err(format!("recording the release: {e}")),
        }
    }

    /// Lets the controller acquire again (a switchover that did not happen).
    pub fn resume(&self) {
        self.s.paused.send_replace(None);
        self.s.kick.notify_one();
    }

    fn paused(&self) -> bool {
        self.s.paused.borrow().is_some_and(|u| Instant::now() < u)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let g = self.s.group.clone();
        let me = g.node_id();
        let name = g.name().to_string();
        let mut m = g.raft().metrics();
        loop {
            // 1. Wait to lead (and not to be paused by a switchover).
            let term = loop {
                if *stop.borrow() {
                    return;
                }
                let (leader, term) = {
                    let x = m.borrow_and_update();
                    (
                        x.state == ServerState::Leader && x.current_leader == Some(me),
                        x.current_term,
                    )
                };
                if leader && !self.paused() {
                    break term;
                }
                tokio::select! {
                    r = m.changed() => if r.is_err() { return },
                    _ = stop.changed() => {}
                    _ = self.s.kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)), if leader => {}
                }
            };
            let token = FenceToken { term, node: me };
            let started = Instant::now();
            // 2. Record the acquisition; its commit proves leadership committed in `term`.
            let address = self.s.holder.spec().map(|s| s.cidr.to_string());
            let previous = match g
                .propose(Command::Fence(FenceOp::Acquire {
                    token,
                    address: address.clone(),
                    at_ms: now_ms(),
                }))
                .await
            {
                Ok(Reply::Fenced { previous }) => previous,
                Ok(other) => {
                    tracing::warn!(group = %name, term, reply = ?other, "acquisition refused by the state machine");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(group = %name, term, error = %e, "acquisition not committed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // 3. Still the leader of that term, with a fresh quorum acknowledgement?
            let deadline = {
                let x = m.borrow_and_update();
                if x.state != ServerState::Leader || x.current_term != term {
                    continue;
                }
                lease_deadline(x.millis_since_quorum_ack, self.s.cfg.lease)
            };
            let Some(deadline) = deadline else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if self.paused() {
                continue;
            }
            // 4. The site's fence hook, if any.
            if let Some(hook) = &self.s.cfg.hook
                && let Err(e) = run_hook(
                    hook,
                    self.s.cfg.hook_timeout,
                    &name,
                    address.as_deref(),
                    token,
                    previous.as_ref(),
                )
                .await
            {
                tracing::error!(group = %name, term, error = %e, "fence hook refused the acquisition; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let deadline =
                match lease_deadline(m.borrow().millis_since_quorum_ack, self.s.cfg.lease) {
                    Some(d) => d.max(deadline),
                    None => deadline,
                };
            // 5. Take the address.
            if let Err(e) = self.s.holder.acquire(deadline) {
                tracing::error!(group = %name, term, error = %e, "cannot take the floating address; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            g.set_serving(Some(token));
            tracing::info!(
                group = %name,
                term,
                address = address.as_deref().unwrap_or("-"),
                previous = ?previous.as_ref().map(|p| (p.token, p.released_at_ms.is_some())),
                took_ms = started.elapsed().as_millis() as u64,
                "holding the group's address"
            );
            // 6. Hold while the lease is renewed by quorum acknowledgements.
            let reason = loop {
                tokio::select! {
                    r = m.changed() => if r.is_err() { break "node stopping" },
                    _ = stop.changed() => {}
                    _ = self.s.kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
                if *stop.borrow() {
                    break "node stopping";
                }
                if g.serving().borrow().is_none() {
                    break "released";
                }
                let x = m.borrow_and_update();
                if x.state != ServerState::Leader || x.current_term != term {
                    break "leadership lost";
                }
                if x.has_changed()
                    && let Some(d) = lease_deadline(x.millis_since_quorum_ack, self.s.cfg.lease)
                {
                    self.s.holder.extend(d);
                }
                if !self.s.holder.is_held() {
                    break "lease expired (no quorum)";
                }
            };
            g.set_serving(None);
            if let Err(e) = self.s.holder.release() {
                tracing::error!(group = %name, term, error = %e, "removing the floating address failed");
            }
            tracing::warn!(group = %name, term, reason, "stopped holding the group's address");
            if reason == "node stopping" {
                return;
            }
        }
    }
}

/// When a lease that started at the last quorum acknowledgement ends: the acknowledged
/// instant is the send time of the heartbeat a quorum answered, `ms` before the report (one
/// millisecond more for the truncation). Called only when a fresh metrics report arrives,
/// so a stale value is never read again as if it were new.
fn lease_deadline(ms: Option<u64>, lease: Duration) -> Option<Instant> {
    let ms = ms?;
    let acked = Instant::now().checked_sub(Duration::from_millis(ms + 1))?;
    let d = acked + lease;
    (d > Instant::now()).then_some(d)
}

async fn run_hook(
    hook: &std::path::Path,
    timeout: Duration,
    group: &str,
    address: Option<&str>,
    token: FenceToken,
    previous: Option<&HolderRecord>,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(hook);
    cmd.env("HALYARD_GROUP", group)
        .env("HALYARD_ADDRESS", address.unwrap_or(""))
        .env("HALYARD_TOKEN", token.to_string())
        .env(
            "HALYARD_PREVIOUS",
            previous.map_or(String::new(), |p| {
                format!(
                    "{}{}",
                    p.token,
                    if p.released_at_ms.is_some() {
                        " released"
                    } else {
                        ""
                    }
                )
            }),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", hook.display()))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("{} exited with {st}", hook.display())),
        Ok(Err(e)) => Err(format!("{}: {e}", hook.display())),
        Err(_) => Err(format!(
            "{} did not finish within {timeout:?}",
            hook.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_deadline_counts_from_the_acknowledgement() {
        let lease = Duration::from_millis(300);
        let d = lease_deadline(Some(100), lease).unwrap();
        let left = d.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_millis(199), "{left:?}");
        assert!(left >= Duration::from_millis(150), "{left:?}");
        assert!(
            lease_deadline(Some(400), lease).is_none(),
            "already expired"
        );
        assert!(lease_deadline(None, lease).is_none());
    }
}
