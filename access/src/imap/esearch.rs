//! ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) where imap-codec lacks them: a narrow
//! pre-pass of the framer, and the `* ESEARCH` response line.
//!
//! # The pre-pass
//!
//! imap-codec 2.0.0-alpha.10 parses every command this server takes, but knows neither the
//! `RETURN (…)` clause of an extended SEARCH (RFC 4466 `search-return-opts`) nor `$`, the
//! saved search result (RFC 5182 `seq-last-command`), as a sequence set. Rather than a
//! second grammar, [`prepass`] rewrites just those two things in the client's bytes before
//! imap-codec reads them:
//!
//! - `SEARCH RETURN (opts)` / `UID SEARCH RETURN (opts)`: the clause is cut out and its
//!   options kept in [`Extras::returns`];
//! - a bare `$` where a sequence set stands — the first argument of FETCH, STORE, COPY, MOVE
//!   and UID EXPUNGE, a search key of SEARCH, SORT and THREAD, the argument of the `UID`
//!   search key — becomes [`MARKER`], a set imap-codec accepts, and [`Extras::dollar`] says
//!   the command used it. The session reads [`MARKER`] as `$` only in such a command; a
//!   command that writes both `$` and the marker's text is left alone (and so refused).
//!
//! It walks the command token by token (atoms, quoted strings, literals, parentheses), so it
//! never looks inside quoted or literal data, and it knows of the search keys only how many
//! arguments each takes, to tell a key `$` from `SUBJECT $`. Whatever it does not recognise
//! it leaves to imap-codec unchanged: a command without `RETURN` or `$` reaches imap-codec
//! byte for byte (property-tested below), and a rewrite only ever replaces text imap-codec
//! would have refused. When the buffer ends inside a token that may be `$` or a `RETURN`
//! clause it asks for more input instead; at any other end (between tokens, inside a
//! literal's data) the rewritten prefix goes to imap-codec, which asks for the literal.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// The sequence set that stands for `$` in a rewritten command. The session reads it as `$`
/// only in a command whose `$` the pre-pass replaced ([`Extras::dollar`]), and the pre-pass
/// leaves alone a command that writes this text itself next to a `$`: a client's own set is
/// never taken for `$`.
pub const MARKER: &[u8] = b"4294967295:4294967295";

/// Whether `set` is [`MARKER`] as imap-codec parses it.
pub fn is_marker(set: &SequenceSet) -> bool {
    matches!(
        set.0.as_ref(),
        [Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b))]
            if a.get() == u32::MAX && b.get() == u32::MAX
    )
}

/// The result options of an extended SEARCH (RFC 4731 §3.1, RFC 5182's SAVE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Returns {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
}

/// What the pre-pass took out of one command, for the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// The command was an extended SEARCH with these result options.
    pub returns: Option<Returns>,
    /// The command wrote `$`, now [`MARKER`].
    pub dollar: bool,
    /// A FETCH asked for RFC 8474's EMAILID or THREADID (each now `UID` for imap-codec).
    pub fetch_ids: FetchIds,
    /// RFC 8474's EMAILID and THREADID search keys, the `i`-th now the sequence set
    /// [`ID_MARKERS`]`[i]`.
    pub id_keys: Vec<IdKey>,
}

/// The RFC 8474 items of a FETCH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchIds {
    pub email: bool,
    pub thread: bool,
    /// The client also asked for UID itself (so the placeholder's UID is not extra).
    pub uid: bool,
}

impl FetchIds {
    pub fn any(&self) -> bool {
        self.email || self.thread
    }
}

/// An RFC 8474 search key and its objectid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdKey {
    Email(String),
    Thread(String),
}

/// The sequence sets that stand for the EMAILID and THREADID keys of a rewritten SEARCH,
/// SORT or THREAD, in order: at most this many such keys per command (more are refused, as
/// imap-codec refuses the keys themselves). Like [`MARKER`], they mean a key only in a command
/// the pre-pass rewrote, and a command that writes their text itself is left alone.
pub const ID_MARKERS: [&[u8]; 8] = [
    b"4294967287:4294967287",
    b"4294967288:4294967288",
    b"4294967289:4294967289",
    b"4294967290:4294967290",
    b"4294967291:4294967291",
    b"4294967292:4294967292",
    b"4294967293:4294967293",
    b"4294967294:4294967294",
];

/// Which [`ID_MARKERS`] entry `set` is, as imap-codec parses it.
pub fn id_marker(set: &SequenceSet) -> Option<usize> {
    match set.0.as_ref() {
        [Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b))] if a == b => {
            let first = u32::MAX - ID_MARKERS.len() as u32;
            let v = a.get();
            (first..u32::MAX).contains(&v).then(|| (v - first) as usize)
        }
        _ => None,
    }
}

/// `len` bytes at `at` in the client's bytes become `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    at: usize,
    len: usize,
    with: &'static [u8],
}

/// A command with its `RETURN` clause cut out and its `$`s replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// What imap-codec reads instead of the client's bytes: the rewritten command (or the
    /// part of it that has arrived).
    pub bytes: Vec<u8>,
    pub extras: Extras,
    edits: Vec<Edit>,
}

impl Rewrite {
    /// How many of the client's bytes the first `n` bytes of [`Rewrite::bytes`] stand for.
    pub fn original_len(&self, n: usize) -> usize {
        // Original offset minus rewritten offset, over the edits before `n`.
        let mut shift: isize = 0;
        for e in &self.edits {
            let rewritten_at = (e.at as isize - shift) as usize;
            if n <= rewritten_at {
                break;
            }
            shift += e.len as isize - e.with.len() as isize;
        }
        (n as isize + shift).max(0) as usize
    }
}

