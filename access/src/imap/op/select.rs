//! The selected state: SELECT/EXAMINE, UNSELECT and CLOSE, and keeping the session's view of
//! the selected mailbox (sequence numbers, UIDs, flags) in step with other sessions through
//! the group's change feed; sequence sets are resolved against that view.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroU64;

use halyard_raft_store::{Command as StoreCommand, Event, MailboxRecord, MessageRecord};
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::flag::{Flag, FlagPerm};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data, Response};
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::sync::broadcast;

use crate::imap::session::{
    Recent, Selected, Session, Target, fetch_flags, flags_of, noperm, nz, set_contains, set_max,
};
use crate::imap::{Kind, encode, esearch, status};
use crate::store::StoreFail;

impl Session {
    /// SELECT (`read_only` false) and EXAMINE.
    pub(crate) async fn select(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        parameters: Vec<SelectParameter>,
    ) -> io::Result<()> {
        let mut resync = None;
        for p in parameters {
            match p {
                // SELECT (CONDSTORE) enables CONDSTORE (RFC 7162 §3.1.8).
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } if !self.qresync => {
                    return self.bad(tag, "QRESYNC is not enabled").await;
                }
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => resync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids)),
            }
        }
        let Some(target) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        // Leaving a selected mailbox for another: say so (RFC 7162 §3.2.11).
        if self.sel.is_some() {
            self.send(&status(
                Kind::Ok,
                None,
                Some(Code::Closed),
                "previous mailbox closed",
            ))
            .await?;
        }
        self.open(tag, target, read_only, resync).await
    }

    async fn open(
        &mut self,
        tag: &Tag<'_>,
        target: Target,
        read_only: bool,
        resync: Option<(u32, u64, Option<SequenceSet>)>,
    ) -> io::Result<()> {
        self.sel = None;
        self.feed = Some(self.acct().group.subscribe());
        let reader = match self.acct().linearizable().await {
            Ok(r) => r,
            Err(f) => return self.fail(tag, f).await,
        };
        let Target { owner, name } = target;
        let found = match reader.mailbox(&owner, &name) {
            Ok(Some(mb)) => self.rights_on(&owner, &mb).map(|r| (mb, r)),
            Ok(None) => None,
            Err(e) => {
                self.feed = None;
                return self.fail(tag, StoreFail::Unavailable(e.to_string())).await;
            }
        };
        let Some((mb, rights)) = found else {
            self.feed = None;
            return self.no(tag, None, &format!("no mailbox {name}")).await;
        };
        if !rights.has('r') {
            self.feed = None;
            return self
                .no(tag, Some(noperm()), "SELECT needs the \"r\" right")
                .await;
        }
        // Without any right to change it, the mailbox opens read-only (RFC 4314 §4).
        let read_only = read_only || !"swite".chars().any(|c| rights.has(c));
        let msgs: Vec<MessageRecord> = match reader.messages(&owner, &name) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.feed = None;
                return self.no(tag, None, &format!("no mailbox {name}")).await;
            }
            Err(e) => {
                self.feed = None;
                return self.fail(tag, StoreFail::Unavailable(e.to_string())).await;
            }
        };
        let uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
        let flags = msgs
            .iter()
            .map(|m| (m.uid, (m.modseq, m.flags.clone())))
            .collect();
        let keywords = keywords_in(msgs.iter().flat_map(|m| m.flags.iter()), &[]);
        // Claimed after the index was read: the claim covers every message read, and the
        // ones that arrive meanwhile come through the feed, already claimed.
        // IMAP4rev2 has no \Recent: such a session neither shows nor claims any.
        let recent = if self.rev2 || self.acct().group.command_level() < 2 {
            Recent::default()
        } else if read_only {
            Recent::unclaimed_from(reader.recent_mark(mb.id).unwrap_or(u32::MAX))
        } else {
            match claim_recent(self.acct(), &owner, &name).await {
                Ok((from, to)) => Recent::claimed(from, to),
                Err(f) => {
                    self.feed = None;
                    return self.fail(tag, f).await;
                }
            }
        };
        let count = (!self.rev2).then(|| recent.count(&uids));
        let mut out = select_responses(&mb, &msgs, &uids, &keywords, count);
        // RFC 8474 §4.2.
        let id = crate::imap::objectid::mailbox_code(self.acct().group.name(), mb.id);
        out.extend(status(Kind::Ok, None, Some(id), "Ok"));
        if self.rev2 {
            // RFC 9051 §6.3.2: the mailbox's LIST line.
            match self.list_line(&owner, &name) {
                Ok(line) => out.extend(line),
                Err(e) => {
                    self.feed = None;
                    return self.fail(tag, StoreFail::Unavailable(e.to_string())).await;
                }
            }
        }
        self.send(&out).await?;
        self.sel = Some(Selected {
            owner,
            name,
            read_only,
            rights,
            acl_changed: false,
            uids,
            flags,
            dirty: false,
            added: Default::default(),
            changed: HashMap::new(),
            expunged: Default::default(),
            keywords,
            recent,
            saved: Vec::new(),
        });
        if let Some((uidvalidity, modseq, known)) = resync {
            let out =
                self.qresync_answer(&reader, &mb, &msgs, (uidvalidity, modseq, known.as_ref()));
            self.send(&out).await?;
        }
        let (code, text) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        self.ok(tag, Some(code), text).await
    }

    pub(crate) async fn unselect(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        self.sel = None;
        self.feed = None;
        self.ok(tag, None, "UNSELECT completed").await
    }

    /// CLOSE: expunges silently (when allowed) and leaves the selected state.
    pub(crate) async fn close(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        let sel = self.sel.take().expect("selected");
        self.feed = None;
        if !sel.read_only && sel.rights.has('e') {
            let _ = self
                .propose_on(
                    &sel.owner,
                    StoreCommand::Expunge {
                        user: sel.owner.clone(),
                        mailbox: sel.name,
                        uids: None,
                    },
                )
                .await;
        }
        self.ok(tag, None, "CLOSE completed").await
    }

    /// Reports other sessions' changes to the selected mailbox: EXPUNGE (when allowed),
    /// EXISTS and FETCH FLAGS. Changes come from the change feed's events (new UIDs, flags with
    /// their MODSEQ, expunged UIDs), so a sync costs what changed, not the mailbox size; only a
    /// lagging feed, a rename/delete of the mailbox or an installed snapshot make it re-read
    /// the whole index.
    pub(crate) async fn sync(&mut self, allow_expunge: bool) -> io::Result<()> {
        let rev2 = self.rev2;
        let Some(sel) = &mut self.sel else {
            return Ok(());
        };
        let user = sel.owner.clone();
        if let Some(feed) = &mut self.feed {
            loop {
                match feed.try_recv() {
                    Ok(c) => note_event(sel, &c.event),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => sel.dirty = true,
                    Err(_) => break,
                }
            }
        }
        let Some(acct) = &self.account else {
            return Ok(());
        };
        if sel.acl_changed {
            sel.acl_changed = false;
            if let Ok(Some(mb)) = acct.reader().mailbox(&user, &sel.name) {
                sel.rights = halyard_raft_store::acl::effective(&user, &acct.user, &mb.acl);
            }
        }
        if sel.dirty {
            // Start over from the index: every difference becomes a pending change.
            let msgs = match acct.reader().messages(&user, &sel.name) {
                Ok(Some(m)) => m,
                Ok(None) => Vec::new(),
                Err(_) => return Ok(()),
            };
            let present: HashMap<u32, &MessageRecord> = msgs.iter().map(|m| (m.uid, m)).collect();
            for u in &sel.uids {
                match present.get(u) {
                    None => {
                        sel.expunged.insert(*u);
                    }
                    Some(m) => {
                        sel.changed.insert(*u, (m.modseq, m.flags.clone()));
                    }
                }
            }
            let last = sel.uids.last().copied().unwrap_or(0);
            for m in &msgs {
                if m.uid > last {
                    sel.added.insert(m.uid, Some((m.modseq, m.flags.clone())));
                }
            }
            sel.dirty = false;
        }
        let mut out = Vec::new();
        if allow_expunge && !sel.expunged.is_empty() {
            out.extend(report_expunges(sel, self.qresync));
        }
        // Which messages the responses below show flags of: those added from here on, and
        // the changed ones.
        let shown_from = sel.uids.len();
        let mut changed_states: Vec<(u64, Vec<String>)> = Vec::new();
        if !sel.added.is_empty() {
            let last = sel.uids.last().copied().unwrap_or(0);
            let added = std::mem::take(&mut sel.added);
            let need: Vec<u32> = added
                .iter()
                .filter(|(u, f)| **u > last && f.is_none())
                .map(|(u, _)| *u)
                .collect();
            let fetched: HashMap<u32, (u64, Vec<String>)> = if need.is_empty() {
                HashMap::new()
            } else {
                match acct.reader().messages_by_uid(&user, &sel.name, &need) {
                    Ok(Some(v)) => v
                        .into_iter()
                        .map(|m| (m.uid, (m.modseq, m.flags)))
                        .collect(),
                    _ => HashMap::new(),
                }
            };
            let before = sel.uids.len();
            for (u, f) in added {
                if u <= last || sel.expunged.remove(&u) {
                    continue;
                }
                // Expunged before it was ever announced: never mention it.
                let Some(state) = f.or_else(|| fetched.get(&u).cloned()) else {
                    continue;
                };
                sel.uids.push(u);
                sel.flags.insert(u, state);
                sel.changed.remove(&u);
            }
            if sel.uids.len() != before {
                // This session is the first to learn of them: claim them as recent, unless
                // an earlier claim already covers them (or another session's did).
                if sel.uids[before..].iter().any(|u| sel.recent.wants(*u)) {
                    match claim_recent(acct, &user, &sel.name).await {
                        Ok((from, to)) => sel.recent.add(from, to),
                        Err(e) => tracing::debug!(error = %e, "claiming recent messages failed"),
                    }
                }
                out.extend(encode(&Response::Data(Data::Exists(sel.uids.len() as u32))));
                if !rev2 {
                    out.extend(encode(&Response::Data(Data::Recent(
                        sel.recent.count(&sel.uids),
                    ))));
                }
            }
        }
        if !sel.changed.is_empty() {
            let changed = std::mem::take(&mut sel.changed);
            out.extend(flag_updates(
                sel,
                &changed,
                self.condstore,
                &mut changed_states,
            ));
        }
        if !out.is_empty() {
            // Keywords the added or changed messages bring are announced before the
            // responses that show them (RFC 3501 §7.2.6).
            let shown: Vec<String> = sel.uids[shown_from.min(sel.uids.len())..]
                .iter()
                .filter_map(|u| sel.flags.get(u))
                .chain(changed_states.iter())
                .flat_map(|(_, f)| f.iter().cloned())
                .collect();
            let mut all = announce_keywords(sel, shown.iter());
            all.extend(out);
            self.send(&all).await?;
        }
        Ok(())
    }

    /// Whether `set` is RFC 5182's `$` (the framer put [`esearch::MARKER`] in its place).
    pub(crate) fn is_saved(&self, set: &SequenceSet) -> bool {
        self.extras.dollar && esearch::is_marker(set)
    }

    /// (sequence number, uid) of the messages a set names, in order.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<(u32, u32)> {
        let Some(sel) = &self.sel else { return vec![] };
        let numbered = sel.uids.iter().enumerate().map(|(i, u)| (i as u32 + 1, *u));
        if self.is_saved(set) {
            // `$` names the same messages in FETCH and UID FETCH alike (RFC 5182 §2.1).
            return numbered
                .filter(|(_, u)| sel.saved.binary_search(u).is_ok())
                .collect();
        }
        let Some(&max_uid) = sel.uids.last() else {
            return vec![];
        };
        // Ascending, each message once, whatever order or overlap the set has.
        let largest = if uid { max_uid } else { sel.uids.len() as u32 };
        numbered
            .filter(|(seq, u)| set_contains(set, if uid { *u } else { *seq }, largest))
            .collect()
    }

    /// Whether every sequence number of a non-UID set exists. `$` always does: even empty,
    /// it is a valid set that names nothing (RFC 5182 §2.1).
    pub(crate) fn seqs_valid(&self, set: &SequenceSet) -> bool {
        if self.is_saved(set) {
            return true;
        }
        let n = self.sel.as_ref().map_or(0, |s| s.uids.len() as u32);
        if n == 0 {
            return false;
        }
        set_max(set, n) <= n
    }
}

