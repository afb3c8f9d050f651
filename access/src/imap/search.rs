//! SEARCH (RFC 3501 §6.4.4, with CONDSTORE's MODSEQ, RFC 4731's ESEARCH result options and
//! RFC 5182's SAVE and `$`): flags, sizes, dates and UIDs come from the index; header and
//! text keys parse the stored message (only when a key needs it). The search itself
//! ([`Session::matching`]) is shared with SORT and THREAD (`sort.rs`), so `$` works there too.

use std::collections::HashMap;
use std::io;
use std::num::{NonZeroU32, NonZeroU64};

use chrono::{DateTime, NaiveDate, Utc};
use halyard_raft_store::MessageRecord;
use imap_codec::imap_types::core::{Charset, Tag};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use mail_parser::MessageParser;

use super::encode;
use super::esearch::{self, Found, IdKey};
use super::objectid;
use super::session::{Session, set_contains};

/// One message being tested. Everything read or parsed for it is kept for the other search
/// keys of the same SEARCH: the header block is read (only its byte range, from the index)
/// and parsed once, the body once, whatever number of keys use them.
struct Candidate<'a> {
    seq: u32,
    uid: u32,
    rec: &'a MessageRecord,
    flags: &'a [String],
    modseq: u64,
    /// `\Recent` in this session.
    recent: bool,
    raw: Option<Vec<u8>>,
    /// The header block, lower-cased.
    header_block: Option<String>,
    /// Lower-case field name → every value of it, decoded and raw, lower-cased.
    headers: Option<HashMap<String, String>>,
    sent: Option<Option<NaiveDate>>,
    /// Text of the body parts, lower-cased.
    body: Option<String>,
    load: &'a dyn Fn(&MessageRecord, u64, u64) -> Vec<u8>,
}

impl Candidate<'_> {
    fn raw(&mut self) -> &[u8] {
        if self.raw.is_none() {
            self.raw = Some((self.load)(self.rec, 0, self.rec.size));
        }
        self.raw.as_deref().unwrap_or_default()
    }

    fn has(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
    }

    fn internal_date(&self) -> Option<NaiveDate> {
        DateTime::<Utc>::from_timestamp_millis(self.rec.internal_date_ms).map(|d| d.date_naive())
    }

    /// The raw header block: a range read when the index knows where the body starts.
    fn header_bytes(&mut self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw[..header_end(raw)].to_vec();
        }
        match &self.rec.meta {
            Some(m) => (self.load)(self.rec, 0, m.body.body_start),
            None => {
                let raw = self.raw();
                raw[..header_end(raw)].to_vec()
            }
        }
    }

    fn parse_headers(&mut self) {
        if self.headers.is_some() {
            return;
        }
        let hdr = self.header_bytes();
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut sent = None;
        if let Some(m) = MessageParser::default().parse_headers(&hdr) {
            for h in m.headers() {
                let text = fields.entry(h.name().to_ascii_lowercase()).or_default();
                text.push_str(&format!("{:?}\n", h.value()).to_lowercase());
                let o = h.offset_start() as usize;
                let e = (h.offset_end() as usize).min(hdr.len());
                if o <= e {
                    text.push_str(&String::from_utf8_lossy(&hdr[o..e]).to_lowercase());
                    text.push('\n');
                }
            }
            // RFC 3501 §6.4.4: SENTBEFORE/SENTON/SENTSINCE compare the date of the Date:
            // header "disregarding time and timezone", i.e. the calendar date as written in
            // the header's own zone, not that instant converted to UTC.
            sent = m.date().and_then(|d| {
                NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
            });
        }
        self.header_block = Some(String::from_utf8_lossy(&hdr).to_lowercase());
        self.headers = Some(fields);
        self.sent = Some(sent);
    }

    /// Every value of header `name` (lower-cased), or `None` when the field is absent.
    fn header_text(&mut self, name: &str) -> Option<&str> {
        self.parse_headers();
        self.headers
            .as_ref()
            .and_then(|h| h.get(&name.to_ascii_lowercase()))
            .map(String::as_str)
    }

    /// RFC 8474's THREADID, from the envelope and the raw References field.
    fn thread_id(&mut self) -> String {
        let header = self.header_bytes();
        objectid::thread_id_of(self.rec, &header)
    }

    fn header_block(&mut self) -> &str {
        self.parse_headers();
        self.header_block.as_deref().unwrap_or_default()
    }

    fn sent_date(&mut self) -> Option<NaiveDate> {
        self.parse_headers();
        self.sent.flatten()
    }

    fn body_text(&mut self) -> &str {
        if self.body.is_none() {
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
                out = String::from_utf8_lossy(&raw[header_end(&raw)..]).into_owned();
            }
            self.body = Some(out.to_lowercase());
        }
        self.body.as_deref().unwrap_or_default()
    }
}

