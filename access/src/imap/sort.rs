//! SORT (RFC 5256 §3, with RFC 5957's DISPLAYFROM and DISPLAYTO) and THREAD (RFC 5256 §4:
//! ORDEREDSUBJECT and REFERENCES), run on the messages the shared search of `search.rs` finds.
//!
//! Every sort key is computed once per message, from the envelope kept in the index (no read
//! of the stored message), and the messages are then sorted once: O(n log n) comparisons of
//! ready values. THREAD=REFERENCES also needs the References field, which the envelope does not
//! keep: it reads each found message's header block (a range read that stops where the body
//! starts). A message stored before the index kept envelopes is parsed whole, as FETCH does.
//!
//! Strings are compared under `i;ascii-casemap` (RFC 4790: ASCII letters upper-cased, then
//! octet by octet), so text beyond ASCII sorts by its UTF-8 octets without case folding (the
//! server does not offer RFC 5255's I18NLEVEL or COMPARATOR, which would fold it).
//! Message-IDs compare exactly, once normalised (angle brackets, quoting and folding removed).
//!
//! Threads are arenas of nodes walked with explicit stacks, never by recursion: a chain of
//! thousands of replies (which anyone can send) cannot overflow a task's stack.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io;
use std::num::NonZeroU32;

use halyard_raft_store::{Addr, Envelope, MessageRecord, SmShared};
use imap_codec::imap_types::core::{Charset, Tag};
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::response::{Code, Data, Response};
use imap_codec::imap_types::search::SearchKey;
use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

use super::encode;
use super::search::highest_modseq;
use super::session::Session;

/// The charsets SORT, THREAD and SEARCH accept for their search strings (RFC 5256 §3: US-ASCII
/// and UTF-8 MUST be implemented).
const CHARSETS: [&str; 2] = ["US-ASCII", "UTF-8"];

impl Session {
    /// `[UID] SORT (criteria) charset search-criteria`: the found messages' numbers in the
    /// order the criteria give, sequence number deciding ties.
    pub(crate) async fn sort(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SortCriterion],
        charset: &Charset<'_>,
        search: &[SearchKey<'_>],
        uid: bool,
    ) -> io::Result<()> {
        if !self.charset_supported(tag, charset).await? {
            return Ok(());
        }
        let Some(m) = self.matching(tag, search).await? else {
            return Ok(());
        };
        let reader = self.acct().reader();
        let needs_envelope = criteria.iter().any(|c| needs_envelope(&c.key));
        let items = m
            .hits
            .iter()
            .map(|h| {
                let rec = m.record(h);
                let env = if needs_envelope {
                    envelope(rec, &reader)
                } else {
                    Cow::Owned(Envelope::default())
                };
                Sortable {
                    seq: h.seq,
                    num: if uid { h.uid } else { h.seq },
                    values: criteria
                        .iter()
                        .map(|c| sort_value(&c.key, rec.internal_date_ms, rec.size, &env))
                        .collect(),
                }
            })
            .collect();
        let nums = sorted(items, criteria)
            .into_iter()
            .filter_map(NonZeroU32::new)
            .collect();
        let modseq = highest_modseq(search, &m.hits);
        let b = encode(&Response::Data(Data::Sort(nums, modseq)));
        self.answer(tag, &b, "SORT completed").await
    }

    /// `[UID] THREAD algorithm charset search-criteria`.
    pub(crate) async fn thread(
        &mut self,
        tag: &Tag<'_>,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        search: &[SearchKey<'_>],
        uid: bool,
    ) -> io::Result<()> {
        let references = match algorithm {
            ThreadingAlgorithm::OrderedSubject => false,
            ThreadingAlgorithm::References => true,
            ThreadingAlgorithm::Other(other) => {
                let text = format!("unknown threading algorithm {}", other.as_ref());
                return self.bad(tag, &text).await;
            }
        };
        if !self.charset_supported(tag, charset).await? {
            return Ok(());
        }
        let Some(m) = self.matching(tag, search).await? else {
            return Ok(());
        };
        let reader = self.acct().reader();
        let msgs: Vec<ThreadMsg> = m
            .hits
            .iter()
            .map(|h| {
                let rec = m.record(h);
                let refs = references
                    .then(|| header_value(&header_block(rec, &reader), "References"))
                    .flatten();
                let num = if uid { h.uid } else { h.seq };
                let env = envelope(rec, &reader);
                ThreadMsg::new(num, h.seq, rec.internal_date_ms, &env, refs.as_deref())
            })
            .collect();
        let forest = if references {
            references_threads(&msgs)
        } else {
            ordered_subject(&msgs)
        };
        let b = thread_response(&forest);
        self.answer(tag, &b, "THREAD completed").await
    }

    /// Answers `NO [BADCHARSET (US-ASCII UTF-8)]` (RFC 5256 §3, RFC 3501 §6.4.4) unless
    /// `charset` is one of [`CHARSETS`]; true when it is. After ENABLE UTF8=ACCEPT only
    /// UTF-8 is, and another charset is a BAD (RFC 6855 §3 as its erratum 4029 extends it
    /// to SORT and THREAD, whose charset is mandatory).
    pub(crate) async fn charset_supported(
        &mut self,
        tag: &Tag<'_>,
        charset: &Charset<'_>,
    ) -> io::Result<bool> {
        let name: &str = charset.as_ref();
        if self.utf8_accept && !name.eq_ignore_ascii_case("UTF-8") {
            let text = format!("charset {name} after ENABLE UTF8=ACCEPT: strings are UTF-8");
            self.bad(tag, &text).await?;
            return Ok(false);
        }
        if CHARSETS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
            return Ok(true);
        }
        let allowed = CHARSETS
            .iter()
            .filter_map(|c| Charset::try_from(*c).ok())
            .collect();
        let text = format!("charset {name} is not supported");
        self.no(tag, Some(Code::BadCharset { allowed }), &text)
            .await?;
        Ok(false)
    }
}

/// A message's envelope: the index's, or parsed from the stored message when the index has
/// none (messages stored before it kept one).
fn envelope<'r>(rec: &'r MessageRecord, reader: &SmShared) -> Cow<'r, Envelope> {
    match &rec.meta {
        Some(m) => Cow::Borrowed(&m.envelope),
        None => {
            let raw = reader.body(&rec.body).ok().flatten().unwrap_or_default();
            Cow::Owned(halyard_raft_store::mime::message_meta(&raw).envelope)
        }
    }
}