/// EXPUNGE responses for the messages `sel` learned are gone (or, with QRESYNC, one
/// VANISHED for them all, RFC 7162 §3.2.10); they leave the session's view.
fn report_expunges(sel: &mut Selected, qresync: bool) -> Vec<u8> {
    let mut out = Vec::new();
    // Highest sequence number first, so each number is right when sent.
    let mut seq = sel.uids.len();
    let mut vanished = Vec::new();
    while seq > 0 {
        let uid = sel.uids[seq - 1];
        if sel.expunged.remove(&uid) {
            sel.uids.remove(seq - 1);
            sel.flags.remove(&uid);
            sel.changed.remove(&uid);
            if qresync {
                vanished.push(uid);
            } else {
                out.extend(encode(&Response::Data(Data::Expunge(nz(seq as u32)))));
            }
        }
        seq -= 1;
    }
    vanished.reverse();
    out.extend(crate::imap::op::qresync::vanished(false, &vanished));
    sel.expunged.clear();
    out
}

/// Proposes [`StoreCommand::ClaimRecent`] for `owner`'s mailbox `name`: the UIDs that are
/// now recent in this session.
async fn claim_recent(
    acct: &crate::store::Account,
    owner: &str,
    name: &str,
) -> Result<(u32, u32), StoreFail> {
    let cmd = StoreCommand::ClaimRecent {
        user: owner.to_string(),
        mailbox: name.to_string(),
    };
    let cmd = if owner == acct.user {
        cmd
    } else {
        StoreCommand::As {
            actor: acct.user.clone(),
            cmd: Box::new(cmd),
        }
    };
    match acct.propose(cmd).await? {
        halyard_raft_store::Reply::RecentClaimed { from, to, .. } => Ok((from, to)),
        other => Err(StoreFail::Unavailable(format!(
            "unexpected answer to a recent claim: {other:?}"
        ))),
    }
}

