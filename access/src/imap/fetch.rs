//! FETCH: message data items from the index (flags, dates, sizes, and the ENVELOPE and
//! BODYSTRUCTURE computed at append/delivery) and body sections sliced from the stored body
//! by the part offsets kept in the index.

use std::collections::HashMap;
use std::io;
use std::num::{NonZeroU32, NonZeroU64};

use chrono::TimeZone;
use halyard_raft_store::{
    Addr, BodyKind, BodyPart, Command as StoreCommand, Envelope, FlagAction, MessageMeta,
    MessageRecord, Reply,
};
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::core::{IString, Literal, NString, Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::envelope::{Address, Envelope as WireEnvelope};
use imap_codec::imap_types::extensions::utf8::QuotedUtf8;
use imap_codec::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::sequence::SequenceSet;

use super::esearch::FetchIds;
use super::session::{Session, fetch_flags};
use super::{Kind, binary, encode, status};
use crate::store::StoreFail;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A header value as an RFC 6855 UTF-8 quoted string: only after ENABLE UTF8=ACCEPT
/// (`utf8`), only for text that is not ASCII (ASCII goes out as it always did), and only when
/// the quoted syntax can carry it (no NUL, CR or LF). Otherwise the caller's string, which
/// for non-ASCII text is a literal holding the same bytes.
fn utf8_quoted(s: &str, utf8: bool) -> Option<IString<'static>> {
    if !utf8 || s.is_ascii() {
        return None;
    }
    QuotedUtf8::try_from(s.to_string())
        .ok()
        .map(IString::QuotedUtf8)
}

fn nstr(s: Option<&str>, utf8: bool) -> NString<'static> {
    match s {
        Some(s) => match utf8_quoted(s, utf8) {
            Some(q) => NString(Some(q)),
            None => NString::try_from(s.to_string()).unwrap_or(NString(None)),
        },
        None => NString(None),
    }
}

fn istr(s: &str, utf8: bool) -> IString<'static> {
    if let Some(q) = utf8_quoted(s, utf8) {
        return q;
    }
    IString::try_from(s.to_string()).unwrap_or_else(|_| {
        IString::Literal(Literal::unvalidated(without_nul(s.as_bytes().to_vec())))
    })
}

/// IMAP4rev1 literals may not carry NUL (only BINARY's literal8 may), yet a stored message
/// can contain one (SMTP does not forbid it in practice). Each NUL goes out as 0x80, the
/// same length, so sizes and partial offsets stay right; BINARY[] returns the real bytes.
pub(crate) fn without_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    // The common case, no NUL at all, costs one fast scan (memchr) and no writes.
    if bytes.contains(&0) {
        for b in bytes.iter_mut().filter(|b| **b == 0) {
            *b = 0x80;
        }
    }
    bytes
}

/// Message bytes as an nstring: quoted when possible, else a literal (even with bytes IMAP
/// would want in literal8; clients take them).
/// Sections larger than this are not assembled in memory: the response carries a
/// placeholder literal, and the bytes are streamed from the store chunk by chunk in its place.
const STREAM_ABOVE: u64 = 1 << 20;
/// Bytes read from the store per write while streaming.
const STREAM_CHUNK: u64 = 256 * 1024;

/// Placeholder literals for streamed ranges: a per-process random marker (unguessable, so
/// that no stored message can impersonate one) and the range's index.
fn stream_marker(k: usize) -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    static NONCE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (a, b) = *NONCE.get_or_init(|| {
        let r = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        (r(), r())
    });
    format!("halyard-stream-{a:016x}{b:016x}-{k}").into_bytes()
}

/// The byte range of `BODY[section]<partial>` when it is a plain range of the stored body
/// (not a HEADER.FIELDS filter), for streaming.
fn plain_span(
    meta: &MessageMeta,
    size: u64,
    section: &Option<Section<'_>>,
    partial: Option<(u32, NonZeroU32)>,
) -> Option<(u64, u64)> {
    let (a, b, filter) = section_range(meta, size, section)?;
    if filter.is_some() {
        return None;
    }
    Some(match partial {
        Some((start, len)) => {
            let from = a.saturating_add(u64::from(start)).min(b);
            (from, from.saturating_add(u64::from(len.get())).min(b))
        }
        None => (a, b),
    })
}

pub(super) fn data(bytes: Vec<u8>) -> NString<'static> {
    // Short single-line data may be quoted; everything else is a literal, built without
    // copying the (possibly large) bytes again.
    if bytes.len() <= 1024
        && !bytes.contains(&b'\n')
        && !bytes.contains(&b'\r')
        && let Ok(s) = IString::try_from(bytes.clone())
    {
        return NString(Some(s));
    }
    NString(Some(IString::Literal(Literal::unvalidated(without_nul(
        bytes,
    )))))
}