/// A message's header block, read up to where its body starts (the whole message when the
/// index does not know where that is: [`header_value`] stops at the blank line anyway).
pub(super) fn header_block(rec: &MessageRecord, reader: &SmShared) -> Vec<u8> {
    let bytes = match &rec.meta {
        Some(m) => reader.body_range(&rec.body, 0, m.body.body_start),
        None => reader.body(&rec.body),
    };
    bytes.ok().flatten().unwrap_or_default()
}

/// The value of the first `name` field of a header block, unfolded (line breaks removed);
/// `None` when there is no such field.
pub(super) fn header_value(header: &[u8], name: &str) -> Option<String> {
    let mut value: Option<Vec<u8>> = None;
    for line in header.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = value.as_mut() {
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                v.extend_from_slice(line);
                continue;
            }
            break;
        }
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':')
            && line[..colon]
                .trim_ascii_end()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            value = Some(line[colon + 1..].to_vec());
        }
    }
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// RFC 2047 encoded words decoded (to UTF-8); text without any is returned as it is.
fn decode_words(raw: &str) -> Cow<'_, str> {
    if !raw.contains("=?") {
        return Cow::Borrowed(raw);
    }
    let line = format!("{}\r\n", raw.replace(['\r', '\n'], " "));
    match MessageStream::new(line.as_bytes()).parse_unstructured() {
        HeaderValue::Text(t) => Cow::Owned(t.into_owned()),
        HeaderValue::Empty => Cow::Owned(String::new()),
        _ => Cow::Borrowed(raw),
    }
}

/// `i;ascii-casemap`: what is compared is the text with ASCII letters upper-cased.
fn casemap(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// RFC 5256 §2.2 sent date, in milliseconds since the epoch (UTC): the Date field, or the
/// INTERNALDATE when there is none or it cannot be parsed.
fn sent_date_ms(date: Option<&str>, internal_ms: i64) -> i64 {
    let Some(date) = date else {
        return internal_ms;
    };
    let line = format!("{date}\r\n");
    match MessageStream::new(line.as_bytes()).parse_date() {
        HeaderValue::DateTime(t) if t.is_valid() => t.to_timestamp().saturating_mul(1000),
        _ => internal_ms,
    }
}

/// The `[IMAP] addr-mailbox` of the first address of a list (empty when there is none).
fn first_mailbox(list: &[Addr]) -> &str {
    list.first()
        .and_then(|a| a.mailbox.as_deref())
        .unwrap_or("")
}

/// RFC 5957 §3: the display sort value of the first address of a list: its display name
/// (encoded words decoded) when it has a non-empty one, else `mailbox@host`, else the
/// mailbox, else the empty string. The index keeps an empty host (never NIL, which marks a
/// group) for an address without a domain: that counts as no host.
fn display_value(list: &[Addr]) -> String {
    let Some(a) = list.first() else {
        return String::new();
    };
    if let Some(name) = &a.name {
        let decoded = decode_words(name);
        if !decoded.is_empty() {
            return decoded.into_owned();
        }
    }
    match (&a.mailbox, a.host.as_deref()) {
        (Some(m), Some(h)) if !h.is_empty() => format!("{m}@{h}"),
        (Some(m), _) => m.clone(),
        (None, _) => String::new(),
    }
}

// ----- Base subject (RFC 5256 §2.1) ----------------------------------------------------------

/// RFC 5256 §2.1 base subject of a Subject field as stored (encoded words kept), and whether
/// extracting it removed a reply or forward marker (a `subj-refwd`, a `(fwd)` trailer or a
/// `[fwd: ...]` wrapper), which THREAD=REFERENCES needs (§4).
fn base_subject(raw: &str) -> (String, bool) {
    // (1) Encoded words to UTF-8; tabs and line breaks to spaces; runs of spaces to one.
    let decoded = decode_words(raw);
    let mut text = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') {
            ' '
        } else {
            c
        };
        if c == ' ' && text.ends_with(' ') {
            continue;
        }
        text.push(c);
    }
    let mut reply = false;
    let mut s = text.as_str();
    loop {
        // (2) Trailing subj-trailers.
        s = strip_trailers(s, &mut reply);
        // (5) Repeat (3) and (4) until neither removes anything.
        loop {
            let before = s.len();
            // (3) Leading subj-leaders.
            while let Some(rest) = strip_leader(s, &mut reply) {
                s = rest;
            }
            // (4) A leading subj-blob, when what it leaves is not empty.
            if let Some(rest) = strip_blob(s)
                && !rest.is_empty()
            {
                s = rest;
            }
            if s.len() == before {
                break;
            }
        }
        // (6) A `[fwd:` ... `]` wrapper: remove it and go again from (2).
        match unwrap_fwd(s) {
            Some(inner) => {
                s = inner;
                reply = true;
            }
            None => break,
        }
    }
    // (7)
    (s.to_string(), reply)
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `BLOBCHAR = %x01-5a / %x5c / %x5e-7f`: any 7-bit character but NUL, `[` and `]`.
fn is_blobchar(b: u8) -> bool {
    matches!(b, 0x01..=0x5a | 0x5c | 0x5e..=0x7f)
}

/// Whether `s` starts with `prefix`, ASCII letters compared case-insensitively (ABNF literal
/// strings are case-insensitive).
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Removes every trailing `subj-trailer = "(fwd)" / WSP`.
fn strip_trailers<'s>(mut s: &'s str, reply: &mut bool) -> &'s str {
    loop {
        let b = s.as_bytes();
        if b.last().is_some_and(|c| is_wsp(*c)) {
            s = &s[..s.len() - 1];
        } else if b.len() >= 5 && b[b.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
            s = &s[..s.len() - 5];
            *reply = true;
        } else {
            return s;
        }
    }
}

/// What follows a leading `subj-blob = "[" *BLOBCHAR "]" *WSP`, if `s` starts with one.
fn strip_blob(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut i = 1;
    while i < b.len() && is_blobchar(b[i]) {
        i += 1;
    }
    if b.get(i) != Some(&b']') {
        return None;
    }
    i += 1;
    while i < b.len() && is_wsp(b[i]) {
        i += 1;
    }
    Some(&s[i..])
}