/// The untagged responses SELECT and EXAMINE send before their tagged OK. `recent`: the
/// `* n RECENT` count, `None` under IMAP4rev2, which has neither it nor `[UNSEEN n]`.
fn select_responses(
    mb: &MailboxRecord,
    msgs: &[MessageRecord],
    uids: &[u32],
    keywords: &[String],
    recent: Option<u32>,
) -> Vec<u8> {
    // The mailbox record was read before the index: a message appended in between is in
    // `msgs` but not yet in the record's UIDNEXT / HIGHESTMODSEQ. Never announce a UIDNEXT
    // at or below a UID we report (RFC 9051 §2.3.1.1), nor a HIGHESTMODSEQ below a
    // message's (found by the Jepsen list-append workload under a membership change).
    let uidnext = mb
        .uidnext
        .max(uids.last().map_or(0, |u| u.saturating_add(1)));
    let highestmodseq = msgs
        .iter()
        .map(|m| m.modseq)
        .fold(mb.highestmodseq, u64::max);
    let first_unseen = msgs
        .iter()
        .position(|m| !m.flags.iter().any(|f| f == "\\Seen"))
        .map(|p| p as u32 + 1);
    let mut out = flag_lists(keywords);
    out.extend(encode(&Response::Data(Data::Exists(uids.len() as u32))));
    if let Some(recent) = recent {
        out.extend(encode(&Response::Data(Data::Recent(recent))));
    }
    if let Some(u) = first_unseen.filter(|_| recent.is_some()) {
        out.extend(status(
            Kind::Ok,
            None,
            Some(Code::Unseen(nz(u))),
            "first unseen",
        ));
    }
    out.extend(status(
        Kind::Ok,
        None,
        Some(Code::UidValidity(nz(mb.uidvalidity))),
        "UIDs valid",
    ));
    out.extend(status(
        Kind::Ok,
        None,
        Some(Code::UidNext(nz(uidnext))),
        "predicted next UID",
    ));
    if let Some(m) = NonZeroU64::new(highestmodseq) {
        out.extend(status(
            Kind::Ok,
            None,
            Some(Code::HighestModSeq(m)),
            "highest",
        ));
    }
    out
}

