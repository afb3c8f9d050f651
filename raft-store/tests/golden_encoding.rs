//! Golden bytes of everything Halyard writes to disk or sends between nodes as bincode: every
//! [`Command`] variant (the Raft log), every stored record (the state machine's column
//! families), the replies a follower forwards back, and openraft's own log entry, vote and
//! log id as the log store keeps them.
//!
//! bincode writes an enum variant as its index and a struct as its fields in order, so
//! reordering variants or fields, or changing a field's type, silently changes what an older
//! node or an existing data directory means. This test compares the encoding of one sample
//! of each against `tests/golden/encoding.txt`, whose first line records
//! [`halyard_raft_store::DATA_FORMAT`]:
//! - a sample whose bytes changed fails the test; re-blessing it
//!   (`HALYARD_BLESS_GOLDEN=1 cargo test -p halyard-raft-store --test golden_encoding`) is
//!   refused until `DATA_FORMAT` is raised, so an encoding change is always a deliberate
//!   format change;
//! - a new sample (a variant appended at the end) changes no existing bytes and may be
//!   blessed without a new format.
//!
//! The `match`es in [`command_variant`] and friends have no wildcard arm: a new variant does
//! not compile until it has a sample here.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use halyard_raft_store::directory::{
    DirAddress, DirCommand, DirDomain, DirStatus, DirUser, ScramKeys, UserPatch,
};
use halyard_raft_store::openraft;
use halyard_raft_store::*;

const GOLDEN: &str = "tests/golden/encoding.txt";

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn enc<T: serde::Serialize>(v: &T) -> String {
    hex(&bincode::serialize(v).expect("encodes"))
}

fn meta() -> MessageMeta {
    let addr = Addr {
        name: Some("Ann".into()),
        adl: None,
        mailbox: Some("ann".into()),
        host: Some("example.org".into()),
    };
    let envelope = Envelope {
        date: Some("Mon, 7 Dec 2026 04:00:00 +0000".into()),
        subject: Some("hi".into()),
        from: vec![addr.clone()],
        sender: vec![addr.clone()],
        reply_to: vec![addr.clone()],
        to: vec![addr],
        cc: vec![],
        bcc: vec![],
        in_reply_to: None,
        message_id: Some("<1@example.org>".into()),
    };
    let text = BodyPart {
        media_type: "text".into(),
        subtype: "plain".into(),
        params: vec![("charset".into(), "us-ascii".into())],
        id: None,
        description: None,
        encoding: "7BIT".into(),
        md5: None,
        disposition: Some(("inline".into(), vec![])),
        language: vec!["en".into()],
        location: None,
        header_start: 0,
        body_start: 40,
        end: 44,
        lines: 1,
        kind: BodyKind::Text,
    };
    let inner = BodyPart {
        kind: BodyKind::Message {
            envelope: Box::new(envelope.clone()),
            body: Box::new(text.clone()),
        },
        ..text.clone()
    };
    let basic = BodyPart {
        kind: BodyKind::Basic,
        ..text.clone()
    };
    MessageMeta {
        envelope,
        body: BodyPart {
            media_type: "multipart".into(),
            subtype: "mixed".into(),
            kind: BodyKind::Multipart {
                parts: vec![text, inner, basic],
            },
            ..BodyPart::clone(&meta_root())
        },
    }
}

fn meta_root() -> BodyPart {
    BodyPart {
        media_type: "multipart".into(),
        subtype: "mixed".into(),
        params: vec![("boundary".into(), "b".into())],
        id: Some("<part@x>".into()),
        description: Some("d".into()),
        encoding: "7BIT".into(),
        md5: Some("m".into()),
        disposition: None,
        language: vec![],
        location: Some("l".into()),
        header_start: 0,
        body_start: 10,
        end: 100,
        lines: 0,
        kind: BodyKind::Basic,
    }
}

fn spec() -> RecipientSpec {
    RecipientSpec {
        address: "bob@example.org".into(),
        orcpt: Some("rfc822;bob@example.org".into()),
        notify: vec!["FAILURE".into(), "DELAY".into()],
        channel: "local".into(),
    }
}

