//! QRESYNC (RFC 7162 §3.2): `ENABLE QRESYNC`, `SELECT`/`EXAMINE` with the `QRESYNC`
//! parameter (what vanished and what changed since the client's MODSEQ, before the tagged
//! OK), `UID FETCH … (CHANGEDSINCE m VANISHED)`, and `VANISHED` in place of `EXPUNGE` once
//! enabled (in `select.rs`'s sync).
//!
//! What vanished comes from the group's tombstones when they reach back to the client's
//! MODSEQ ([`halyard_raft_store::SmShared::vanished_since`]); otherwise it is every UID the
//! client may know (its known-uids, or all below UIDNEXT) that is not in the mailbox, which
//! RFC 7162 §3.2.5.1 allows: a client ignores UIDs it never had.

use std::io;
use std::num::NonZeroU64;

use halyard_raft_store::{MailboxRecord, MessageRecord, SmShared};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::imap::encode;
use crate::imap::session::{Session, fetch_flags, nz, set_contains};

/// `* VANISHED [(EARLIER)] set` for `uids` (ascending), nothing for none.
pub(crate) fn vanished(earlier: bool, uids: &[u32]) -> Vec<u8> {
    match ranges_to_set(&runs(uids)) {
        Some(known_uids) => encode(&Response::Data(Data::Vanished {
            earlier,
            known_uids,
        })),
        None => Vec::new(),
    }
}

/// Ascending UIDs as inclusive runs.
fn runs(uids: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &u in uids {
        match out.last_mut() {
            Some((_, b)) if u == b.saturating_add(1) => *b = u,
            Some((_, b)) if u <= *b => {}
            _ => out.push((u, u)),
        }
    }
    out
}

fn ranges_to_set(runs: &[(u32, u32)]) -> Option<SequenceSet> {
    let seqs: Vec<Sequence> = runs
        .iter()
        .filter(|(a, _)| *a > 0)
        .map(|&(a, b)| {
            if a == b {
                Sequence::Single(SeqOrUid::Value(nz(a)))
            } else {
                Sequence::Range(SeqOrUid::Value(nz(a)), SeqOrUid::Value(nz(b)))
            }
        })
        .collect();
    Vec1::try_from(seqs).ok().map(SequenceSet)
}

