//! The job controller: on the master of a resource group, runs the queue.
//!
//! It reads due recipients from the group's applied queue (the replicated state, so a new
//! master simply continues where the old one stopped), delivers them through their channel
//! and records every outcome with a proposal. Local delivery is a `Deliver` command, which
//! apply makes idempotent per (queue id, recipient): a delivery proposed twice — by a master
//! that lost its lease after proposing and by its successor — stores one message.
//!
//! It wakes up on the change feed (new entries) and once a second (retries). It stops
//! working as soon as this node stops leading the group; proposals it still has in flight
//! then fail with `NotLeader` or commit harmlessly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use halyard_directory::{Directory, Resolution};

use halyard_raft_store::{
    ApplyError, Command, Event, Group, ProposeError, QueueEntry, RecipientSpec, RecipientState,
    Reply,
};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::MtaConfig;
use crate::rewrite::{ChannelConfig, ChannelKind};

/// At most this many deliveries in flight per group.
const MAX_IN_FLIGHT: usize = 64;
/// How often the whole queue is read (retries coming due, missed events).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(5);

/// Delay before retry `n` (1-based): 15 min doubling up to 4 h, as MTAs usually do.
pub fn retry_delay(attempt: u32) -> Duration {
    let mins = 15u64 << attempt.saturating_sub(1).min(4);
    Duration::from_secs(mins.min(240) * 60)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the job controller of `group` until `stop`.
pub async fn run(
    name: String,
    group: Group,
    node_id: u64,
    directory: Arc<dyn Directory>,
    relay: Arc<crate::outbound::relay::Relay>,
    cfg: MtaConfig,
    mut stop: watch::Receiver<bool>,
) {
    // The job controller runs while this node holds the group's lease (see halyard-fencing):
    // being the Raft leader is not enough, since a leader cut off from its quorum still
    // believes it leads until it hears of a newer term, and a relay attempt it made then
    // would be repeated by the new master.
    let mut serving = group.serving();
    loop {
        // Wait to be the master.
        loop {
            if *stop.borrow() {
                return;
            }
            if serving
                .borrow_and_update()
                .is_some_and(|t| t.node == node_id)
            {
                break;
            }
            tokio::select! {
                r = serving.changed() => if r.is_err() { return },
                _ = stop.changed() => {}
            }
        }
        let term = serving.borrow().map_or(0, |t| t.term);
        tracing::info!(group = %name, term, "job controller running (this node is the master)");
        let mut feed = group.subscribe();
        let mut in_flight: HashSet<(String, String)> = HashSet::new();
        let mut jobs: JoinSet<((String, String), bool)> = JoinSet::new();
        // Work is found from the change feed (entries enqueued or updated: point reads) and
        // by a full scan of the queue every few seconds (retries coming due, anything the
        // feed dropped), not by rescanning the whole queue at every event.
        let mut full_scan_at = tokio::time::Instant::now();
        let mut fresh: Vec<String> = Vec::new();
        loop {
            if !serving
                .borrow()
                .is_some_and(|t| t.node == node_id && t.term == term)
                || *stop.borrow()
            {
                break;
            }
            let reader = group.reader();
            let entries: Vec<QueueEntry> = if tokio::time::Instant::now() >= full_scan_at {
                full_scan_at = tokio::time::Instant::now() + FULL_SCAN_EVERY;
                fresh.clear();
                reader.queue().unwrap_or_default()
            } else {
                fresh.sort();
                fresh.dedup();
                std::mem::take(&mut fresh)
                    .into_iter()
                    .filter_map(|id| reader.queue_entry(&id).ok().flatten())
                    .collect()
            };
            let deferred = schedule(&entries, &group, &relay, &cfg, &mut in_flight, &mut jobs);
            fresh.extend(deferred);
            reports(
                &entries,
                &name,
                &group,
                &directory,
                &cfg,
                &mut in_flight,
                &mut jobs,
            );
            tokio::select! {
                ev = feed.recv() => {
                    let mut next = Some(ev);
                    // Take everything already waiting (bounded) before working.
                    for _ in 0..4096 {
                        match next.take() {
                            Some(Ok(c)) => match &c.event {
                                Event::Enqueued { queue_id } | Event::QueueUpdated { queue_id } => {
                                    fresh.push(queue_id.clone());
                                }
                                Event::SnapshotInstalled => full_scan_at = tokio::time::Instant::now(),
                                _ => {}
                            },
                            Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                                full_scan_at = tokio::time::Instant::now();
                            }
                            Some(Err(broadcast::error::RecvError::Closed)) => return,
                            None => {}
                        }
                        match feed.try_recv() {
                            Ok(c) => next = Some(Ok(c)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                next = Some(Err(broadcast::error::RecvError::Lagged(n)));
                            }
                            Err(_) => break,
                        }
                    }
                }
                Some(done) = jobs.join_next() => {
                    let mut done = Some(done);
                    while let Some(d) = done.take() {
                        if let Ok((key, _)) = d {
                            in_flight.remove(&key);
                            fresh.push(key.0);
                        }
                        done = jobs.try_join_next();
                    }
                }
                _ = tokio::time::sleep_until(full_scan_at) => {}
                r = serving.changed() => if r.is_err() { return },
                _ = stop.changed() => {}
            }
        }
        // Mastership lost (or stopping): abandon what is in flight; the new master
        // continues from the replicated queue.
        jobs.abort_all();
        tracing::info!(group = %name, term, "job controller stopped (no longer the master)");
    }
}