fn enqueue() -> Command {
    Command::Enqueue {
        queue_id: "1A2B".into(),
        mail_from: "ann@example.org".into(),
        params: BTreeMap::from([("ENVID".to_string(), "e1".to_string())]),
        recipients: vec![spec()],
        partition: "primary".into(),
        body: Bytes::from_static(b"Subject: hi\r\n\r\nbody\r\n"),
        received_at_ms: 1_796_000_000_000,
        expires_at_ms: 1_796_432_000_000,
        priority: 0,
        meta: Some(meta()),
    }
}

fn user() -> DirUser {
    DirUser {
        address: "ann@example.org".into(),
        login: "ann".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        status: DirStatus::Inactive,
        quota_bytes: Some(1 << 30),
        quota_messages: None,
        forwarding: vec!["x@remote.test".into()],
        delivery_options: vec!["mailbox".into(), "forward".into()],
        mail_host: Some("rg1".into()),
        aliases: vec!["a@example.org".into()],
    }
}

fn domain() -> DirDomain {
    DirDomain {
        name: "example.org".into(),
        aliases: vec!["example.net".into()],
        default_quota_bytes: Some(2 << 30),
        default_quota_messages: Some(100_000),
        default_mail_host: Some("rg1".into()),
    }
}

/// One sample of every command, in declaration order.
fn commands() -> Vec<(&'static str, Command)> {
    let mut v = mailbox_commands();
    v.extend(later_commands());
    v
}

/// Samples of the mailbox and message commands, in order.
fn mailbox_commands() -> Vec<(&'static str, Command)> {
    let u = || "ann@example.org".to_string();
    vec![
        (
            "Noop",
            Command::Noop {
                payload: Bytes::from_static(b"xy"),
            },
        ),
        (
            "CreateMailbox",
            Command::CreateMailbox {
                user: u(),
                name: "Sent".into(),
                uidvalidity: 7,
                partition: "primary".into(),
                special_use: Some("\\Sent".into()),
            },
        ),
        (
            "RenameMailbox",
            Command::RenameMailbox {
                user: u(),
                from: "a".into(),
                to: "b".into(),
            },
        ),
        (
            "DeleteMailbox",
            Command::DeleteMailbox {
                user: u(),
                name: "b".into(),
            },
        ),
        (
            "Subscribe",
            Command::Subscribe {
                user: u(),
                name: "b".into(),
                subscribed: true,
            },
        ),
        (
            "SetAcl",
            Command::SetAcl {
                user: u(),
                mailbox: "INBOX".into(),
                identifier: "-bob@example.org".into(),
                rights: Some("+lr".into()),
            },
        ),
        (
            "Append",
            Command::Append {
                user: u(),
                mailbox: "INBOX".into(),
                flags: vec!["\\Seen".into(), "$label1".into()],
                internal_date_ms: -5,
                body: Bytes::from_static(b"a\r\n"),
                meta: Some(meta()),
            },
        ),
        (
            "StoreFlags",
            Command::StoreFlags {
                user: u(),
                mailbox: "INBOX".into(),
                uids: vec![1, 4_000_000_000],
                action: FlagAction::Replace,
                flags: vec!["\\Deleted".into()],
                unchanged_since: Some(9),
            },
        ),
        (
            "Expunge",
            Command::Expunge {
                user: u(),
                mailbox: "INBOX".into(),
                uids: Some(vec![3]),
            },
        ),
        (
            "Copy",
            Command::Copy {
                user: u(),
                from: "INBOX".into(),
                to_user: Some("bob@example.org".into()),
                to: "Shared".into(),
                uids: vec![1, 2],
            },
        ),
        (
            "Move",
            Command::Move {
                user: u(),
                from: "INBOX".into(),
                to_user: None,
                to: "Trash".into(),
                uids: vec![5],
            },
        ),
    ]
}