/// `* n FETCH (FLAGS … UID … [MODSEQ …])` for each message of `changed` whose flags are
/// newer than what the session last reported; records them as reported and in `shown`.
fn flag_updates(
    sel: &mut Selected,
    changed: &HashMap<u32, (u64, Vec<String>)>,
    condstore: bool,
    shown: &mut Vec<(u64, Vec<String>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, uid) in sel.uids.iter().enumerate() {
        let Some((modseq, flags)) = changed.get(uid) else {
            continue;
        };
        let Some(known) = sel.flags.get_mut(uid) else {
            continue;
        };
        if known.0 >= *modseq {
            continue;
        }
        *known = (*modseq, flags.clone());
        shown.push((*modseq, flags.clone()));
        let mut items = vec![
            imap_codec::imap_types::fetch::MessageDataItem::Flags(fetch_flags(
                flags,
                sel.recent.contains(*uid),
            )),
            imap_codec::imap_types::fetch::MessageDataItem::Uid(nz(*uid)),
        ];
        if condstore && let Some(ms) = NonZeroU64::new(*modseq) {
            items.push(imap_codec::imap_types::fetch::MessageDataItem::ModSeq(ms));
        }
        if let Ok(items) = Vec1::try_from(items) {
            out.extend(encode(&Response::Data(Data::Fetch {
                seq: nz(i as u32 + 1),
                items,
            })));
        }
    }
    out
}

