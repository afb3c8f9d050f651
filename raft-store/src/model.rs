//! The replicated data model: what a resource group stores and the commands that change it.
//!
//! Everything here is data: [`Command`] is what a proposer (the SMTP server, the IMAP server,
//! the job controller, `halyard ctl`) puts in a Raft log entry, [`Reply`] is what the state
//! machine answers once the entry is committed and applied, and the `*Record` types are the
//! values kept in the state machine's column families. The apply logic lives in
//! [`crate::apply`].
//!
//! Apply must be deterministic, so every value that would otherwise come from a clock or a
//! random source (internal dates, queue ids, retry times, proposed UIDVALIDITY) travels inside
//! the command, chosen by the proposer. Content hashes of bodies are computed during apply:
//! they are a pure function of the entry.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// IMAP hierarchy delimiter used for mailbox names.
pub const HIERARCHY_DELIMITER: char = '/';

/// The mailbox every user has and that local delivery targets by default.
pub const INBOX: &str = "INBOX";

/// The store partition of a resource group. A group's store is one RocksDB database, so it
/// has one partition; the name is kept in mailbox records and body references (and so in the
/// data format) for the day a group spreads its bodies over several disks.
pub const PRIMARY_PARTITION: &str = "primary";

/// [`QueueEntry::priority`] of mail accepted from clients (SMTP, submission, LMTP).
pub const PRIORITY_MAIL: i32 = 0;
/// [`QueueEntry::priority`] of delivery status notifications: they run after the mail that
/// was waiting, so a burst of bounces does not delay first deliveries.
pub const PRIORITY_NOTIFICATION: i32 = 10;

/// How a STORE changes a message's flags (RFC 3501 §6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlagAction {
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
    /// `FLAGS`
    Replace,
}

/// A recipient as the envelope carried it, with its DSN parameters (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSpec {
    /// The address as given in RCPT TO (after rewriting).
    pub address: String,
    /// `ORCPT=` if the client gave one.
    pub orcpt: Option<String>,
    /// `NOTIFY=` values (SUCCESS, FAILURE, DELAY, NEVER); empty means the default.
    pub notify: Vec<String>,
    /// The channel the rewrite rules chose for this recipient.
    pub channel: String,
}

/// The life of one recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientState {
    /// Waiting for a (first or next) delivery attempt.
    Pending,
    /// Delivered into a local mailbox or accepted by the next hop.
    Delivered { detail: String },
    /// Permanently failed; a DSN has been or will be generated.
    Failed { code: u16, detail: String },
}

impl RecipientState {
    /// Whether the recipient needs no further attempt.
    pub fn is_final(&self) -> bool {
        !matches!(self, RecipientState::Pending)
    }
}

/// One recipient of a queue entry and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRecord {
    pub spec: RecipientSpec,
    pub state: RecipientState,
    /// Attempts made so far (successful or not).
    pub attempts: u32,
    /// Unix milliseconds of the next attempt; only meaningful while `Pending`.
    pub next_attempt_ms: i64,
    /// Last temporary error, for `ctl queue show` and delay DSNs.
    pub last_error: Option<String>,
    /// A delivery status notification for this recipient's outcome has been queued.
    #[serde(default)]
    pub notified: bool,
    /// A delay notification (`Action: delayed`) has been queued for it; at most one is.
    #[serde(default)]
    pub delay_notified: bool,
}

impl RecipientRecord {
    /// Whether its final outcome still has to be reported to the sender (RFC 3461: failures
    /// unless NOTIFY=NEVER or lacks FAILURE, successes only with NOTIFY=SUCCESS); never for
    /// the null sender, so there is never a DSN about a DSN.
    pub fn needs_dsn(&self, mail_from: &str) -> bool {
        if self.notified || mail_from.is_empty() {
            return false;
        }
        let asked = |w: &str| self.spec.notify.iter().any(|n| n.eq_ignore_ascii_case(w));
        match self.state {
            RecipientState::Pending => false,
            RecipientState::Failed { .. } => {
                self.spec.notify.is_empty() || (asked("FAILURE") && !asked("NEVER"))
            }
            RecipientState::Delivered { .. } => asked("SUCCESS"),
        }
    }