/// Samples of the queue, quota, wrapper, directory, fence and batch commands, in order.
fn later_commands() -> Vec<(&'static str, Command)> {
    let u = || "ann@example.org".to_string();
    vec![
        ("Enqueue", enqueue()),
        (
            "Deliver",
            Command::Deliver {
                queue_id: "1A2B".into(),
                recipient: "bob@example.org".into(),
                user: "bob@example.org".into(),
                mailbox: "INBOX".into(),
                flags: vec![],
                internal_date_ms: 1_796_000_000_001,
                uidvalidity_if_created: 11,
            },
        ),
        (
            "UpdateRecipient",
            Command::UpdateRecipient {
                queue_id: "1A2B".into(),
                recipient: "bob@example.org".into(),
                state: RecipientState::Failed {
                    code: 550,
                    detail: "5.1.1 no".into(),
                },
                next_attempt_ms: 12,
                error: Some("timeout".into()),
            },
        ),
        (
            "Reschedule",
            Command::Reschedule {
                queue_id: "1A2B".into(),
                at_ms: 13,
            },
        ),
        (
            "ReportDsn",
            Command::ReportDsn {
                queue_id: "1A2B".into(),
                recipients: vec!["bob@example.org".into()],
                dsn: Box::new(enqueue()),
                delay: true,
            },
        ),
        (
            "RemoveQueueEntry",
            Command::RemoveQueueEntry {
                queue_id: "1A2B".into(),
            },
        ),
        (
            "SetQuota",
            Command::SetQuota {
                user: u(),
                limit_bytes: Some(1024),
                limit_messages: None,
            },
        ),
        (
            "As",
            Command::As {
                actor: "bob@example.org".into(),
                cmd: Box::new(Command::Expunge {
                    user: u(),
                    mailbox: "Shared".into(),
                    uids: None,
                }),
            },
        ),
        (
            "Directory",
            Command::Directory(DirCommand::DeleteUser { address: u() }),
        ),
        (
            "Fence",
            Command::Fence(FenceOp::Release {
                token: FenceToken { term: 4, node: 2 },
                at_ms: 14,
                reason: "switchover".into(),
            }),
        ),
        (
            "Batch",
            Command::Batch(vec![
                Command::Noop {
                    payload: Bytes::new(),
                },
                Command::RemoveQueueEntry {
                    queue_id: "Z".into(),
                },
            ]),
        ),
        (
            "MoveAny",
            Command::MoveAny {
                user: u(),
                from: "INBOX".into(),
                to_user: None,
                to: "INBOX".into(),
                uids: vec![5, 6],
            },
        ),
        (
            "ClaimRecent",
            Command::ClaimRecent {
                user: u(),
                mailbox: "INBOX".into(),
            },
        ),
        (
            "Tracked",
            Command::Tracked(Box::new(Command::Expunge {
                user: u(),
                mailbox: "INBOX".into(),
                uids: None,
            })),
        ),
        (
            "Atomic",
            Command::Atomic(vec![
                Command::Subscribe {
                    user: u(),
                    name: "Sent".into(),
                    subscribed: true,
                },
                Command::Noop {
                    payload: Bytes::new(),
                },
            ]),
        ),
        ("PurgeUser", Command::PurgeUser { user: u() }),
        (
            "Audit",
            Command::Audit(AuditRecord {
                at_ms: 9,
                who: "ctl 10.0.0.1:5000".into(),
                node: 1,
                what: "propose meta: directory".into(),
                refused: String::new(),
            }),
        ),
    ]
}