/// What [`prepass`] says about the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepass {
    /// Nothing to rewrite: imap-codec reads the bytes as they are.
    Same,
    /// The buffer ends inside what may be `$` or a `RETURN` clause: wait for more.
    NeedMore,
    /// imap-codec reads this instead.
    Rewritten(Rewrite),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// Bytes up to the next delimiter, `start..end`.
    Atom(usize, usize),
    /// A complete quoted string or literal.
    Str,
    Open,
    Close,
    Space,
    /// CRLF: the end of the command.
    Eol,
    /// The buffer ends here, between tokens or inside a literal's data.
    End,
    /// The buffer ends inside the token that starts here.
    Cut(usize),
    /// Not IMAP syntax: imap-codec will say so.
    Bad,
}

/// Bytes that end an atom.
const DELIMITERS: &[u8] = b" ()\"{\r\n";

struct Scan<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The command's CRLF has been read.
    done: bool,
}

impl Scan<'_> {
    fn next(&mut self) -> Tok {
        let b = self.buf;
        let start = self.pos;
        let Some(&c) = b.get(start) else {
            return Tok::End;
        };
        let one = |s: &mut Self, t| {
            s.pos += 1;
            t
        };
        match c {
            b' ' => one(self, Tok::Space),
            b'(' => one(self, Tok::Open),
            b')' => one(self, Tok::Close),
            b'\r' => match b.get(start + 1) {
                None => Tok::Cut(start),
                Some(b'\n') => {
                    self.pos += 2;
                    self.done = true;
                    Tok::Eol
                }
                Some(_) => Tok::Bad,
            },
            b'\n' => Tok::Bad,
            b'"' => self.quoted(),
            b'{' => self.literal(),
            _ => match b[start..].iter().position(|c| DELIMITERS.contains(c)) {
                None => Tok::Cut(start),
                Some(n) => {
                    self.pos += n;
                    Tok::Atom(start, start + n)
                }
            },
        }
    }

    fn quoted(&mut self) -> Tok {
        let mut i = self.pos + 1;
        loop {
            match self.buf.get(i) {
                None => return Tok::Cut(self.pos),
                Some(b'"') => {
                    self.pos = i + 1;
                    return Tok::Str;
                }
                Some(b'\\') => match self.buf.get(i + 1) {
                    None => return Tok::Cut(self.pos),
                    Some(b'"' | b'\\') => i += 2,
                    Some(_) => return Tok::Bad,
                },
                Some(b'\r' | b'\n') => return Tok::Bad,
                Some(_) => i += 1,
            }
        }
    }

    /// `{n}` or `{n+}`, CRLF, n bytes: skipped unread.
    fn literal(&mut self) -> Tok {
        let b = self.buf;
        let start = self.pos;
        let digits = b[start + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let mut i = start + 1 + digits;
        if b.get(i) == Some(&b'+') {
            i += 1;
        }
        match (b.get(i), b.get(i + 1), b.get(i + 2)) {
            (None, ..) | (Some(b'}'), None, _) | (Some(b'}'), Some(b'\r'), None) => {
                return Tok::Cut(start);
            }
            (Some(b'}'), Some(b'\r'), Some(b'\n')) => {}
            _ => return Tok::Bad,
        }
        // imap-codec reads the size as a u32.
        let Some(len) = std::str::from_utf8(&b[start + 1..start + 1 + digits])
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
        else {
            return Tok::Bad;
        };
        let data = i + 3;
        if ((b.len() - data) as u64) < u64::from(len) {
            return Tok::End;
        }
        self.pos = data + len as usize;
        Tok::Str
    }

    fn text(&self, a: usize, e: usize) -> &[u8] {
        &self.buf[a..e]
    }

    /// Moves to the end of the command: after its CRLF, or the end of the buffer.
    fn finish(&mut self) -> usize {
        if self.done {
            return self.pos;
        }
        loop {
            match self.next() {
                Tok::Eol => return self.pos,
                Tok::End | Tok::Cut(_) | Tok::Bad => return self.buf.len(),
                _ => {}
            }
        }
    }
}

/// Looks at the command at the start of `buf` for an extended SEARCH's `RETURN` clause and
/// for `$` as a sequence set.
pub fn prepass(buf: &[u8]) -> Prepass {
    let mut s = Scan {
        buf,
        pos: 0,
        done: false,
    };
    // tag SP ["UID" SP] name
    let (Tok::Atom(..), Tok::Space) = (s.next(), s.next()) else {
        return Prepass::Same;
    };
    let Tok::Atom(a, e) = s.next() else {
        return Prepass::Same;
    };
    let mut name = s.text(a, e).to_ascii_uppercase();
    let uid = name == b"UID";
    if uid {
        let (Tok::Space, Tok::Atom(a, e)) = (s.next(), s.next()) else {
            return Prepass::Same;
        };
        name = s.text(a, e).to_ascii_uppercase();
    }
    let mut edits = Vec::new();
    let mut extras = Extras::default();
    let step = match name.as_slice() {
        b"FETCH" => match first_set(&mut s, &mut edits) {
            Step::Go => fetch_items(&mut s, &mut edits, &mut extras.fetch_ids),
            other => other,
        },
        b"STORE" | b"COPY" | b"MOVE" => first_set(&mut s, &mut edits),
        b"EXPUNGE" if uid => first_set(&mut s, &mut edits),
        b"SEARCH" => search(&mut s, &mut edits, &mut extras),
        b"SORT" | b"THREAD" => {
            if sort_or_thread_head(&mut s, name == b"SORT") {
                keys(&mut s, &mut edits, false, &mut extras.id_keys)
            } else {
                Step::Same
            }
        }
        _ => Step::Same,
    };
    match step {
        Step::Same => return Prepass::Same,
        Step::NeedMore => return Prepass::NeedMore,
        Step::Go => {}
    }
    extras.dollar = edits.iter().any(|e| e.with == MARKER);
    if edits.is_empty() {
        return Prepass::Same;
    }
    let end = s.finish();
    let mut bytes = Vec::with_capacity(end + MARKER.len());
    let mut at = 0;
    for e in &edits {
        bytes.extend_from_slice(&buf[at..e.at]);
        bytes.extend_from_slice(e.with);
        at = e.at + e.len;
    }
    bytes.extend_from_slice(&buf[at..end]);
    Prepass::Rewritten(Rewrite {
        bytes,
        extras,
        edits,
    })
}