/// What follows a leading `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`.
fn strip_refwd(s: &str) -> Option<&str> {
    let word = if starts_with_ci(s, "re") {
        2
    } else if starts_with_ci(s, "fwd") {
        3
    } else if starts_with_ci(s, "fw") {
        2
    } else {
        return None;
    };
    let mut rest = s[word..].trim_start_matches([' ', '\t']);
    if let Some(after) = strip_blob(rest) {
        rest = after;
    }
    rest.strip_prefix(':')
}

/// What follows a leading `subj-leader = (*subj-blob subj-refwd) / WSP`; `reply` is set when
/// it held a `subj-refwd`.
fn strip_leader<'s>(s: &'s str, reply: &mut bool) -> Option<&'s str> {
    if s.as_bytes().first().is_some_and(|c| is_wsp(*c)) {
        return Some(&s[1..]);
    }
    let mut at = s;
    loop {
        if let Some(rest) = strip_refwd(at) {
            *reply = true;
            return Some(rest);
        }
        at = strip_blob(at)?;
    }
}

/// The text inside `subj-fwd-hdr = "[fwd:"` ... `subj-fwd-trl = "]"`, if `s` is wrapped so.
fn unwrap_fwd(s: &str) -> Option<&str> {
    if s.len() >= 6 && starts_with_ci(s, "[fwd:") && s.ends_with(']') {
        Some(&s[5..s.len() - 1])
    } else {
        None
    }
}

// ----- SORT (RFC 5256 §3, RFC 5957 §4) -------------------------------------------------------

/// One message's value for one sort key. The values of one key are all of one variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Number(i64),
    Text(String),
}

/// One message to sort: its sequence number (the last tie-breaker), the number to answer
/// with (sequence number or UID), and its value for each criterion.
struct Sortable {
    seq: u32,
    num: u32,
    values: Vec<Value>,
}

/// Whether a key is read from the envelope (ARRIVAL and SIZE are in the index entry).
fn needs_envelope(key: &SortKey) -> bool {
    !matches!(key, SortKey::Arrival | SortKey::Size)
}

/// A message's value for `key` (RFC 5256 §3; DISPLAYFROM and DISPLAYTO from RFC 5957 §4).
fn sort_value(key: &SortKey, internal_ms: i64, size: u64, env: &Envelope) -> Value {
    match key {
        SortKey::Arrival => Value::Number(internal_ms),
        SortKey::Date => Value::Number(sent_date_ms(env.date.as_deref(), internal_ms)),
        SortKey::Size => Value::Number(i64::try_from(size).unwrap_or(i64::MAX)),
        SortKey::Subject => {
            let (base, _) = base_subject(env.subject.as_deref().unwrap_or(""));
            Value::Text(casemap(&base))
        }
        SortKey::From => Value::Text(casemap(first_mailbox(&env.from))),
        SortKey::To => Value::Text(casemap(first_mailbox(&env.to))),
        SortKey::Cc => Value::Text(casemap(first_mailbox(&env.cc))),
        SortKey::DisplayFrom => Value::Text(casemap(&display_value(&env.from))),
        SortKey::DisplayTo => Value::Text(casemap(&display_value(&env.to))),
    }
}

/// The numbers of `items` in the order of `criteria`, each reversed when it says REVERSE;
/// messages equal under every criterion keep mailbox order (RFC 5256 §3: the implicit
/// sequence-number criterion, which REVERSE does not reverse).
fn sorted(mut items: Vec<Sortable>, criteria: &[SortCriterion]) -> Vec<u32> {
    items.sort_by(|a, b| {
        for (i, c) in criteria.iter().enumerate() {
            let o = a.values[i].cmp(&b.values[i]);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
    items.into_iter().map(|i| i.num).collect()
}

// ----- THREAD (RFC 5256 §4) ------------------------------------------------------------------

/// What threading needs of one message.
#[derive(Debug, Clone)]
struct ThreadMsg {
    /// The number to answer with (sequence number or UID).
    num: u32,
    seq: u32,
    /// Sent date (§2.2), milliseconds since the epoch.
    date: i64,
    /// Base subject, case-mapped.
    subject: String,
    /// Extracting the base subject removed a reply or forward marker.
    reply: bool,
    /// The normalised Message-ID, when the field holds a valid one.
    id: Option<String>,
    /// The references (§4 REFERENCES): the valid Message-IDs of References, or else the first
    /// valid one of In-Reply-To, or none.
    refs: Vec<String>,
}

impl ThreadMsg {
    /// From the envelope and, for REFERENCES, the References field's value.
    fn new(
        num: u32,
        seq: u32,
        internal_ms: i64,
        env: &Envelope,
        references: Option<&str>,
    ) -> ThreadMsg {
        let (base, reply) = base_subject(env.subject.as_deref().unwrap_or(""));
        let mut refs = references.map(msg_ids).unwrap_or_default();
        if refs.is_empty() {
            refs = env.in_reply_to.as_deref().map(msg_ids).unwrap_or_default();
            refs.truncate(1);
        }
        ThreadMsg {
            num,
            seq,
            date: sent_date_ms(env.date.as_deref(), internal_ms),
            subject: casemap(&base),
            reply,
            id: env
                .message_id
                .as_deref()
                .and_then(|m| msg_ids(m).into_iter().next()),
            refs,
        }
    }

    /// The order of siblings and threads: sent date, then sequence number (§2.2).
    fn key(&self) -> (i64, u32) {
        (self.date, self.seq)
    }
}

/// The valid Message-IDs (`"<" id-left "@" id-right ">"`) in a field's value, in order and
/// normalised as RFC 5256 §4 requires, so that differently quoted forms of one identifier are
/// equal: angle brackets, quoting, quoted-pair backslashes and folding whitespace removed
/// (`<"a b"@x>` is `a b@x`, `<"01KF"@x>` is `01KF@x`). Comments outside identifiers are
/// skipped, other text between them ignored.
pub(super) fn msg_ids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    let mut comment = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' if comment > 0 => {
                chars.next();
            }
            '(' => comment += 1,
            ')' if comment > 0 => comment -= 1,
            '<' if comment == 0 => {
                if let Some(id) = read_msg_id(&mut chars) {
                    out.push(id);
                }
            }
            _ => {}
        }
    }
    out
}