fn addresses(list: &[Addr], utf8: bool) -> Vec<Address<'static>> {
    list.iter()
        .map(|a| Address {
            name: nstr(a.name.as_deref(), utf8),
            adl: nstr(a.adl.as_deref(), utf8),
            mailbox: nstr(a.mailbox.as_deref(), utf8),
            host: nstr(a.host.as_deref(), utf8),
        })
        .collect()
}

pub(crate) fn envelope(e: &Envelope, utf8: bool) -> WireEnvelope<'static> {
    WireEnvelope {
        date: nstr(e.date.as_deref(), utf8),
        subject: nstr(e.subject.as_deref(), utf8),
        from: addresses(&e.from, utf8),
        sender: addresses(&e.sender, utf8),
        reply_to: addresses(&e.reply_to, utf8),
        to: addresses(&e.to, utf8),
        cc: addresses(&e.cc, utf8),
        bcc: addresses(&e.bcc, utf8),
        in_reply_to: nstr(e.in_reply_to.as_deref(), utf8),
        message_id: nstr(e.message_id.as_deref(), utf8),
    }
}

fn params(p: &[(String, String)], utf8: bool) -> Vec<(IString<'static>, IString<'static>)> {
    p.iter()
        .map(|(k, v)| (istr(&k.to_uppercase(), utf8), istr(v, utf8)))
        .collect()
}

fn disposition(p: &BodyPart, utf8: bool) -> Disposition<'static> {
    Disposition {
        disposition: p
            .disposition
            .as_ref()
            .map(|(d, ps)| (istr(&d.to_uppercase(), utf8), params(ps, utf8))),
        tail: Some(Language {
            language: p.language.iter().map(|l| istr(l, utf8)).collect(),
            tail: Some(Location {
                location: nstr(p.location.as_deref(), utf8),
                extensions: vec![],
            }),
        }),
    }
}

/// BODYSTRUCTURE (`extended`) or BODY of a part.
pub(crate) fn structure(p: &BodyPart, extended: bool, utf8: bool) -> BodyStructure<'static> {
    if let BodyKind::Multipart { parts } = &p.kind {
        let bodies: Vec<BodyStructure> =
            parts.iter().map(|c| structure(c, extended, utf8)).collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istr(&p.subtype.to_uppercase(), utf8),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(&p.params, utf8),
                    tail: Some(disposition(p, utf8)),
                }),
            };
        }
    }
    let size = p.end.saturating_sub(p.body_start).min(u32::MAX as u64) as u32;
    let lines = p.lines.min(u32::MAX as u64) as u32;
    let specific = match &p.kind {
        BodyKind::Text => SpecificFields::Text {
            subtype: istr(&p.subtype.to_uppercase(), utf8),
            number_of_lines: lines,
        },
        BodyKind::Message { envelope: e, body } => SpecificFields::Message {
            envelope: Box::new(envelope(e, utf8)),
            body_structure: Box::new(structure(body, extended, utf8)),
            number_of_lines: lines,
        },
        _ => SpecificFields::Basic {
            r#type: istr(&p.media_type.to_uppercase(), utf8),
            subtype: istr(&p.subtype.to_uppercase(), utf8),
        },
    };
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: params(&p.params, utf8),
                id: nstr(p.id.as_deref(), utf8),
                description: nstr(p.description.as_deref(), utf8),
                content_transfer_encoding: istr(&p.encoding.to_uppercase(), utf8),
                size,
            },
            specific,
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nstr(p.md5.as_deref(), utf8),
            tail: Some(disposition(p, utf8)),
        }),
    }
}

/// The part a section path names (RFC 3501 §6.4.5 part numbering).
///
/// The numbers at each level count the parts of a *message*: the top-level message, or the
/// message a message/rfc822 part encloses. A multipart message's parts are its body parts; a
/// message that is not multipart has one part, its body, numbered 1: for the top-level
/// message that is the root entity itself (so a top-level message/rfc822 is `1`, and `1.1` is
/// what it encloses), for an enclosed message its own entity. A part that is neither multipart
/// nor message/rfc822 has no sub-parts.
pub(super) fn part<'m>(root: &'m BodyPart, path: &[NonZeroU32]) -> Option<&'m BodyPart> {
    let mut cur = root;
    for (depth, n) in path.iter().enumerate() {
        let n = n.get() as usize;
        let container = match &cur.kind {
            _ if depth == 0 => root,
            BodyKind::Message { body, .. } => body.as_ref(),
            BodyKind::Multipart { .. } => cur,
            _ => return None,
        };
        cur = match &container.kind {
            BodyKind::Multipart { parts } => parts.get(n - 1)?,
            _ if n == 1 => container,
            _ => return None,
        };
    }
    Some(cur)
}

