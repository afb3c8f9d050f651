//! One IMAP session: its states (not authenticated, authenticated, selected), the session's
//! view of the selected mailbox (sequence numbers ↔ UIDs, flags), kept in step with other
//! sessions through the group's change feed, the read loop, and the dispatch tables that hand
//! each command to the file of its family.
//!
//! # Layout
//!
//! - `op/general.rs`: CAPABILITY, NOOP/CHECK, LOGOUT, ID, ENABLE.
//! - `op/auth.rs`: STARTTLS, LOGIN, AUTHENTICATE, and relaying the session to the master.
//! - `op/select.rs`: SELECT/EXAMINE, UNSELECT, CLOSE; syncing the selected mailbox's view.
//! - `op/mailbox.rs`: NAMESPACE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST/LSUB, STATUS.
//! - `op/list_ext.rs`: the forms `listext.rs` frames: extended LIST (RFC 5258, RFC 5819
//!   LIST-STATUS, RFC 6154 SPECIAL-USE), STATUS with APPENDLIMIT (RFC 7889), CREATE with
//!   `USE` (RFC 6154 CREATE-SPECIAL-USE).
//! - `op/append.rs`: APPEND (with MULTIAPPEND and RFC 6855's UTF8 data item).
//! - `names.rs`: mailbox names on the wire: modified UTF-7, or UTF-8 after ENABLE
//!   UTF8=ACCEPT (RFC 6855).
//! - `op/store.rs`: STORE, EXPUNGE, UID EXPUNGE, COPY, MOVE.
//! - `op/quota.rs`: GETQUOTAROOT, GETQUOTA, SETQUOTA.
//! - `op/idle.rs`: IDLE.
//! - `fetch.rs`, `search.rs`, `sharing.rs`: FETCH, SEARCH and the RFC 4314 ACL commands.
//! - `sort.rs`: SORT (RFC 5256, with RFC 5957's DISPLAYFROM/DISPLAYTO) and THREAD
//!   (ORDEREDSUBJECT, REFERENCES), on the search of `search.rs`.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bounded_static::IntoBoundedStatic;
use halyard_raft_store::acl::Rights;
use halyard_raft_store::{ApplyError, Change, Command as StoreCommand, MailboxRecord, Reply};
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{Atom, Tag, Vec1};
use imap_codec::imap_types::extensions::quota::Resource;
use imap_codec::imap_types::extensions::sort::SortAlgorithm;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::extensions::utf8::Utf8Kind;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Capability, Code, Data, Response};
use tokio::sync::broadcast;

use super::conn::Conn;
use super::esearch::Extras;
use super::{Framed, Kind, bye, encode, frame, skip_line, status};
use crate::Shared;
use crate::store::{Account, StoreFail};

pub const DELIMITER: char = '/';

/// The RFC 2342 "other users" namespace: `Other Users/<owner address>/<mailbox>` names a
/// mailbox another user of the same resource group shared with this one (RFC 4314 ACL).
pub const OTHER_USERS: &str = "Other Users";

/// A mailbox a command names: whose it is and its name in the owner's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub owner: String,
    pub name: String,
}

/// How `me` sees `owner`'s mailbox `name`.
pub(crate) fn display_name(me: &str, owner: &str, name: &str) -> String {
    if owner == me {
        name.to_string()
    } else {
        format!("{OTHER_USERS}{DELIMITER}{owner}{DELIMITER}{name}")
    }
}

/// Splits a decoded mailbox name into owner and name (`me` for personal names).
pub(crate) fn split_target(me: &str, full: String) -> Result<Target, String> {
    let Some(rest) = full
        .strip_prefix(OTHER_USERS)
        .and_then(|r| r.strip_prefix(DELIMITER))
    else {
        return Ok(Target {
            owner: me.to_string(),
            name: full,
        });
    };
    let (owner, name) = rest
        .split_once(DELIMITER)
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| format!("{full:?} is not a mailbox: use {OTHER_USERS}/<user>/<mailbox>"))?;
    Ok(Target {
        owner: owner.to_string(),
        name: halyard_raft_store::apply::canonical_mailbox(name),
    })
}