/// The identifier after a `<`, through its `>`: `None` when the text ends first or what is
/// between them is not `id-left "@" id-right`.
fn read_msg_id(chars: &mut std::str::Chars<'_>) -> Option<String> {
    let mut id = String::new();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => id.extend(chars.next()),
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let at = id.rfind('@')?;
                return (at > 0 && at + 1 < id.len()).then_some(id);
            }
            // A stray `<`: the identifier starts again there.
            '<' if !quoted => id.clear(),
            ' ' | '\t' | '\r' | '\n' if !quoted => {}
            c => id.push(c),
        }
    }
    None
}

/// Threads as an arena: node `n` stands for message number `num[n]` (`None`: a dummy, the
/// place of a message that is not there), with its replies `children[n]` in order; `roots`
/// are the threads in order.
#[derive(Debug, Default)]
struct Forest {
    num: Vec<Option<u32>>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
}

impl Forest {
    fn add(&mut self, num: Option<u32>) -> usize {
        self.num.push(num);
        self.children.push(Vec::new());
        self.num.len() - 1
    }

    /// The messages below `n` that the response shows as its replies: its children, each
    /// dummy among them replaced by its own (so, in order, every message under it that has
    /// no message between them).
    fn visible_children(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.children[n].iter().rev().copied().collect();
        while let Some(c) = stack.pop() {
            if self.num[c].is_some() {
                out.push(c);
            } else {
                stack.extend(self.children[c].iter().rev());
            }
        }
        out
    }

    /// Writes the `thread-list` of message node `n`: `(n c1 c2 ...)` along a chain of only
    /// replies, then ` (..)(..)` for the branches where a message has several.
    fn write_list(&self, n: usize, out: &mut String) {
        enum Step {
            Open(usize),
            Close,
        }
        let push_num = |out: &mut String, at: usize| {
            if let Some(v) = self.num[at] {
                out.push_str(&v.to_string());
            }
        };
        let mut stack = vec![Step::Open(n)];
        while let Some(step) = stack.pop() {
            let Step::Open(mut at) = step else {
                out.push(')');
                continue;
            };
            out.push('(');
            push_num(out, at);
            let mut kids = self.visible_children(at);
            while let [only] = kids.as_slice() {
                at = *only;
                out.push(' ');
                push_num(out, at);
                kids = self.visible_children(at);
            }
            if !kids.is_empty() {
                out.push(' ');
            }
            stack.push(Step::Close);
            stack.extend(kids.into_iter().rev().map(Step::Open));
        }
    }
}

/// The untagged THREAD response (`thread-data`, RFC 5256 §5) for `forest`, CRLF included. A
/// thread whose top is a dummy is `((a)(b)...)`, the dummy's replies as siblings.
fn thread_response(forest: &Forest) -> Vec<u8> {
    let mut lists = String::new();
    for &r in &forest.roots {
        let top = if forest.num[r].is_some() {
            vec![r]
        } else {
            forest.visible_children(r)
        };
        match top.as_slice() {
            [] => {}
            [one] => forest.write_list(*one, &mut lists),
            many => {
                lists.push('(');
                for m in many {
                    forest.write_list(*m, &mut lists);
                }
                lists.push(')');
            }
        }
    }
    let mut out = String::from("* THREAD");
    if !lists.is_empty() {
        out.push(' ');
        out.push_str(&lists);
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// THREAD=ORDEREDSUBJECT (§4): the messages sorted by base subject, then sent date; each run
/// of one base subject is a thread whose first message is its top and every other message a
/// reply to that one (no deeper levels); threads ordered by the sent date of their top.
fn ordered_subject(msgs: &[ThreadMsg]) -> Forest {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| {
        msgs[a]
            .subject
            .cmp(&msgs[b].subject)
            .then(msgs[a].key().cmp(&msgs[b].key()))
    });
    let mut forest = Forest::default();
    let mut threads = Vec::new();
    for run in order.chunk_by(|a, b| msgs[*a].subject == msgs[*b].subject) {
        let top = forest.add(Some(msgs[run[0]].num));
        for &m in &run[1..] {
            let child = forest.add(Some(msgs[m].num));
            forest.children[top].push(child);
        }
        threads.push((msgs[run[0]].key(), top));
    }
    threads.sort();
    forest.roots = threads.into_iter().map(|(_, top)| top).collect();
    forest
}

/// THREAD=REFERENCES (§4), its six steps in order.
fn references_threads(msgs: &[ThreadMsg]) -> Forest {
    let mut t = Threader {
        msgs,
        nodes: msgs
            .iter()
            .enumerate()
            .map(|(i, _)| Node {
                msg: Some(i),
                parent: None,
                children: Vec::new(),
            })
            .collect(),
    };
    let roots = t.link();
    let mut roots = t.prune(&roots);
    t.sort_top(&mut roots);
    let mut roots = t.gather(roots);
    t.sort_all(&mut roots);
    Forest {
        num: t.nodes.iter().map(|n| n.msg.map(|m| msgs[m].num)).collect(),
        children: t.nodes.into_iter().map(|n| n.children).collect(),
        roots,
    }
}

/// A message, or a dummy (`msg: None`), in the REFERENCES tree being built.
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Threader<'m> {
    msgs: &'m [ThreadMsg],
    /// One node per message (same index), then the dummies.
    nodes: Vec<Node>,
}

