//! The admin API's own types, as Rust code uses them, and their protobuf forms.
//!
//! Each type here is what a caller of [`crate::Admin`] gets back; it derives serde so that
//! `halyard ctl --json` prints it (the JSON shapes predate the typed API and are kept
//! as they were). The conversions to and from [`crate::pb`] are the only place that knows
//! both forms; a protobuf message that lacks a required part (an unspecified role, a holder
//! record without its token) is refused with an error naming it, never filled in.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use halyard_directory::Resolution;
use halyard_fencing::FenceStatus;
use halyard_raft_store::{FenceToken, GroupStatus, HolderRecord, MemberStatus, Role};
use serde::{Deserialize, Serialize};

use crate::pb;

/// Everything `ctl status` reports about a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub addr: String,
    pub groups: Vec<GroupStatus>,
    /// Floating address, holder and lease of each group this node may lead.
    #[serde(default)]
    pub fencing: BTreeMap<String, FenceStatus>,
    /// WAL syncs of the shared Raft log since start.
    pub log_syncs: u64,
    /// Log entries made durable by those syncs.
    pub log_entries_synced: u64,
}

/// A group's applied state in one string: equal on replicas at equal applied indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub applied_index: u64,
    /// The applied index did not move while the digest was computed.
    pub stable: bool,
    pub digest: String,
    /// Stored bodies (one per distinct message content and partition).
    pub bodies: u64,
}

/// One message of a mailbox, as the tests and `ctl` compare them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    pub uid: u32,
    pub modseq: u64,
    pub size: u64,
    pub flags: Vec<String>,
}

/// A user as `ctl user show` prints it: stored settings and effective values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub address: String,
    pub login: String,
    pub status: String,
    pub aliases: Vec<String>,
    pub forwarding: Vec<String>,
    pub delivery_options: Vec<String>,
    /// Own override, if any.
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
    /// Override or the domain's default.
    pub effective_quota_bytes: Option<u64>,
    pub effective_quota_messages: Option<u64>,
    pub mail_host: Option<String>,
}

/// What a switchover reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverReport {
    pub group: String,
    pub from: u64,
    pub to: u64,
    pub term: u64,
    /// From closing the listeners to the new master's acquisition being known here.
    pub window_ms: f64,
    /// Part of the window spent letting transactions in progress finish.
    pub drain_ms: f64,
    pub address: Option<String>,
}

/// What an election stood for by request (`ctl failover --force`, the switchover's target)
/// reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElectReport {
    pub group: String,
    pub leader: u64,
    pub term: u64,
    pub waited_for_lease_ms: f64,
}

/// What an address is, and which directory said so.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    /// "ldap" or "embedded".
    pub directory: String,
    pub resolution: Resolution,
}

fn role_to_pb(r: Role) -> pb::Role {
    match r {
        Role::Voter => pb::Role::Voter,
        Role::Learner => pb::Role::Learner,
    }
}

fn role_from_pb(r: i32) -> Result<Role> {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Voter) => Ok(Role::Voter),
        Ok(pb::Role::Learner) => Ok(Role::Learner),
        _ => Err(anyhow!("member status: role {r} is not voter or learner")),
    }
}

fn token_to_pb(t: FenceToken) -> pb::FenceToken {
    pb::FenceToken {
        term: t.term,
        node: t.node,
    }
}

fn token_from_pb(t: pb::FenceToken) -> FenceToken {
    FenceToken {
        term: t.term,
        node: t.node,
    }
}

fn holder_to_pb(h: HolderRecord) -> pb::HolderRecord {
    pb::HolderRecord {
        token: Some(token_to_pb(h.token)),
        address: h.address,
        acquired_at_ms: h.acquired_at_ms,
        released_at_ms: h.released_at_ms,
        release_reason: h.release_reason,
    }
}

fn holder_from_pb(h: pb::HolderRecord) -> Result<HolderRecord> {
    Ok(HolderRecord {
        token: token_from_pb(
            h.token
                .ok_or_else(|| anyhow!("fence status: holder record without a token"))?,
        ),
        address: h.address,
        acquired_at_ms: h.acquired_at_ms,
        released_at_ms: h.released_at_ms,
        release_reason: h.release_reason,
    })
}