/// Index of a command's variant; no wildcard arm, so a new variant needs a sample.
fn command_variant(c: &Command) -> usize {
    match c {
        Command::Noop { .. } => 0,
        Command::CreateMailbox { .. } => 1,
        Command::RenameMailbox { .. } => 2,
        Command::DeleteMailbox { .. } => 3,
        Command::Subscribe { .. } => 4,
        Command::SetAcl { .. } => 5,
        Command::Append { .. } => 6,
        Command::StoreFlags { .. } => 7,
        Command::Expunge { .. } => 8,
        Command::Copy { .. } => 9,
        Command::Move { .. } => 10,
        Command::Enqueue { .. } => 11,
        Command::Deliver { .. } => 12,
        Command::UpdateRecipient { .. } => 13,
        Command::Reschedule { .. } => 14,
        Command::ReportDsn { .. } => 15,
        Command::RemoveQueueEntry { .. } => 16,
        Command::SetQuota { .. } => 17,
        Command::As { .. } => 18,
        Command::Directory(_) => 19,
        Command::Fence(_) => 20,
        Command::Batch(_) => 21,
        Command::MoveAny { .. } => 22,
        Command::ClaimRecent { .. } => 23,
        Command::Tracked(_) => 24,
        Command::Atomic(_) => 25,
        Command::PurgeUser { .. } => 26,
        Command::Audit(_) => 27,
    }
}
const COMMAND_VARIANTS: usize = 28;

fn dir_commands() -> Vec<(&'static str, DirCommand)> {
    let a = || "ann@example.org".to_string();
    vec![
        ("AddDomain", DirCommand::AddDomain(domain())),
        ("UpdateDomain", DirCommand::UpdateDomain(domain())),
        (
            "DeleteDomain",
            DirCommand::DeleteDomain {
                name: "example.org".into(),
            },
        ),
        ("AddUser", DirCommand::AddUser(user())),
        (
            "UpdateUser",
            DirCommand::UpdateUser {
                address: a(),
                patch: UserPatch {
                    password_hash: Some("$argon2id$x".into()),
                    status: Some(DirStatus::Deleted),
                    quota_bytes: Some(None),
                    quota_messages: Some(Some(5)),
                    forwarding: Some(vec![]),
                    delivery_options: None,
                    mail_host: Some(Some("rg2".into())),
                },
            },
        ),
        ("DeleteUser", DirCommand::DeleteUser { address: a() }),
        (
            "AddAlias",
            DirCommand::AddAlias {
                alias: "a@example.org".into(),
                target: a(),
            },
        ),
        (
            "DeleteAlias",
            DirCommand::DeleteAlias {
                alias: "a@example.org".into(),
            },
        ),
        (
            "AddList",
            DirCommand::AddList {
                address: "staff@example.org".into(),
                members: vec![a()],
            },
        ),
        (
            "ChangeListMembers",
            DirCommand::ChangeListMembers {
                address: "staff@example.org".into(),
                add: vec!["c@x.test".into()],
                remove: vec![a()],
            },
        ),
        (
            "DeleteList",
            DirCommand::DeleteList {
                address: "staff@example.org".into(),
            },
        ),
        (
            "SetScram",
            DirCommand::SetScram {
                address: a(),
                keys: Some(scram()),
            },
        ),
        (
            "SchedulePurge",
            DirCommand::SchedulePurge {
                address: a(),
                deleted_at_ms: Some(7),
            },
        ),
    ]
}

fn dir_command_variant(c: &DirCommand) -> usize {
    match c {
        DirCommand::AddDomain(_) => 0,
        DirCommand::UpdateDomain(_) => 1,
        DirCommand::DeleteDomain { .. } => 2,
        DirCommand::AddUser(_) => 3,
        DirCommand::UpdateUser { .. } => 4,
        DirCommand::DeleteUser { .. } => 5,
        DirCommand::AddAlias { .. } => 6,
        DirCommand::DeleteAlias { .. } => 7,
        DirCommand::AddList { .. } => 8,
        DirCommand::ChangeListMembers { .. } => 9,
        DirCommand::DeleteList { .. } => 10,
        DirCommand::SetScram { .. } => 11,
        DirCommand::SchedulePurge { .. } => 12,
    }
}
const DIR_COMMAND_VARIANTS: usize = 13;

fn scram() -> ScramKeys {
    ScramKeys {
        iterations: 4096,
        salt: vec![1; 16],
        stored_key: vec![2; 32],
        server_key: vec![3; 32],
        for_hash: vec![4; 16],
    }
}