/// Where the header block of a raw message ends (after its last line's CRLF).
fn header_end(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(raw.len())
}

/// Case-insensitive substring test; `hay` is already lower-cased.
fn contains(hay: &str, needle: &[u8]) -> bool {
    hay.contains(&String::from_utf8_lossy(needle).to_lowercase())
}

/// What a message is tested against besides its own data: the largest sequence number and
/// UID (`*` in a set), and RFC 5182's saved result when the command wrote `$`.
struct Scope<'a> {
    max_seq: u32,
    max_uid: u32,
    saved: Option<&'a [u32]>,
    /// RFC 8474 keys the pre-pass replaced by [`esearch::ID_MARKERS`].
    ids: &'a [IdKey],
}

impl Scope<'_> {
    /// Whether `set` names the message numbered `n` (`largest` for `*`) whose UID is `uid`.
    fn names(&self, set: &SequenceSet, n: u32, largest: u32, uid: u32) -> bool {
        match self.saved {
            Some(saved) if esearch::is_marker(set) => saved.binary_search(&uid).is_ok(),
            _ => set_contains(set, n, largest),
        }
    }
}

fn matches(k: &SearchKey<'_>, c: &mut Candidate<'_>, scope: &Scope<'_>) -> bool {
    match k {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c, scope)),
        SearchKey::Or(a, b) => matches(a, c, scope) || matches(b, c, scope),
        SearchKey::Not(k) => !matches(k, c, scope),
        SearchKey::SequenceSet(s) => match esearch::id_marker(s).and_then(|i| scope.ids.get(i)) {
            Some(IdKey::Email(id)) => objectid::email_id(c.rec) == *id,
            Some(IdKey::Thread(id)) => c.thread_id() == *id,
            None => scope.names(s, c.seq, scope.max_seq, c.uid),
        },
        SearchKey::Uid(s) => scope.names(s, c.uid, scope.max_uid, c.uid),
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
        SearchKey::Recent => c.recent,
        SearchKey::New => c.recent && !c.has("\\Seen"),
        SearchKey::Old => !c.recent,
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
        SearchKey::From(s) => c
            .header_text("From")
            .is_some_and(|t| contains(t, s.as_ref())),
        SearchKey::To(s) => c.header_text("To").is_some_and(|t| contains(t, s.as_ref())),
        SearchKey::Cc(s) => c.header_text("Cc").is_some_and(|t| contains(t, s.as_ref())),
        SearchKey::Bcc(s) => c
            .header_text("Bcc")
            .is_some_and(|t| contains(t, s.as_ref())),
        SearchKey::Subject(s) => c
            .header_text("Subject")
            .is_some_and(|t| contains(t, s.as_ref())),
        SearchKey::Header(name, s) => {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            // An empty string matches every message that has the field.
            c.header_text(&name)
                .is_some_and(|t| s.as_ref().is_empty() || contains(t, s.as_ref()))
        }
        SearchKey::Body(s) => contains(c.body_text(), s.as_ref()),
        SearchKey::Text(s) => {
            contains(c.header_block(), s.as_ref()) || contains(c.body_text(), s.as_ref())
        }
        SearchKey::ModSequence { modseq, .. } => c.modseq >= *modseq,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// One message that matched a search: its place in this session's view of the mailbox and
/// where its index entry is in [`Matches::records`].
pub(crate) struct Hit {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
    pub rec: usize,
}

/// What a search found: the mailbox's index entries, and the hits in sequence-number order.
pub(crate) struct Matches {
    pub records: Vec<MessageRecord>,
    pub hits: Vec<Hit>,
}

impl Matches {
    pub(crate) fn record(&self, h: &Hit) -> &MessageRecord {
        &self.records[h.rec]
    }
}