    /// Whether it may still get a delay notification: pending, none sent yet, not for the
    /// null sender, and NOTIFY includes DELAY or is absent (RFC 3461 §4.1 leaves the default
    /// to the MTA; Halyard's is FAILURE,DELAY, as most MTAs'). When is the caller's business.
    pub fn wants_delay_dsn(&self, mail_from: &str) -> bool {
        if self.delay_notified || mail_from.is_empty() || self.state != RecipientState::Pending {
            return false;
        }
        let asked = |w: &str| self.spec.notify.iter().any(|n| n.eq_ignore_ascii_case(w));
        self.spec.notify.is_empty() || (asked("DELAY") && !asked("NEVER"))
    }
}

/// A message in the group's mail queue (the seed's channel queue file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub queue_id: String,
    /// Reverse path; empty for the null sender (`MAIL FROM:<>`).
    pub mail_from: String,
    /// `ENVID=` (RFC 3461), `RET=`, `BODY=`, `SMTPUTF8`: kept verbatim for the DSN generator.
    pub params: BTreeMap<String, String>,
    pub recipients: Vec<RecipientRecord>,
    /// The single stored body this entry holds a reference on.
    pub body: BodyRef,
    pub size: u64,
    /// Unix milliseconds when the message was accepted.
    pub received_at_ms: i64,
    /// Unix milliseconds after which pending recipients are given up on.
    pub expires_at_ms: i64,
    /// Lower runs first: [`PRIORITY_MAIL`], [`PRIORITY_NOTIFICATION`]. Among due
    /// recipients of equal priority, first attempts run before retries, then the oldest.
    pub priority: i32,
    pub meta: Option<MessageMeta>,
}

/// Where a body lives: the partition and the SHA-256 of its bytes. One stored copy per
/// partition, shared by every message (and queue entry) that references it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BodyRef {
    pub partition: String,
    /// Lower-case hex SHA-256 of the body.
    pub sha256: String,
}

/// A mailbox of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRecord {
    /// Internal id, stable across RENAME; the key prefix of the mailbox's messages.
    pub id: u64,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub subscribed: bool,
    /// RFC 4314 rights per identifier (e.g. `"anyone" -> "lr"`).
    pub acl: BTreeMap<String, String>,
    /// Store partition holding this mailbox's bodies.
    pub partition: String,
    /// RFC 6154 attribute such as `\Sent`, if any.
    pub special_use: Option<String>,
    /// Number of messages (kept to answer EXISTS and quota without a scan).
    pub exists: u32,
    /// Sum of message sizes.
    pub bytes: u64,
}

/// A message in a mailbox: the index entry (the seed's store.idx), not the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub uid: u32,
    pub modseq: u64,
    /// Sorted, de-duplicated flags (`\Seen`, `\Deleted`, keywords).
    pub flags: Vec<String>,
    /// Unix milliseconds (IMAP INTERNALDATE), chosen by the proposer.
    pub internal_date_ms: i64,
    pub size: u64,
    pub body: BodyRef,
    /// ENVELOPE and BODYSTRUCTURE (the seed's header cache), computed once by the proposer.
    pub meta: Option<MessageMeta>,
}

/// What IMAP FETCH ENVELOPE / BODYSTRUCTURE / BODY[section] need, computed once when a message
/// is appended or accepted (see [`crate::mime::message_meta`]) and kept in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub envelope: Envelope,
    /// The message's MIME tree; the root covers the whole message.
    pub body: BodyPart,
}

/// RFC 3501 ENVELOPE. Strings are the header values as they appear in the message (unfolded,
/// encoded words kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub date: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<Addr>,
    pub sender: Vec<Addr>,
    pub reply_to: Vec<Addr>,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub bcc: Vec<Addr>,
    pub in_reply_to: Option<String>,
    pub message_id: Option<String>,
}

/// One RFC 3501 address: (name, adl, mailbox, host). A group is an entry with `host: None`
/// and the group name in `mailbox`, then its members, then an entry with all four `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub name: Option<String>,
    pub adl: Option<String>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
}