fn fence_ops() -> Vec<(&'static str, FenceOp)> {
    vec![
        (
            "Acquire",
            FenceOp::Acquire {
                token: FenceToken { term: 3, node: 1 },
                address: Some("198.18.0.100/24".into()),
                at_ms: 15,
            },
        ),
        (
            "Release",
            FenceOp::Release {
                token: FenceToken { term: 3, node: 1 },
                at_ms: 16,
                reason: "shutdown".into(),
            },
        ),
    ]
}

fn fence_op_variant(f: &FenceOp) -> usize {
    match f {
        FenceOp::Acquire { .. } => 0,
        FenceOp::Release { .. } => 1,
    }
}
const FENCE_OP_VARIANTS: usize = 2;

fn apply_errors() -> Vec<(&'static str, ApplyError)> {
    vec![
        ("NoSuchMailbox", ApplyError::NoSuchMailbox("x".into())),
        ("MailboxExists", ApplyError::MailboxExists("x".into())),
        ("InvalidName", ApplyError::InvalidName("x".into())),
        ("OverQuota", ApplyError::OverQuota),
        ("NoSuchQueueEntry", ApplyError::NoSuchQueueEntry("q".into())),
        (
            "NoSuchRecipient",
            ApplyError::NoSuchRecipient {
                queue_id: "q".into(),
                recipient: "r".into(),
            },
        ),
        ("QueueEntryExists", ApplyError::QueueEntryExists("q".into())),
        ("NoPermission", ApplyError::NoPermission("p".into())),
        ("Modified", ApplyError::Modified),
        ("Invalid", ApplyError::Invalid("i".into())),
    ]
}

fn apply_error_variant(e: &ApplyError) -> usize {
    match e {
        ApplyError::NoSuchMailbox(_) => 0,
        ApplyError::MailboxExists(_) => 1,
        ApplyError::InvalidName(_) => 2,
        ApplyError::OverQuota => 3,
        ApplyError::NoSuchQueueEntry(_) => 4,
        ApplyError::NoSuchRecipient { .. } => 5,
        ApplyError::QueueEntryExists(_) => 6,
        ApplyError::NoPermission(_) => 7,
        ApplyError::Modified => 8,
        ApplyError::Invalid(_) => 9,
    }
}
const APPLY_ERROR_VARIANTS: usize = 10;

fn holder() -> HolderRecord {
    HolderRecord {
        token: FenceToken { term: 3, node: 1 },
        address: Some("198.18.0.100/24".into()),
        acquired_at_ms: 17,
        released_at_ms: Some(18),
        release_reason: Some("switchover".into()),
    }
}

fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        ("None", Reply::None),
        ("Created", Reply::Created { uidvalidity: 7 }),
        ("Done", Reply::Done),
        (
            "Appended",
            Reply::Appended {
                uidvalidity: 7,
                uid: 8,
                modseq: 9,
            },
        ),
        (
            "FlagsStored",
            Reply::FlagsStored {
                updated: vec![(1, 2, vec!["\\Seen".into()])],
                modified: vec![3],
            },
        ),
        (
            "Expunged",
            Reply::Expunged {
                uids: vec![4],
                highestmodseq: 10,
            },
        ),
        (
            "Copied",
            Reply::Copied {
                uidvalidity: 7,
                pairs: vec![(1, 20)],
            },
        ),
        (
            "Enqueued",
            Reply::Enqueued {
                queue_id: "1A2B".into(),
            },
        ),
        (
            "Delivered",
            Reply::Delivered {
                uidvalidity: 7,
                uid: 21,
                duplicate: true,
            },
        ),
        ("Error", Reply::Error(ApplyError::OverQuota)),
        ("Batch", Reply::Batch(vec![Reply::Done, Reply::None])),
        (
            "Fenced",
            Reply::Fenced {
                previous: Some(holder()),
            },
        ),
        (
            "RecentClaimed",
            Reply::RecentClaimed {
                uidvalidity: 7,
                from: 3,
                to: 9,
            },
        ),
    ]
}