impl Session {
    /// The search that SEARCH, SORT and THREAD share (RFC 5256 §3: SORT and THREAD are
    /// variants of SEARCH): brings flags up to date (no EXPUNGE, RFC 3501 §7.4.1), checks the
    /// read right, and tests every message of the selected mailbox against `criteria`. `None`
    /// when it has already answered the command (NO).
    pub(crate) async fn matching(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
    ) -> io::Result<Option<Matches>> {
        self.sync(false).await?;
        if self.refused_without_read_right(tag).await? {
            return Ok(None);
        }
        if criteria.iter().any(mentions_modseq) {
            self.condstore = true;
        }
        match self.evaluate(criteria) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                self.no(tag, None, &e).await?;
                Ok(None)
            }
        }
    }

    fn evaluate(&self, criteria: &[SearchKey<'_>]) -> Result<Matches, String> {
        let acct = self.account.as_ref().expect("authenticated");
        let sel = self.sel.as_ref().expect("selected");
        let reader = acct.reader();
        let records = reader
            .messages(&sel.owner, &sel.name)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let by_uid: HashMap<u32, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.uid, i))
            .collect();
        let load = |r: &MessageRecord, from: u64, to: u64| {
            reader
                .body_range(&r.body, from, to)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let scope = Scope {
            max_seq: sel.uids.len() as u32,
            max_uid: sel.uids.last().copied().unwrap_or(0),
            saved: self.extras.dollar.then_some(sel.saved.as_slice()),
            ids: &self.extras.id_keys,
        };
        let mut hits = Vec::new();
        for (i, u) in sel.uids.iter().enumerate() {
            let Some(&at) = by_uid.get(u) else { continue };
            let rec = &records[at];
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
                recent: sel.recent.contains(*u),
                raw: None,
                header_block: None,
                headers: None,
                sent: None,
                body: None,
                load: &load,
            };
            if criteria.iter().all(|k| matches(k, &mut c, &scope)) {
                hits.push(Hit {
                    seq: c.seq,
                    uid: c.uid,
                    modseq,
                    rec: at,
                });
            }
        }
        Ok(Matches { records, hits })
    }

    /// Sends a command's data response, brings the view up to date and says OK.
    pub(crate) async fn answer(
        &mut self,
        tag: &Tag<'_>,
        data: &[u8],
        done: &str,
    ) -> io::Result<()> {
        self.conn.write(data).await?;
        self.sync(false).await?;
        self.ok(tag, None, done).await
    }

    /// SEARCH and UID SEARCH, extended (RFC 4731's result options, RFC 5182's SAVE) when the
    /// framer found a RETURN clause. A charset other than US-ASCII and UTF-8 is refused with
    /// `NO [BADCHARSET]` (RFC 3501 §6.4.4); after ENABLE UTF8=ACCEPT, any CHARSET is a BAD
    /// (RFC 6855 §3: strings are UTF-8 then, and a charset label would contradict that).
    pub(crate) async fn search(
        &mut self,
        tag: &Tag<'_>,
        charset: Option<Charset<'_>>,
        criteria: Vec<SearchKey<'_>>,
        uid: bool,
    ) -> io::Result<()> {
        // IMAP4rev2 answers every SEARCH with ESEARCH, ALL when no option is named
        // (RFC 9051 §6.4.4).
        let returns = self.extras.returns.or_else(|| {
            self.rev2.then_some(esearch::Returns {
                all: true,
                ..esearch::Returns::default()
            })
        });
        let supported = match &charset {
            Some(_) if self.utf8_accept => {
                let text = "no CHARSET after ENABLE UTF8=ACCEPT: search strings are UTF-8";
                self.bad(tag, text).await?;
                false
            }
            Some(c) => self.charset_supported(tag, c).await?,
            None => true,
        };
        let matched = if supported {
            self.matching(tag, &criteria).await?
        } else {
            None
        };
        let Some(m) = matched else {
            // A SAVE search answered NO empties `$` (RFC 5182 §2.1).
            if returns.is_some_and(|r| r.save)
                && let Some(sel) = self.sel.as_mut()
            {
                sel.saved.clear();
            }
            return Ok(());
        };
        let number = |h: &Hit| if uid { h.uid } else { h.seq };
        let Some(r) = returns else {
            let nums = m
                .hits
                .iter()
                .filter_map(|h| NonZeroU32::new(number(h)))
                .collect();
            let b = encode(&Response::Data(Data::Search(
                nums,
                highest_modseq(&criteria, &m.hits),
            )));
            return self.answer(tag, &b, "SEARCH completed").await;
        };
        let found: Vec<Found> = m
            .hits
            .iter()
            .map(|h| Found {
                number: number(h),
                modseq: h.modseq,
            })
            .collect();
        let modseq = criteria.iter().any(mentions_modseq);
        let line = esearch::response(tag.as_ref(), uid, r, &found, modseq);
        if r.save {
            // Saved as UIDs, so that later changes of sequence numbers do not move it.
            let saved = esearch::returned(r, m.hits.len())
                .into_iter()
                .map(|i| m.hits[i].uid)
                .collect();
            self.sel.as_mut().expect("selected").saved = saved;
        }
        let done = if r.save {
            "SEARCH completed, result saved"
        } else {
            "SEARCH completed"
        };
        self.answer(tag, line.as_deref().unwrap_or_default(), done)
            .await
    }
}

/// RFC 7162 §3.1.5: a SEARCH (or SORT) whose criteria use MODSEQ reports the highest
/// mod-sequence of the messages it found.
pub(crate) fn highest_modseq(criteria: &[SearchKey<'_>], hits: &[Hit]) -> Option<NonZeroU64> {
    if !criteria.iter().any(mentions_modseq) {
        return None;
    }
    NonZeroU64::new(hits.iter().map(|h| h.modseq).max().unwrap_or(0))
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
