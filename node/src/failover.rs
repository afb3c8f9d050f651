//! Switchover (`halyard ctl failover`), forced failover, and failback of a group to its
//! preferred master.
//!
//! A switchover runs on the current master: stop accepting on the floating address, let SMTP
//! transactions in progress finish (up to `[fencing] drain_ms`), remove the address and
//! commit a `Fence::Release`, wait until the target has every log entry, ask the target to
//! stand for election (openraft 0.9 has no leadership transfer; the target's vote request is
//! granted by the old master, whose own vote is not lease-protected), then wait for the
//! target's `Fence::Acquire` to arrive in this node's log. The window reported is the time
//! from closing the listeners to that moment. If the target does not take over, the old
//! master resumes.
//!
//! A forced failover (`--force`) is for a master that does not answer: the target waits until
//! it has heard nothing from any leader for the followers' lease (so the old master's lease,
//! if it still runs one, has ended), then stands for election — which succeeds only if a
//! quorum grants it, i.e. a quorum agrees the master is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use halyard_api::{Admin, ElectReport, FailoverReport};
use halyard_raft_store::openraft::ServerState;

use crate::shared::NodeShared;
use crate::tls::TlsMaterial;

/// Stands for election in `group` on this node (see [`elect`]) and reports the outcome.
pub async fn elect_report(
    node: &Arc<NodeShared>,
    group: &str,
    wait_lease: bool,
) -> Result<ElectReport> {
    let (term, waited) = elect(node, group, wait_lease).await?;
    Ok(ElectReport {
        group: group.to_string(),
        leader: node.node_id,
        term,
        waited_for_lease_ms: waited.as_secs_f64() * 1e3,
    })
}

fn candidates(node: &NodeShared, group: &str) -> Result<Vec<(u64, String, u64)>> {
    let g = node
        .group(group)
        .map_err(|s| anyhow!(s.message().to_string()))?;
    let st = g.status();
    let preferred = node
        .config
        .groups
        .iter()
        .find(|x| x.name == group)
        .and_then(|x| x.preferred);
    let mut c: Vec<(u64, String, u64)> = st
        .members
        .iter()
        .filter(|m| {
            m.id != node.node_id
                && m.role == halyard_raft_store::Role::Voter
                && node.config.may_lead(group, m.id)
        })
        .map(|m| (m.id, m.addr.clone(), m.lag.unwrap_or(u64::MAX)))
        .collect();
    c.sort_by_key(|(id, _, lag)| (Some(*id) != preferred, *lag, *id));
    Ok(c)
}