/// One MIME part (RFC 3501 BODYSTRUCTURE), with where it lies in the message bytes so that
/// `BODY[1.2]`, `BODY[1.2.MIME]` and `BODY[1.HEADER]` are slices, not re-parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyPart {
    /// Lower case, e.g. `text`, `multipart`.
    pub media_type: String,
    /// Lower case, e.g. `plain`, `mixed`.
    pub subtype: String,
    /// Content-Type parameters (name lower case), e.g. `charset`, `boundary`.
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub description: Option<String>,
    /// Content-Transfer-Encoding, upper case; `7BIT` when absent.
    pub encoding: String,
    pub md5: Option<String>,
    /// Content-Disposition value (lower case) and its parameters.
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Vec<String>,
    pub location: Option<String>,
    /// Byte offsets in the message: where this part's header starts, where its body starts,
    /// where it ends (exclusive).
    pub header_start: u64,
    pub body_start: u64,
    pub end: u64,
    /// Lines of the body (text parts and message/rfc822).
    pub lines: u64,
    pub kind: BodyKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind {
    /// Any single part that is not text or message/rfc822.
    Basic,
    Text,
    /// message/rfc822: the enclosed message's envelope and structure.
    Message {
        envelope: Box<Envelope>,
        body: Box<BodyPart>,
    },
    Multipart {
        parts: Vec<BodyPart>,
    },
}

/// Quota limits and usage of one user (RFC 2087 STORAGE and MESSAGE resources).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub limit_bytes: Option<u64>,
    pub limit_messages: Option<u64>,
    pub used_bytes: u64,
    pub used_messages: u64,
}