/// The CAPABILITY list for a session in this state.
/// The capabilities to list; `mechanisms`: the SASL mechanisms offered (before login).
pub fn capabilities(
    shared: &Shared,
    tls: bool,
    authenticated: bool,
    mechanisms: &[halyard_directory::sasl::Mechanism],
) -> Vec<Capability<'static>> {
    let mut caps = vec![
        Capability::Imap4Rev1,
        Capability::from(Atom::try_from("IMAP4rev2").expect("an atom")),
    ];
    let atom = |s: &'static str| Capability::from(Atom::try_from(s).unwrap());
    if !authenticated {
        if shared.tls.is_some() && !tls {
            caps.push(Capability::StartTls);
        }
        if shared.cfg.require_tls_for_login && !tls {
            caps.push(Capability::LoginDisabled);
        }
        for m in mechanisms {
            if let Ok(m) = AuthMechanism::try_from(m.name()) {
                caps.push(Capability::Auth(m));
            }
        }
        caps.push(Capability::SaslIr);
    }
    caps.extend([
        Capability::LiteralPlus,
        Capability::Idle,
        Capability::Enable,
        Capability::Move,
        Capability::Quota,
        Capability::QuotaRes(Resource::Storage),
        Capability::QuotaRes(Resource::Message),
        Capability::Id,
        Capability::Namespace,
        Capability::UidPlus,
        Capability::Unselect,
        Capability::CondStore,
        Capability::QResync,
        Capability::Binary,
        Capability::Compress {
            algorithm: imap_codec::imap_types::extensions::compress::CompressionAlgorithm::Deflate,
        },
        atom("MULTIAPPEND"),
        atom("ACL"),
        atom("RIGHTS=texk"),
        atom("CHILDREN"),
        atom("SPECIAL-USE"),
        atom("CREATE-SPECIAL-USE"),
        atom("LIST-EXTENDED"),
        atom("LIST-STATUS"),
        Capability::StatusSize,
        append_limit(shared),
        Capability::Sort(None),
        Capability::Sort(Some(SortAlgorithm::Display)),
        Capability::Thread(ThreadingAlgorithm::OrderedSubject),
        Capability::Thread(ThreadingAlgorithm::References),
        atom("ESEARCH"),
        atom("SEARCHRES"),
        Capability::Utf8(Utf8Kind::Accept),
        atom("OBJECTID"),
    ]);
    caps
}

/// RFC 7889 `APPENDLIMIT=<n>`: the largest message APPEND takes, which is the largest
/// literal (a bigger one is refused with `NO [TOOBIG]` before any of it is read), the same
/// for every mailbox.
fn append_limit(shared: &Shared) -> Capability<'static> {
    let text = format!("APPENDLIMIT={}", append_limit_value(shared));
    Capability::from(Atom::try_from(text).expect("an atom"))
}

/// The limit [`append_limit`] advertises, also STATUS's APPENDLIMIT item: RFC 3501's
/// `number` is 32-bit, so a larger configured limit is announced as the largest one.
pub(crate) fn append_limit_value(shared: &Shared) -> u64 {
    shared.cfg.max_literal_bytes.min(u64::from(u32::MAX))
}

/// The session's picture of the selected mailbox.
pub(crate) struct Selected {
    /// Whose mailbox it is (the session's user, or another user who shared it).
    pub owner: String,
    pub name: String,
    pub read_only: bool,
    /// The session user's RFC 4314 rights on it (all, for their own mailboxes).
    pub rights: Rights,
    /// The ACL changed: re-read the rights at the next sync.
    pub acl_changed: bool,
    /// UIDs by sequence number (index + 1).
    pub uids: Vec<u32>,
    /// uid -> (modseq, flags) as last reported to the client.
    pub flags: HashMap<u32, (u64, Vec<String>)>,
    /// Re-read the whole index at the next sync (feed lagged, mailbox renamed, snapshot).
    pub dirty: bool,
    /// Changes seen on the feed, not yet reported: new UIDs (with their state when known),
    /// flag changes, expunged UIDs.
    pub added: std::collections::BTreeMap<u32, Option<(u64, Vec<String>)>>,
    pub changed: HashMap<u32, (u64, Vec<String>)>,
    pub expunged: std::collections::BTreeSet<u32>,
    /// Keywords this session announced in FLAGS and PERMANENTFLAGS, in announcement order:
    /// a response may only show a keyword once it is here (RFC 3501 §7.2.6).
    pub keywords: Vec<String>,
    /// The messages that are `\Recent` in this session (RFC 3501 §2.3.2).
    pub recent: Recent,
    /// RFC 5182's search result variable, `$`: the UIDs (ascending) the last SEARCH with
    /// SAVE saved. It lives and dies with the selected mailbox (empty after SELECT, EXAMINE,
    /// UNSELECT, CLOSE), and loses messages as their expunges are reported.
    pub saved: Vec<u32>,
}