/// How a part of the pre-pass ended.
enum Step {
    /// Leave the command to imap-codec as it is.
    Same,
    NeedMore,
    /// Go on with the edits made (maybe none).
    Go,
}

/// The first argument of FETCH, STORE, COPY, MOVE, UID EXPUNGE: a sequence set, `$`
/// replaced by [`MARKER`].
fn first_set(s: &mut Scan<'_>, edits: &mut Vec<Edit>) -> Step {
    if s.next() != Tok::Space {
        return Step::Same;
    }
    match s.next() {
        Tok::Atom(a, e) if s.text(a, e) == b"$" => {
            edits.push(Edit {
                at: a,
                len: 1,
                with: MARKER,
            });
            Step::Go
        }
        Tok::Cut(a) if &s.buf[a..] == b"$" => Step::NeedMore,
        Tok::Atom(..) => Step::Go,
        _ => Step::Same,
    }
}

/// Whether the buffer's last bytes, from `a`, may be the start of one of `words`.
fn may_become(s: &Scan<'_>, a: usize, words: &[&[u8]]) -> bool {
    let cut = s.buf[a..].to_ascii_uppercase();
    words.iter().any(|w| w.starts_with(&cut))
}

/// FETCH's items after the set: RFC 8474's EMAILID and THREADID (which imap-codec does not
/// know) become `UID`, noted in `ids` with whether the client asked for UID itself. Only the
/// item list's own level is looked at, never the field names of a `HEADER.FIELDS (…)`
/// section, and it stops where the list (or the single item) ends, before any modifiers.
fn fetch_items(s: &mut Scan<'_>, edits: &mut Vec<Edit>, ids: &mut FetchIds) -> Step {
    const IDS: [&[u8]; 2] = [b"EMAILID", b"THREADID"];
    if s.next() != Tok::Space {
        return Step::Go;
    }
    let mut depth = 0usize;
    loop {
        match s.next() {
            Tok::Open => depth += 1,
            Tok::Close if depth <= 1 => return Step::Go,
            Tok::Close => depth -= 1,
            Tok::Atom(a, e) if depth <= 1 => {
                match s.text(a, e).to_ascii_uppercase().as_slice() {
                    b"EMAILID" => ids.email = true,
                    b"THREADID" => ids.thread = true,
                    b"UID" => ids.uid = true,
                    _ => {}
                }
                if IDS.iter().any(|w| s.text(a, e).eq_ignore_ascii_case(w)) {
                    edits.push(Edit {
                        at: a,
                        len: e - a,
                        with: b"UID",
                    });
                }
                if depth == 0 {
                    return Step::Go;
                }
            }
            Tok::Cut(a) if depth <= 1 && may_become(s, a, &IDS) => return Step::NeedMore,
            Tok::Eol | Tok::End | Tok::Cut(_) | Tok::Bad => return Step::Go,
            Tok::Atom(..) | Tok::Str | Tok::Space => {}
        }
    }
}

/// SEARCH's arguments: an optional `RETURN (opts)` clause, then the search keys.
fn search(s: &mut Scan<'_>, edits: &mut Vec<Edit>, extras: &mut Extras) -> Step {
    let space = s.pos;
    if s.next() != Tok::Space {
        return Step::Same;
    }
    let keys_from = s.pos;
    match s.next() {
        Tok::Atom(a, e) if s.text(a, e).eq_ignore_ascii_case(b"RETURN") => {
            let r = match return_options(s) {
                Ok(r) => r,
                Err(step) => return step,
            };
            edits.push(Edit {
                at: space,
                len: s.pos - space,
                with: b"",
            });
            extras.returns = Some(r);
            // The clause must be followed by the search keys.
            match s.buf.get(s.pos) {
                Some(b' ') => {}
                None => return Step::NeedMore,
                Some(_) => return Step::Same,
            }
        }
        Tok::Cut(a) if b"RETURN".starts_with(&s.buf[a..].to_ascii_uppercase()) => {
            return Step::NeedMore;
        }
        _ => s.pos = keys_from,
    }
    keys(s, edits, true, &mut extras.id_keys)
}

/// ` (opt *(SP opt))` after RETURN (RFC 4466 `search-return-opts`), with the options this
/// server knows; an empty list means ALL (RFC 4731 §3.1).
fn return_options(s: &mut Scan<'_>) -> Result<Returns, Step> {
    let cut = |t: Tok| match t {
        Tok::End | Tok::Cut(_) => Step::NeedMore,
        _ => Step::Same,
    };
    for want in [Tok::Space, Tok::Open] {
        let t = s.next();
        if t != want {
            return Err(cut(t));
        }
    }
    let mut r = Returns::default();
    let mut t = s.next();
    if t != Tok::Close {
        loop {
            let Tok::Atom(a, e) = t else {
                return Err(cut(t));
            };
            let flag = match s.text(a, e).to_ascii_uppercase().as_slice() {
                b"MIN" => &mut r.min,
                b"MAX" => &mut r.max,
                b"ALL" => &mut r.all,
                b"COUNT" => &mut r.count,
                b"SAVE" => &mut r.save,
                _ => return Err(Step::Same),
            };
            *flag = true;
            match s.next() {
                Tok::Close => break,
                Tok::Space => t = s.next(),
                other => return Err(cut(other)),
            }
        }
    }
    if !(r.min || r.max || r.all || r.count || r.save) {
        r.all = true;
    }
    Ok(r)
}