/// The system flags every mailbox accepts.
const SYSTEM_FLAGS: [Flag<'static>; 5] = [
    Flag::Answered,
    Flag::Flagged,
    Flag::Deleted,
    Flag::Seen,
    Flag::Draft,
];

/// `* FLAGS (...)` and `* OK [PERMANENTFLAGS (...)]`: the system flags, these keywords, and
/// `\*` (clients may create keywords).
fn flag_lists(keywords: &[String]) -> Vec<u8> {
    let mut flags: Vec<Flag<'static>> = SYSTEM_FLAGS.to_vec();
    flags.extend(flags_of(keywords));
    let mut out = encode(&Response::Data(Data::Flags(flags.clone())));
    let mut perm: Vec<FlagPerm> = flags.into_iter().map(FlagPerm::Flag).collect();
    perm.push(FlagPerm::Asterisk);
    out.extend(status(
        Kind::Ok,
        None,
        Some(Code::PermanentFlags(perm)),
        "flags permitted",
    ));
    out
}

/// The keywords among `flags` that are not in `known` (compared without regard to case, as
/// IMAP compares flags), each once, in first-seen order. Strings that are not a valid
/// keyword (never shown by FETCH either) are left out.
fn keywords_in<'a>(flags: impl Iterator<Item = &'a String>, known: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        if f.starts_with('\\')
            || known
                .iter()
                .chain(out.iter())
                .any(|k| k.eq_ignore_ascii_case(f))
            || !matches!(Flag::try_from(f.as_str()), Ok(Flag::Keyword(_)))
        {
            continue;
        }
        out.push(f.clone());
    }
    out
}

/// RFC 3501 §7.2.6: before a response shows a keyword this session has not announced, the
/// server sends FLAGS and PERMANENTFLAGS listing it. Returns those two responses (nothing
/// when every keyword in `flags` is known) and records the keywords as announced.
pub(crate) fn announce_keywords<'a>(
    sel: &mut Selected,
    flags: impl Iterator<Item = &'a String>,
) -> Vec<u8> {
    let new = keywords_in(flags, &sel.keywords);
    if new.is_empty() {
        return Vec::new();
    }
    sel.keywords.extend(new);
    flag_lists(&sel.keywords)
}

/// Records what a change means for the selected mailbox.
pub(super) fn note_event(sel: &mut Selected, e: &Event) {
    let user = sel.owner.as_str();
    let mine = |u: &str, m: &str| u == user && m == sel.name;
    match e {
        Event::MessageAdded {
            user: u,
            mailbox,
            uid,
            ..
        } if mine(u, mailbox) => {
            sel.added.entry(*uid).or_insert(None);
        }
        Event::FlagsChanged {
            user: u,
            mailbox,
            uid,
            modseq,
            flags,
        } if mine(u, mailbox) => {
            if let Some(Some(state)) = sel.added.get_mut(uid) {
                *state = (*modseq, flags.clone());
            } else if !sel.added.contains_key(uid) {
                sel.changed.insert(*uid, (*modseq, flags.clone()));
            } else {
                sel.added.insert(*uid, Some((*modseq, flags.clone())));
            }
        }
        Event::Expunged {
            user: u,
            mailbox,
            uids,
            ..
        } if mine(u, mailbox) => {
            for x in uids {
                sel.changed.remove(x);
                sel.expunged.insert(*x);
            }
        }
        Event::MailboxDeleted { user: u, mailbox } if mine(u, mailbox) => sel.dirty = true,
        Event::MailboxRenamed { user: u, from, to }
            if u == user && (*from == sel.name || *to == sel.name) =>
        {
            sel.dirty = true
        }
        Event::AclChanged { user: u, mailbox } if mine(u, mailbox) => sel.acl_changed = true,
        Event::SnapshotInstalled => {
            sel.dirty = true;
            sel.acl_changed = true;
        }
        _ => {}
    }
}