/// Starts deliveries for due recipients of `entries` not already in flight; returns the
/// ids of entries left for later because too many deliveries are in flight.
fn schedule(
    entries: &[QueueEntry],
    group: &Group,
    relay: &Arc<crate::outbound::relay::Relay>,
    cfg: &MtaConfig,
    in_flight: &mut HashSet<(String, String)>,
    jobs: &mut JoinSet<((String, String), bool)>,
) -> Vec<String> {
    let now = now_ms();
    let mut deferred = Vec::new();
    let mut due: Vec<(&QueueEntry, usize)> = Vec::new();
    for e in entries {
        for (i, r) in e.recipients.iter().enumerate() {
            if r.state == RecipientState::Pending && r.next_attempt_ms <= now {
                due.push((e, i));
            }
        }
    }
    // Priority, then first attempts before retries, then the oldest first.
    due.sort_by_key(|(e, i)| (e.priority, e.recipients[*i].attempts > 0, e.received_at_ms));
    for (e, i) in due {
        if in_flight.len() >= MAX_IN_FLIGHT {
            deferred.push(e.queue_id.clone());
            continue;
        }
        let r = &e.recipients[i];
        if r.spec.channel != "store" {
            let name = r.spec.channel.clone();
            let chan = cfg.channels.iter().find(|c| c.name == name).cloned();
            // One job per (entry, channel, batch): a domain for SMTP, the whole entry for
            // LMTP, a recipient for pipe and discard.
            let batch = match chan.as_ref().map(|c| c.kind) {
                _ if name.starts_with(crate::outbound::handover::PREFIX) => Batch::All,
                None | Some(ChannelKind::Smtp) => Batch::Domain(domain_of(&r.spec.address)),
                Some(ChannelKind::Lmtp) => Batch::All,
                Some(_) => Batch::One(r.spec.address.clone()),
            };
            let key = (e.queue_id.clone(), format!("{name}|{}", batch.label()));
            if in_flight.contains(&key) {
                continue;
            }
            let limit = chan
                .as_ref()
                .and_then(|c| c.max_jobs)
                .unwrap_or(MAX_IN_FLIGHT);
            let running = in_flight
                .iter()
                .filter(|(_, k)| k.starts_with(&format!("{name}|")))
                .count();
            if running >= limit {
                deferred.push(e.queue_id.clone());
                continue;
            }
            in_flight.insert(key.clone());
            let (group, relay, entry) = (group.clone(), relay.clone(), e.clone());
            jobs.spawn(async move {
                let ok = channel_entry(&group, &relay, chan.as_ref(), &entry, &name, &batch).await;
                (key, ok)
            });
            continue;
        }
        let key = (e.queue_id.clone(), r.spec.address.clone());
        if !in_flight.insert(key.clone()) {
            continue;
        }
        let group = group.clone();
        let entry_expires = e.expires_at_ms;
        let attempts = r.attempts;
        let channel = r.spec.channel.clone();
        let received = e.received_at_ms;
        let grace = Duration::from_secs(cfg.quota_grace_secs);
        jobs.spawn(async move {
            let ok = deliver(
                &group,
                &key.0,
                &key.1,
                &channel,
                received,
                entry_expires,
                attempts,
                grace,
            )
            .await;
            (key, ok)
        });
    }
    deferred
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Which recipients of an entry one channel job takes.
enum Batch {
    Domain(String),
    All,
    One(String),
}

impl Batch {
    fn label(&self) -> String {
        match self {
            Batch::Domain(d) => format!("@{d}"),
            Batch::All => "*".into(),
            Batch::One(a) => a.clone(),
        }
    }
    fn takes(&self, address: &str) -> bool {
        match self {
            Batch::Domain(d) => domain_of(address) == *d,
            Batch::All => true,
            Batch::One(a) => a == address,
        }
    }
}

/// Delivery through a pipe channel: the program's exit status decides.
async fn pipe(
    chan: &ChannelConfig,
    entry: &QueueEntry,
    recipient: &str,
    body: &[u8],
) -> crate::outbound::relay::Outcome {
    use crate::outbound::relay::Outcome;
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(&chan.command[0]);
    cmd.args(&chan.command[1..])
        .env("SENDER", &entry.mail_from)
        .env("RECIPIENT", recipient)
        .env("QUEUE_ID", &entry.queue_id)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Temporary(format!("4.3.0 cannot run {}: {e}", chan.command[0])),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body).await;
    }
    match tokio::time::timeout(Duration::from_secs(600), child.wait_with_output()).await {
        Ok(Ok(out)) => match out.status.code() {
            Some(0) => Outcome::Delivered(format!("piped to {}", chan.command[0])),
            Some(75) => Outcome::Temporary(format!("4.3.0 {} asked to retry", chan.command[0])),
            code => Outcome::Permanent(
                550,
                format!(
                    "5.3.0 {} exited with {code:?}: {}",
                    chan.command[0],
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ),
        },
        Ok(Err(e)) => Outcome::Temporary(format!("4.3.0 {}: {e}", chan.command[0])),
        Err(_) => Outcome::Temporary(format!("4.4.2 {} timed out", chan.command[0])),
    }
}