fn reply_variant(r: &Reply) -> usize {
    match r {
        Reply::None => 0,
        Reply::Created { .. } => 1,
        Reply::Done => 2,
        Reply::Appended { .. } => 3,
        Reply::FlagsStored { .. } => 4,
        Reply::Expunged { .. } => 5,
        Reply::Copied { .. } => 6,
        Reply::Enqueued { .. } => 7,
        Reply::Delivered { .. } => 8,
        Reply::Error(_) => 9,
        Reply::Batch(_) => 10,
        Reply::Fenced { .. } => 11,
        Reply::RecentClaimed { .. } => 12,
    }
}
const REPLY_VARIANTS: usize = 13;

fn propose_errors() -> Vec<(&'static str, ProposeError)> {
    vec![
        (
            "NotLeader",
            ProposeError::NotLeader {
                group: "rg1".into(),
                leader_id: Some(2),
                leader_addr: Some("198.18.0.2:7700".into()),
            },
        ),
        ("NoSuchGroup", ProposeError::NoSuchGroup("rg9".into())),
        ("Unknown", ProposeError::Unknown("lost".into())),
        ("Unavailable", ProposeError::Unavailable("stopping".into())),
    ]
}

fn propose_error_variant(e: &ProposeError) -> usize {
    match e {
        ProposeError::NotLeader { .. } => 0,
        ProposeError::NoSuchGroup(_) => 1,
        ProposeError::Unknown(_) => 2,
        ProposeError::Unavailable(_) => 3,
    }
}
const PROPOSE_ERROR_VARIANTS: usize = 4;

/// Stored records (state machine values) and the other enums they contain.
fn records() -> Vec<(&'static str, String)> {
    let body = BodyRef {
        partition: "primary".into(),
        sha256: "ab".repeat(32),
    };
    let mailbox = MailboxRecord {
        id: 42,
        name: "INBOX".into(),
        uidvalidity: 7,
        uidnext: 9,
        highestmodseq: 12,
        subscribed: true,
        acl: BTreeMap::from([("anyone".to_string(), "lr".to_string())]),
        partition: "primary".into(),
        special_use: Some("\\Junk".into()),
        exists: 8,
        bytes: 4096,
    };
    let message = MessageRecord {
        uid: 8,
        modseq: 12,
        flags: vec!["$label1".into(), "\\Seen".into()],
        internal_date_ms: 1_796_000_000_000,
        size: 44,
        body: body.clone(),
        meta: Some(meta()),
    };
    let mut recipients = Vec::new();
    for state in [
        RecipientState::Pending,
        RecipientState::Delivered {
            detail: "250 ok".into(),
        },
        RecipientState::Failed {
            code: 550,
            detail: "no".into(),
        },
    ] {
        // No wildcard: a new state needs a sample.
        match &state {
            RecipientState::Pending
            | RecipientState::Delivered { .. }
            | RecipientState::Failed { .. } => {}
        }
        recipients.push(RecipientRecord {
            spec: spec(),
            state,
            attempts: 2,
            next_attempt_ms: 19,
            last_error: Some("421 busy".into()),
            notified: false,
            delay_notified: true,
        });
    }
    let queue = QueueEntry {
        queue_id: "1A2B".into(),
        mail_from: String::new(),
        params: BTreeMap::from([("RET".to_string(), "HDRS".to_string())]),
        recipients,
        body: body.clone(),
        size: 44,
        received_at_ms: 20,
        expires_at_ms: 21,
        priority: 0,
        meta: None,
    };
    let quota = QuotaRecord {
        limit_bytes: Some(1 << 30),
        limit_messages: None,
        used_bytes: 4096,
        used_messages: 8,
    };
    let delivery = DeliveryRecord {
        user: "bob@example.org".into(),
        mailbox: "INBOX".into(),
        uidvalidity: 7,
        uid: 21,
    };
    let mut out = vec![
        ("BodyRef", enc(&body)),
        ("MailboxRecord", enc(&mailbox)),
        ("MessageRecord", enc(&message)),
        ("QueueEntry", enc(&queue)),
        ("QuotaRecord", enc(&quota)),
        ("DeliveryRecord", enc(&delivery)),
        ("HolderRecord", enc(&holder())),
        ("DirDomain", enc(&domain())),
        ("DirUser", enc(&user())),
        ("ScramKeys", enc(&scram())),
    ];
    for (name, a) in [
        ("DirAddress::User", DirAddress::User),
        (
            "DirAddress::Alias",
            DirAddress::Alias {
                target: "ann@example.org".into(),
            },
        ),
        (
            "DirAddress::List",
            DirAddress::List {
                members: vec!["ann@example.org".into()],
            },
        ),
    ] {
        match &a {
            DirAddress::User | DirAddress::Alias { .. } | DirAddress::List { .. } => {}
        }
        out.push((name, enc(&a)));
    }
    for (name, f) in [
        ("FlagAction::Add", FlagAction::Add),
        ("FlagAction::Remove", FlagAction::Remove),
        ("FlagAction::Replace", FlagAction::Replace),
    ] {
        match f {
            FlagAction::Add | FlagAction::Remove | FlagAction::Replace => {}
        }
        out.push((name, enc(&f)));
    }
    for (name, s) in [
        ("DirStatus::Active", DirStatus::Active),
        ("DirStatus::Inactive", DirStatus::Inactive),
        ("DirStatus::Deleted", DirStatus::Deleted),
    ] {
        match s {
            DirStatus::Active | DirStatus::Inactive | DirStatus::Deleted => {}
        }
        out.push((name, enc(&s)));
    }
    out
}