/// The enclosed message of a message/rfc822 part, or the message itself for the root.
fn message_of<'m>(root: &'m BodyPart, path: Option<&[NonZeroU32]>) -> Option<&'m BodyPart> {
    match path {
        None => Some(root),
        Some(p) => match &part(root, p)?.kind {
            BodyKind::Message { body, .. } => Some(body.as_ref()),
            _ => None,
        },
    }
}

/// Header fields of a header block, filtered by name (`keep == true`: only these).
fn header_fields(block: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < block.len() {
        // One field: up to a line end not followed by a continuation.
        let mut j = i;
        loop {
            match block[j..].iter().position(|b| *b == b'\n') {
                Some(p) => {
                    j += p + 1;
                    if j < block.len() && (block[j] == b' ' || block[j] == b'\t') {
                        continue;
                    }
                }
                None => j = block.len(),
            }
            break;
        }
        let field = &block[i..j];
        if field == b"\r\n" || field == b"\n" {
            break;
        }
        let name = field
            .split(|b| *b == b':')
            .next()
            .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
            .unwrap_or_default();
        if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) == keep {
            out.extend_from_slice(field);
        }
        i = j;
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Where `BODY[section]` lies in the message: a byte range, plus the header-field filter for
/// HEADER.FIELDS (.NOT). `None` for a section that does not exist (empty data).
#[allow(clippy::type_complexity)]
fn section_range(
    meta: &MessageMeta,
    size: u64,
    section: &Option<Section<'_>>,
) -> Option<(u64, u64, Option<(Vec<String>, bool)>)> {
    let root = &meta.body;
    let path = |p: &Option<imap_codec::imap_types::fetch::Part>| -> Option<Vec<NonZeroU32>> {
        p.as_ref().map(|p| p.0.as_ref().to_vec())
    };
    match section {
        None => Some((0, size, None)),
        Some(Section::Part(p)) => part(root, p.0.as_ref()).map(|x| (x.body_start, x.end, None)),
        Some(Section::Header(p)) => {
            message_of(root, path(p).as_deref()).map(|m| (m.header_start, m.body_start, None))
        }
        Some(Section::Text(p)) => {
            message_of(root, path(p).as_deref()).map(|m| (m.body_start, m.end, None))
        }
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let keep = matches!(section, Some(Section::HeaderFields(..)));
            let names: Vec<String> = names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
                .collect();
            message_of(root, path(p).as_deref())
                .map(|m| (m.header_start, m.body_start, Some((names, keep))))
        }
        Some(Section::Mime(p)) => {
            part(root, p.0.as_ref()).map(|x| (x.header_start, x.body_start, None))
        }
    }
}

/// The bytes of `BODY[section]<partial>`, read through `read(from, to)` so that only the
/// needed part of a large stored body is read.
fn section_bytes(
    meta: &MessageMeta,
    size: u64,
    section: &Option<Section<'_>>,
    partial: Option<(u32, NonZeroU32)>,
    read: &dyn Fn(u64, u64) -> Vec<u8>,
) -> Vec<u8> {
    let Some((a, b, filter)) = section_range(meta, size, section) else {
        return Vec::new();
    };
    match (filter, partial) {
        (Some((names, keep)), p) => {
            let all = header_fields(&read(a, b), &names, keep);
            match p {
                Some((start, len)) => {
                    let s = (start as usize).min(all.len());
                    let e = s.saturating_add(len.get() as usize).min(all.len());
                    all[s..e].to_vec()
                }
                None => all,
            }
        }
        (None, Some((start, len))) => {
            let from = a.saturating_add(u64::from(start)).min(b);
            let to = from.saturating_add(u64::from(len.get())).min(b);
            read(from, to)
        }
        (None, None) => read(a, b),
    }
}

/// The items a FETCH asks for: macros expanded, UID added to UID FETCH, MODSEQ once
/// CONDSTORE is on.
fn item_names(
    names: MacroOrMessageDataItemNames<'_>,
    uid: bool,
    condstore: bool,
    ids: FetchIds,
) -> Vec<MessageDataItemName<'_>> {
    let mut names: Vec<MessageDataItemName> = match names {
        MacroOrMessageDataItemNames::Macro(m) => {
            let mut v = vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ];
            if matches!(m, Macro::All | Macro::Full) {
                v.push(MessageDataItemName::Envelope);
            }
            if matches!(m, Macro::Full) {
                v.push(MessageDataItemName::Body);
            }
            v
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
    };
    // The pre-pass wrote UID for each RFC 8474 item: one UID at most, and none that only
    // stands for them.
    let mut seen = false;
    names.retain(|n| *n != MessageDataItemName::Uid || !std::mem::replace(&mut seen, true));
    if ids.any() && !ids.uid {
        names.retain(|n| *n != MessageDataItemName::Uid);
    }
    if uid && !names.contains(&MessageDataItemName::Uid) {
        names.insert(0, MessageDataItemName::Uid);
    }
    if condstore && !names.contains(&MessageDataItemName::ModSeq) {
        names.push(MessageDataItemName::ModSeq);
    }
    names
}