/// SORT's ` (criteria) charset` or THREAD's ` algorithm charset`, before the search keys;
/// false when it is not that.
fn sort_or_thread_head(s: &mut Scan<'_>, sort: bool) -> bool {
    if s.next() != Tok::Space {
        return false;
    }
    if sort {
        if s.next() != Tok::Open {
            return false;
        }
        loop {
            match s.next() {
                Tok::Close => break,
                Tok::Atom(..) | Tok::Space => {}
                _ => return false,
            }
        }
    } else if !matches!(s.next(), Tok::Atom(..)) {
        return false;
    }
    s.next() == Tok::Space && matches!(s.next(), Tok::Atom(..) | Tok::Str)
}

/// How many arguments (not search keys) follow a search key.
enum Arity {
    Args(usize),
    /// `UID sequence-set`.
    Uid,
    /// `MODSEQ [entry-name entry-type] value`: one or three.
    ModSeq,
}

/// The search keys imap-codec knows, by the arguments they take (RFC 3501 §6.4.4, RFC 5032's
/// OLDER/YOUNGER, RFC 7162's MODSEQ); `NOT`, `OR`, the rest and sequence sets take none
/// (what follows `NOT` and `OR` is keys).
fn arity(key: &[u8], first: bool) -> Arity {
    const ONE: [&[u8]; 19] = [
        b"BCC",
        b"BEFORE",
        b"BODY",
        b"CC",
        b"FROM",
        b"KEYWORD",
        b"LARGER",
        b"OLDER",
        b"ON",
        b"SENTBEFORE",
        b"SENTON",
        b"SENTSINCE",
        b"SINCE",
        b"SMALLER",
        b"SUBJECT",
        b"TEXT",
        b"TO",
        b"UNKEYWORD",
        b"YOUNGER",
    ];
    let key = key.to_ascii_uppercase();
    match key.as_slice() {
        // SEARCH's `CHARSET name` comes before the first key.
        b"CHARSET" if first => Arity::Args(1),
        b"HEADER" => Arity::Args(2),
        b"UID" => Arity::Uid,
        b"MODSEQ" => Arity::ModSeq,
        k if ONE.contains(&k) => Arity::Args(1),
        _ => Arity::Args(0),
    }
}

/// An RFC 8474 search key (`EMAILID objectid`, `THREADID objectid`) whose name is the atom
/// `a..e`: replaced, name and argument, by the next of [`ID_MARKERS`]. `None` when the atom
/// is another key.
fn id_key(
    s: &mut Scan<'_>,
    (a, e): (usize, usize),
    edits: &mut Vec<Edit>,
    ids: &mut Vec<IdKey>,
) -> Option<Step> {
    let name = s.text(a, e).to_ascii_uppercase();
    let make: fn(String) -> IdKey = match name.as_slice() {
        b"EMAILID" => IdKey::Email,
        b"THREADID" => IdKey::Thread,
        _ => return None,
    };
    Some(match (s.next(), s.next()) {
        (Tok::Space, Tok::Atom(va, ve)) if super::objectid::is_objectid(s.text(va, ve)) => {
            let Some(&with) = ID_MARKERS.get(ids.len()) else {
                return Some(Step::Same);
            };
            edits.push(Edit {
                at: a,
                len: ve - a,
                with,
            });
            ids.push(make(String::from_utf8_lossy(s.text(va, ve)).into_owned()));
            Step::Go
        }
        (Tok::Cut(_) | Tok::End, _) | (Tok::Space, Tok::Cut(_) | Tok::End) => Step::NeedMore,
        _ => Step::Same,
    })
}

/// Walks search keys to the end of the command (or of the buffer), replacing each `$` that
/// stands for a sequence set (as a key, or as the argument of `UID`) and each RFC 8474 key.
fn keys(s: &mut Scan<'_>, edits: &mut Vec<Edit>, charset: bool, ids: &mut Vec<IdKey>) -> Step {
    let mut args = 0usize;
    let mut uid_arg = false;
    let mut modseq = false;
    let mut first = charset;
    let mut writes_marker = false;
    loop {
        let t = s.next();
        let dollar = match t {
            Tok::Space => continue,
            Tok::Eol | Tok::End => break,
            Tok::Bad => return Step::Same,
            Tok::Cut(a) if &s.buf[a..] == b"$" => return Step::NeedMore,
            Tok::Cut(a) if args == 0 && may_become(s, a, &[b"EMAILID", b"THREADID"]) => {
                return Step::NeedMore;
            }
            Tok::Cut(_) => break,
            Tok::Open | Tok::Close => false,
            Tok::Str if modseq => {
                // An entry name: its type and the value follow.
                args = 2;
                modseq = false;
                false
            }
            Tok::Str => {
                args = args.saturating_sub(1);
                uid_arg = false;
                false
            }
            Tok::Atom(a, e) => {
                if args == 0 && !modseq {
                    match id_key(s, (a, e), edits, ids) {
                        Some(Step::Go) => {
                            first = false;
                            continue;
                        }
                        Some(other) => return other,
                        None => {}
                    }
                }
                let text = s.text(a, e);
                writes_marker |= text == MARKER || ID_MARKERS.contains(&text);
                let is_set = if modseq {
                    modseq = false;
                    false
                } else if args > 0 {
                    args -= 1;
                    std::mem::take(&mut uid_arg)
                } else {
                    match arity(text, first) {
                        Arity::Args(n) => args = n,
                        Arity::Uid => {
                            args = 1;
                            uid_arg = true;
                        }
                        Arity::ModSeq => modseq = true,
                    }
                    true
                };
                is_set && text == b"$"
            }
        };
        first = false;
        if dollar && let Tok::Atom(a, _) = t {
            edits.push(Edit {
                at: a,
                len: 1,
                with: MARKER,
            });
        }
    }
    if writes_marker && edits.iter().any(|e| !e.with.is_empty()) {
        return Step::Same;
    }
    Step::Go
}