/// What the log store writes: openraft's entry (blank, normal, membership), vote and log id.
fn raft_records() -> Vec<(&'static str, String)> {
    let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(5, 2), 1234);
    let nodes: BTreeMap<u64, openraft::BasicNode> = [1u64, 2, 3]
        .into_iter()
        .map(|i| (i, openraft::BasicNode::new(format!("198.18.0.{i}:7700"))))
        .collect();
    let membership = openraft::Membership::new(vec![BTreeSet::from([1u64, 2, 3])], nodes);
    let blank: types::Entry = openraft::Entry {
        log_id,
        payload: openraft::EntryPayload::Blank,
    };
    let normal: types::Entry = openraft::Entry {
        log_id,
        payload: openraft::EntryPayload::Normal(Command::Noop {
            payload: Bytes::from_static(b"z"),
        }),
    };
    let member: types::Entry = openraft::Entry {
        log_id,
        payload: openraft::EntryPayload::Membership(membership),
    };
    vec![
        ("LogId", enc(&log_id)),
        ("Vote", enc(&openraft::Vote::<u64>::new_committed(5, 2))),
        ("Entry::Blank", enc(&blank)),
        ("Entry::Normal", enc(&normal)),
        ("Entry::Membership", enc(&member)),
    ]
}

/// Every sample as `(section/name, hex)`, after checking each enum is covered.
fn samples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let cmds = commands();
    let seen: Vec<usize> = cmds.iter().map(|(_, c)| command_variant(c)).collect();
    assert_eq!(
        seen,
        (0..COMMAND_VARIANTS).collect::<Vec<_>>(),
        "one Command sample per variant, in order"
    );
    out.extend(cmds.iter().map(|(n, c)| (format!("Command::{n}"), enc(c))));

    let dirs = dir_commands();
    let seen: Vec<usize> = dirs.iter().map(|(_, c)| dir_command_variant(c)).collect();
    assert_eq!(seen, (0..DIR_COMMAND_VARIANTS).collect::<Vec<_>>());
    out.extend(dirs.iter().map(|(n, c)| {
        (
            format!("DirCommand::{n}"),
            enc(&Command::Directory(c.clone())),
        )
    }));

    let fences = fence_ops();
    let seen: Vec<usize> = fences.iter().map(|(_, f)| fence_op_variant(f)).collect();
    assert_eq!(seen, (0..FENCE_OP_VARIANTS).collect::<Vec<_>>());
    out.extend(
        fences
            .iter()
            .map(|(n, f)| (format!("FenceOp::{n}"), enc(&Command::Fence(f.clone())))),
    );

    let replies = replies();
    let seen: Vec<usize> = replies.iter().map(|(_, r)| reply_variant(r)).collect();
    assert_eq!(seen, (0..REPLY_VARIANTS).collect::<Vec<_>>());
    out.extend(replies.iter().map(|(n, r)| (format!("Reply::{n}"), enc(r))));

    let errors = apply_errors();
    let seen: Vec<usize> = errors.iter().map(|(_, e)| apply_error_variant(e)).collect();
    assert_eq!(seen, (0..APPLY_ERROR_VARIANTS).collect::<Vec<_>>());
    out.extend(
        errors
            .iter()
            .map(|(n, e)| (format!("ApplyError::{n}"), enc(e))),
    );

    let proposed = propose_errors();
    let seen: Vec<usize> = proposed
        .iter()
        .map(|(_, e)| propose_error_variant(e))
        .collect();
    assert_eq!(seen, (0..PROPOSE_ERROR_VARIANTS).collect::<Vec<_>>());
    out.extend(proposed.iter().map(|(n, e)| {
        let r: Result<Reply, &ProposeError> = Err(e);
        (format!("ProposeError::{n}"), enc(&r))
    }));

    out.extend(
        records()
            .into_iter()
            .map(|(n, h)| (format!("record {n}"), h)),
    );
    out.extend(
        raft_records()
            .into_iter()
            .map(|(n, h)| (format!("raft {n}"), h)),
    );
    out
}