/// Delivers `entry`'s due recipients on channel `name` (in `batch`) and records each
/// outcome. `chan` is the channel's configuration (`None`: the built-in MX relay).
async fn channel_entry(
    group: &Group,
    relay: &crate::outbound::relay::Relay,
    chan: Option<&ChannelConfig>,
    entry: &QueueEntry,
    name: &str,
    batch: &Batch,
) -> bool {
    use crate::outbound::relay::{Outcome, Outgoing};
    let now = now_ms();
    let rcpts: Vec<_> = entry
        .recipients
        .iter()
        .filter(|r| {
            r.spec.channel == name
                && r.state == RecipientState::Pending
                && r.next_attempt_ms <= now
                && batch.takes(&r.spec.address)
        })
        .collect();
    if rcpts.is_empty() {
        return true;
    }
    let body = match group.reader().body(&entry.body) {
        Ok(Some(b)) => b,
        _ => return false,
    };
    let out = Outgoing {
        from: &entry.mail_from,
        params: &entry.params,
        rcpts: rcpts.iter().map(|r| &r.spec).collect(),
        body: &body,
    };
    let too_big = chan
        .and_then(|c| c.max_message_bytes)
        .is_some_and(|m| body.len() as u64 > m);
    let outcomes: Vec<Outcome> = if let Some(target) =
        name.strip_prefix(crate::outbound::handover::PREFIX)
    {
        let specs: Vec<&RecipientSpec> = rcpts.iter().map(|r| &r.spec).collect();
        crate::outbound::handover::hand_over(relay.handover.get(), target, entry, &specs, &body)
            .await
    } else if too_big {
        vec![
            Outcome::Permanent(552, format!("5.3.4 message too big for channel {name}"));
            rcpts.len()
        ]
    } else {
        match chan {
            None => {
                relay
                    .send(&domain_of(&rcpts[0].spec.address), None, None, &out)
                    .await
            }
            Some(c) => match c.kind {
                ChannelKind::Smtp => {
                    relay
                        .send(
                            &domain_of(&rcpts[0].spec.address),
                            c.host.as_deref(),
                            relay.verifier(&c.name),
                            &out,
                        )
                        .await
                }
                ChannelKind::Lmtp => relay.lmtp(c.host.as_deref().unwrap_or(""), &out).await,
                ChannelKind::Pipe => {
                    let mut v = Vec::new();
                    for r in &rcpts {
                        v.push(pipe(c, entry, &r.spec.address, &body).await);
                    }
                    v
                }
                ChannelKind::Discard => {
                    vec![Outcome::Delivered(format!("discarded by channel {name}")); rcpts.len()]
                }
            },
        }
    };
    let retry = |attempt: u32| -> Duration {
        match chan.map(|c| &c.retry_minutes) {
            Some(m) if !m.is_empty() => {
                let i = (attempt.saturating_sub(1) as usize).min(m.len() - 1);
                Duration::from_secs(m[i] * 60)
            }
            _ => retry_delay(attempt),
        }
    };
    let now = now_ms();
    for (r, o) in rcpts.iter().zip(outcomes) {
        let (state, next, error) = match o {
            Outcome::Delivered(detail) => {
                tracing::info!(queue_id = %entry.queue_id, recipient = %r.spec.address, %detail, "relayed");
                (RecipientState::Delivered { detail }, now, None)
            }
            Outcome::Permanent(code, detail) => {
                tracing::info!(queue_id = %entry.queue_id, recipient = %r.spec.address, %detail, "relay failed");
                (RecipientState::Failed { code, detail }, now, None)
            }
            Outcome::Temporary(why) if now >= entry.expires_at_ms => (
                RecipientState::Failed {
                    code: 550,
                    detail: format!("5.4.7 gave up after the queue lifetime; last error: {why}"),
                },
                now,
                Some(why),
            ),
            Outcome::Temporary(why) => {
                tracing::info!(queue_id = %entry.queue_id, recipient = %r.spec.address, error = %why, "relay deferred");
                (
                    RecipientState::Pending,
                    now + retry(r.attempts + 1).as_millis() as i64,
                    Some(why),
                )
            }
        };
        let cmd = Command::UpdateRecipient {
            queue_id: entry.queue_id.clone(),
            recipient: r.spec.address.clone(),
            state,
            next_attempt_ms: next,
            error,
        };
        if group.propose(cmd).await.is_err() {
            return false;
        }
    }
    true
}

