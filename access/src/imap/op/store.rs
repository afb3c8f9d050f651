//! Changing the messages of the selected mailbox: STORE (with CONDSTORE's UNCHANGEDSINCE),
//! EXPUNGE and UID EXPUNGE, COPY and MOVE (with COPYUID, RFC 4315).

use std::collections::HashMap;
use std::io;
use std::num::{NonZeroU32, NonZeroU64};

use halyard_raft_store::{Command as StoreCommand, FlagAction, Reply};
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data, Response};
use imap_codec::imap_types::sequence::SequenceSet;

use crate::imap::session::{Session, fetch_flags, flag_strings, nz};
use crate::imap::{Kind, encode, status};

impl Session {
    pub(crate) async fn expunge(
        &mut self,
        tag: &Tag<'_>,
        uids: Option<Vec<u32>>,
    ) -> io::Result<()> {
        let sel = self.sel.as_ref().expect("selected");
        if sel.read_only {
            return self.no(tag, None, "mailbox is read-only (EXAMINE)").await;
        }
        // UID EXPUNGE removes only the named messages that are \Deleted.
        let uids = uids.map(|u| {
            u.into_iter()
                .filter(|x| {
                    sel.flags
                        .get(x)
                        .is_some_and(|(_, f)| f.iter().any(|f| f == "\\Deleted"))
                })
                .collect::<Vec<_>>()
        });
        let owner = sel.owner.clone();
        let cmd = StoreCommand::Expunge {
            user: owner.clone(),
            mailbox: sel.name.clone(),
            uids,
        };
        match self.propose_on(&owner, cmd).await {
            Ok(reply) => {
                let sel = self.sel.as_mut().expect("selected");
                match reply {
                    Reply::Expunged { uids, .. } => sel.expunged.extend(uids),
                    _ => sel.dirty = true,
                }
                self.sync(true).await?;
                self.ok(tag, None, "EXPUNGE completed").await
            }
            Err(f) => self.fail(tag, f).await,
        }
    }