/// Switches `group` over from this node, its master, to `to` or the best candidate.
pub async fn switchover(
    node: &Arc<NodeShared>,
    group: &str,
    to: Option<u64>,
    drain_ms: Option<u64>,
) -> Result<FailoverReport> {
    let g = node
        .group(group)
        .map_err(|s| anyhow!(s.message().to_string()))?
        .clone();
    let fence = node
        .fences
        .get(group)
        .ok_or_else(|| anyhow!("node {} never leads group {group}", node.node_id))?
        .clone();
    if !g.is_serving() {
        bail!(
            "node {} is not the master of {group} (ask the master; `halyard ctl status` shows it)",
            node.node_id
        );
    }
    let cands = candidates(node, group)?;
    let (target, addr) = match to {
        Some(t) => match cands.iter().find(|c| c.0 == t) {
            Some(c) => (c.0, c.1.clone()),
            None => bail!("node {t} is not a voter of {group} that may lead"),
        },
        None => match cands.first() {
            Some(c) => (c.0, c.1.clone()),
            None => bail!("{group} has no other member that may lead"),
        },
    };
    let admin = Admin::connect(&addr, node.tls.clone()).await?;
    let drain = Duration::from_millis(drain_ms.unwrap_or(node.config.fencing.drain_ms));
    let address = node
        .config
        .groups
        .iter()
        .find(|x| x.name == group)
        .and_then(|x| x.address.clone());
    let t0 = Instant::now();
    fence
        .release_for_switchover(
            drain,
            Duration::from_secs(10),
            &format!("switchover to node {target}"),
        )
        .await
        .map_err(|e| anyhow!(e))?;
    let drained = t0.elapsed();
    let resume = |e: anyhow::Error| {
        fence.resume();
        e
    };
    // The target must have every entry, or it cannot win the election.
    let caught_up = async {
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let st = g.status();
            let last = st.last_log_index;
            if st
                .members
                .iter()
                .any(|m| m.id == target && m.matched_index.is_some() && m.matched_index == last)
            {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("node {target} did not catch up within 3 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    caught_up.await.map_err(resume)?;
    admin
        .elect(group, false)
        .await
        .map_err(|e| resume(anyhow!("node {target} did not take over: {e}")))?;
    // Wait for the new master's acquisition to reach this node's log.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(h)) = g.reader().fence_holder()
            && h.token.node == target
            && h.released_at_ms.is_none()
        {
            let window = t0.elapsed();
            // Acquiring again is no longer a race: this node would have to win an election.
            fence.resume();
            let term = h.token.term;
            tracing::info!(
                group,
                from = node.node_id,
                to = target,
                term,
                window_ms = window.as_secs_f64() * 1e3,
                "switchover done"
            );
            return Ok(FailoverReport {
                group: group.to_string(),
                from: node.node_id,
                to: target,
                term,
                window_ms: window.as_secs_f64() * 1e3,
                drain_ms: drained.as_secs_f64() * 1e3,
                address,
            });
        }
        if Instant::now() >= until {
            fence.resume();
            bail!("node {target} became leader but did not take the address within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Stands for election in `group` and waits to lead it (and, when this node may hold the
/// group's lease, to hold it). Returns the term and how long it waited for the lease.
async fn elect(node: &Arc<NodeShared>, group: &str, wait_lease: bool) -> Result<(u64, Duration)> {
    let g = node
        .group(group)
        .map_err(|s| anyhow!(s.message().to_string()))?
        .clone();
    if !node.config.may_lead(group, node.node_id) {
        bail!("node {} may not lead {group}", node.node_id);
    }
    let t0 = Instant::now();
    if wait_lease {
        // The followers' lease is election_timeout_max; wait until it has passed since the
        // last AppendEntries any leader sent here.
        let lease = Duration::from_millis(node.config.raft.election_timeout_max_ms);
        loop {
            let heard = node
                .last_heard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(group)
                .copied();
            match heard {
                Some(h) if h.elapsed() < lease => {
                    if t0.elapsed() > Duration::from_secs(10) {
                        bail!("a leader of {group} is still heard from; not forcing");
                    }
                    tokio::time::sleep(lease - h.elapsed()).await;
                }
                _ => break,
            }
        }
    }
    let waited = t0.elapsed();
    // Asked to lead: a pause left by an earlier switchover away from this node ends here.
    if let Some(f) = node.fences.get(group) {
        f.resume();
    }
    let mut m = g.raft().metrics();
    // A vote is refused while the voters' lease of the current leader runs (openraft: until
    // election_timeout_max after they last heard it, or after it was elected): stand again
    // every 150 ms, for at most about 2 s.
    for _ in 0..14 {
        if m.borrow().state == ServerState::Leader {
            break;
        }
        g.raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| anyhow!("election: {e}"))?;
        let until = tokio::time::Instant::now() + Duration::from_millis(150);
        while m.borrow().state != ServerState::Leader {
            if tokio::time::timeout_at(until, m.changed()).await.is_err() {
                break;
            }
        }
    }
    let term = {
        let x = m.borrow();
        if x.state != ServerState::Leader {
            bail!(
                "node {} did not win the election in {group} (leader: {:?}); a quorum must agree",
                node.node_id,
                x.current_leader
            );
        }
        x.current_term
    };
    // Wait until the fencing controller holds the group (it commits the acquisition).
    if node.fences.contains_key(group) {
        let mut s = g.serving();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while s.borrow_and_update().is_none() {
            if tokio::time::timeout_at(until, s.changed()).await.is_err() {
                bail!(
                    "node {} leads {group} but did not take its address within 5 s",
                    node.node_id
                );
            }
        }
    }
    Ok((term, waited))
}

/// On a group's preferred master: when another node leads the group and this node has
/// followed, caught up, for `after`, ask the master to switch over back to this node.
pub async fn failback(
    node: Arc<NodeShared>,
    group: String,
    tls: Option<TlsMaterial>,
    after: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(g) = node.group(&group).cloned() else {
        return;
    };
    let mut healthy_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let st = g.status();
        let caught_up = st.state == "follower"
            && st.leader.is_some_and(|l| l != node.node_id)
            && st.applied_index.unwrap_or(0) >= st.commit_index
            && st.last_log_index.unwrap_or(0) <= st.commit_index + 16;
        if !caught_up {
            healthy_since = None;
            continue;
        }
        let since = *healthy_since.get_or_insert_with(Instant::now);
        if since.elapsed() < after {
            continue;
        }
        let Some(addr) = g.leader_elsewhere() else {
            continue;
        };
        let r = async {
            let admin = Admin::connect(&addr, tls.clone()).await?;
            admin.failover(&group, Some(node.node_id), None).await
        }
        .await;
        match r {
            Ok(v) => {
                tracing::info!(group = %group, from = v.from, term = v.term, window_ms = v.window_ms, "failback to the preferred master done")
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "failback to the preferred master failed; will retry")
            }
        }
        healthy_since = None;
    }
}