/// Proof that a queue entry's recipient was delivered into a mailbox: the dedupe key that
/// makes `Deliver` idempotent across retries and failovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub user: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// A change to a resource group's state, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; used to check that a group commits and by benchmarks.
    Noop {
        payload: Bytes,
    },
    CreateMailbox {
        user: String,
        name: String,
        /// Proposed UIDVALIDITY; apply raises it if needed so that it is strictly greater than
        /// any UIDVALIDITY this group handed out before.
        uidvalidity: u32,
        partition: String,
        special_use: Option<String>,
    },
    RenameMailbox {
        user: String,
        from: String,
        to: String,
    },
    DeleteMailbox {
        user: String,
        name: String,
    },
    Subscribe {
        user: String,
        name: String,
        subscribed: bool,
    },
    /// RFC 4314 SETACL/DELETEACL on `user`'s mailbox. `rights` is a SETACL argument
    /// (`lrs`, `+w`, `-i`; see [`crate::acl::Change`]) applied to the current entry at apply
    /// time, so concurrent changes compose; `None` deletes the entry. `identifier` is a
    /// primary address or `anyone`, optionally with a leading `-` (negative rights).
    SetAcl {
        user: String,
        mailbox: String,
        identifier: String,
        rights: Option<String>,
    },
    /// IMAP APPEND: stores the body (one copy per partition) and indexes a new message.
    Append {
        user: String,
        mailbox: String,
        flags: Vec<String>,
        internal_date_ms: i64,
        body: Bytes,
        /// ENVELOPE/BODYSTRUCTURE of `body`, computed by the proposer.
        meta: Option<MessageMeta>,
    },
    StoreFlags {
        user: String,
        mailbox: String,
        uids: Vec<u32>,
        action: FlagAction,
        flags: Vec<String>,
        /// CONDSTORE `UNCHANGEDSINCE`.
        unchanged_since: Option<u64>,
    },
    /// Removes the given UIDs, or every message flagged `\Deleted` when `uids` is `None`.
    Expunge {
        user: String,
        mailbox: String,
        uids: Option<Vec<u32>>,
    },
    /// Copies messages from `user`'s mailbox `from` into `to`, owned by `to_user` (default:
    /// `user`) — a user's own mailbox or one shared with them.
    Copy {
        user: String,
        from: String,
        to_user: Option<String>,
        to: String,
        uids: Vec<u32>,
    },
    Move {
        user: String,
        from: String,
        to_user: Option<String>,
        to: String,
        uids: Vec<u32>,
    },
    /// A message accepted by the MTA (end of DATA). Committing this is what allows `250`.
    Enqueue {
        queue_id: String,
        mail_from: String,
        params: BTreeMap<String, String>,
        recipients: Vec<RecipientSpec>,
        partition: String,
        body: Bytes,
        received_at_ms: i64,
        expires_at_ms: i64,
        priority: i32,
        /// ENVELOPE/BODYSTRUCTURE of `body`, computed by the proposer; copied into every
        /// mailbox the message is delivered to.
        meta: Option<MessageMeta>,
    },
    /// Local delivery of one recipient of a queue entry into a mailbox. Idempotent per
    /// (queue id, recipient): a second apply returns the first delivery's UID.
    Deliver {
        queue_id: String,
        recipient: String,
        user: String,
        mailbox: String,
        flags: Vec<String>,
        internal_date_ms: i64,
        /// UIDVALIDITY to use if the target mailbox has to be created.
        uidvalidity_if_created: u32,
    },
    /// Outcome of a delivery attempt for one recipient. When every recipient is final the
    /// entry leaves the queue and its body reference is dropped.
    UpdateRecipient {
        queue_id: String,
        recipient: String,
        state: RecipientState,
        next_attempt_ms: i64,
        error: Option<String>,
    },
    /// Makes every pending recipient of a queue entry due at `at_ms` (`halyard ctl queue
    /// retry`), without counting an attempt.
    Reschedule {
        queue_id: String,
        at_ms: i64,
    },
    /// Queues `dsn` (an `Enqueue` from the null sender) reporting the final outcome of
    /// `recipients` of entry `queue_id`, and marks them reported — in one entry, so a report
    /// is neither lost nor sent twice across failovers.
    ReportDsn {
        queue_id: String,
        recipients: Vec<String>,
        dsn: Box<Command>,
        /// A delay report (`Action: delayed`) for recipients still pending, rather than the
        /// report of their final outcome.
        #[serde(default)]
        delay: bool,
    },
    /// Removes a queue entry whatever its state (`halyard ctl queue delete`).
    RemoveQueueEntry {
        queue_id: String,
    },
    SetQuota {
        user: String,
        limit_bytes: Option<u64>,
        limit_messages: Option<u64>,
    },
    /// `cmd` done by `actor` on mailboxes that may belong to another user: apply checks the
    /// actor's rights on every mailbox `cmd` touches against the ACLs as they stand (see
    /// [`crate::acl`]) and refuses with `NoPermission` otherwise. Only mailbox commands may be
    /// wrapped.
    As {
        actor: String,
        cmd: Box<Command>,
    },
    /// A change to the embedded directory (meta group).
    Directory(crate::directory::DirCommand),
    /// A change of the group's floating-address holder (see [`FenceOp`]): recorded so the
    /// history of holders is auditable and a new master knows whether its predecessor let go.
    Fence(FenceOp),
    /// Several independent commands in one log entry, applied in order, each on its own
    /// (a refusal of one does not affect the others). Built by the group's proposal batcher
    /// so that concurrent proposals share one log append, one fsync and one replication
    /// round. Batches do not nest.
    Batch(Vec<Command>),
    /// MOVE (RFC 6851) that may also target the source mailbox itself: the messages get new
    /// UIDs there and the old ones are expunged. [`Command::Move`] keeps refusing that, as
    /// the builds that wrote it did. Command level 2 (see [`COMMAND_LEVEL`]).
    MoveAny {
        user: String,
        from: String,
        to_user: Option<String>,
        to: String,
        uids: Vec<u32>,
    },
    /// A read-write session claims the messages of `user`'s mailbox that no session has seen
    /// as recent yet (RFC 3501 `\Recent`): every UID from the mailbox's recent mark up to
    /// its UIDNEXT. The mark moves to UIDNEXT, so each message is recent in exactly one
    /// session, also across a change of master. Answered by [`Reply::RecentClaimed`].
    /// Command level 2.
    ClaimRecent {
        user: String,
        mailbox: String,
    },
    /// `cmd` (one plain command) with QRESYNC tombstones recorded for every message it
    /// expunges (see [`crate::apply::vanished`]); a deleted mailbox's tombstones go with
    /// it. Sessions wrap every command that may expunge in it. Command level 2.
    Tracked(Box<Command>),
    /// Plain commands applied in order as one: if any is refused, none has any effect and
    /// the entry answers with that refusal; otherwise [`Reply::Batch`] of their replies.
    /// IMAP MULTIAPPEND (RFC 3502) commits all of one APPEND's messages or none. Command
    /// level 2.
    Atomic(Vec<Command>),
    /// Removes everything a deleted user left in this group: every mailbox and message
    /// (bodies dereferenced, so single copies shared with others stay and the rest go), QRESYNC
    /// tombstones and recent marks, the quota record, rights others granted to the user and
    /// the user's subscriptions to shared mailboxes. Idempotent. Command level 3.
    PurgeUser {
        user: String,
    },
    /// One administrative change, recorded in the meta group (`halyard ctl audit`): the
    /// node's admin API appends it to every directory change (in the same atomic entry) and
    /// after every other change it makes. The last [`crate::apply::AUDIT_KEEP`] are kept.
    /// Command level 3.
    Audit(AuditRecord),
}