fn render(format: u32, samples: &[(String, String)]) -> String {
    let mut s = format!("data_format {format}\n");
    for (name, hex) in samples {
        s.push_str(&format!("{name} {hex}\n"));
    }
    s
}

fn parse(text: &str) -> (u32, BTreeMap<String, String>) {
    let mut lines = text.lines();
    let format = lines
        .next()
        .and_then(|l| l.strip_prefix("data_format "))
        .and_then(|v| v.parse().ok())
        .expect("golden file starts with `data_format N`");
    let map = lines
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    (format, map)
}

#[test]
fn encoding_matches_the_golden_bytes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let samples = samples();
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|_| "data_format 0\n".into());
    let (golden_format, golden_map) = parse(&golden);
    let changed: Vec<&str> = samples
        .iter()
        .filter(|(n, h)| golden_map.get(n).is_some_and(|g| g != h))
        .map(|(n, _)| n.as_str())
        .collect();
    let added: Vec<&str> = samples
        .iter()
        .filter(|(n, _)| !golden_map.contains_key(n))
        .map(|(n, _)| n.as_str())
        .collect();
    let removed: Vec<&String> = golden_map
        .keys()
        .filter(|n| !samples.iter().any(|(s, _)| s == *n))
        .collect();
    if std::env::var_os("HALYARD_BLESS_GOLDEN").is_some() {
        assert!(
            changed.is_empty() && removed.is_empty() || DATA_FORMAT > golden_format,
            "the encoding of {changed:?} (removed: {removed:?}) changed but DATA_FORMAT is still \
             {DATA_FORMAT}: raise it in raft-store/src/lib.rs before blessing a format change"
        );
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(&path, render(DATA_FORMAT, &samples)).expect("write golden file");
        return;
    }
    assert!(
        changed.is_empty() && removed.is_empty(),
        "the bincode encoding of {changed:?} changed (removed samples: {removed:?}). Data \
         written by earlier builds would be misread. If this is an intended format change, \
         raise DATA_FORMAT and re-bless with HALYARD_BLESS_GOLDEN=1; otherwise restore the \
         order of the enum variants and struct fields"
    );
    assert!(
        added.is_empty(),
        "new samples {added:?} are not in {GOLDEN}: bless them with HALYARD_BLESS_GOLDEN=1"
    );
    assert_eq!(
        golden_format, DATA_FORMAT,
        "{GOLDEN} was blessed for data format {golden_format}, the code says {DATA_FORMAT}"
    );
}