impl<'m> Threader<'m> {
    fn add_dummy(&mut self) -> usize {
        self.nodes.push(Node {
            msg: None,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn is_dummy(&self, n: usize) -> bool {
        self.nodes[n].msg.is_none()
    }

    fn is_reply(&self, n: usize) -> bool {
        self.nodes[n].msg.is_some_and(|m| self.msgs[m].reply)
    }

    fn attach(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn detach(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            let kids = &mut self.nodes[p].children;
            if let Some(i) = kids.iter().position(|k| *k == child) {
                kids.remove(i);
            }
        }
    }

    /// Whether making `parent` the parent of `child` would close a loop: `parent` is `child`
    /// or one of its descendants.
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        if parent == child {
            return true;
        }
        if self.nodes[child].children.is_empty() {
            return false;
        }
        let mut at = self.nodes[parent].parent;
        while let Some(a) = at {
            if a == child {
                return true;
            }
            at = self.nodes[a].parent;
        }
        false
    }

    /// A node's place among its siblings (§2.2 sent date, then sequence number); a dummy's
    /// is its first child's.
    fn key(&self, mut n: usize) -> (i64, u32) {
        loop {
            if let Some(m) = self.nodes[n].msg {
                return self.msgs[m].key();
            }
            match self.nodes[n].children.first() {
                Some(c) => n = *c,
                None => return (i64::MAX, u32::MAX),
            }
        }
    }

    /// The subject of the thread at `n` (5.B.i): its message's base subject, or its first
    /// child's when it is a dummy.
    fn subject(&self, n: usize) -> &'m str {
        let node = &self.nodes[n];
        let msg = node
            .msg
            .or_else(|| node.children.first().and_then(|c| self.nodes[*c].msg));
        msg.map(|m| self.msgs[m].subject.as_str()).unwrap_or("")
    }

    /// Every node under `roots`, each before its descendants.
    fn preorder(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        out
    }

    /// Steps 1 and 2: links messages as parent and child along their references, and returns
    /// the nodes left without a parent (the children of the root).
    fn link(&mut self) -> Vec<usize> {
        let msgs = self.msgs;
        // 1.A: a Message-ID names the first message (lowest sequence number) that has it; a
        // message without one, or with a duplicate, is reachable by no reference.
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, m) in msgs.iter().enumerate() {
            if let Some(id) = &m.id {
                ids.entry(id.as_str()).or_insert(i);
            }
        }
        for (i, m) in msgs.iter().enumerate() {
            let mut refs = Vec::with_capacity(m.refs.len());
            for r in &m.refs {
                let node = match ids.get(r.as_str()) {
                    Some(n) => *n,
                    // No such message: a dummy, used for every later reference to it.
                    None => {
                        let d = self.add_dummy();
                        ids.insert(r.as_str(), d);
                        d
                    }
                };
                refs.push(node);
            }
            // 1.A: each reference the parent of the next, unless the next already has a
            // parent or the link would close a loop.
            for pair in refs.windows(2) {
                let (parent, child) = (pair[0], pair[1]);
                if self.nodes[child].parent.is_none() && !self.would_loop(parent, child) {
                    self.attach(parent, child);
                }
            }
            // 1.B: the last reference (or none) is the message's parent, whatever parent it
            // had; no link where it would close a loop.
            self.detach(i);
            if let Some(&parent) = refs.last()
                && !self.would_loop(parent, i)
            {
                self.attach(parent, i);
            }
        }
        (0..self.nodes.len())
            .filter(|n| self.nodes[*n].parent.is_none())
            .collect()
    }

    /// Step 3: removes dummies. Below the top level a dummy's children take its place (none:
    /// it just goes); at the top level only a dummy with one child gives way to it, one
    /// without children goes, one with several stays. Children are pruned before their
    /// parents, so what takes a dummy's place is already free of dummies.
    fn prune(&mut self, roots: &[usize]) -> Vec<usize> {
        for n in self.preorder(roots).into_iter().rev() {
            let kids = std::mem::take(&mut self.nodes[n].children);
            let mut kept = Vec::with_capacity(kids.len());
            for k in kids {
                if !self.is_dummy(k) {
                    kept.push(k);
                    continue;
                }
                let grandchildren = std::mem::take(&mut self.nodes[k].children);
                self.nodes[k].parent = None;
                for g in &grandchildren {
                    self.nodes[*g].parent = Some(n);
                }
                kept.extend(grandchildren);
            }
            self.nodes[n].children = kept;
        }
        let mut top = Vec::with_capacity(roots.len());
        for &r in roots {
            if !self.is_dummy(r) || self.nodes[r].children.len() > 1 {
                top.push(r);
            } else if let Some(only) = self.nodes[r].children.pop() {
                self.nodes[only].parent = None;
                top.push(only);
            }
        }
        top
    }

    fn sort_children(&mut self, n: usize) {
        let mut kids = std::mem::take(&mut self.nodes[n].children);
        kids.sort_by_key(|k| self.key(*k));
        self.nodes[n].children = kids;
    }

    /// Step 4: sorts the top level by sent date, a dummy by its first child once its
    /// children are sorted.
    fn sort_top(&mut self, roots: &mut [usize]) {
        for &r in roots.iter() {
            if self.is_dummy(r) {
                self.sort_children(r);
            }
        }
        roots.sort_by_key(|r| self.key(*r));
    }

    /// Step 5: merges the top-level threads that have the same base subject.
    fn gather(&mut self, roots: Vec<usize>) -> Vec<usize> {
        // 5.B: one thread per subject: a dummy is preferred, then one that is not a reply.
        let mut table: HashMap<&'m str, usize> = HashMap::new();
        for &n in &roots {
            let subject = self.subject(n);
            if subject.is_empty() {
                continue;
            }
            match table.get(subject) {
                None => {
                    table.insert(subject, n);
                }
                Some(&t) => {
                    if !self.is_dummy(t)
                        && (self.is_dummy(n) || (self.is_reply(t) && !self.is_reply(n)))
                    {
                        table.insert(subject, n);
                    }
                }
            }
        }
        // 5.C: every other thread of a subject joins the table's.
        let mut gone = vec![false; self.nodes.len()];
        let mut added = Vec::new();
        for &n in &roots {
            if self.nodes[n].parent.is_some() || gone[n] {
                continue;
            }
            let subject = self.subject(n);
            let Some(&t) = table.get(subject) else {
                continue;
            };
            if t == n {
                continue;
            }
            if self.is_dummy(t) && self.is_dummy(n) {
                for k in std::mem::take(&mut self.nodes[n].children) {
                    self.nodes[k].parent = None;
                    self.attach(t, k);
                }
                gone[n] = true;
            } else if self.is_dummy(t) || (self.is_reply(n) && !self.is_reply(t)) {
                self.attach(t, n);
            } else {
                let d = self.add_dummy();
                self.attach(d, t);
                self.attach(d, n);
                table.insert(subject, d);
                added.push(d);
            }
        }
        roots
            .into_iter()
            .filter(|&n| self.nodes[n].parent.is_none() && !gone[n])
            .chain(added)
            .collect()
    }