/// Who changed what, when (see [`Command::Audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    /// The caller: its certificate's name (`ctl`, `node-2`, an administrator's), or
    /// `plaintext` on a cluster without TLS, with its address.
    pub who: String,
    /// The node whose admin API took the change.
    pub node: u64,
    /// What was asked, e.g. `propose meta: directory` or `failover rg1 to 2`.
    pub what: String,
    /// Empty when it was done; else why not.
    pub refused: String,
}

/// The newest command level this build applies. Level 1: every command up to
/// [`Command::Batch`]; level 2 adds [`Command::MoveAny`], [`Command::ClaimRecent`] and
/// [`Command::Tracked`] and [`Command::Atomic`]; level 3 adds
/// [`crate::directory::DirCommand::SetScram`] and [`Command::PurgeUser`] ([`Command::level`]
/// tells a command's). A
/// node proposes a command of level N only when every voter of the group reported a level
/// of at least N, so a replica never meets an entry it cannot decode during a rolling
/// upgrade (see ARCHITECTURE.md, "What `apply` does to an existing command never changes in
/// place").
pub const COMMAND_LEVEL: u32 = 3;

impl Command {
    /// The command level (see [`COMMAND_LEVEL`]) a replica needs to decode and apply this
    /// command, its nested commands included.
    pub fn level(&self) -> u32 {
        match self {
            Command::Directory(
                crate::directory::DirCommand::SetScram { .. }
                | crate::directory::DirCommand::SchedulePurge { .. },
            ) => 3,
            Command::PurgeUser { .. } | Command::Audit(_) => 3,
            Command::Batch(cmds) => cmds.iter().map(Command::level).max().unwrap_or(1),
            Command::Atomic(cmds) => cmds.iter().map(Command::level).max().unwrap_or(1).max(2),
            Command::Tracked(c) => c.level().max(2),
            Command::MoveAny { .. } | Command::ClaimRecent { .. } => 2,
            _ => 1,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Noop { .. } => "noop",
            Command::CreateMailbox { .. } => "create_mailbox",
            Command::RenameMailbox { .. } => "rename_mailbox",
            Command::DeleteMailbox { .. } => "delete_mailbox",
            Command::Subscribe { .. } => "subscribe",
            Command::SetAcl { .. } => "set_acl",
            Command::As { .. } => "as",
            Command::Reschedule { .. } => "reschedule",
            Command::ReportDsn { .. } => "report_dsn",
            Command::Append { .. } => "append",
            Command::StoreFlags { .. } => "store_flags",
            Command::Expunge { .. } => "expunge",
            Command::Copy { .. } => "copy",
            Command::Move { .. } => "move",
            Command::Enqueue { .. } => "enqueue",
            Command::Deliver { .. } => "deliver",
            Command::UpdateRecipient { .. } => "update_recipient",
            Command::RemoveQueueEntry { .. } => "remove_queue_entry",
            Command::SetQuota { .. } => "set_quota",
            Command::Directory(_) => "directory",
            Command::Fence(_) => "fence",
            Command::Batch(_) => "batch",
            Command::MoveAny { .. } => "move_any",
            Command::ClaimRecent { .. } => "claim_recent",
            Command::Tracked(_) => "tracked",
            Command::Atomic(_) => "atomic",
            Command::PurgeUser { .. } => "purge_user",
            Command::Audit(_) => "audit",
        }
    }