fn fence_to_pb(f: FenceStatus) -> pb::FenceStatus {
    pb::FenceStatus {
        address: f.address,
        holding: f.holding.map(token_to_pb),
        lease_left_ms: f.lease_left_ms,
        recorded: f.recorded.map(holder_to_pb),
        paused: f.paused,
        expiries: f.expiries,
    }
}

fn fence_from_pb(f: pb::FenceStatus) -> Result<FenceStatus> {
    Ok(FenceStatus {
        address: f.address,
        holding: f.holding.map(token_from_pb),
        lease_left_ms: f.lease_left_ms,
        recorded: f.recorded.map(holder_from_pb).transpose()?,
        paused: f.paused,
        expiries: f.expiries,
    })
}

fn group_to_pb(g: GroupStatus) -> pb::GroupStatus {
    pb::GroupStatus {
        name: g.name,
        node_id: g.node_id,
        state: g.state,
        leader: g.leader,
        term: g.term,
        last_log_index: g.last_log_index,
        commit_index: g.commit_index,
        applied_index: g.applied_index,
        snapshot_index: g.snapshot_index,
        purged_index: g.purged_index,
        millis_since_quorum_ack: g.millis_since_quorum_ack,
        members: g
            .members
            .into_iter()
            .map(|m| pb::MemberStatus {
                id: m.id,
                addr: m.addr,
                role: role_to_pb(m.role) as i32,
                matched_index: m.matched_index,
                lag: m.lag,
            })
            .collect(),
    }
}

fn group_from_pb(g: pb::GroupStatus) -> Result<GroupStatus> {
    Ok(GroupStatus {
        name: g.name,
        node_id: g.node_id,
        state: g.state,
        leader: g.leader,
        term: g.term,
        last_log_index: g.last_log_index,
        commit_index: g.commit_index,
        applied_index: g.applied_index,
        snapshot_index: g.snapshot_index,
        purged_index: g.purged_index,
        millis_since_quorum_ack: g.millis_since_quorum_ack,
        members: g
            .members
            .into_iter()
            .map(|m| {
                Ok(MemberStatus {
                    id: m.id,
                    addr: m.addr,
                    role: role_from_pb(m.role)?,
                    matched_index: m.matched_index,
                    lag: m.lag,
                })
            })
            .collect::<Result<_>>()?,
    })
}

impl From<NodeStatus> for pb::NodeStatus {
    fn from(s: NodeStatus) -> Self {
        pb::NodeStatus {
            node_id: s.node_id,
            addr: s.addr,
            groups: s.groups.into_iter().map(group_to_pb).collect(),
            fencing: s
                .fencing
                .into_iter()
                .map(|(k, f)| (k, fence_to_pb(f)))
                .collect(),
            log_syncs: s.log_syncs,
            log_entries_synced: s.log_entries_synced,
        }
    }
}

impl TryFrom<pb::NodeStatus> for NodeStatus {
    type Error = anyhow::Error;
    fn try_from(s: pb::NodeStatus) -> Result<Self> {
        Ok(NodeStatus {
            node_id: s.node_id,
            addr: s.addr,
            groups: s
                .groups
                .into_iter()
                .map(group_from_pb)
                .collect::<Result<_>>()?,
            fencing: s
                .fencing
                .into_iter()
                .map(|(k, f)| Ok((k, fence_from_pb(f)?)))
                .collect::<Result<_>>()?,
            log_syncs: s.log_syncs,
            log_entries_synced: s.log_entries_synced,
        })
    }
}

impl From<Digest> for pb::DigestReply {
    fn from(d: Digest) -> Self {
        pb::DigestReply {
            applied_index: d.applied_index,
            stable: d.stable,
            digest: d.digest,
            bodies: d.bodies,
        }
    }
}

impl From<pb::DigestReply> for Digest {
    fn from(d: pb::DigestReply) -> Self {
        Digest {
            applied_index: d.applied_index,
            stable: d.stable,
            digest: d.digest,
            bodies: d.bodies,
        }
    }
}

impl From<MessageSummary> for pb::MessageSummary {
    fn from(m: MessageSummary) -> Self {
        pb::MessageSummary {
            uid: m.uid,
            modseq: m.modseq,
            size: m.size,
            flags: m.flags,
        }
    }
}

impl From<pb::MessageSummary> for MessageSummary {
    fn from(m: pb::MessageSummary) -> Self {
        MessageSummary {
            uid: m.uid,
            modseq: m.modseq,
            size: m.size,
            flags: m.flags,
        }
    }
}