/// Starts a report job for every entry owing delivery status notifications.
#[allow(clippy::too_many_arguments)]
fn reports(
    entries: &[QueueEntry],
    name: &str,
    group: &Group,
    directory: &Arc<dyn Directory>,
    cfg: &MtaConfig,
    in_flight: &mut HashSet<(String, String)>,
    jobs: &mut JoinSet<((String, String), bool)>,
) {
    let now = now_ms();
    let delay_after = i64::try_from(cfg.delay_notice_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    for e in entries {
        let outcome = e.recipients.iter().any(|r| r.needs_dsn(&e.mail_from));
        // Delay reports: recipients still being retried (at least one attempt failed) a
        // while after the message was accepted.
        let delayed = cfg.delay_notice_secs > 0
            && now.saturating_sub(e.received_at_ms) >= delay_after
            && e.recipients
                .iter()
                .any(|r| r.attempts > 0 && r.wants_delay_dsn(&e.mail_from));
        for (wanted, delay, label) in [(outcome, false, "#dsn"), (delayed, true, "#delay")] {
            if !wanted {
                continue;
            }
            let key = (e.queue_id.clone(), label.to_string());
            if in_flight.len() >= MAX_IN_FLIGHT || !in_flight.insert(key.clone()) {
                continue;
            }
            let (group, directory, e) = (group.clone(), directory.clone(), e.clone());
            let (name, hostname) = (name.to_string(), cfg.hostname.clone());
            jobs.spawn(async move {
                let ok = report(&name, &group, directory.as_ref(), &hostname, &e, delay).await;
                (key, ok)
            });
        }
    }
}

/// Builds and queues the report for `e`'s recipients that need one: their final outcome,
/// or (`delay`) that they are still being retried.
async fn report(
    name: &str,
    group: &Group,
    directory: &dyn Directory,
    hostname: &str,
    e: &QueueEntry,
    delay: bool,
) -> bool {
    let rcpts: Vec<_> = e
        .recipients
        .iter()
        .filter(|r| {
            if delay {
                r.attempts > 0 && r.wants_delay_dsn(&e.mail_from)
            } else {
                r.needs_dsn(&e.mail_from)
            }
        })
        .collect();
    // Where the report goes: the sender's mailbox when it lives in this group, else onward.
    let (address, channel) = match directory.resolve(&e.mail_from).await {
        Ok(Resolution::User { user, .. })
            if user.mail_host.as_deref().is_none_or(|g| g == name) =>
        {
            (user.mail, "store")
        }
        Ok(_) => (e.mail_from.clone(), "smtp"),
        Err(_) => return false,
    };
    let original = match group.reader().body(&e.body) {
        Ok(Some(b)) => b,
        _ => return false,
    };
    let now = now_ms();
    let body = super::dsn::build(e, &rcpts, &original, hostname, now);
    let meta = halyard_raft_store::mime::message_meta(&body);
    // One report per batch of outcomes: the count of those already reported tells them apart.
    let dsn_id = if delay {
        let done = e.recipients.iter().filter(|r| r.delay_notified).count();
        format!("{}.W{done}", e.queue_id)
    } else {
        let done = e.recipients.iter().filter(|r| r.notified).count();
        format!("{}.D{done}", e.queue_id)
    };
    let cmd = Command::ReportDsn {
        queue_id: e.queue_id.clone(),
        recipients: rcpts.iter().map(|r| r.spec.address.clone()).collect(),
        dsn: Box::new(Command::Enqueue {
            queue_id: dsn_id.clone(),
            mail_from: String::new(),
            params: Default::default(),
            recipients: vec![halyard_raft_store::RecipientSpec {
                address,
                orcpt: None,
                notify: vec![],
                channel: channel.into(),
            }],
            partition: e.body.partition.clone(),
            body: body.into(),
            received_at_ms: now,
            expires_at_ms: now + (e.expires_at_ms - e.received_at_ms).max(86_400_000),
            priority: halyard_raft_store::PRIORITY_NOTIFICATION,
            meta: Some(meta),
        }),
        delay,
    };
    match group.propose(cmd).await {
        Ok(Reply::Error(err)) => {
            tracing::warn!(queue_id = %e.queue_id, error = %err, "delivery report refused");
            false
        }
        Ok(_) => {
            tracing::info!(queue_id = %e.queue_id, dsn = %dsn_id, to = %e.mail_from, "delivery report queued");
            true
        }
        Err(_) => false,
    }
}

/// One delivery attempt and the proposal recording its outcome; false if it must be
/// tried again later (or by another master). A mailbox that stays full for longer than
/// `quota_grace` fails the recipient (552 5.2.2, reported by DSN).
#[allow(clippy::too_many_arguments)]
async fn deliver(
    group: &Group,
    queue_id: &str,
    recipient: &str,
    channel: &str,
    received_ms: i64,
    expires_ms: i64,
    attempts: u32,
    quota_grace: Duration,
) -> bool {
    let outcome: Result<(), String> = match channel {
        "store" => {
            let cmd = Command::Deliver {
                queue_id: queue_id.into(),
                recipient: recipient.into(),
                user: recipient.into(),
                mailbox: halyard_raft_store::INBOX.into(),
                flags: vec![],
                internal_date_ms: received_ms,
                uidvalidity_if_created: (received_ms / 1000).clamp(1, u32::MAX as i64) as u32,
            };
            match group.propose(cmd).await {
                Ok(Reply::Delivered { uid, duplicate, .. }) => {
                    tracing::info!(
                        queue_id,
                        recipient,
                        uid,
                        duplicate,
                        "delivered to the store"
                    );
                    return true;
                }
                Ok(Reply::Error(ApplyError::OverQuota)) => Err("4.2.2 mailbox full".to_string()),
                Ok(Reply::Error(ApplyError::NoSuchQueueEntry(_))) => return true,
                Ok(other) => Err(format!("4.3.0 store refused: {other:?}")),
                Err(ProposeError::NotLeader { .. }) => return false,
                Err(e) => {
                    tracing::warn!(queue_id, recipient, error = %e, "delivery outcome unknown");
                    return false;
                }
            }
        }
        other => Err(format!(
            "4.3.5 channel {other} is not available on this server"
        )),
    };
    let Err(why) = outcome else { return true };
    let now = now_ms();
    let full_for_too_long =
        why.starts_with("4.2.2") && now - received_ms >= quota_grace.as_millis() as i64;
    let (state, next) = if full_for_too_long {
        (
            RecipientState::Failed {
                code: 552,
                detail: "5.2.2 mailbox full for longer than the grace period".into(),
            },
            now,
        )
    } else if now >= expires_ms {
        (
            RecipientState::Failed {
                code: 550,
                detail: format!("5.4.7 gave up after the queue lifetime; last error: {why}"),
            },
            now,
        )
    } else {
        (
            RecipientState::Pending,
            now + retry_delay(attempts + 1).as_millis() as i64,
        )
    };
    tracing::info!(queue_id, recipient, error = %why, ?state, "delivery deferred or failed");
    let _ = group
        .propose(Command::UpdateRecipient {
            queue_id: queue_id.into(),
            recipient: recipient.into(),
            state,
            next_attempt_ms: next,
            error: Some(why),
        })
        .await;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule() {
        let m = |n| retry_delay(n).as_secs() / 60;
        assert_eq!(
            [m(1), m(2), m(3), m(4), m(5), m(6), m(20)],
            [15, 30, 60, 120, 240, 240, 240]
        );
    }
}