    /// Step 6: sorts every set of siblings, the deepest first, then the top level.
    fn sort_all(&mut self, roots: &mut [usize]) {
        for n in self.preorder(roots).into_iter().rev() {
            self.sort_children(n);
        }
        roots.sort_by_key(|r| self.key(*r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(raw: &str) -> (String, bool) {
        base_subject(raw)
    }

    #[test]
    fn base_subject_strips_reply_and_forward_markers() {
        let cases: &[(&str, &str, bool)] = &[
            ("Re: foo", "foo", true),
            ("RE: Re: re: foo", "foo", true),
            ("Fwd: foo", "foo", true),
            ("FW: foo", "foo", true),
            ("Re:foo", "foo", true),
            // subj-refwd: WSP and a blob before the colon.
            ("Re [2]: foo", "foo", true),
            ("Re[3]:   foo", "foo", true),
            // subj-leader: blobs before a subj-refwd.
            ("[list] Re: foo", "foo", true),
            ("Re: [list] Re: foo", "foo", true),
            // (2) trailers, case-insensitive and repeated.
            ("foo (fwd)", "foo", true),
            ("foo (FWD) (fwd)  ", "foo", true),
            // (6) the [fwd: ...] wrapper, then again from (2).
            ("[Fwd: Re: foo]", "foo", true),
            ("[fwd: [list] bar] (fwd)", "bar", true),
            ("Re: [fwd: foo]", "foo", true),
            ("[fwd:]", "", true),
            // Not markers: a word that only starts like one, a paren counter.
            ("Ref: foo", "Ref: foo", false),
            ("Re(2): foo", "Re(2): foo", false),
            ("Reply", "Reply", false),
            ("", "", false),
            ("Re:", "", true),
        ];
        for (raw, want, reply) in cases {
            assert_eq!(base(raw), (want.to_string(), *reply), "{raw:?}");
        }
    }

    #[test]
    fn base_subject_removes_blobs_only_when_something_remains() {
        let cases: &[(&str, &str)] = &[
            ("[list] foo", "foo"),
            ("[a][b] foo", "foo"),
            ("[a] [b] foo", "foo"),
            // (4): removing the last blob would leave nothing, so it is the base subject.
            ("[only blob]", "[only blob]"),
            ("[a] [b]", "[b]"),
            // "[fwd: foo] bar" starts with a blob (BLOBCHAR includes ':' and space).
            ("[fwd: foo] bar", "bar"),
            // BLOBCHAR is 7-bit: a bracketed text with other characters is no blob.
            ("[liste é] foo", "[liste é] foo"),
            ("[unclosed foo", "[unclosed foo"),
        ];
        for (raw, want) in cases {
            assert_eq!(base(raw).0, *want, "{raw:?}");
            assert!(!base(raw).1, "{raw:?} is no reply");
        }
    }

    #[test]
    fn base_subject_decodes_and_collapses_whitespace() {
        assert_eq!(
            base("  several   spaces\tand\ttabs  ").0,
            "several spaces and tabs"
        );
        assert_eq!(base("=?utf-8?q?Re=3A_caf=C3=A9?="), ("café".into(), true));
        assert_eq!(
            base("=?UTF-8?B?UmU6IFvDqXTDqV0=?= =?UTF-8?Q?_d=C3=A9j=C3=A0?="),
            ("[été] déjà".into(), true)
        );
        // Case is kept in the base subject; comparisons case-map it.
        assert_eq!(casemap(&base("Re: Hello").0), casemap(&base("HELLO").0));
    }

    #[test]
    fn sent_date_is_utc_or_the_internal_date() {
        let internal = 42_000;
        // 10:00 +0200 is 08:00 UTC, 1 January 2001.
        let utc = 978_336_000_000;
        assert_eq!(
            sent_date_ms(Some("Mon, 1 Jan 2001 10:00:00 +0200"), internal),
            utc
        );
        assert_eq!(
            sent_date_ms(Some("Mon, 1 Jan 2001 03:00:00 -0500"), internal),
            utc
        );
        assert_eq!(sent_date_ms(Some("someday soon"), internal), internal);
        assert_eq!(sent_date_ms(None, internal), internal);
    }

    fn addr(name: Option<&str>, mailbox: &str, host: &str) -> Addr {
        Addr {
            name: name.map(str::to_string),
            adl: None,
            mailbox: Some(mailbox.to_string()),
            host: Some(host.to_string()),
        }
    }

    #[test]
    fn address_keys() {
        let list = vec![
            addr(Some("Zoe Adams"), "zoe", "example.org"),
            addr(None, "amy", "example.org"),
        ];
        assert_eq!(first_mailbox(&list), "zoe");
        assert_eq!(display_value(&list), "Zoe Adams");
        assert_eq!(display_value(&list[1..]), "amy@example.org");
        assert_eq!(display_value(&[addr(None, "postmaster", "")]), "postmaster");
        assert_eq!(
            display_value(&[addr(Some("=?utf-8?b?w4ltaWxl?="), "e", "x")]),
            "Émile"
        );
        // A name that decodes to nothing does not count.
        assert_eq!(display_value(&[addr(Some(""), "e", "x")]), "e@x");
        assert_eq!(first_mailbox(&[]), "");
        assert_eq!(display_value(&[]), "");
    }

    fn env(subject: &str, from: &str, date: Option<&str>) -> Envelope {
        Envelope {
            subject: Some(subject.to_string()),
            from: vec![addr(None, from, "example.org")],
            date: date.map(str::to_string),
            ..Envelope::default()
        }
    }

    fn criterion(key: SortKey, reverse: bool) -> SortCriterion {
        SortCriterion { reverse, key }
    }

    /// Sorts (internal date, size, envelope) triples, numbered from 1, by `criteria`.
    fn sort_seqs(msgs: &[(i64, u64, Envelope)], criteria: &[SortCriterion]) -> Vec<u32> {
        let items = msgs
            .iter()
            .enumerate()
            .map(|(i, (internal, size, e))| Sortable {
                seq: i as u32 + 1,
                num: i as u32 + 1,
                values: criteria
                    .iter()
                    .map(|c| sort_value(&c.key, *internal, *size, e))
                    .collect(),
            })
            .collect();
        sorted(items, criteria)
    }

    #[test]
    fn sort_orders_by_each_key_and_breaks_ties_by_sequence_number() {
        let msgs = vec![
            (
                3_000,
                10,
                env("Re: beta", "Carl", Some("Tue, 2 Jan 2001 00:00:00 +0000")),
            ),
            (1_000, 30, env("alpha", "bob", None)),
            (
                2_000,
                20,
                env(
                    "[list] Beta",
                    "alice",
                    Some("Mon, 1 Jan 2001 00:00:00 +0000"),
                ),
            ),
            (1_000, 20, env("ALPHA (fwd)", "Bob", None)),
        ];
        let c = |k| [criterion(k, false)];
        let r = |k| [criterion(k, true)];
        assert_eq!(sort_seqs(&msgs, &c(SortKey::Arrival)), [2, 4, 3, 1]);
        assert_eq!(sort_seqs(&msgs, &r(SortKey::Arrival)), [1, 3, 2, 4]);
        assert_eq!(sort_seqs(&msgs, &c(SortKey::Size)), [1, 3, 4, 2]);
        // Messages 2 and 4 have no Date: their INTERNALDATE (1 s) is before 2001.
        assert_eq!(sort_seqs(&msgs, &c(SortKey::Date)), [2, 4, 3, 1]);
        assert_eq!(sort_seqs(&msgs, &c(SortKey::Subject)), [2, 4, 1, 3]);
        // REVERSE does not reverse the sequence-number tie-breaker.
        assert_eq!(sort_seqs(&msgs, &r(SortKey::Subject)), [1, 3, 2, 4]);
        // i;ascii-casemap: "bob" and "Bob" are equal, "Carl" sorts after them.
        assert_eq!(sort_seqs(&msgs, &c(SortKey::From)), [3, 2, 4, 1]);
        assert_eq!(sort_seqs(&msgs, &r(SortKey::From)), [1, 2, 4, 3]);
        // Several criteria: the second decides among equals of the first.
        let subject_then_reverse_size = [
            criterion(SortKey::Subject, false),
            criterion(SortKey::Size, true),
        ];
        assert_eq!(sort_seqs(&msgs, &subject_then_reverse_size), [2, 4, 3, 1]);
        let reverse_arrival_then_size = [
            criterion(SortKey::Arrival, true),
            criterion(SortKey::Size, false),
        ];
        assert_eq!(sort_seqs(&msgs, &reverse_arrival_then_size), [1, 3, 4, 2]);
        // No To or Cc anywhere: all equal, mailbox order.
        assert_eq!(sort_seqs(&msgs, &r(SortKey::Cc)), [1, 2, 3, 4]);
    }

    #[test]
    fn display_sort_uses_names_where_from_uses_mailboxes() {
        let mut named = env("s", "zed", None);
        named.from = vec![addr(Some("Anna"), "zed", "example.org")];
        let msgs = vec![
            (1, 1, named),
            (1, 1, env("s", "bob", None)),
            (1, 1, env("s", "aaron", None)),
        ];
        let from = [criterion(SortKey::From, false)];
        let display = [criterion(SortKey::DisplayFrom, false)];
        assert_eq!(sort_seqs(&msgs, &from), [3, 2, 1]);
        // "AARON@EXAMPLE.ORG" < "ANNA" < "BOB@EXAMPLE.ORG".
        assert_eq!(sort_seqs(&msgs, &display), [3, 1, 2]);
        let display_to = [criterion(SortKey::DisplayTo, false)];
        assert_eq!(sort_seqs(&msgs, &display_to), [1, 2, 3]);
    }

    #[test]
    fn sorting_ten_thousand_messages_computes_each_key_once() {
        let msgs: Vec<(i64, u64, Envelope)> = (0..10_000u64)
            .map(|i| {
                let subject = format!("Re: [list] topic {:04}", (i * 7919) % 10_000);
                (i as i64, i, env(&subject, "x", None))
            })
            .collect();
        let seqs = sort_seqs(&msgs, &[criterion(SortKey::Subject, false)]);
        assert_eq!(seqs.len(), 10_000);
        let subjects: Vec<String> = seqs
            .iter()
            .map(|s| base(msgs[*s as usize - 1].2.subject.as_deref().unwrap()).0)
            .collect();
        assert!(subjects.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(subjects[0], "topic 0000");
    }

    #[test]
    fn message_ids_are_normalised() {
        assert_eq!(
            msg_ids("<\"01KF8JCEOCBS0045PS\"@xxx.yyy.com>"),
            msg_ids("<01KF8JCEOCBS0045PS@xxx.yyy.com>")
        );
        assert_eq!(
            msg_ids(" <a@x>\r\n\t<b@y> (comment <c@z>) junk <d@w"),
            ["a@x", "b@y"]
        );
        assert_eq!(msg_ids("<no-at-sign> <@x> <a@> <\"q\\\"d\"@h>"), ["q\"d@h"]);
        assert_eq!(msg_ids("<a\r\n @x>"), ["a@x"]);
        // Case matters.
        assert_ne!(msg_ids("<A@x>"), msg_ids("<a@x>"));
    }

    #[test]
    fn header_values_are_unfolded_and_the_first_wins() {
        let h = b"Subject: x\r\nREFERENCES: <a@x>\r\n\t<b@x>\r\nReferences: <c@x>\r\n\r\nReferences: <d@x>\r\n";
        assert_eq!(
            header_value(h, "References").as_deref(),
            Some(" <a@x>\t<b@x>")
        );
        assert_eq!(header_value(h, "In-Reply-To"), None);
        assert_eq!(
            header_value(b"Subject: x\n\nReferences: <d@x>\n", "references"),
            None
        );
    }

    /// A message for threading: sent date = `date` (no Date field: the INTERNALDATE).
    fn tm(
        seq: u32,
        date: i64,
        subject: &str,
        id: &str,
        references: Option<&str>,
        in_reply_to: Option<&str>,
    ) -> ThreadMsg {
        let e = Envelope {
            subject: Some(subject.to_string()),
            message_id: Some(id.to_string()),
            in_reply_to: in_reply_to.map(str::to_string),
            ..Envelope::default()
        };
        ThreadMsg::new(seq, seq, date, &e, references)
    }

    fn threads(forest: &Forest) -> String {
        String::from_utf8(thread_response(forest)).unwrap()
    }

    #[test]
    fn ordered_subject_groups_by_base_subject() {
        let msgs = vec![
            tm(1, 1000, "Hello", "<1@x>", None, None),
            tm(2, 2000, "Re: Hello", "<2@x>", None, None),
            tm(3, 1500, "Other", "<3@x>", None, None),
            tm(4, 4000, "re: HELLO", "<4@x>", None, None),
            tm(5, 500, "Zed", "<5@x>", None, None),
            tm(6, 1500, "Other (fwd)", "<6@x>", None, None),
        ];
        assert_eq!(
            threads(&ordered_subject(&msgs)),
            "* THREAD (5)(1 (2)(4))(3 6)\r\n"
        );
        assert_eq!(threads(&ordered_subject(&[])), "* THREAD\r\n");
    }

    #[test]
    fn references_links_prunes_and_groups_by_subject() {
        let msgs = vec![
            tm(1, 1000, "Plan", "<a@x>", None, None),
            tm(2, 3000, "Re: Plan", "<b@x>", Some("<a@x>"), None),
            tm(3, 2000, "Re: Plan", "<c@x>", Some("<a@x>"), None),
            // References name a and c: c is already a's child, 4 becomes c's.
            tm(4, 4000, "Re: Plan", "<d@x>", Some("<a@x> <c@x>"), None),
            // A missing parent: a dummy with two children stays at the top.
            tm(5, 5000, "Lunch", "<e@x>", Some("<missing@x>"), None),
            tm(
                6,
                6000,
                "Re: Lunch",
                "<f@x>",
                None,
                Some("<missing@x> <a@x>"),
            ),
            // A loop: 7 names 8 as parent, then 8 names 7; the second link is refused.
            tm(7, 7000, "Loop", "<g@x>", Some("<h@x>"), None),
            tm(8, 8000, "Re: Loop", "<h@x>", Some("<g@x>"), None),
            // A forward of "Plan" without references joins the Plan thread by subject.
            tm(9, 9000, "Fwd: Plan", "<i@x>", None, None),
            // Two threads with one subject, neither a reply: a dummy holds both.
            tm(10, 10000, "Status", "<j@x>", None, None),
            tm(11, 11000, "Status", "<k@x>", None, None),
            // A duplicate Message-ID: the first message keeps it; this one stands alone.
            tm(12, 12000, "Other", "<a@x>", None, None),
        ];
        assert_eq!(
            threads(&references_threads(&msgs)),
            "* THREAD (1 (3 4)(2)(9))((5)(6))(8 7)((10)(11))(12)\r\n"
        );
    }

    #[test]
    fn references_prunes_dummies_below_the_top() {
        // missing1 -> missing2 -> 1: both dummies go, 1 is a thread of its own.
        // missing3 -> {2, missing4 -> {3, 4}}: missing4's children take its place.
        let msgs = vec![
            tm(1, 1000, "A", "<1@x>", Some("<m1@x> <m2@x>"), None),
            tm(2, 2000, "B", "<2@x>", Some("<m3@x>"), None),
            tm(3, 3000, "C", "<3@x>", Some("<m3@x> <m4@x>"), None),
            tm(4, 4000, "D", "<4@x>", Some("<m4@x>"), None),
        ];
        assert_eq!(
            threads(&references_threads(&msgs)),
            "* THREAD (1)((2)(3)(4))\r\n"
        );
    }

    #[test]
    fn references_merges_dummies_and_replies_of_one_subject() {
        let msgs = vec![
            // Two dummy-topped threads with subject "X": their children become siblings.
            tm(1, 1000, "X", "<1@x>", Some("<p@x>"), None),
            tm(2, 2000, "Re: X", "<2@x>", Some("<p@x>"), None),
            tm(3, 3000, "X", "<3@x>", Some("<q@x>"), None),
            tm(4, 4000, "Re: X", "<4@x>", Some("<q@x>"), None),
            // A reply thread and a non-reply one with subject "Y": the reply joins the other
            // even though it is older.
            tm(5, 500, "Re: Y", "<5@x>", None, None),
            tm(6, 6000, "Y", "<6@x>", None, None),
            // An empty subject is never grouped.
            tm(7, 7000, "", "<7@x>", None, None),
            tm(8, 8000, "Re:", "<8@x>", None, None),
        ];
        assert_eq!(
            threads(&references_threads(&msgs)),
            "* THREAD ((1)(2)(3)(4))(6 5)(7)(8)\r\n"
        );
    }

    #[test]
    fn a_long_chain_of_replies_is_handled_without_recursion() {
        let n = 10_000u32;
        let msgs: Vec<ThreadMsg> = (1..=n)
            .map(|i| {
                let parent = format!("<{}@x>", i - 1);
                let refs = (i > 1).then_some(parent.as_str());
                tm(i, i64::from(i), "Deep", &format!("<{i}@x>"), refs, None)
            })
            .collect();
        let out = threads(&references_threads(&msgs));
        let numbers: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        assert_eq!(out, format!("* THREAD ({})\r\n", numbers.join(" ")));
    }

    #[test]
    fn thread_responses_nest_branches() {
        // 3 -> 6 -> {4 -> 23, 44 -> 7 -> 96}; 2 alone (RFC 5256 §4's example).
        let mut f = Forest::default();
        let n: Vec<usize> = [2, 3, 6, 4, 23, 44, 7, 96]
            .iter()
            .map(|v| f.add(Some(*v)))
            .collect();
        f.children[n[1]] = vec![n[2]];
        f.children[n[2]] = vec![n[3], n[5]];
        f.children[n[3]] = vec![n[4]];
        f.children[n[5]] = vec![n[6]];
        f.children[n[6]] = vec![n[7]];
        f.roots = vec![n[0], n[1]];
        assert_eq!(threads(&f), "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n");
        // A dummy at the top with several children, one with one, one with none.
        let mut f = Forest::default();
        let (a, b, c) = (f.add(Some(1)), f.add(Some(2)), f.add(Some(3)));
        let (d1, d2, d3) = (f.add(None), f.add(None), f.add(None));
        f.children[d1] = vec![a, b];
        f.children[d2] = vec![c];
        f.roots = vec![d1, d2, d3];
        assert_eq!(threads(&f), "* THREAD ((1)(2))(3)\r\n");
    }

    #[test]
    fn deeply_nested_branches_are_written_without_recursion() {
        // Each level has a leaf and a deeper branch: 5,000 levels of parentheses.
        let mut f = Forest::default();
        let top = f.add(Some(1));
        let mut at = top;
        for i in 0..5_000u32 {
            let leaf = f.add(Some(2 * i + 2));
            let next = f.add(Some(2 * i + 3));
            f.children[at] = vec![leaf, next];
            at = next;
        }
        f.roots = vec![top];
        let out = threads(&f);
        assert!(
            out.starts_with("* THREAD (1 (2)(3 (4)(5 (6)(7"),
            "{}",
            &out[..40]
        );
        assert_eq!(out.matches('(').count(), out.matches(')').count());
        let end = format!("(9999 (10000)(10001){}\r\n", ")".repeat(5_000));
        assert!(out.ends_with(&end));
    }
}