    /// Rough size in bytes, used to bound batches.
    pub fn approx_size(&self) -> usize {
        match self {
            Command::Append { body, .. }
            | Command::Enqueue { body, .. }
            | Command::Noop { payload: body } => body.len() + 256,
            Command::Batch(cmds) | Command::Atomic(cmds) => {
                cmds.iter().map(Command::approx_size).sum()
            }
            _ => 256,
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// Why the state machine refused a command. Refusals are deterministic: every replica refuses
/// the same entry the same way, and the log entry still counts as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("mailbox does not exist: {0}")]
    NoSuchMailbox(String),
    #[error("mailbox already exists: {0}")]
    MailboxExists(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("over quota")]
    OverQuota,
    #[error("queue entry does not exist: {0}")]
    NoSuchQueueEntry(String),
    #[error("recipient {recipient} is not in queue entry {queue_id}")]
    NoSuchRecipient { queue_id: String, recipient: String },
    #[error("queue entry already exists: {0}")]
    QueueEntryExists(String),
    #[error("permission denied: {0}")]
    NoPermission(String),
    #[error("UNCHANGEDSINCE test failed for every UID")]
    Modified,
    #[error("{0}")]
    Invalid(String),
}

/// The state machine's answer to one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Blank and membership entries, and `Noop`.
    None,
    Created {
        uidvalidity: u32,
    },
    Done,
    Appended {
        uidvalidity: u32,
        uid: u32,
        modseq: u64,
    },
    FlagsStored {
        /// (uid, new modseq, new flags) for every message that changed.
        updated: Vec<(u32, u64, Vec<String>)>,
        /// UIDs refused by UNCHANGEDSINCE (RFC 7162 `[MODIFIED ...]`).
        modified: Vec<u32>,
    },
    Expunged {
        uids: Vec<u32>,
        highestmodseq: u64,
    },
    /// COPYUID / MOVE's COPYUID: (source uid, destination uid) pairs.
    Copied {
        uidvalidity: u32,
        pairs: Vec<(u32, u32)>,
    },
    Enqueued {
        queue_id: String,
    },
    Delivered {
        uidvalidity: u32,
        uid: u32,
        duplicate: bool,
    },
    Error(ApplyError),
    /// Replies to a [`Command::Batch`], in order.
    Batch(Vec<Reply>),
    /// Answer to a [`Command::Fence`]: the holder record as it stood before this entry.
    Fenced {
        previous: Option<HolderRecord>,
    },
    /// Answer to a [`Command::ClaimRecent`]: the UIDs `from..to` (to exclusive) are recent in
    /// the claiming session.
    RecentClaimed {
        uidvalidity: u32,
        from: u32,
        to: u32,
    },
}

/// What happened, as seen by subscribers of a group's change feed (IMAP IDLE, the job
/// controller). Published after the entry's effects are durable in the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    MailboxCreated {
        user: String,
        mailbox: String,
    },
    MailboxRenamed {
        user: String,
        from: String,
        to: String,
    },
    MailboxDeleted {
        user: String,
        mailbox: String,
    },
    MessageAdded {
        user: String,
        mailbox: String,
        uid: u32,
        modseq: u64,
    },
    FlagsChanged {
        user: String,
        mailbox: String,
        uid: u32,
        modseq: u64,
        flags: Vec<String>,
    },
    Expunged {
        user: String,
        mailbox: String,
        uids: Vec<u32>,
        modseq: u64,
    },
    Enqueued {
        queue_id: String,
    },
    QueueUpdated {
        queue_id: String,
    },
    QueueRemoved {
        queue_id: String,
    },
    QuotaChanged {
        user: String,
    },
    /// A mailbox's ACL changed (sessions with it selected re-check their rights).
    AclChanged {
        user: String,
        mailbox: String,
    },
    /// The embedded directory changed.
    DirectoryChanged,
    /// The whole state was replaced by an installed snapshot: subscribers must re-read.
    SnapshotInstalled,
}

/// One applied change, tagged with where it sits in the group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub group: String,
    pub term: u64,
    pub index: u64,
    pub event: Event,
}

/// The fencing token of a floating-address holder: (Raft term, node id), ordered by term
/// first. A term alone is not enough: a token names who held the address, and the pair is
/// what the audit trail and external fence hooks see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FenceToken {
    pub term: u64,
    pub node: u64,
}

impl std::fmt::Display for FenceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.term, self.node)
    }
}

/// Changes of a group's floating-address holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceOp {
    /// Proposed by a new master before it takes the address. Its commit proves the master's
    /// leadership is committed in its term; the reply tells it whether the previous holder
    /// released the address explicitly.
    Acquire {
        token: FenceToken,
        /// The address (`198.18.0.100/24`), or `None` in address-less mode.
        address: Option<String>,
        at_ms: i64,
    },
    /// Proposed by a holder that gave the address up on purpose (switchover, shutdown),
    /// after it removed the address.
    Release {
        token: FenceToken,
        at_ms: i64,
        reason: String,
    },
}

/// One holder of a group's floating address, as recorded in the group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    pub token: FenceToken,
    pub address: Option<String>,
    /// Wall-clock time chosen by the acquiring node.
    pub acquired_at_ms: i64,
    /// Set when the holder recorded an explicit release; a holder that lost its lease (crash,
    /// partition) cannot record anything, so its record stays open.
    pub released_at_ms: Option<i64>,
    pub release_reason: Option<String>,
}