/// One message an extended search found: its number in the answer (sequence number or
/// UID) and its mod-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub number: u32,
    pub modseq: u64,
}

/// Which of `n` found messages (in ascending order) the options return, by index: MIN and/or
/// MAX alone return those, anything else all of them. They are what RFC 5182 §2.4 saves for
/// `$` and what RFC 4731 §3.2's MODSEQ is the highest mod-sequence of.
pub fn returned(r: Returns, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if r.all || r.count || !(r.min || r.max) {
        return (0..n).collect();
    }
    let mut out = Vec::new();
    if r.min {
        out.push(0);
    }
    if r.max && (out.is_empty() || n > 1) {
        out.push(n - 1);
    }
    out
}

/// `n` as RFC 4731's ALL shows them: a sequence set of ranges, from ascending numbers.
pub fn compact(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        while i + 1 < numbers.len() && numbers[i + 1] == numbers[i].saturating_add(1) {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if numbers[i] == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{}", numbers[i]));
        }
        i += 1;
    }
    out
}

/// The `* ESEARCH` response to an extended SEARCH tagged `tag` that found `found` (ascending),
/// or None when only SAVE was asked for (RFC 5182 §2.1: no response then). `modseq`: the
/// criteria used MODSEQ, so the response carries the highest mod-sequence of what it returns
/// (RFC 4731 §3.2) — when it returns any message.
pub fn response(
    tag: &str,
    uid: bool,
    r: Returns,
    found: &[Found],
    modseq: bool,
) -> Option<Vec<u8>> {
    if !(r.min || r.max || r.all || r.count) {
        return None;
    }
    // RFC 4466 `search-correlator`: the tag as a quoted string (a tag holds no `"` or `\`,
    // but they would be escaped).
    let mut quoted = String::with_capacity(tag.len() + 2);
    for c in tag.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    let mut line = format!("* ESEARCH (TAG \"{quoted}\")");
    if uid {
        line.push_str(" UID");
    }
    if let (Some(first), Some(last)) = (found.first(), found.last()) {
        if r.min {
            line.push_str(&format!(" MIN {}", first.number));
        }
        if r.max {
            line.push_str(&format!(" MAX {}", last.number));
        }
    }
    if r.count {
        line.push_str(&format!(" COUNT {}", found.len()));
    }
    if r.all && !found.is_empty() {
        let numbers: Vec<u32> = found.iter().map(|f| f.number).collect();
        line.push_str(&format!(" ALL {}", compact(&numbers)));
    }
    let highest = returned(r, found.len())
        .into_iter()
        .map(|i| found[i].modseq)
        .max()
        .unwrap_or(0);
    if modseq && highest > 0 {
        line.push_str(&format!(" MODSEQ {highest}"));
    }
    line.push_str("\r\n");
    Some(line.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::search::SearchKey;
    use proptest::prelude::*;

    fn rewritten(input: &[u8]) -> Rewrite {
        match prepass(input) {
            Prepass::Rewritten(r) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// The command imap-codec reads after the pre-pass, and the bytes it used of `input`.
    fn parsed(input: &[u8]) -> (CommandBody<'static>, Extras, usize) {
        let r = rewritten(input);
        let (rest, cmd) = CommandCodec::default()
            .decode_static(&r.bytes)
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(&r.bytes)));
        let used = r.original_len(r.bytes.len() - rest.len());
        (cmd.body, r.extras, used)
    }

    fn returns(spec: &str) -> Returns {
        Returns {
            min: spec.contains("min"),
            max: spec.contains("max"),
            all: spec.contains("all"),
            count: spec.contains("count"),
            save: spec.contains("save"),
        }
    }

    #[test]
    fn return_clause_is_cut_out() {
        let input = b"a1 SEARCH RETURN (MIN COUNT) FLAGGED\r\nnext";
        let (body, extras, used) = parsed(input);
        assert_eq!(used, input.len() - 4);
        assert_eq!(extras.returns, Some(returns("min count")));
        assert!(!extras.dollar);
        let CommandBody::Search { criteria, uid, .. } = body else {
            panic!("{body:?}")
        };
        assert!(!uid);
        assert_eq!(criteria.as_ref(), [SearchKey::Flagged]);
        // An empty list is ALL; options in any case; UID form; CHARSET after the clause.
        let (body, extras, _) = parsed(b"a UID search return () CHARSET UTF-8 ALL\r\n");
        assert_eq!(extras.returns, Some(returns("all")));
        assert!(matches!(
            body,
            CommandBody::Search {
                uid: true,
                charset: Some(_),
                ..
            }
        ));
        let (_, extras, _) = parsed(b"a SEARCH RETURN (save Max) ALL\r\n");
        assert_eq!(extras.returns, Some(returns("save max")));
    }

    #[test]
    fn dollar_becomes_the_marker_where_a_set_stands() {
        for cmd in [
            "FETCH $ (FLAGS)",
            "UID FETCH $ (FLAGS)",
            "STORE $ +FLAGS ($)",
            "UID STORE $ -FLAGS.SILENT (\\Seen)",
            "COPY $ $",
            "UID MOVE $ INBOX",
            "UID EXPUNGE $",
        ] {
            let input = format!("t {cmd}\r\n");
            let (body, extras, used) = parsed(input.as_bytes());
            assert!(extras.dollar && extras.returns.is_none(), "{cmd}");
            assert_eq!(used, input.len(), "{cmd}");
            let set = match &body {
                CommandBody::Fetch { sequence_set, .. }
                | CommandBody::Store { sequence_set, .. }
                | CommandBody::Copy { sequence_set, .. }
                | CommandBody::Move { sequence_set, .. }
                | CommandBody::ExpungeUid { sequence_set } => sequence_set,
                other => panic!("{other:?}"),
            };
            assert!(is_marker(set), "{cmd}");
        }
        // COPY's mailbox named `$` stays a mailbox; STORE's flag `$` stays a flag.
        let (body, ..) = parsed(b"t COPY $ $\r\n");
        assert!(
            matches!(body, CommandBody::Copy { mailbox, .. } if format!("{mailbox:?}").contains('$'))
        );
    }

    #[test]
    fn dollar_in_search_keys_but_not_in_their_arguments() {
        let (body, extras, _) = parsed(
            b"t UID SEARCH RETURN (SAVE) $ SUBJECT $ OR UID $ (NOT $) HEADER $ $ KEYWORD $ MODSEQ \"/flags/\\\\seen\" all 5 $\r\n",
        );
        assert_eq!(extras.returns, Some(returns("save")));
        assert!(extras.dollar);
        let CommandBody::Search { criteria, .. } = body else {
            panic!()
        };
        let c = criteria.as_ref();
        assert!(matches!(&c[0], SearchKey::SequenceSet(s) if is_marker(s)));
        assert!(matches!(&c[1], SearchKey::Subject(s) if s.as_ref() == b"$"));
        assert!(matches!(&c[2], SearchKey::Or(a, b)
            if matches!(&**a, SearchKey::Uid(s) if is_marker(s))
            && matches!(&**b, SearchKey::And(k) if matches!(k.as_ref(), [SearchKey::Not(n)] if matches!(&**n, SearchKey::SequenceSet(s) if is_marker(s))))));
        assert!(
            matches!(&c[3], SearchKey::Header(f, v) if f.as_ref() == b"$" && v.as_ref() == b"$")
        );
        assert!(matches!(&c[4], SearchKey::Keyword(k) if k.as_ref() == "$"));
        assert!(matches!(&c[5], SearchKey::ModSequence { modseq: 5, .. }));
        assert!(matches!(&c[6], SearchKey::SequenceSet(s) if is_marker(s)));
        // SORT and THREAD take `$` in their search keys too.
        let (body, ..) = parsed(b"t UID SORT (REVERSE DATE) UTF-8 $\r\n");
        assert!(matches!(body, CommandBody::Sort { search_criteria, .. }
            if matches!(search_criteria.as_ref(), [SearchKey::SequenceSet(s)] if is_marker(s))));
        let (body, ..) = parsed(b"t THREAD REFERENCES US-ASCII SEEN $\r\n");
        assert!(matches!(body, CommandBody::Thread { .. }));
    }

    #[test]
    fn literals_and_quoted_strings_are_never_read() {
        let input = b"t SEARCH SUBJECT {14}\r\nRETURN (MIN) $ $ BODY \"$ RETURN\"\r\n";
        let r = rewritten(input);
        assert_eq!(
            r.bytes,
            b"t SEARCH SUBJECT {14}\r\nRETURN (MIN) $ 4294967295:4294967295 BODY \"$ RETURN\"\r\n"
        );
        assert_eq!(r.original_len(r.bytes.len()), input.len());
        // `$` as the SUBJECT literal's data: nothing to do.
        assert_eq!(prepass(b"t SEARCH SUBJECT {1}\r\n$\r\n"), Prepass::Same);
    }

    #[test]
    fn partial_input() {
        // The end of the buffer inside what may be `$` or RETURN: wait.
        for p in [
            "t FETCH $",
            "t SEARCH RET",
            "t SEARCH RETURN (MI",
            "t SEARCH RETURN (MIN)",
        ] {
            assert_eq!(prepass(p.as_bytes()), Prepass::NeedMore, "{p}");
        }
        for p in [
            "t SEARCH SEEN $",
            "t SEARCH RETURN (MIN",
            "t SEARCH RETURN (MIN) $",
        ] {
            assert_eq!(prepass(p.as_bytes()), Prepass::NeedMore, "{p}");
        }
        // `$` is whole once a delimiter follows it.
        assert_eq!(
            rewritten(b"t UID EXPUNGE $\r").bytes,
            b"t UID EXPUNGE 4294967295:4294967295\r"
        );
        // Elsewhere: what has arrived goes to imap-codec, rewritten, so it can ask for the
        // literal it ends with.
        let r = rewritten(b"t SEARCH RETURN (COUNT) $ SUBJECT {5}\r\n");
        assert_eq!(r.bytes, b"t SEARCH 4294967295:4294967295 SUBJECT {5}\r\n");
        assert!(matches!(
            CommandCodec::default().decode_static(&r.bytes),
            Err(imap_codec::decode::CommandDecodeError::LiteralFound { length: 5, .. })
        ));
        assert_eq!(prepass(b"t FETCH 1"), Prepass::Same);
        assert_eq!(prepass(b"t SEA"), Prepass::Same);
    }

    #[test]
    fn fetch_objectid_items_become_uid() {
        let r = rewritten(b"a FETCH 1:* (EMAILID threadid)\r\n");
        assert_eq!(r.bytes, b"a FETCH 1:* (UID UID)\r\n");
        let ids = FetchIds {
            email: true,
            thread: true,
            uid: false,
        };
        assert_eq!(r.extras.fetch_ids, ids);
        let r = rewritten(b"a FETCH 2 EMAILID\r\n");
        assert_eq!(r.bytes, b"a FETCH 2 UID\r\n");
        // Field names of a section are not items; UID asked for by the client is noted.
        let input =
            b"a UID FETCH $ (UID BODY.PEEK[HEADER.FIELDS (EMAILID)] THREADID) (CHANGEDSINCE 4)\r\n";
        let (body, extras, used) = parsed(input);
        assert_eq!(used, input.len());
        assert!(extras.dollar && extras.fetch_ids.uid && extras.fetch_ids.thread);
        assert!(!extras.fetch_ids.email);
        let CommandBody::Fetch { .. } = body else {
            panic!("{body:?}")
        };
        let r = rewritten(input);
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(text.contains("(EMAILID)] UID)"), "{text}");
        // Cut inside a name that may become one: wait.
        assert_eq!(prepass(b"a FETCH 1 (FLAGS EMAI"), Prepass::NeedMore);
        assert_eq!(prepass(b"a FETCH 1 (FLAGS ENV"), Prepass::Same);
    }

    #[test]
    fn objectid_search_keys_become_markers() {
        let input = b"a UID SEARCH EMAILID M1a OR THREADID T-2 EMAILID M_3 UNSEEN\r\n";
        let (body, extras, used) = parsed(input);
        assert_eq!(used, input.len());
        assert_eq!(
            extras.id_keys,
            vec![
                IdKey::Email("M1a".into()),
                IdKey::Thread("T-2".into()),
                IdKey::Email("M_3".into()),
            ]
        );
        let CommandBody::Search { criteria, .. } = body else {
            panic!("{body:?}")
        };
        let text = format!("{criteria:?}");
        let markers: Vec<usize> = (0..ID_MARKERS.len())
            .filter(|i| {
                let m = String::from_utf8_lossy(ID_MARKERS[*i]);
                let n = m.split(':').next().unwrap().to_string();
                text.contains(&n)
            })
            .collect();
        assert_eq!(markers, vec![0, 1, 2], "{text}");
        let set: SequenceSet = std::str::from_utf8(ID_MARKERS[5])
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(id_marker(&set), Some(5));
        let set: SequenceSet = "4294967286:4294967286".try_into().unwrap();
        assert_eq!(id_marker(&set), None);
        assert_eq!(id_marker(&"4294967295".try_into().unwrap()), None);
        // In SORT and THREAD too.
        let r = rewritten(b"a SORT (DATE) UTF-8 THREADID Tx\r\n");
        assert_eq!(r.extras.id_keys, vec![IdKey::Thread("Tx".into())]);
        // An argument named EMAILID is not a key; a bad objectid is imap-codec's to refuse.
        assert_eq!(prepass(b"a SEARCH SUBJECT EMAILID\r\n"), Prepass::Same);
        assert_eq!(prepass(b"a SEARCH EMAILID \"M1\"\r\n"), Prepass::Same);
        assert_eq!(prepass(b"a SEARCH EMAILID M.1\r\n"), Prepass::Same);
        // The client writing a marker itself next to a key: left alone.
        assert_eq!(
            prepass(b"a SEARCH EMAILID M1 4294967287:4294967287\r\n"),
            Prepass::Same
        );
        // More keys than markers: left alone.
        let many = format!("a SEARCH{}\r\n", " EMAILID M1".repeat(9));
        assert_eq!(prepass(many.as_bytes()), Prepass::Same);
        for cut in [
            &b"a SEARCH EMAILID"[..],
            b"a SEARCH EMAILID ",
            b"a SEARCH THREA",
            b"a SEARCH EMAILID M1",
        ] {
            assert_eq!(
                prepass(cut),
                Prepass::NeedMore,
                "{}",
                String::from_utf8_lossy(cut)
            );
        }
    }

    #[test]
    fn left_to_imap_codec() {
        for c in [
            // Unknown or malformed result options, RETURN elsewhere, `$` in a list.
            "t SEARCH RETURN (PARTIAL 1:5) ALL",
            "t SEARCH RETURN(MIN) ALL",
            "t SEARCH ALL RETURN (MIN)",
            "t SORT RETURN (MIN) (DATE) UTF-8 ALL",
            "t FETCH 1,$ (FLAGS)",
            "t FETCH $1 (FLAGS)",
            // The marker written by the client next to a `$`.
            "t SEARCH $ 4294967295:4294967295",
            // Not a command the pre-pass reads.
            "t SELECT $",
            "t EXPUNGE $",
            "t LOGIN $ $",
        ] {
            let input = format!("{c}\r\n");
            assert_eq!(prepass(input.as_bytes()), Prepass::Same, "{c}");
        }
    }

    #[test]
    fn esearch_responses() {
        let f = |numbers: &[u32]| -> Vec<Found> {
            numbers
                .iter()
                .map(|n| Found {
                    number: *n,
                    modseq: u64::from(*n) * 10,
                })
                .collect()
        };
        let line = |tag, uid, r, found: &[Found], modseq| {
            String::from_utf8(response(tag, uid, r, found, modseq).unwrap()).unwrap()
        };
        assert_eq!(
            line("A282", false, returns("min count"), &f(&[2, 10, 11]), false),
            "* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n"
        );
        assert_eq!(
            line("A283", false, returns("all"), &f(&[2, 10, 11]), false),
            "* ESEARCH (TAG \"A283\") ALL 2,10:11\r\n"
        );
        assert_eq!(
            line(
                "x",
                true,
                returns("min max count all"),
                &f(&[1, 2, 3, 5, 7, 8]),
                false
            ),
            "* ESEARCH (TAG \"x\") UID MIN 1 MAX 8 COUNT 6 ALL 1:3,5,7:8\r\n"
        );
        // Nothing found: no MIN, MAX or ALL, but the response and COUNT 0.
        assert_eq!(
            line("A284", false, returns("min max all count"), &[], true),
            "* ESEARCH (TAG \"A284\") COUNT 0\r\n"
        );
        assert_eq!(
            line("e", true, returns("min"), &[], false),
            "* ESEARCH (TAG \"e\") UID\r\n"
        );
        // MODSEQ: of the one message MIN returns, the higher of MIN and MAX, or of all.
        let found = [
            Found {
                number: 4,
                modseq: 90,
            },
            Found {
                number: 6,
                modseq: 70,
            },
            Found {
                number: 9,
                modseq: 80,
            },
        ];
        assert_eq!(
            line("m", false, returns("min"), &found, true),
            "* ESEARCH (TAG \"m\") MIN 4 MODSEQ 90\r\n"
        );
        assert_eq!(
            line("m", false, returns("max"), &found, true),
            "* ESEARCH (TAG \"m\") MAX 9 MODSEQ 80\r\n"
        );
        assert_eq!(
            line("m", false, returns("count"), &found[1..], true),
            "* ESEARCH (TAG \"m\") COUNT 2 MODSEQ 80\r\n"
        );
        // SAVE alone answers nothing; a tag is quoted.
        assert_eq!(response("s", false, returns("save"), &found, false), None);
        assert!(
            line("a\"b", false, returns("count"), &[], false)
                .starts_with("* ESEARCH (TAG \"a\\\"b\")")
        );
    }

    #[test]
    fn what_is_returned_and_saved() {
        assert_eq!(returned(returns("save"), 3), vec![0, 1, 2]);
        assert_eq!(returned(returns("save min"), 3), vec![0]);
        assert_eq!(returned(returns("save max"), 3), vec![2]);
        assert_eq!(returned(returns("save min max"), 3), vec![0, 2]);
        assert_eq!(returned(returns("save min max"), 1), vec![0]);
        assert_eq!(returned(returns("save min count"), 3), vec![0, 1, 2]);
        assert_eq!(returned(returns("save all"), 0), Vec::<usize>::new());
        assert_eq!(compact(&[1, 2, 3, 5, 9, 10]), "1:3,5,9:10");
        assert_eq!(compact(&[4294967295]), "4294967295");
        assert_eq!(compact(&[]), "");
    }

    fn command_without_constructs() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("SEARCH".to_string()),
            Just("UID".to_string()),
            Just("FETCH".to_string()),
            Just("SUBJECT".to_string()),
            Just("HEADER".to_string()),
            Just("MODSEQ".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just("1:*".to_string()),
            Just("$Junk".to_string()),
            Just("\"quoted $ RETURN (MIN)\"".to_string()),
            Just("{3}\r\n$ $".to_string()),
            Just("{2+}\r\n()".to_string()),
            "[ -~]{0,12}",
        ];
        (
            prop_oneof![
                Just("SEARCH"),
                Just("UID SEARCH"),
                Just("FETCH"),
                Just("UID STORE"),
                Just("SORT (DATE) UTF-8"),
                Just("THREAD REFERENCES UTF-8"),
                Just("UID EXPUNGE"),
            ],
            proptest::collection::vec(piece, 0..10),
        )
            .prop_map(|(name, pieces)| format!("t {name} {}\r\n", pieces.join(" ")))
    }

    /// Whether the tokens of `cmd` (outside strings and literals) include `$`, RETURN or an
    /// RFC 8474 name.
    fn writes_a_construct(cmd: &str) -> bool {
        let mut s = Scan {
            buf: cmd.as_bytes(),
            pos: 0,
            done: false,
        };
        loop {
            match s.next() {
                Tok::Atom(a, e) => {
                    let t = s.text(a, e);
                    if t == b"$"
                        || t.eq_ignore_ascii_case(b"RETURN")
                        || t.eq_ignore_ascii_case(b"EMAILID")
                        || t.eq_ignore_ascii_case(b"THREADID")
                    {
                        return true;
                    }
                }
                Tok::Eol | Tok::End | Tok::Cut(_) | Tok::Bad => return false,
                _ => {}
            }
        }
    }

    proptest! {
        /// A command that writes neither `RETURN` nor `$` (but for strings, literals, or
        /// inside a longer atom) reaches imap-codec unchanged.
        #[test]
        fn identity_without_return_or_dollar(cmd in command_without_constructs()) {
            prop_assume!(!writes_a_construct(&cmd));
            prop_assert_eq!(prepass(cmd.as_bytes()), Prepass::Same);
        }

        /// Whatever arrives: no panic; a rewrite keeps every byte outside its edits, and maps
        /// its length back to what it replaced.
        #[test]
        fn rewrites_only_edit(input in proptest::collection::vec(prop_oneof![
            Just(b"t SEARCH RETURN (MIN SAVE) ".to_vec()),
            Just(b"t UID FETCH $ (FLAGS)\r\n".to_vec()),
            Just(b"$ ".to_vec()),
            Just(b"UID $ ".to_vec()),
            Just(b"{3}\r\n$ $".to_vec()),
            Just(b"\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ], 0..8), cut in 0usize..120) {
            let input: Vec<u8> = input.concat();
            let input = &input[..cut.min(input.len())];
            if let Prepass::Rewritten(r) = prepass(input) {
                let mut at = 0;
                let mut expected = Vec::new();
                for e in &r.edits {
                    prop_assert!(e.at >= at && e.at + e.len <= input.len());
                    expected.extend_from_slice(&input[at..e.at]);
                    expected.extend_from_slice(e.with);
                    at = e.at + e.len;
                }
                prop_assert!(r.bytes.starts_with(&expected));
                let rest = &r.bytes[expected.len()..];
                prop_assert!(input[at..].starts_with(rest));
                prop_assert_eq!(r.original_len(r.bytes.len()), at + rest.len());
            }
        }
    }
}