impl From<UserView> for pb::UserView {
    fn from(u: UserView) -> Self {
        pb::UserView {
            address: u.address,
            login: u.login,
            status: u.status,
            aliases: u.aliases,
            forwarding: u.forwarding,
            delivery_options: u.delivery_options,
            quota_bytes: u.quota_bytes,
            quota_messages: u.quota_messages,
            effective_quota_bytes: u.effective_quota_bytes,
            effective_quota_messages: u.effective_quota_messages,
            mail_host: u.mail_host,
        }
    }
}

impl From<pb::UserView> for UserView {
    fn from(u: pb::UserView) -> Self {
        UserView {
            address: u.address,
            login: u.login,
            status: u.status,
            aliases: u.aliases,
            forwarding: u.forwarding,
            delivery_options: u.delivery_options,
            quota_bytes: u.quota_bytes,
            quota_messages: u.quota_messages,
            effective_quota_bytes: u.effective_quota_bytes,
            effective_quota_messages: u.effective_quota_messages,
            mail_host: u.mail_host,
        }
    }
}

impl From<FailoverReport> for pb::FailoverReport {
    fn from(r: FailoverReport) -> Self {
        pb::FailoverReport {
            group: r.group,
            from: r.from,
            to: r.to,
            term: r.term,
            window_ms: r.window_ms,
            drain_ms: r.drain_ms,
            address: r.address,
        }
    }
}

impl From<pb::FailoverReport> for FailoverReport {
    fn from(r: pb::FailoverReport) -> Self {
        FailoverReport {
            group: r.group,
            from: r.from,
            to: r.to,
            term: r.term,
            window_ms: r.window_ms,
            drain_ms: r.drain_ms,
            address: r.address,
        }
    }
}

impl From<ElectReport> for pb::ElectReport {
    fn from(r: ElectReport) -> Self {
        pb::ElectReport {
            group: r.group,
            leader: r.leader,
            term: r.term,
            waited_for_lease_ms: r.waited_for_lease_ms,
        }
    }
}

impl From<pb::ElectReport> for ElectReport {
    fn from(r: pb::ElectReport) -> Self {
        ElectReport {
            group: r.group,
            leader: r.leader,
            term: r.term,
            waited_for_lease_ms: r.waited_for_lease_ms,
        }
    }
}

/// The bincode records of a [`pb::Records`] reply, each the encoding of `T`.
pub fn records_to_pb<T: Serialize>(items: &[T]) -> Result<pb::Records> {
    Ok(pb::Records {
        records: items
            .iter()
            .map(bincode::serialize)
            .collect::<Result<_, _>>()?,
    })
}