/// The UIDs below `uidnext` that `known` names (all, when `None`) and `present` (ascending)
/// lacks, as inclusive runs: work in the number of present messages and of ranges, never
/// in the size of the ranges.
fn absent(known: Option<&SequenceSet>, uidnext: u32, present: &[u32]) -> Vec<(u32, u32)> {
    let last = uidnext.saturating_sub(1);
    let mut wanted: Vec<(u32, u32)> = match known {
        None => vec![(1, last)],
        Some(set) => set
            .0
            .as_ref()
            .iter()
            .map(|s| {
                let v = |x: &SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => last,
                };
                match s {
                    Sequence::Single(x) => (v(x), v(x)),
                    Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
                }
            })
            .map(|(a, b)| (a, b.min(last)))
            .filter(|(a, b)| a <= b)
            .collect(),
    };
    wanted.sort_unstable();
    let mut out = Vec::new();
    for (a, b) in wanted {
        // Present UIDs inside a..=b split it into gaps.
        let from = present.partition_point(|u| *u < a);
        let mut next = a;
        for &u in present[from..].iter().take_while(|u| **u <= b) {
            if u > next {
                out.push((next, u - 1));
            }
            next = u.saturating_add(1);
        }
        if next <= b && next > 0 {
            out.push((next, b));
        }
    }
    // Overlapping known ranges give overlapping gaps: merge.
    out.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (a, b) in out {
        match merged.last_mut() {
            Some((_, e)) if a <= e.saturating_add(1) => *e = (*e).max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// What vanished from `mb` since MODSEQ `since`, limited to `known`: exact from the
/// tombstones when they reach back that far, else the RFC's superset.
fn vanished_since(
    reader: &SmShared,
    mb: &MailboxRecord,
    since: u64,
    known: Option<&SequenceSet>,
    present: &[u32],
) -> Vec<u8> {
    match reader.vanished_since(mb.id, since) {
        Ok(Some(uids)) => {
            let uids: Vec<u32> = uids
                .into_iter()
                .filter(|u| known.is_none_or(|k| set_contains(k, *u, u32::MAX)))
                .collect();
            vanished(true, &uids)
        }
        _ => {
            let gaps = absent(known, mb.uidnext, present);
            match ranges_to_set(&gaps) {
                Some(known_uids) => encode(&Response::Data(Data::Vanished {
                    earlier: true,
                    known_uids,
                })),
                None => Vec::new(),
            }
        }
    }
}

impl Session {
    /// The part of a `SELECT … (QRESYNC (uidvalidity modseq [known-uids]))` answer that
    /// follows the usual responses: `VANISHED (EARLIER)` and a FETCH of every message
    /// changed since `modseq` — or nothing, when the UIDVALIDITY is not the client's.
    pub(crate) fn qresync_answer(
        &self,
        reader: &SmShared,
        mb: &MailboxRecord,
        msgs: &[MessageRecord],
        (uidvalidity, modseq, known): (u32, u64, Option<&SequenceSet>),
    ) -> Vec<u8> {
        if uidvalidity != mb.uidvalidity {
            return Vec::new();
        }
        let present: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
        let mut out = vanished_since(reader, mb, modseq, known, &present);
        let sel = self.sel.as_ref();
        for (i, m) in msgs.iter().enumerate() {
            if m.modseq <= modseq {
                continue;
            }
            let recent = sel.is_some_and(|s| s.recent.contains(m.uid));
            let mut items = vec![
                MessageDataItem::Uid(nz(m.uid)),
                MessageDataItem::Flags(fetch_flags(&m.flags, recent)),
            ];
            if let Some(ms) = NonZeroU64::new(m.modseq) {
                items.push(MessageDataItem::ModSeq(ms));
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

    /// `UID FETCH set (…) (CHANGEDSINCE m VANISHED)`: the UIDs of `set` expunged since `m`.
    pub(crate) async fn vanished_for_fetch(
        &mut self,
        reader: &SmShared,
        set: &SequenceSet,
        since: u64,
    ) -> io::Result<()> {
        let Some(sel) = &self.sel else { return Ok(()) };
        let Ok(Some(mb)) = reader.mailbox(&sel.owner, &sel.name) else {
            return Ok(());
        };
        // `$` (RFC 5182): the saved UIDs; when none are saved, nothing can have vanished.
        let saved = self.is_saved(set).then(|| ranges_to_set(&runs(&sel.saved)));
        let set = match &saved {
            None => set,
            Some(Some(s)) => s,
            Some(None) => return Ok(()),
        };
        let out = vanished_since(reader, &mb, since, Some(set), &sel.uids);
        self.send(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::sequence::SequenceSet;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn gaps_are_computed_from_ranges_not_by_counting() {
        assert_eq!(absent(None, 10, &[2, 3, 7]), vec![(1, 1), (4, 6), (8, 9)]);
        assert_eq!(absent(Some(&set("1:4294967295")), 6, &[1, 5]), vec![(2, 4)]);
        assert_eq!(absent(Some(&set("3,5:6")), 10, &[5]), vec![(3, 3), (6, 6)]);
        assert_eq!(absent(Some(&set("2:4,3:8")), 10, &[]), vec![(2, 8)]);
        assert_eq!(absent(None, 1, &[]), vec![]);
    }

    #[test]
    fn vanished_responses_use_ranges() {
        assert_eq!(
            vanished(true, &[1, 2, 3, 7]),
            b"* VANISHED (EARLIER) 1:3,7\r\n".to_vec()
        );
        assert_eq!(vanished(false, &[4]), b"* VANISHED 4\r\n".to_vec());
        assert!(vanished(false, &[]).is_empty());
    }
}