/// Whether FETCHing these items reads a body without .PEEK, which sets \Seen (RFC 3501
/// §6.4.5, RFC 3516 §4.2).
fn marks_seen(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Binary { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

fn internal_date(ms: i64) -> Option<DateTime> {
    // IMAP dates have whole seconds.
    let dt = chrono::Utc.timestamp_opt(ms.div_euclid(1000), 0).single()?;
    DateTime::try_from(dt.fixed_offset()).ok()
}

impl Session {
    /// FLAGS and PERMANENTFLAGS for the keywords of `targets` this session has not
    /// announced yet, sent ahead of the FETCH responses that may show them (RFC 3501
    /// §7.2.6; see `op::select::announce_keywords`).
    fn announce_for_fetch(
        &mut self,
        targets: &[(u32, u32)],
        records: &HashMap<u32, MessageRecord>,
        names: &[MessageDataItemName<'_>],
        newly_seen: &[u32],
    ) -> Vec<u8> {
        // Only a FETCH that shows FLAGS (asked for, or added for a new \Seen) can show a
        // keyword: a plain BODY[] fetch, the common case, pays nothing here.
        let shows_flags = names.contains(&MessageDataItemName::Flags) || !newly_seen.is_empty();
        let Some(sel) = self.sel.as_mut().filter(|_| shows_flags) else {
            return Vec::new();
        };
        let shown: Vec<String> = targets
            .iter()
            .filter_map(|(_, u)| match sel.flags.get(u) {
                Some((_, f)) => Some(f.clone()),
                None => records.get(u).map(|r| r.flags.clone()),
            })
            .flatten()
            .collect();
        crate::imap::op::select::announce_keywords(sel, shown.iter())
    }

    pub(crate) async fn fetch(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: Vec<FetchModifier>,
    ) -> io::Result<()> {
        // Flag changes by other sessions first (no EXPUNGE during FETCH).
        self.sync(false).await?;
        if self.refused_without_read_right(tag).await? {
            return Ok(());
        }
        if !uid && !self.seqs_valid(set) {
            let b = status(Kind::No, Some(tag), None, "no such message");
            return self.conn.write(&b).await;
        }
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(v) => Some(v.get()),
            _ => None,
        });
        if changed_since.is_some() {
            self.condstore = true;
        }
        let vanished = modifiers.contains(&FetchModifier::Vanished);
        if vanished && (!uid || !self.qresync || changed_since.is_none()) {
            // RFC 7162 §3.2.6: only in UID FETCH, with CHANGEDSINCE, once QRESYNC is enabled.
            let b = status(
                Kind::Bad,
                Some(tag),
                None,
                "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
            );
            return self.conn.write(&b).await;
        }
        let names = item_names(names, uid, self.condstore, self.extras.fetch_ids);
        if vanished && let Some(since) = changed_since {
            let reader = self.acct().reader();
            self.vanished_for_fetch(&reader, set, since).await?;
        }
        let targets = self.resolve(set, uid);
        let acct = self.account.as_ref().expect("authenticated");
        let sel = self.sel.as_ref().expect("selected");
        let reader = acct.reader();
        let wanted: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let records: HashMap<u32, MessageRecord> =
            match reader.messages_by_uid(&sel.owner, &sel.name, &wanted) {
                Ok(Some(m)) => m.into_iter().map(|m| (m.uid, m)).collect(),
                Ok(None) => HashMap::new(),
                Err(e) => {
                    return self
                        .fail_fetch(tag, StoreFail::Unavailable(e.to_string()))
                        .await;
                }
            };
        if let Some(no) = binary::refusal(tag, &names, &records, &reader) {
            return self.conn.write(&no).await;
        }
        // Reading a body without .PEEK sets \Seen, committed before the data is sent.
        let sets_seen = marks_seen(&names);
        let mut newly_seen = Vec::new();
        // Without the "s" right nothing is marked \Seen (RFC 4314 §4), the data is still sent.
        if sets_seen && !sel.read_only && sel.rights.has('s') {
            let unseen: Vec<u32> = targets
                .iter()
                .filter(|(_, u)| {
                    records
                        .get(u)
                        .is_some_and(|r| !r.flags.iter().any(|f| f == "\\Seen"))
                })
                .map(|(_, u)| *u)
                .collect();
            if !unseen.is_empty() {
                let owner = sel.owner.clone();
                let cmd = StoreCommand::StoreFlags {
                    user: owner.clone(),
                    mailbox: sel.name.clone(),
                    uids: unseen.clone(),
                    action: FlagAction::Add,
                    flags: vec!["\\Seen".into()],
                    unchanged_since: None,
                };
                match self.propose_on(&owner, cmd).await {
                    Ok(Reply::FlagsStored { updated, .. }) => {
                        let sel = self.sel.as_mut().expect("selected");
                        for (u, ms, fl) in updated {
                            sel.flags.insert(u, (ms, fl));
                            newly_seen.push(u);
                        }
                    }
                    Ok(_) => {}
                    Err(f) => return self.fail_fetch(tag, f).await,
                }
            }
        }
        let mut out = self.announce_for_fetch(&targets, &records, &names, &newly_seen);
        let sel = self.sel.as_ref().expect("selected");
        for (seq, u) in &targets {
            let Some(rec) = records.get(u) else { continue };
            let (modseq, flags) = sel
                .flags
                .get(u)
                .cloned()
                .unwrap_or((rec.modseq, rec.flags.clone()));
            if let Some(cs) = changed_since
                && modseq <= cs
            {
                continue;
            }
            // The whole body is read only when the index has no MIME structure (messages
            // stored before it existed); otherwise sections are ranges of the stored body.
            let computed;
            let meta: &MessageMeta = match &rec.meta {
                Some(m) => m,
                None => {
                    computed = halyard_raft_store::mime::message_meta(
                        &reader.body(&rec.body).ok().flatten().unwrap_or_default(),
                    );
                    &computed
                }
            };
            let read = |a: u64, b: u64| -> Vec<u8> {
                reader
                    .body_range(&rec.body, a, b)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            let size = rec.size;
            let recent = sel.recent.contains(*u);
            let mut items = Vec::new();
            let mut with_flags = false;
            // Large ranges: (from, to) in the stored body, sent in place of stream_marker(i).
            let mut streams: Vec<(u64, u64)> = Vec::new();
            let mut body_data = |span: Option<(u64, u64)>, bytes: &dyn Fn() -> Vec<u8>| match span {
                Some((a, b)) if b - a > STREAM_ABOVE => {
                    streams.push((a, b));
                    NString(Some(IString::Literal(Literal::unvalidated(stream_marker(
                        streams.len() - 1,
                    )))))
                }
                _ => data(bytes()),
            };
            for n in &names {
                items.push(match n {
                    MessageDataItemName::Uid => MessageDataItem::Uid(nz(*u)),
                    MessageDataItemName::Flags => {
                        with_flags = true;
                        MessageDataItem::Flags(fetch_flags(&flags, recent))
                    }
                    MessageDataItemName::InternalDate => {
                        match internal_date(rec.internal_date_ms) {
                            Some(d) => MessageDataItem::InternalDate(d),
                            None => continue,
                        }
                    }
                    MessageDataItemName::Rfc822Size => {
                        MessageDataItem::Rfc822Size(rec.size.min(u32::MAX as u64) as u32)
                    }
                    MessageDataItemName::ModSeq => match NonZeroU64::new(modseq) {
                        Some(m) => MessageDataItem::ModSeq(m),
                        None => continue,
                    },
                    MessageDataItemName::Envelope => {
                        MessageDataItem::Envelope(envelope(&meta.envelope, self.utf8))
                    }
                    MessageDataItemName::Body => {
                        MessageDataItem::Body(structure(&meta.body, false, self.utf8))
                    }
                    MessageDataItemName::BodyStructure => {
                        MessageDataItem::BodyStructure(structure(&meta.body, true, self.utf8))
                    }
                    MessageDataItemName::BodyExt {
                        section, partial, ..
                    } => MessageDataItem::BodyExt {
                        section: section.clone(),
                        origin: partial.map(|(start, _)| start),
                        data: body_data(plain_span(meta, size, section, *partial), &|| {
                            section_bytes(meta, size, section, *partial, &read)
                        }),
                    },
                    MessageDataItemName::Rfc822 => {
                        MessageDataItem::Rfc822(body_data(Some((0, size)), &|| read(0, size)))
                    }
                    MessageDataItemName::Rfc822Header => {
                        MessageDataItem::Rfc822Header(data(read(0, meta.body.body_start)))
                    }
                    MessageDataItemName::Rfc822Text => {
                        let (a, b) = (meta.body.body_start, meta.body.end);
                        MessageDataItem::Rfc822Text(body_data(Some((a, b)), &|| read(a, b)))
                    }
                    MessageDataItemName::Binary {
                        section, partial, ..
                    } => binary::binary(meta, size, section, *partial, &read),
                    MessageDataItemName::BinarySize { section } => {
                        binary::binary_size(meta, size, section, &read)
                    }
                });
            }
            if newly_seen.contains(u) && !with_flags {
                items.push(MessageDataItem::Flags(fetch_flags(&flags, recent)));
            }
            let ids = super::objectid::fetch_text(self.extras.fetch_ids, rec, &|| {
                read(0, meta.body.body_start)
            });
            let Ok(items) = Vec1::try_from(items) else {
                // Only RFC 8474 items were asked for: imap-types has none of them.
                if !ids.is_empty() {
                    out.extend(format!("* {seq} FETCH ({})\r\n", ids.trim_start()).into_bytes());
                }
                continue;
            };
            let response = Response::Data(Data::Fetch {
                seq: nz(*seq),
                items,
            });
            write_fetch(&mut self.conn, &mut out, &response, &streams, &reader, rec).await?;
            // RFC 8474 items go last, before the response's closing parenthesis.
            if !ids.is_empty() && out.ends_with(b")\r\n") {
                let at = out.len() - 3;
                out.splice(at..at, ids.into_bytes());
            }
            if out.len() > 1 << 20 {
                self.conn.write(&out).await?;
                out.clear();
            }
        }
        self.conn.write(&out).await?;
        self.sync(false).await?;
        let b = status(Kind::Ok, Some(tag), None, "FETCH completed");
        self.conn.write(&b).await
    }

    async fn fail_fetch(&mut self, tag: &Tag<'_>, f: StoreFail) -> io::Result<()> {
        let b = status(Kind::No, Some(tag), None, &f.to_string());
        self.conn.write(&b).await
    }
}

/// Appends one FETCH response to `out`; each literal that stands for a large range of
/// the stored body (`streams`, see [`stream_marker`]) is written from the store a chunk
/// at a time, `out` being flushed before it.
async fn write_fetch(
    conn: &mut crate::imap::conn::Conn,
    out: &mut Vec<u8>,
    response: &Response<'_>,
    streams: &[(u64, u64)],
    reader: &halyard_raft_store::SmShared,
    rec: &MessageRecord,
) -> io::Result<()> {
    if streams.is_empty() {
        out.extend(encode(response));
    } else {
        // Write what came before, then this response with each marker literal
        // replaced by its range, read and written a chunk at a time.
        for frag in imap_codec::ResponseCodec::default().encode(response) {
            match frag {
                Fragment::Line { data } => out.extend_from_slice(&data),
                Fragment::Literal { data, .. } => {
                    let slot = (0..streams.len()).find(|k| stream_marker(*k) == data);
                    let Some(k) = slot else {
                        out.extend_from_slice(&data);
                        continue;
                    };
                    let (a, b) = streams[k];
                    // The line ends with this marker's "{len}\r\n": give the real length.
                    if let Some(brace) = out.iter().rposition(|c| *c == b'{') {
                        out.truncate(brace);
                    }
                    out.extend_from_slice(format!("{{{}}}\r\n", b - a).as_bytes());
                    conn.write(out).await?;
                    out.clear();
                    let mut pos = a;
                    while pos < b {
                        let end = (pos + STREAM_CHUNK).min(b);
                        // The length is announced: a read that fails now can
                        // only end the connection, never send other bytes.
                        let chunk = match reader.body_range(&rec.body, pos, end) {
                            Ok(Some(c)) if c.len() as u64 == end - pos => c,
                            _ => {
                                return Err(io::Error::other(
                                    "stored body unreadable while streaming",
                                ));
                            }
                        };
                        conn.write(&without_nul(chunk)).await?;
                        pos = end;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "fetch_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::decode::Decoder;
    use proptest::prelude::*;

    /// ENVELOPE + BODYSTRUCTURE of `raw`, encoded in a FETCH response and decoded again,
    /// with UTF-8 quoted strings (`utf8`, after ENABLE UTF8=ACCEPT) or without; the bytes.
    fn round_trip_as(raw: &[u8], utf8: bool) -> Vec<u8> {
        let meta = halyard_raft_store::mime::message_meta(raw);
        let items = Vec1::try_from(vec![
            MessageDataItem::Envelope(envelope(&meta.envelope, utf8)),
            MessageDataItem::BodyStructure(structure(&meta.body, true, utf8)),
            MessageDataItem::Body(structure(&meta.body, false, utf8)),
        ])
        .unwrap();
        let resp = Response::Data(Data::Fetch { seq: nz(1), items });
        let bytes = super::super::encode(&resp);
        let (rest, back) = ResponseCodec::default()
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(&bytes)));
        assert!(rest.is_empty());
        assert_eq!(back, resp, "{}", String::from_utf8_lossy(&bytes));
        bytes
    }

    fn round_trip(raw: &[u8]) {
        round_trip_as(raw, false);
        round_trip_as(raw, true);
    }

    /// A raw UTF-8 Subject (RFC 6532) goes out as a literal until ENABLE UTF8=ACCEPT, as a
    /// UTF-8 quoted string after it; ASCII values are written alike either way.
    #[test]
    fn utf8_header_values_are_quoted_only_once_enabled() {
        let raw = "From: J <j@example.org>\r\nSubject: Grüße\r\n\r\nhi\r\n".as_bytes();
        let before = String::from_utf8(round_trip_as(raw, false)).unwrap();
        let after = String::from_utf8(round_trip_as(raw, true)).unwrap();
        assert!(before.contains("{7}\r\nGrüße"), "{before}");
        assert!(after.contains("\"Grüße\""), "{after}");
        assert!(
            after.contains("((\"J\" NIL \"j\" \"example.org\"))"),
            "{after}"
        );
        assert!(!after.contains('{'), "{after}");
    }

    #[test]
    fn bodystructure_of_a_multipart_round_trips() {
        round_trip(
            b"From: \"A, B\" <a@b.example>\r\nTo: g: c@d.example;\r\nSubject: \"quoted\" \\ x\r\n\
              Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--zz\r\n\
              Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--zz--\r\n",
        );
    }

    proptest! {
        #[test]
        fn bodystructure_of_random_mime_round_trips(
            parts in proptest::collection::vec(("[a-z]{1,8}", "[a-z]{1,8}", "[ -~]{0,30}", proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
            subject in proptest::collection::vec(any::<u8>(), 0..30),
        ) {
            let mut raw = b"Subject: ".to_vec();
            raw.extend(subject.iter().filter(|b| **b != b'\r' && **b != b'\n'));
            raw.extend_from_slice(b"\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
            for (t, st, param, body) in &parts {
                raw.extend_from_slice(format!("--b0\r\nContent-Type: {t}/{st}; x=\"{}\"\r\n\r\n", param.replace(['"', '\\'], "")).as_bytes());
                raw.extend(body.iter().filter(|b| **b != b'-'));
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"--b0--\r\n");
            round_trip(&raw);
        }
    }

    #[test]
    fn header_field_filter() {
        let h = b"From: a@b\r\nSubject: hi\r\n there\r\nTo: c@d\r\n\r\n";
        assert_eq!(
            header_fields(h, &["subject".into()], true),
            b"Subject: hi\r\n there\r\n\r\n".to_vec()
        );
        assert_eq!(
            header_fields(h, &["SUBJECT".into()], false),
            b"From: a@b\r\nTo: c@d\r\n\r\n".to_vec()
        );
    }

    /// `BODY[spec]` of `raw`, the section parsed by imap-codec from a FETCH command.
    fn body_section(raw: &[u8], spec: &str) -> String {
        use imap_codec::CommandCodec;
        use imap_codec::imap_types::command::CommandBody;
        let line = format!("a FETCH 1 BODY.PEEK[{spec}]\r\n");
        let (_, cmd) = CommandCodec::default().decode(line.as_bytes()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } = cmd.body
        else {
            panic!("not a fetch");
        };
        let MessageDataItemName::BodyExt { section, .. } = &items[0] else {
            panic!("not BODY[]");
        };
        let meta = halyard_raft_store::mime::message_meta(raw);
        let read = |a: u64, b: u64| raw[a as usize..b as usize].to_vec();
        String::from_utf8(section_bytes(&meta, raw.len() as u64, section, None, &read)).unwrap()
    }

    const FORWARDED: &[u8] = b"From: a@example.org\r\nSubject: fwd\r\n\
        Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\
        Content-Type: text/plain\r\n\r\nsee attached\r\n--zz\r\n\
        Content-Type: message/rfc822\r\nContent-Description: old\r\n\r\n\
        Subject: inner\r\nTo: b@example.org\r\nContent-Type: multipart/alternative; boundary=yy\r\n\r\n\
        --yy\r\nContent-Type: text/plain\r\n\r\nplain\r\n--yy\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--yy--\r\n\
        \r\n--zz--\r\n";

    #[test]
    fn an_attached_message_is_addressed_as_rfc_3501_says() {
        let inner = "Subject: inner\r\nTo: b@example.org\r\nContent-Type: multipart/alternative; boundary=yy\r\n\r\n\
            --yy\r\nContent-Type: text/plain\r\n\r\nplain\r\n--yy\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--yy--\r\n";
        assert_eq!(body_section(FORWARDED, "2"), inner);
        assert_eq!(
            body_section(FORWARDED, "2.HEADER"),
            "Subject: inner\r\nTo: b@example.org\r\nContent-Type: multipart/alternative; boundary=yy\r\n\r\n"
        );
        assert!(body_section(FORWARDED, "2.TEXT").starts_with("--yy\r\n"));
        assert_eq!(
            body_section(FORWARDED, "2.HEADER.FIELDS (to)"),
            "To: b@example.org\r\n\r\n"
        );
        assert_eq!(
            body_section(FORWARDED, "2.HEADER.FIELDS.NOT (to content-type)"),
            "Subject: inner\r\n\r\n"
        );
        assert_eq!(
            body_section(FORWARDED, "2.MIME"),
            "Content-Type: message/rfc822\r\nContent-Description: old\r\n\r\n"
        );
        assert_eq!(body_section(FORWARDED, "2.1"), "plain");
        assert_eq!(body_section(FORWARDED, "2.2"), "<p>html</p>");
        assert_eq!(
            body_section(FORWARDED, "2.2.MIME"),
            "Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(body_section(FORWARDED, "1"), "see attached");
        assert_eq!(body_section(FORWARDED, "1.1"), "");
        assert_eq!(body_section(FORWARDED, "3"), "");
        assert_eq!(body_section(FORWARDED, "1.HEADER"), "");
    }

    #[test]
    fn a_message_that_is_itself_message_rfc822_has_it_as_part_1() {
        let raw = b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n\
            Subject: inner\r\n\r\ninner body\r\n";
        assert_eq!(
            body_section(raw, "1"),
            "Subject: inner\r\n\r\ninner body\r\n"
        );
        assert_eq!(body_section(raw, "1.HEADER"), "Subject: inner\r\n\r\n");
        assert_eq!(body_section(raw, "1.TEXT"), "inner body\r\n");
        assert_eq!(body_section(raw, "1.1"), "inner body\r\n");
        assert_eq!(
            body_section(raw, "TEXT"),
            "Subject: inner\r\n\r\ninner body\r\n"
        );
    }

    #[test]
    fn digest_parts_are_messages_by_default() {
        let raw = b"Subject: digest\r\nContent-Type: multipart/digest; boundary=dd\r\n\r\n\
            --dd\r\n\r\nSubject: first\r\n\r\none\r\n\
            --dd\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n\
            --dd\r\n\r\nSubject: third\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n\
            --m\r\n\r\nthree-a\r\n--m\r\n\r\nthree-b\r\n--m--\r\n\
            --dd--\r\n";
        assert_eq!(body_section(raw, "1"), "Subject: first\r\n\r\none");
        assert_eq!(body_section(raw, "1.HEADER"), "Subject: first\r\n\r\n");
        assert_eq!(body_section(raw, "1.TEXT"), "one");
        assert_eq!(body_section(raw, "1.MIME"), "\r\n");
        assert_eq!(body_section(raw, "1.1"), "one");
        assert_eq!(body_section(raw, "2"), "not a message");
        assert_eq!(body_section(raw, "2.HEADER"), "");
        assert_eq!(
            body_section(raw, "3.HEADER.FIELDS (SUBJECT)"),
            "Subject: third\r\n\r\n"
        );
        assert_eq!(body_section(raw, "3.1"), "three-a");
        assert_eq!(body_section(raw, "3.2"), "three-b");
    }

    #[test]
    fn a_stored_nul_goes_out_as_0x80_and_the_response_parses() {
        let raw = b"Subject: n\0l\r\n\r\nbefore\0after\r\n".to_vec();
        let items = Vec1::try_from(vec![MessageDataItem::BodyExt {
            section: None,
            origin: None,
            data: data(raw.clone()),
        }])
        .unwrap();
        let resp = Response::Data(Data::Fetch { seq: nz(1), items });
        let bytes = super::super::encode(&resp);
        assert!(!bytes.contains(&0), "{}", String::from_utf8_lossy(&bytes));
        let (rest, _) = ResponseCodec::default().decode(&bytes).unwrap();
        assert!(rest.is_empty());
        let want: Vec<u8> = raw
            .iter()
            .map(|b| if *b == 0 { 0x80 } else { *b })
            .collect();
        assert!(bytes.windows(want.len()).any(|w| w == want.as_slice()));
    }

    #[test]
    fn binary_without_peek_marks_seen_as_body_does() {
        let binary = |peek| MessageDataItemName::Binary {
            section: vec![nz(1)],
            partial: None,
            peek,
        };
        assert!(marks_seen(&[MessageDataItemName::Uid, binary(false)]));
        assert!(!marks_seen(&[
            binary(true),
            MessageDataItemName::BinarySize { section: vec![] }
        ]));
    }
}