/// RFC 3501 `\Recent`: a message is recent in the one session that first learns of it.
///
/// Each mailbox has a replicated *recent mark*, the lowest UID no session has claimed. A
/// read-write session claims (proposes [`StoreCommand::ClaimRecent`]) when it selects the
/// mailbox and whenever it learns of messages at or above what it claimed: it gets the UIDs
/// from the mark to UIDNEXT and moves the mark past them, in one log entry, so no two
/// sessions claim a message, even across a change of master. EXAMINE changes nothing
/// (RFC 3501 §6.3.2): it shows every unclaimed message as recent without claiming it.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// Half-open UID ranges recent in this session, ascending.
    ranges: Vec<(u32, u32)>,
    /// This session claims new arrivals (read-write, and every member of the group can apply
    /// `ClaimRecent`); otherwise nothing new becomes recent, except under EXAMINE.
    pub claims: bool,
}

impl Recent {
    /// What a read-write session claimed: `from..to`.
    pub fn claimed(from: u32, to: u32) -> Recent {
        let mut r = Recent {
            ranges: Vec::new(),
            claims: true,
        };
        r.add(from, to);
        r
    }

    /// What an EXAMINE session shows: every UID from the mark on.
    pub fn unclaimed_from(mark: u32) -> Recent {
        Recent {
            ranges: vec![(mark, u32::MAX)],
            claims: false,
        }
    }

    pub fn add(&mut self, from: u32, to: u32) {
        if from < to {
            self.ranges.push((from, to));
        }
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..*b).contains(&uid))
    }

    /// Whether a claim would hand this session `uid`: it is at or above everything claimed.
    pub fn wants(&self, uid: u32) -> bool {
        self.claims && self.ranges.last().is_none_or(|(_, b)| uid >= *b)
    }

    /// How many of `uids` are recent (the `* n RECENT` count).
    pub fn count(&self, uids: &[u32]) -> u32 {
        if self.ranges.is_empty() {
            return 0;
        }
        uids.iter().filter(|u| self.contains(**u)).count() as u32
    }
}

/// A message's flags as FETCH shows them: the stored ones, and `\Recent` when it is recent
/// in this session.
pub(crate) fn fetch_flags(
    strings: &[String],
    recent: bool,
) -> Vec<imap_codec::imap_types::flag::FlagFetch<'static>> {
    use imap_codec::imap_types::flag::FlagFetch;
    let mut out: Vec<FlagFetch<'static>> =
        flags_of(strings).into_iter().map(FlagFetch::Flag).collect();
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Conn,
    pub(crate) account: Option<Account>,
    pub(crate) sel: Option<Selected>,
    pub(crate) condstore: bool,
    /// `ENABLE QRESYNC` was given: expunges are reported as VANISHED (RFC 7162 §3.2.10).
    pub(crate) qresync: bool,
    /// `ENABLE UTF8=ACCEPT` or `ENABLE IMAP4rev2` was given: mailbox names are UTF-8 both
    /// ways, not modified UTF-7, and strings may go out as UTF-8 quoted strings.
    pub(crate) utf8: bool,
    /// `ENABLE UTF8=ACCEPT` itself (RFC 6855): SEARCH takes no CHARSET, APPEND takes the
    /// `UTF8` data item.
    pub(crate) utf8_accept: bool,
    /// `ENABLE IMAP4rev2` was given (RFC 9051): the session follows IMAP4rev2's rules where
    /// they differ from IMAP4rev1's (see `op::general::enable`).
    pub(crate) rev2: bool,
    literal_end: usize,
    pub(crate) feed: Option<broadcast::Receiver<Arc<Change>>>,
    /// The session was relayed to the master and is over.
    pub(crate) relayed: bool,
    /// What the framer's pre-pass took out of the command being handled: its ESEARCH
    /// result options, and whether it wrote `$` (see [`super::esearch`]).
    pub(crate) extras: Extras,
}