    /// UID EXPUNGE: only the named messages that are \Deleted.
    pub(crate) async fn expunge_uid(
        &mut self,
        tag: &Tag<'_>,
        sequence_set: &SequenceSet,
    ) -> io::Result<()> {
        let uids: Vec<u32> = self
            .resolve(sequence_set, true)
            .into_iter()
            .map(|x| x.1)
            .collect();
        self.expunge(tag, Some(uids)).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: Vec<imap_codec::imap_types::command::StoreModifier>,
    ) -> io::Result<()> {
        self.sync(false).await?;
        if !uid && !self.seqs_valid(set) {
            return self.no(tag, None, "no such message").await;
        }
        let sel = self.sel.as_ref().expect("selected");
        if sel.read_only {
            return self.no(tag, None, "mailbox is read-only (EXAMINE)").await;
        }
        let targets = self.resolve(set, uid);
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                imap_codec::imap_types::command::StoreModifier::UnchangedSince(v) => *v,
            })
            .next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        if targets.is_empty() {
            return self.ok(tag, None, "STORE completed").await;
        }
        let action = match kind {
            StoreType::Add => FlagAction::Add,
            StoreType::Remove => FlagAction::Remove,
            StoreType::Replace => FlagAction::Replace,
        };
        let owner = sel.owner.clone();
        let cmd = StoreCommand::StoreFlags {
            user: owner.clone(),
            mailbox: sel.name.clone(),
            uids: targets.iter().map(|t| t.1).collect(),
            action,
            flags: flag_strings(flags),
            unchanged_since,
        };
        let (updated, modified) = match self.propose_on(&owner, cmd).await {
            Ok(Reply::FlagsStored { updated, modified }) => (updated, modified),
            Ok(other) => return self.no(tag, None, &format!("{other:?}")).await,
            Err(f) => return self.fail(tag, f).await,
        };
        let mut out = Vec::new();
        let seq_of: HashMap<u32, u32> = targets.iter().map(|(s, u)| (*u, *s)).collect();
        let silent = matches!(response, StoreResponse::Silent);
        let sel = self.sel.as_mut().expect("selected");
        if !silent {
            out.extend(crate::imap::op::select::announce_keywords(
                sel,
                updated.iter().flat_map(|(_, _, fl)| fl.iter()),
            ));
        }
        for (u, modseq, fl) in &updated {
            sel.flags.insert(*u, (*modseq, fl.clone()));
            // With UNCHANGEDSINCE, .SILENT still reports MODSEQ (RFC 7162 §3.1.3).
            if silent && unchanged_since.is_none() {
                continue;
            }
            let Some(seq) = seq_of.get(u) else { continue };
            let mut items = Vec::new();
            if !silent {
                items.push(imap_codec::imap_types::fetch::MessageDataItem::Flags(
                    fetch_flags(fl, sel.recent.contains(*u)),
                ));
            }
            if uid {
                items.push(imap_codec::imap_types::fetch::MessageDataItem::Uid(nz(*u)));
            }
            if self.condstore
                && let Some(ms) = NonZeroU64::new(*modseq)
            {
                items.push(imap_codec::imap_types::fetch::MessageDataItem::ModSeq(ms));
            }
            if let Ok(items) = Vec1::try_from(items) {
                out.extend(encode(&Response::Data(Data::Fetch {
                    seq: nz(*seq),
                    items,
                })));
            }
        }
        self.send(&out).await?;
        self.sync(false).await?;
        if modified.is_empty() {
            self.ok(tag, None, "STORE completed").await
        } else {
            let nums: Vec<u32> = if uid {
                modified.clone()
            } else {
                modified
                    .iter()
                    .filter_map(|u| seq_of.get(u).copied())
                    .collect()
            };
            let set = SequenceSet::try_from(
                nums.iter()
                    .filter_map(|n| NonZeroU32::new(*n))
                    .collect::<Vec<_>>(),
            )
            .ok();
            match set {
                Some(s) => {
                    self.ok(
                        tag,
                        Some(Code::Modified(s)),
                        "conditional STORE failed for some",
                    )
                    .await
                }
                None => self.ok(tag, None, "STORE completed").await,
            }
        }
    }

    pub(crate) async fn copy_move(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
    ) -> io::Result<()> {
        let Some(to) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        if !uid && !self.seqs_valid(set) {
            return self.no(tag, None, "no such message").await;
        }
        let sel = self.sel.as_ref().expect("selected");
        if is_move && sel.read_only {
            return self.no(tag, None, "mailbox is read-only (EXAMINE)").await;
        }
        let targets = self.resolve(set, uid);
        if targets.is_empty() {
            return self.ok(tag, None, "nothing to do").await;
        }
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let me = self.acct().user.clone();
        let user = sel.owner.clone();
        let from = sel.name.clone();
        // Someone else's mailbox on either side: the copy is done as the session's user.
        let on_behalf = if user != me { &user } else { &to.owner }.clone();
        let to_user = (to.owner != user).then(|| to.owner.clone());
        let cmd = if is_move && self.acct().group.command_level() >= 2 {
            // Also into the selected mailbox itself (new UIDs, the old ones expunged).
            StoreCommand::MoveAny {
                user,
                from,
                to_user,
                to: to.name,
                uids,
            }
        } else if is_move {
            StoreCommand::Move {
                user,
                from,
                to_user,
                to: to.name,
                uids,
            }
        } else {
            StoreCommand::Copy {
                user,
                from,
                to_user,
                to: to.name,
                uids,
            }
        };
        match self.propose_on(&on_behalf, cmd).await {
            Ok(Reply::Copied { uidvalidity, pairs }) => {
                let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                let code = match (uid_set(&src), uid_set(&dst)) {
                    (Some(s), Some(d)) => Some(Code::CopyUid {
                        uid_validity: nz(uidvalidity),
                        source: s,
                        destination: d,
                    }),
                    _ => None,
                };
                if is_move {
                    let b = status(Kind::Ok, None, code, "moved");
                    self.send(&b).await?;
                    self.sel
                        .as_mut()
                        .expect("selected")
                        .expunged
                        .extend(src.iter().copied());
                    self.sync(true).await?;
                    self.ok(tag, None, "MOVE completed").await
                } else {
                    self.sync(true).await?;
                    self.ok(tag, code, "COPY completed").await
                }
            }
            Ok(other) => self.no(tag, None, &format!("{other:?}")).await,
            Err(f) => self.fail(tag, f).await,
        }
    }
}

fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let mut els: Vec<UidElement> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        els.push(if start == end {
            UidElement::Single(nz(start))
        } else {
            UidElement::Range(nz(start), nz(end))
        });
        i += 1;
    }
    Vec1::try_from(els).ok().map(UidSet)
}
