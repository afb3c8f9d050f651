//! SEARCH (RFC 3501 §6.4.4, with CONDSTORE's MODSEQ): flags, sizes, dates and UIDs come from
//! the index; header and text keys parse the stored message (only when a key needs it).

use std::io;
use std::num::NonZeroU32;

use chrono::{DateTime, NaiveDate, Utc};
use halyard_raft_store::MessageRecord;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::search::SearchKey;
use mail_parser::MessageParser;

use super::session::Session;
use super::{Kind, encode, status};

struct Candidate<'a> {
    seq: u32,
    uid: u32,
    rec: &'a MessageRecord,
    flags: &'a [String],
    modseq: u64,
    raw: Option<Vec<u8>>,
    load: &'a dyn Fn(&MessageRecord) -> Vec<u8>,
}

impl Candidate<'_> {
    fn raw(&mut self) -> &[u8] {
        if self.raw.is_none() {
            self.raw = Some((self.load)(self.rec));
        }
        self.raw.as_deref().unwrap_or_default()
    }

    fn has(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
    }

    fn internal_date(&self) -> Option<NaiveDate> {
        DateTime::<Utc>::from_timestamp_millis(self.rec.internal_date_ms).map(|d| d.date_naive())
    }

    fn header_block(&mut self) -> String {
        let raw = self.raw();
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 2)
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
            .unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }

    /// Every value of header `name`, raw and decoded, for substring matching.
    fn header_text(&mut self, name: &str) -> String {
        let raw = self.raw().to_vec();
        let mut out = String::new();
        if let Some(m) = MessageParser::default().parse(&raw) {
            for h in m.headers() {
                if h.name().eq_ignore_ascii_case(name) {
                    out.push_str(&format!("{:?}\n", h.value()));
                    let o = h.offset_start() as usize;
                    let e = (h.offset_end() as usize).min(raw.len());
                    if o <= e {
                        out.push_str(&String::from_utf8_lossy(&raw[o..e]));
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    fn sent_date(&mut self) -> Option<NaiveDate> {
        let raw = self.raw().to_vec();
        let m = MessageParser::default().parse_headers(&raw)?;
        let d = m.date()?;
        DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0).map(|d| d.date_naive())
    }

    fn body_text(&mut self) -> String {
        let raw = self.raw().to_vec();
        let mut out = String::new();
        if let Some(m) = MessageParser::default().parse(&raw) {
            for i in 0..m.text_body.len() {
                if let Some(t) = m.body_text(i) {
                    out.push_str(&t);
                    out.push('\n');
                }
            }
            for i in 0..m.html_body.len() {
                if let Some(t) = m.body_html(i) {
                    out.push_str(&t);
                    out.push('\n');
                }
            }
        }
        if out.is_empty() {
            // Unparseable: search the raw text after the header.
            let h = self.header_block().len();
            out = String::from_utf8_lossy(&self.raw()[h.min(raw.len())..]).into_owned();
        }
        out
    }
}

fn contains(hay: &str, needle: &[u8]) -> bool {
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    hay.to_lowercase().contains(&needle)
}

fn matches(k: &SearchKey<'_>, c: &mut Candidate<'_>, max_seq: u32, max_uid: u32) -> bool {
    let nzm = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    match k {
        SearchKey::And(keys) => keys
            .as_ref()
            .iter()
            .all(|k| matches(k, c, max_seq, max_uid)),
        SearchKey::Or(a, b) => matches(a, c, max_seq, max_uid) || matches(b, c, max_seq, max_uid),
        SearchKey::Not(k) => !matches(k, c, max_seq, max_uid),
        SearchKey::SequenceSet(s) => s.iter(nzm(max_seq)).any(|n| n.get() == c.seq),
        SearchKey::Uid(s) => s.iter(nzm(max_uid)).any(|n| n.get() == c.uid),
        SearchKey::All => true,
        SearchKey::Answered => c.has("\\Answered"),
        SearchKey::Unanswered => !c.has("\\Answered"),
        SearchKey::Deleted => c.has("\\Deleted"),
        SearchKey::Undeleted => !c.has("\\Deleted"),
        SearchKey::Draft => c.has("\\Draft"),
        SearchKey::Undraft => !c.has("\\Draft"),
        SearchKey::Flagged => c.has("\\Flagged"),
        SearchKey::Unflagged => !c.has("\\Flagged"),
        SearchKey::Seen => c.has("\\Seen"),
        SearchKey::Unseen => !c.has("\\Seen"),
        // No message is "recent" (RFC 9051 dropped \Recent; no session owns new mail here).
        SearchKey::Recent => false,
        SearchKey::New => false,
        SearchKey::Old => true,
        SearchKey::Keyword(a) => c.has(a.as_ref()),
        SearchKey::Unkeyword(a) => !c.has(a.as_ref()),
        SearchKey::Larger(n) => c.rec.size > u64::from(*n),
        SearchKey::Smaller(n) => c.rec.size < u64::from(*n),
        SearchKey::Before(d) => c.internal_date().is_some_and(|x| x < *d.as_ref()),
        SearchKey::On(d) => c.internal_date().is_some_and(|x| x == *d.as_ref()),
        SearchKey::Since(d) => c.internal_date().is_some_and(|x| x >= *d.as_ref()),
        SearchKey::SentBefore(d) => c.sent_date().is_some_and(|x| x < *d.as_ref()),
        SearchKey::SentOn(d) => c.sent_date().is_some_and(|x| x == *d.as_ref()),
        SearchKey::SentSince(d) => c.sent_date().is_some_and(|x| x >= *d.as_ref()),
        SearchKey::From(s) => contains(&c.header_text("From"), s.as_ref()),
        SearchKey::To(s) => contains(&c.header_text("To"), s.as_ref()),
        SearchKey::Cc(s) => contains(&c.header_text("Cc"), s.as_ref()),
        SearchKey::Bcc(s) => contains(&c.header_text("Bcc"), s.as_ref()),
        SearchKey::Subject(s) => contains(&c.header_text("Subject"), s.as_ref()),
        SearchKey::Header(name, s) => {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            let t = c.header_text(&name);
            // An empty string matches every message that has the field.
            if s.as_ref().is_empty() {
                !t.is_empty()
            } else {
                contains(&t, s.as_ref())
            }
        }
        SearchKey::Body(s) => contains(&c.body_text(), s.as_ref()),
        SearchKey::Text(s) => {
            let h = c.header_block();
            contains(&h, s.as_ref()) || contains(&c.body_text(), s.as_ref())
        }
        SearchKey::ModSequence { modseq, .. } => c.modseq >= *modseq,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

impl Session {
    pub(crate) async fn search(
        &mut self,
        tag: &Tag<'_>,
        criteria: Vec<SearchKey<'_>>,
        uid: bool,
    ) -> io::Result<()> {
        // Bring flags up to date first (no EXPUNGE during SEARCH, RFC 3501 §7.4.1).
        self.sync(false).await?;
        if self.sel.as_ref().is_some_and(|s| !s.rights.has('r')) {
            let b = status(
                Kind::No,
                Some(tag),
                Some(super::session::noperm()),
                "the \"r\" right on this mailbox was withdrawn",
            );
            return self.conn.write(&b).await;
        }
        let uses_modseq = criteria.iter().any(mentions_modseq);
        if uses_modseq {
            self.condstore = true;
        }
        let acct = self.account.as_ref().expect("authenticated");
        let sel = self.sel.as_ref().expect("selected");
        let reader = acct.reader();
        let records = match reader.messages(&sel.owner, &sel.name) {
            Ok(Some(m)) => m,
            Ok(None) => Vec::new(),
            Err(e) => {
                let b = status(Kind::No, Some(tag), None, &e.to_string());
                return self.conn.write(&b).await;
            }
        };
        let by_uid: std::collections::HashMap<u32, &MessageRecord> =
            records.iter().map(|r| (r.uid, r)).collect();
        let load = |r: &MessageRecord| reader.body(&r.body).ok().flatten().unwrap_or_default();
        let max_seq = sel.uids.len() as u32;
        let max_uid = sel.uids.last().copied().unwrap_or(0);
        let mut hits = Vec::new();
        let mut top_modseq = 0;
        for (i, u) in sel.uids.iter().enumerate() {
            let Some(rec) = by_uid.get(u) else { continue };
            let (modseq, flags) = sel
                .flags
                .get(u)
                .map(|(m, f)| (*m, f.as_slice()))
                .unwrap_or((rec.modseq, rec.flags.as_slice()));
            let mut c = Candidate {
                seq: i as u32 + 1,
                uid: *u,
                rec,
                flags,
                modseq,
                raw: None,
                load: &load,
            };
            if criteria
                .iter()
                .all(|k| matches(k, &mut c, max_seq, max_uid))
            {
                hits.push(if uid { *u } else { i as u32 + 1 });
                top_modseq = top_modseq.max(modseq);
            }
        }
        let nums = hits.into_iter().filter_map(NonZeroU32::new).collect();
        let modseq = if uses_modseq {
            std::num::NonZeroU64::new(top_modseq)
        } else {
            None
        };
        let b = encode(&Response::Data(Data::Search(nums, modseq)));
        self.conn.write(&b).await?;
        self.sync(false).await?;
        let b = status(Kind::Ok, Some(tag), None, "SEARCH completed");
        self.conn.write(&b).await
    }
}

fn mentions_modseq(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(ks) => ks.as_ref().iter().any(mentions_modseq),
        SearchKey::Or(a, b) => mentions_modseq(a) || mentions_modseq(b),
        SearchKey::Not(k) => mentions_modseq(k),
        _ => false,
    }
}