/// What a command handler returns: false when the session is over.
pub(crate) type Res = io::Result<bool>;

/// Whether `set` names `n`, with `*` standing for `largest`. Constant work per range, so a
/// client's `1:4294967295` costs what `1:5` does (expanding the set, as imap-types'
/// `SequenceSet::iter` does, would allocate 16 GB for it).
pub(crate) fn set_contains(
    set: &imap_codec::imap_types::sequence::SequenceSet,
    n: u32,
    largest: u32,
) -> bool {
    use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => v(s) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (v(a), v(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// The largest number `set` names, with `*` standing for `largest`.
pub(crate) fn set_max(set: &imap_codec::imap_types::sequence::SequenceSet, largest: u32) -> u32 {
    use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(s) => v(s),
            Sequence::Range(a, b) => v(a).max(v(b)),
        })
        .max()
        .unwrap_or(0)
}

pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The name a command gives, in the session's convention (`utf8`: RFC 6855's UTF-8, else
/// modified UTF-7; see [`super::names`]), canonical and checked.
pub(crate) fn mailbox_name(m: &Mailbox<'_>, utf8: bool) -> Result<String, String> {
    match m {
        Mailbox::Inbox => Ok("INBOX".into()),
        Mailbox::Other(o) => {
            let name = super::names::name_of(o.as_ref(), utf8)?;
            let name = halyard_raft_store::apply::canonical_mailbox(&name);
            // `foo/` declares a hierarchy level (RFC 3501 §6.3.3): the name is `foo`.
            let name = match name.strip_suffix(halyard_raft_store::HIERARCHY_DELIMITER) {
                Some(level) if !level.is_empty() => level.to_string(),
                _ => name,
            };
            if name.is_empty() || name.len() > 512 {
                return Err("mailbox name must be 1-512 bytes".into());
            }
            Ok(name)
        }
    }
}

pub(crate) fn flag_strings(flags: &[Flag<'_>]) -> Vec<String> {
    flags.iter().map(|f| f.to_string()).collect()
}

pub(crate) fn flags_of(strings: &[String]) -> Vec<Flag<'static>> {
    strings
        .iter()
        .filter_map(|s| Flag::try_from(s.as_str()).ok().map(|f| f.into_static()))
        .collect()
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, conn: Conn) -> Session {
        Session {
            shared,
            conn,
            account: None,
            sel: None,
            condstore: false,
            qresync: false,
            utf8: false,
            utf8_accept: false,
            rev2: false,
            literal_end: 0,
            feed: None,
            relayed: false,
            extras: Extras::default(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write(bytes).await
    }

    pub(crate) async fn send_data(&mut self, d: Data<'_>) -> io::Result<()> {
        let b = encode(&Response::Data(d));
        self.send(&b).await
    }

    pub(crate) fn caps(&self) -> Vec<Capability<'static>> {
        let mechanisms = if self.account.is_some() {
            Vec::new()
        } else {
            crate::sasl::offered(&self.shared, &self.conn)
        };
        capabilities(
            &self.shared,
            self.conn.is_tls(),
            self.account.is_some(),
            &mechanisms,
        )
    }

    pub(crate) async fn run(&mut self) -> io::Result<()> {
        let caps = Vec1::try_from(self.caps()).map_err(|_| io::Error::other("caps"))?;
        let g = status(
            Kind::Ok,
            None,
            Some(Code::Capability(caps)),
            "Halyard IMAP4rev1 IMAP4rev2 ready",
        );
        self.send(&g).await?;
        self.commands().await
    }

    /// A session another node's multiplexor authenticated and relays here (this node is the
    /// master of the user's group): `+OK` or `-ERR reason` to that node, then commands, in
    /// the authenticated state, with no greeting (the client had it from that node).
    pub(crate) async fn run_relayed(
        &mut self,
        principal: halyard_directory::Principal,
        via: u64,
    ) -> io::Result<()> {
        let acct = match crate::store::relayed_account(&self.shared, principal).await {
            Ok(a) => a,
            Err(e) => return self.send(format!("-ERR {e}\r\n").as_bytes()).await,
        };
        tracing::info!(user = %acct.user, group = acct.group.name(), peer = %self.conn.peer, via, "IMAP login (relayed)");
        self.ensure_inbox_and_quota(&acct).await;
        self.account = Some(acct);
        self.send(b"+OK\r\n").await?;
        self.commands().await
    }

    /// Reads and answers commands until the session ends.
    async fn commands(&mut self) -> io::Result<()> {
        let autologout = Duration::from_secs(self.shared.cfg.autologout_secs);
        loop {
            let framed = frame(
                &mut self.conn.buf,
                &mut self.literal_end,
                self.shared.cfg.max_line_bytes,
                self.shared.cfg.max_literal_bytes,
            );
            match framed {
                Framed::Command(c, extras) => {
                    self.extras = extras;
                    let go_on = self.handle(*c).await?;
                    self.extras = Extras::default();
                    if !go_on || self.relayed {
                        return Ok(());
                    }
                }
                Framed::Continue => {
                    self.send(b"+ Ready for literal data\r\n").await?;
                    if !self.read(autologout).await? {
                        return Ok(());
                    }
                }
                Framed::NeedMore => {
                    self.conn.release_idle_buffer();
                    if !self.read(autologout).await? {
                        return Ok(());
                    }
                }
                Framed::Reject(r) => self.send(&r).await?,
                Framed::RejectLine(r) => {
                    self.send(&r).await?;
                    while !skip_line(&mut self.conn) {
                        if !self.read(autologout).await? {
                            return Ok(());
                        }
                    }
                }
                Framed::Fatal(r) => {
                    self.send(&r).await?;
                    return Ok(());
                }
                Framed::Acl(tag, cmd) => {
                    if !self.acl_command(tag, cmd).await? {
                        return Ok(());
                    }
                }
                Framed::Ext(tag, cmd) => {
                    if !self.ext_command(tag, cmd).await? {
                        return Ok(());
                    }
                }
                Framed::MultiAppend(tag, appends) => self.multi_append(&tag, appends).await?,
            }
        }
    }

    /// Reads more input; false at end of stream, autologout, or when this node stops being
    /// the master of the session's mailboxes (the client reconnects to the new master).
    pub(crate) async fn read(&mut self, autologout: Duration) -> io::Result<bool> {
        let node = self.shared.backend.node_id;
        let lost = async {
            match &self.account {
                Some(a) => a.lost_mastership(node).await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::time::timeout(autologout, self.conn.read_more());
        let r = tokio::select! {
            r = read => r,
            _ = lost => {
                let _ = self.conn.write(&bye("the master of your mailboxes moved; please reconnect")).await;
                return Ok(false);
            }
        };
        match r {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = self.send(&bye("autologout: idle for too long")).await;
                Ok(false)
            }
        }
    }

    pub(crate) async fn ok(
        &mut self,
        tag: &Tag<'_>,
        code: Option<Code<'_>>,
        text: &str,
    ) -> io::Result<()> {
        let b = status(Kind::Ok, Some(tag), code, text);
        self.send(&b).await
    }
    pub(crate) async fn no(
        &mut self,
        tag: &Tag<'_>,
        code: Option<Code<'_>>,
        text: &str,
    ) -> io::Result<()> {
        let b = status(Kind::No, Some(tag), code, text);
        self.send(&b).await
    }
    pub(crate) async fn bad(&mut self, tag: &Tag<'_>, text: &str) -> io::Result<()> {
        let b = status(Kind::Bad, Some(tag), None, text);
        self.send(&b).await
    }

    pub(crate) async fn fail(&mut self, tag: &Tag<'_>, f: StoreFail) -> io::Result<()> {
        match f {
            StoreFail::Refused(ApplyError::OverQuota) => {
                self.no(tag, Some(Code::OverQuota), "over quota").await
            }
            StoreFail::Refused(ApplyError::NoSuchMailbox(m)) => {
                self.no(tag, Some(Code::TryCreate), &format!("no mailbox {m}"))
                    .await
            }
            StoreFail::Refused(e @ ApplyError::NoPermission(_)) => {
                self.no(tag, Some(noperm()), &e.to_string()).await
            }
            StoreFail::Refused(e) => self.no(tag, None, &e.to_string()).await,
            StoreFail::Unavailable(e) => {
                let code = Code::Other(imap_codec::imap_types::response::CodeOther::unvalidated(
                    b"UNAVAILABLE".as_slice(),
                ));
                self.no(tag, Some(code), &e).await
            }
        }
    }

    /// Handles one command; false when the session is over. Commands of any state and those
    /// that log in are dispatched here, the rest by `handle_authenticated`.
    async fn handle(&mut self, cmd: Command<'static>) -> Res {
        let tag = cmd.tag.clone();
        let authed = self.account.is_some();
        match cmd.body {
            CommandBody::Capability => self.capability(&tag).await?,
            CommandBody::Noop | CommandBody::Check => self.noop(&tag).await?,
            CommandBody::Logout => return self.logout(&tag).await,
            CommandBody::Id { .. } => self.id(&tag).await?,
            CommandBody::StartTLS if !authed => self.starttls(&tag).await?,
            CommandBody::Login { username, password } if !authed => {
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pw = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(&tag, &login, &pw).await?;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } if !authed => {
                self.authenticate(
                    &tag,
                    mechanism,
                    initial_response.map(|s| s.declassify().to_vec()),
                )
                .await?;
            }
            CommandBody::Login { .. }
            | CommandBody::Authenticate { .. }
            | CommandBody::StartTLS => {
                self.bad(&tag, "already authenticated").await?;
            }
            _ if !authed => {
                self.bad(&tag, "log in first (LOGIN or AUTHENTICATE)")
                    .await?;
            }
            body => return self.handle_authenticated(tag, body).await,
        }
        Ok(true)
    }

    pub(crate) fn acct(&self) -> &Account {
        self.account.as_ref().expect("authenticated")
    }

    /// Answers `NO [NOPERM]` when the `r` right on the selected mailbox was withdrawn since
    /// SELECT (FETCH and SEARCH read nothing then); true if it did.
    pub(crate) async fn refused_without_read_right(&mut self, tag: &Tag<'_>) -> io::Result<bool> {
        if self.sel.as_ref().is_some_and(|s| !s.rights.has('r')) {
            self.no(
                tag,
                Some(noperm()),
                "the \"r\" right on this mailbox was withdrawn",
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Proposes `cmd` on `owner`'s mailboxes: as is for the user's own, wrapped in
    /// `Command::As` for another user's (their ACL is checked when the entry is applied).
    pub(crate) async fn propose_on(
        &self,
        owner: &str,
        cmd: StoreCommand,
    ) -> Result<Reply, StoreFail> {
        let acct = self.acct();
        let cmd = if owner == acct.user {
            cmd
        } else {
            StoreCommand::As {
                actor: acct.user.clone(),
                cmd: Box::new(cmd),
            }
        };
        acct.propose(cmd).await
    }

    /// The owner and name of the mailbox a command names; when it names none, answers BAD
    /// with the reason and gives None.
    pub(crate) async fn target(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
    ) -> io::Result<Option<Target>> {
        let name = mailbox_name(mailbox, self.utf8);
        match name.and_then(|n| split_target(&self.acct().user, n)) {
            Ok(t) => Ok(Some(t)),
            // The command parsed: a name the server cannot use is a NO, not a BAD (RFC 3501
            // §5.1.3 lets a server refuse names that are not modified UTF-7; after ENABLE
            // UTF8=ACCEPT, names that are not UTF-8 or hold characters RFC 6855 §3 bars).
            Err(e) => {
                self.no(tag, Some(cannot()), &e).await?;
                Ok(None)
            }
        }
    }

    /// The dispatch table of the authenticated and selected states: each arm hands the
    /// command to its handler under `op/` (or in `fetch.rs`, `search.rs`).
    async fn handle_authenticated(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Res {
        match body {
            CommandBody::Enable { capabilities } => self.enable(&tag, capabilities).await?,
            CommandBody::Namespace => self.namespace(&tag).await?,
            CommandBody::Select {
                mailbox,
                parameters,
            } => self.select(&tag, &mailbox, false, parameters).await?,
            CommandBody::Examine {
                mailbox,
                parameters,
            } => self.select(&tag, &mailbox, true, parameters).await?,
            CommandBody::Create { mailbox } => self.create(&tag, &mailbox).await?,
            CommandBody::Delete { mailbox } => self.delete(&tag, &mailbox).await?,
            CommandBody::Rename { from, to } => self.rename(&tag, &from, &to).await?,
            CommandBody::Subscribe { mailbox } => self.subscribe(&tag, &mailbox, true).await?,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&tag, &mailbox, false).await?,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, reference, mailbox_wildcard, false).await?,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, reference, mailbox_wildcard, true).await?,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status_cmd(&tag, &mailbox, item_names.as_ref()).await?,
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&tag, &mailbox, flags, date, message).await?,
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(&tag, &mailbox).await?,
            CommandBody::GetQuota { root } => self.get_quota(&tag, root).await?,
            CommandBody::SetQuota { .. } => self.set_quota(&tag).await?,
            CommandBody::Idle => return self.idle(&tag).await,
            CommandBody::Compress { .. } => self.compress(&tag).await?,
            // The commands from here on need a selected mailbox.
            CommandBody::Unselect
            | CommandBody::Close
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Search { .. }
            | CommandBody::Sort { .. }
            | CommandBody::Thread { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
                if self.sel.is_none() =>
            {
                self.bad(&tag, "no mailbox selected").await?
            }
            CommandBody::Unselect => self.unselect(&tag).await?,
            CommandBody::Close => self.close(&tag).await?,
            CommandBody::Expunge => self.expunge(&tag, None).await?,
            CommandBody::ExpungeUid { sequence_set } => {
                self.expunge_uid(&tag, &sequence_set).await?
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                self.search(&tag, charset, criteria.into_inner(), uid)
                    .await?
            }
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                let search = search_criteria.into_inner();
                self.sort(&tag, sort_criteria.as_ref(), &charset, &search, uid)
                    .await?
            }
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                let search = search_criteria.into_inner();
                self.thread(&tag, &algorithm, &charset, &search, uid)
                    .await?
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                self.fetch(&tag, &sequence_set, macro_or_item_names, uid, modifiers)
                    .await?
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.store(&tag, &sequence_set, kind, response, &flags, uid, modifiers)
                    .await?
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_move(&tag, &sequence_set, &mailbox, uid, false)
                    .await?
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_move(&tag, &sequence_set, &mailbox, uid, true)
                    .await?
            }
            _ => self.bad(&tag, "command not supported").await?,
        }
        Ok(true)
    }

    /// The tagged answer to a command whose work is one proposal: after a sync, OK with
    /// `text`, or why it failed.
    pub(crate) async fn done(
        &mut self,
        tag: &Tag<'_>,
        r: Result<Reply, StoreFail>,
        text: &str,
    ) -> io::Result<()> {
        match r {
            Ok(_) => {
                self.sync(true).await?;
                self.ok(tag, None, text).await
            }
            Err(f) => self.fail(tag, f).await,
        }
    }

    /// The session user's rights on `owner`'s mailbox, or why it cannot be used: a mailbox
    /// the user may not even look up (`l`) is reported as missing, so names do not leak.
    pub(crate) fn rights_on(&self, owner: &str, mb: &MailboxRecord) -> Option<Rights> {
        let r = halyard_raft_store::acl::effective(owner, &self.acct().user, &mb.acl);
        (r.has('l') || r.has('r')).then_some(r)
    }
}

/// RFC 5530 `CANNOT`: the operation can never succeed (e.g. a name the server refuses).
pub(crate) fn cannot() -> Code<'static> {
    Code::Other(imap_codec::imap_types::response::CodeOther::unvalidated(
        b"CANNOT".as_slice(),
    ))
}

/// RFC 5530 `NOPERM`: the ACL does not allow this.
pub(crate) fn noperm() -> Code<'static> {
    Code::Other(imap_codec::imap_types::response::CodeOther::unvalidated(
        b"NOPERM".as_slice(),
    ))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A UIDVALIDITY proposal: seconds since the epoch (apply keeps it strictly increasing).
pub(crate) fn now_uidvalidity() -> u32 {
    (now_ms() / 1000).clamp(1, u32::MAX as i64) as u32
}