/// Decodes a [`pb::Records`] reply; `what` names the record type in errors.
pub fn records_from_pb<T: serde::de::DeserializeOwned>(
    r: pb::Records,
    what: &str,
) -> Result<Vec<T>> {
    r.records
        .iter()
        .map(|b| bincode::deserialize(b).map_err(|e| anyhow!("decoding a {what} record: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_status() -> NodeStatus {
        let mut fencing = BTreeMap::new();
        fencing.insert(
            "g1".to_string(),
            FenceStatus {
                address: Some("198.18.0.100/24".into()),
                holding: Some(FenceToken { term: 7, node: 2 }),
                lease_left_ms: Some(1800),
                recorded: Some(HolderRecord {
                    token: FenceToken { term: 7, node: 2 },
                    address: Some("198.18.0.100/24".into()),
                    acquired_at_ms: 1_700_000_000_000,
                    released_at_ms: None,
                    release_reason: Some("switchover".into()),
                }),
                paused: true,
                expiries: 3,
            },
        );
        NodeStatus {
            node_id: 2,
            addr: "127.0.0.1:7702".into(),
            groups: vec![GroupStatus {
                name: "g1".into(),
                node_id: 2,
                state: "leader".into(),
                leader: Some(2),
                term: 7,
                last_log_index: Some(41),
                commit_index: 41,
                applied_index: Some(41),
                snapshot_index: None,
                purged_index: Some(0),
                millis_since_quorum_ack: Some(12),
                members: vec![
                    MemberStatus {
                        id: 1,
                        addr: "127.0.0.1:7701".into(),
                        role: Role::Voter,
                        matched_index: Some(40),
                        lag: Some(1),
                    },
                    MemberStatus {
                        id: 4,
                        addr: "127.0.0.1:7704".into(),
                        role: Role::Learner,
                        matched_index: None,
                        lag: None,
                    },
                ],
            }],
            fencing,
            log_syncs: 9,
            log_entries_synced: 30,
        }
    }

    /// The typed status survives the protobuf round trip field for field: what `ctl status
    /// --json` prints is the JSON of the decoded value, so any field lost here would change
    /// the operator's output.
    #[test]
    fn status_round_trips_through_protobuf() {
        let s = sample_status();
        let back = NodeStatus::try_from(pb::NodeStatus::from(s.clone())).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&back).unwrap()
        );
    }

    #[test]
    fn incomplete_messages_are_refused() {
        let mut p = pb::NodeStatus::from(sample_status());
        p.groups[0].members[0].role = pb::Role::Unspecified as i32;
        let e = NodeStatus::try_from(p).unwrap_err().to_string();
        assert!(e.contains("role"), "{e}");
        let mut p = pb::NodeStatus::from(sample_status());
        p.fencing
            .get_mut("g1")
            .unwrap()
            .recorded
            .as_mut()
            .unwrap()
            .token = None;
        let e = NodeStatus::try_from(p).unwrap_err().to_string();
        assert!(e.contains("without a token"), "{e}");
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let names = vec!["INBOX".to_string(), "Sent".to_string()];
        let back: Vec<String> = records_from_pb(records_to_pb(&names).unwrap(), "name").unwrap();
        assert_eq!(back, names);
        let bad = pb::Records {
            records: vec![vec![0xff; 3]],
        };
        let e = records_from_pb::<String>(bad, "name")
            .unwrap_err()
            .to_string();
        assert!(e.contains("decoding a name record"), "{e}");
    }

    /// `ctl queue list --json` prints each entry as a JSON value. Before the API was typed the
    /// entry reached `ctl` as JSON text; now it arrives as bincode. Both paths must give the
    /// same value for an entry with every field set (MIME metadata, every recipient state,
    /// DSN parameters), or the operator's output would change.
    #[test]
    fn queue_entries_print_the_same_through_records_as_through_json() {
        use halyard_raft_store::{
            BodyRef, QueueEntry, RecipientRecord, RecipientSpec, RecipientState, mime,
        };
        let raw = b"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nDate: Tue, 25 Mar 2025 10:00:00 +0300\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n";
        let states = [
            RecipientState::Pending,
            RecipientState::Delivered {
                detail: "250 2.0.0 ok".into(),
            },
            RecipientState::Failed {
                code: 550,
                detail: "5.1.1 no such user".into(),
            },
        ];
        let entry = QueueEntry {
            queue_id: "21A2506872510000".into(),
            mail_from: "ann@example.org".into(),
            params: BTreeMap::from([
                ("ENVID".to_string(), "e-1".to_string()),
                ("RET".to_string(), "HDRS".to_string()),
            ]),
            recipients: states
                .into_iter()
                .map(|state| RecipientRecord {
                    spec: RecipientSpec {
                        address: "bob@example.org".into(),
                        orcpt: Some("rfc822;bob@example.org".into()),
                        notify: vec!["FAILURE".into(), "DELAY".into()],
                        channel: "smtp".into(),
                    },
                    state,
                    attempts: 3,
                    next_attempt_ms: 1_765_000_000_123,
                    last_error: Some("421 4.4.2 try later".into()),
                    notified: true,
                    delay_notified: false,
                })
                .collect(),
            body: BodyRef {
                partition: "primary".into(),
                sha256: "ab".repeat(32),
            },
            size: raw.len() as u64,
            received_at_ms: 1_765_000_000_000,
            expires_at_ms: 1_765_432_000_000,
            priority: 10,
            meta: Some(mime::message_meta(raw)),
        };
        let entries = vec![entry];
        let via_json: Vec<QueueEntry> =
            serde_json::from_str(&serde_json::to_value(&entries).unwrap().to_string()).unwrap();
        let via_records: Vec<QueueEntry> =
            records_from_pb(records_to_pb(&entries).unwrap(), "queue entry").unwrap();
        assert_eq!(via_records, entries);
        let print = |e: &QueueEntry| {
            serde_json::to_string_pretty(&serde_json::json!({"group": "rg1", "entry": e})).unwrap()
        };
        assert_eq!(print(&via_records[0]), print(&via_json[0]));
    }
}
