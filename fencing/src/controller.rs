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

/// A switchover request: drain time, reason, where to answer.
type SwitchReq = (
    Duration,
    Duration,
    String,
    tokio::sync::oneshot::Sender<Result<FenceToken, String>>,
);

struct Shared {
    group: Group,
    holder: Holder,
    cfg: FenceConfig,
    /// Set during a switchover: do not (re)acquire while it is.
    paused: watch::Sender<Option<Instant>>,
    /// Wakes the holding loop (a vote request released the address).
    kick: Notify,
    /// Whether the group's listeners on the floating address are open (set by whoever runs
    /// them): a switchover waits for them to close and drain before removing the address.
    listening: watch::Sender<bool>,
    switch: tokio::sync::mpsc::Sender<SwitchReq>,
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
        let (switch, switch_rx) = tokio::sync::mpsc::channel(4);
        let c = Controller {
            s: Arc::new(Shared {
                group,
                holder,
                cfg,
                paused: watch::channel(None).0,
                kick: Notify::new(),
                listening: watch::channel(false).0,
                switch,
            }),
        };
        let task = tokio::spawn(c.clone().run(stop, switch_rx));
        (c, task)
    }

    /// Reported by the owner of the group's floating listeners.
    pub fn set_listening(&self, open: bool) {
        self.s.listening.send_replace(open);
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

    /// Switchover, first half: stop accepting on the floating address, let sessions finish
    /// their transactions for up to `drain`, remove the address and commit a
    /// `Fence::Release`; then refrain from taking it again for `pause` (or until
    /// [`Controller::resume`]). Returns the token that was released.
    pub async fn release_for_switchover(
        &self,
        drain: Duration,
        pause: Duration,
        reason: &str,
    ) -> Result<FenceToken, String> {
        if self.s.group.serving().borrow().is_none() {
            return Err("this node does not hold the group's address".into());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.s
            .switch
            .send((drain, pause, reason.to_string(), tx))
            .await
            .map_err(|_| "the fencing controller is not running".to_string())?;
        rx.await
            .map_err(|_| "the fencing controller stopped".to_string())?
    }

    /// Lets the controller acquire again (a switchover that did not happen).
    pub fn resume(&self) {
        self.s.paused.send_replace(None);
        self.s.kick.notify_one();
    }

    fn paused(&self) -> bool {
        self.s.paused.borrow().is_some_and(|u| Instant::now() < u)
    }

    async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        mut switch: tokio::sync::mpsc::Receiver<SwitchReq>,
    ) {
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
                    Some((_, _, _, reply)) = switch.recv() => {
                        let _ = reply.send(Err("this node does not hold the group's address".into()));
                    }
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
                // Whether a new metrics report arrived (`changed` marks it seen itself).
                let mut fresh = false;
                tokio::select! {
                    r = m.changed() => {
                        if r.is_err() { break "node stopping" }
                        fresh = true;
                    }
                    _ = stop.changed() => {}
                    _ = self.s.kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    Some((drain, pause, why, reply)) = switch.recv() => {
                        let r = self.switchover(token, drain, pause, &why).await;
                        let _ = reply.send(r);
                        break "switchover";
                    }
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
                if (fresh || x.has_changed())
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
            if matches!(reason, "switchover" | "node stopping") {
                tracing::info!(group = %name, term, reason, "stopped holding the group's address");
            } else {
                tracing::warn!(group = %name, term, reason, "stopped holding the group's address");
            }
            if reason == "node stopping" {
                // Leave a trace in the log that this holder let go on purpose (best effort:
                // a stopping node may have no quorum).
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    g.propose(Command::Fence(FenceOp::Release {
                        token,
                        at_ms: now_ms(),
                        reason: "node stopping".into(),
                    })),
                )
                .await;
                return;
            }
        }
    }
}

impl Controller {
    /// The holder's side of a switchover, run by the holding loop.
    async fn switchover(
        &self,
        token: FenceToken,
        drain: Duration,
        pause: Duration,
        reason: &str,
    ) -> Result<FenceToken, String> {
        let g = &self.s.group;
        self.s.paused.send_replace(Some(Instant::now() + pause));
        g.set_serving(None);
        // Listeners close at once; transactions in progress get up to `drain`.
        let mut listening = self.s.listening.subscribe();
        let until = tokio::time::Instant::now() + drain + Duration::from_secs(1);
        while *listening.borrow_and_update() {
            tokio::select! {
                r = listening.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(group = %g.name(), "listeners still open after the drain; removing the address anyway");
                    break;
                }
            }
        }
        self.s
            .holder
            .release()
            .map_err(|e| format!("removing the address: {e}"))?;
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            g.propose(Command::Fence(FenceOp::Release {
                token,
                at_ms: now_ms(),
                reason: reason.to_string(),
            })),
        )
        .await;
        match r {
            Ok(Ok(Reply::Fenced { .. })) => Ok(token),
            Ok(Ok(other)) => Err(format!("recording the release: {other:?}")),
            Ok(Err(e)) => Err(format!("recording the release: {e}")),
            Err(_) => Err("recording the release: no commit within 5 s".into()),
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

    #[tokio::test]
    async fn the_fence_hook_decides_and_sees_the_tokens() {
        let d = std::env::temp_dir().join(format!("halyard-hook-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("env");
        let hook = d.join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$HALYARD_GROUP $HALYARD_TOKEN $HALYARD_PREVIOUS $HALYARD_ADDRESS\" > {}\n[ \"$HALYARD_TOKEN\" != 9/9 ]\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prev = HolderRecord {
            token: FenceToken { term: 4, node: 2 },
            address: None,
            acquired_at_ms: 0,
            released_at_ms: None,
            release_reason: None,
        };
        let t = Duration::from_secs(5);
        run_hook(
            &hook,
            t,
            "rg1",
            Some("198.18.0.100/24"),
            FenceToken { term: 5, node: 1 },
            Some(&prev),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "rg1 5/1 4/2 198.18.0.100/24"
        );
        let e = run_hook(&hook, t, "rg1", None, FenceToken { term: 9, node: 9 }, None)
            .await
            .unwrap_err();
        assert!(e.contains("exited"), "{e}");
        let slow = d.join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run_hook(
            &slow,
            Duration::from_millis(200),
            "rg1",
            None,
            FenceToken { term: 1, node: 1 },
            None,
        )
        .await
        .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

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
