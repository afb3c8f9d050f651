//! ENVELOPE and BODYSTRUCTURE of a message, computed once by whoever proposes it (IMAP APPEND,
//! the SMTP server at end of DATA) and kept in the index, so FETCH never re-parses a message.
//!
//! Header fields are parsed by `mail-parser` (field syntax, RFC 2047 encoded words, RFC 2231
//! parameters, address lists and groups). The MIME structure is walked here, following
//! RFC 2046 §5.1.1 directly, rather than taken from `mail-parser`'s own body walk: that walk
//! attaches parts to the wrong parent when a `message/rfc822` directly encloses another one
//! inside a multipart, recognises `--boundary` in the middle of a line and as a prefix of a
//! longer boundary, and builds nested messages whose recursive drop overflows the stack on
//! deep nesting. The properties FETCH relies on hold whatever the input:
//!
//! * Every [`BodyPart`] satisfies `header_start <= body_start <= end <= raw.len()`; a child
//!   lies inside its parent's body, siblings in order without overlap; the root covers the
//!   whole message. `raw[header_start..body_start]` is the part's MIME header (`BODY[n.MIME]`,
//!   including the blank line that ends it) and `raw[body_start..end]` its body (`BODY[n]`).
//! * The CRLF before a boundary delimiter belongs to the delimiter (RFC 2046 §5.1.1): it is
//!   never part of the preceding body. A delimiter is `--boundary` at the start of a line,
//!   followed by `--` (the close delimiter) or by optional spaces and tabs and the line end.
//!   A multipart whose close delimiter is missing ends its last part at the end of its body.
//! * `multipart/*` parts always have at least one child (IMAP requires `1*body`): when none
//!   can be found (no boundary parameter, no delimiter, nesting too deep) a single `text/plain`
//!   child with an empty MIME header covering the multipart's body is supplied, so that
//!   `BODY[n.1]` is the whole body, as for any non-multipart part.
//! * `message/rfc822` and `message/global` parts are always [`BodyKind::Message`]; when the
//!   enclosed message cannot be described with offsets into the raw bytes (it is base64 or
//!   quoted-printable encoded, which RFC 2046 forbids, or nesting is too deep) its envelope is
//!   empty and its body is a single `text/plain` part covering the encapsulated bytes.
//! * Nesting deeper than [`MAX_DEPTH`] is not descended into, so the work is bounded.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{
    Address, ContentType, Header, HeaderName, HeaderValue, MessageParser, parsers::MessageStream,
};

use crate::model::{Addr, BodyKind, BodyPart, Envelope, MessageMeta};

/// Parts nested deeper than this (multipart and message/rfc822 levels together) are described
/// as leaves.
pub const MAX_DEPTH: usize = 32;

/// The ENVELOPE and MIME structure of `raw` (a whole RFC 5322 message). Never fails: whatever
/// cannot be parsed is described as a single `text/plain` part covering the bytes.
pub fn message_meta(raw: &[u8]) -> MessageMeta {
    // mail-parser keeps header offsets as u32.
    if raw.len() > u32::MAX as usize {
        return fallback(raw);
    }
    // Neither mail-parser's field parsers nor this module are meant to panic, but a proposer
    // must not crash on a message whatever happens (debug builds check arithmetic, and
    // mail-parser has `debug_assert!`s).
    catch_unwind(AssertUnwindSafe(|| parse(raw))).unwrap_or_else(|_| fallback(raw))
}

/// What is returned if parsing panics: one text/plain part.
fn fallback(raw: &[u8]) -> MessageMeta {
    MessageMeta {
        envelope: Envelope::default(),
        body: synthetic_text(raw, 0, 0, raw.len()),
    }
}

pub(crate) fn parse(raw: &[u8]) -> MessageMeta {
    let walker = Walker {
        raw,
        parser: MessageParser::new(),
    };
    let (body, header) = walker.entity(0, raw.len(), 0, false);
    MessageMeta {
        envelope: envelope(&header),
        body,
    }
}

/// The header fields of one entity, with offsets relative to `bytes` (the entity's bytes).
struct Fields<'r> {
    bytes: &'r [u8],
    list: Vec<Header<'r>>,
}

struct Walker<'r> {
    raw: &'r [u8],
    parser: MessageParser,
}

impl<'r> Walker<'r> {
    /// Describes the entity (header, blank line, body) at `raw[start..end]`.
    fn entity(
        &self,
        start: usize,
        end: usize,
        depth: usize,
        in_digest: bool,
    ) -> (BodyPart, Fields<'r>) {
        let bytes = &self.raw[start..end];
        let mut stream = MessageStream::new(bytes);
        let mut list = Vec::new();
        // Reads up to and including the blank line; false (and the whole entity) if none.
        stream.parse_headers(&self.parser, &mut list);
        let body_start = start + stream.offset().min(bytes.len());
        let fields = Fields { bytes, list };
        let mut part = describe(&fields, in_digest, start, body_start, end);
        let body = &self.raw[body_start..end];
        match (part.media_type.as_str(), part.subtype.as_str()) {
            ("multipart", subtype) => {
                let boundary = part
                    .params
                    .iter()
                    .find(|(name, _)| name == "boundary")
                    .map(|(_, value)| value.as_bytes())
                    .filter(|b| !b.is_empty());
                let mut parts = Vec::new();
                if let Some(boundary) = boundary
                    && depth < MAX_DEPTH
                {
                    let digest = subtype == "digest";
                    for (part_start, part_end) in split(self.raw, body_start, end, boundary) {
                        parts.push(self.entity(part_start, part_end, depth + 1, digest).0);
                    }
                }
                if parts.is_empty() {
                    parts.push(synthetic_text(self.raw, body_start, body_start, end));
                }
                part.kind = BodyKind::Multipart { parts };
            }
            ("message", "rfc822" | "global") => {
                part.lines = count_lines(body);
                let identity = matches!(part.encoding.as_str(), "7BIT" | "8BIT" | "BINARY");
                let (envelope, inner) = if identity && depth < MAX_DEPTH {
                    let (inner, fields) = self.entity(body_start, end, depth + 1, false);
                    (envelope(&fields), inner)
                } else {
                    (
                        Envelope::default(),
                        synthetic_text(self.raw, body_start, body_start, end),
                    )
                };
                part.kind = BodyKind::Message {
                    envelope: Box::new(envelope),
                    body: Box::new(inner),
                };
            }
            ("text", _) => {
                part.lines = count_lines(body);
                part.kind = BodyKind::Text;
            }
            _ => part.kind = BodyKind::Basic,
        }
        (part, fields)
    }
}

/// The parts of the multipart body `raw[start..end]` delimited by `boundary`, each as the
/// range of its MIME header and body (RFC 2046 §5.1.1). The preamble and epilogue belong to
/// no part; the line break before a delimiter belongs to the delimiter.
fn split(raw: &[u8], start: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut line = start;
    while line < end {
        let line_end = raw[line..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |i| line + i + 1);
        if let Some(close) = delimiter(&raw[line..line_end], boundary) {
            if let Some(part_start) = current {
                let mut part_end = line;
                if part_end > part_start && raw[part_end - 1] == b'\n' {
                    part_end -= 1;
                    if part_end > part_start && raw[part_end - 1] == b'\r' {
                        part_end -= 1;
                    }
                }
                parts.push((part_start, part_end));
            }
            if close {
                return parts;
            }
            current = Some(line_end);
        }
        line = line_end;
    }
    if let Some(part_start) = current {
        parts.push((part_start, end));
    }
    parts
}

/// Whether `line` is a boundary delimiter line: `Some(true)` for the close delimiter.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        Some(true)
    } else if rest
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        Some(false)
    } else {
        None
    }
}

/// A `text/plain; charset=us-ascii` part with no MIME header fields.
fn synthetic_text(raw: &[u8], header_start: usize, body_start: usize, end: usize) -> BodyPart {
    BodyPart {
        media_type: "text".into(),
        subtype: "plain".into(),
        params: vec![("charset".into(), "us-ascii".into())],
        id: None,
        description: None,
        encoding: "7BIT".into(),
        md5: None,
        disposition: None,
        language: vec![],
        location: None,
        header_start: header_start as u64,
        body_start: body_start as u64,
        end: end as u64,
        lines: count_lines(raw.get(body_start..end).unwrap_or_default()),
        kind: BodyKind::Text,
    }
}

/// Lines as IMAP counts them: CRLF-terminated lines, plus a final unterminated one.
fn count_lines(body: &[u8]) -> u64 {
    let newlines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(body.last().is_some_and(|&b| b != b'\n'))
}

/// The MIME fields of a part from its header (kind and lines are filled in by the caller).
fn describe(
    fields: &Fields<'_>,
    in_digest: bool,
    header_start: usize,
    body_start: usize,
    end: usize,
) -> BodyPart {
    let (media_type, subtype, params) = match content_type(fields, &HeaderName::ContentType) {
        Some(ct) if !ct.ctype.is_empty() => match (ct.ctype.as_str(), ct.subtype) {
            (_, Some(subtype)) => (ct.ctype, subtype, ct.params),
            ("text", None) => (ct.ctype, "plain".to_string(), ct.params),
            ("multipart", None) => (ct.ctype, "mixed".to_string(), ct.params),
            // RFC 2045 §5.2: an invalid Content-Type means the default.
            _ => default_type(in_digest),
        },
        _ => default_type(in_digest),
    };
    let disposition = content_type(fields, &HeaderName::ContentDisposition)
        .filter(|d| !d.ctype.is_empty())
        .map(|d| {
            let value = match d.subtype {
                // mail-parser reads `a/b` as type and subtype; a disposition has no subtype.
                Some(sub) => format!("{}/{}", d.ctype, sub),
                None => d.ctype,
            };
            (value, d.params)
        });
    let encoding = last_raw(fields, &HeaderName::ContentTransferEncoding)
        .and_then(|v| {
            v.split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ';')
                .next()
                .filter(|t| !t.is_empty())
                .map(str::to_ascii_uppercase)
        })
        .unwrap_or_else(|| "7BIT".to_string());
    let language = last_raw(fields, &HeaderName::ContentLanguage)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    BodyPart {
        media_type,
        subtype,
        params,
        id: last_raw(fields, &HeaderName::ContentId),
        description: last_raw(fields, &HeaderName::ContentDescription),
        encoding,
        md5: last_raw(fields, &HeaderName::ContentMd5),
        disposition,
        language,
        location: last_raw(fields, &HeaderName::ContentLocation),
        header_start: header_start as u64,
        body_start: body_start as u64,
        end: end as u64,
        lines: 0,
        kind: BodyKind::Basic,
    }
}

type Params = Vec<(String, String)>;

/// RFC 2045 default (RFC 2046 §5.1.5 inside multipart/digest).
fn default_type(in_digest: bool) -> (String, String, Params) {
    if in_digest {
        ("message".into(), "rfc822".into(), vec![])
    } else {
        (
            "text".into(),
            "plain".into(),
            vec![("charset".into(), "us-ascii".into())],
        )
    }
}

/// A Content-Type or Content-Disposition value, lower-cased.
struct MediaValue {
    ctype: String,
    subtype: Option<String>,
    params: Params,
}

impl MediaValue {
    fn from_parsed(ct: &ContentType<'_>) -> Self {
        MediaValue {
            ctype: ct.c_type.trim().to_ascii_lowercase(),
            subtype: ct
                .c_subtype
                .as_deref()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty()),
            params: ct
                .attributes
                .iter()
                .flatten()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect(),
        }
    }
}

/// The last `name` field, parsed (the last one is also what mail-parser decodes a part by).
fn content_type(fields: &Fields<'_>, name: &HeaderName<'_>) -> Option<MediaValue> {
    let header = fields.list.iter().rev().find(|h| &h.name == name)?;
    match &header.value {
        HeaderValue::ContentType(ct) => Some(MediaValue::from_parsed(ct)),
        // mail-parser loses a field that ends the input without a line break: parse it again.
        _ => match MessageStream::new(&terminated(fields.bytes, header)).parse_content_type() {
            HeaderValue::ContentType(ct) => Some(MediaValue::from_parsed(&ct)),
            _ => None,
        },
    }
}

/// The raw bytes of a field's value followed by a line break.
fn terminated(raw: &[u8], header: &Header<'_>) -> Vec<u8> {
    let mut value = field_bytes(raw, header).to_vec();
    value.extend_from_slice(b"\r\n");
    value
}

fn field_bytes<'r>(raw: &'r [u8], header: &Header<'_>) -> &'r [u8] {
    let start = header.offset_start as usize;
    let end = header.offset_end as usize;
    raw.get(start..end.max(start)).unwrap_or_default()
}

/// A field's value as it appears in the message: unfolded (line breaks removed, the
/// whitespace that followed them kept) and trimmed.
fn raw_value(raw: &[u8], header: &Header<'_>) -> String {
    let unfolded: Vec<u8> = field_bytes(raw, header)
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    String::from_utf8_lossy(&unfolded)
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_string()
}

fn first_raw(fields: &Fields<'_>, name: &HeaderName<'_>) -> Option<String> {
    fields
        .list
        .iter()
        .find(|h| &h.name == name)
        .map(|h| raw_value(fields.bytes, h))
}

fn last_raw(fields: &Fields<'_>, name: &HeaderName<'_>) -> Option<String> {
    fields
        .list
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .map(|h| raw_value(fields.bytes, h))
}

/// RFC 3501 ENVELOPE from a message header.
fn envelope(fields: &Fields<'_>) -> Envelope {
    let from = address_list(fields, &HeaderName::From);
    let mut sender = address_list(fields, &HeaderName::Sender);
    if sender.is_empty() {
        sender = from.clone();
    }
    let mut reply_to = address_list(fields, &HeaderName::ReplyTo);
    if reply_to.is_empty() {
        reply_to = from.clone();
    }
    Envelope {
        date: first_raw(fields, &HeaderName::Date),
        subject: first_raw(fields, &HeaderName::Subject),
        from,
        sender,
        reply_to,
        to: address_list(fields, &HeaderName::To),
        cc: address_list(fields, &HeaderName::Cc),
        bcc: address_list(fields, &HeaderName::Bcc),
        in_reply_to: first_raw(fields, &HeaderName::InReplyTo),
        message_id: first_raw(fields, &HeaderName::MessageId),
    }
}

/// The addresses of the first `name` field, groups flattened as RFC 3501 wants them.
fn address_list(fields: &Fields<'_>, name: &HeaderName<'_>) -> Vec<Addr> {
    let Some(header) = fields.list.iter().find(|h| &h.name == name) else {
        return vec![];
    };
    let mut out = Vec::new();
    match &header.value {
        HeaderValue::Address(address) => push_address(&mut out, address),
        _ => {
            if let HeaderValue::Address(address) =
                MessageStream::new(&terminated(fields.bytes, header)).parse_address()
            {
                push_address(&mut out, &address);
            }
        }
    }
    out
}

fn push_address(out: &mut Vec<Addr>, address: &Address<'_>) {
    match address {
        Address::List(list) => out.extend(list.iter().filter_map(convert_addr)),
        Address::Group(groups) => {
            for group in groups {
                let name = group
                    .name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty());
                match name {
                    Some(name) => {
                        out.push(Addr {
                            mailbox: Some(encode_phrase(name)),
                            ..Addr::default()
                        });
                        out.extend(group.addresses.iter().filter_map(convert_addr));
                        out.push(Addr::default());
                    }
                    // Addresses outside any group, in a header that also has groups.
                    None => out.extend(group.addresses.iter().filter_map(convert_addr)),
                }
            }
        }
    }
}

fn convert_addr(addr: &mail_parser::Addr<'_>) -> Option<Addr> {
    let name = addr
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let address = addr
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let (name, address) = match (name, address) {
        (name, Some(address)) => (name, address),
        // A lone word (`To: postmaster`) is a local part, not a display name.
        (Some(word), None) if !word.contains(char::is_whitespace) && !word.contains('"') => {
            (None, word)
        }
        (Some(name), None) => (Some(name), ""),
        (None, None) => return None,
    };
    // Obsolete source route: `@a,@b:user@host`.
    let (adl, spec) = match address
        .strip_prefix('@')
        .and_then(|_| address.split_once(':'))
    {
        Some((route, spec)) => (Some(route.to_string()), spec),
        None => (None, address),
    };
    let (mailbox, host) = spec.rsplit_once('@').unwrap_or((spec, ""));
    Some(Addr {
        name: name.map(encode_phrase),
        adl,
        mailbox: Some(mailbox.to_string()),
        // Never NIL: a NIL host marks a group.
        host: Some(host.to_string()),
    })
}

/// A decoded phrase as an IMAP client expects it: ASCII kept, anything else re-encoded as
/// RFC 2047 `B` words in UTF-8 (several words when long, each within the 75-character limit).
fn encode_phrase(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    // 45 bytes of UTF-8 become 60 base64 characters, 72 with `=?utf-8?b?` and `?=`.
    const CHUNK: usize = 45;
    let mut words = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() - start > CHUNK {
            words.push(&text[start..i]);
            start = i;
        }
    }
    words.push(&text[start..]);
    words
        .iter()
        .map(|w| format!("=?utf-8?b?{}?=", base64(w.as_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn long_phrases_are_split_into_short_words() {
        let name = "é".repeat(100);
        let encoded = encode_phrase(&name);
        let words: Vec<&str> = encoded.split(' ').collect();
        assert!(words.len() > 1);
        for word in words {
            assert!(word.len() <= 75, "{word}");
            assert!(word.starts_with("=?utf-8?b?") && word.ends_with("?="));
        }
        assert_eq!(encode_phrase("plain"), "plain");
    }

    #[test]
    fn deep_message_nesting_neither_overflows_nor_recurses_without_bound() {
        let raw = b"Content-Type: message/rfc822\r\n\r\n".repeat(100_000);
        let meta = message_meta(&raw);
        let mut depth = 0;
        let mut part = &meta.body;
        while let BodyKind::Message { body, .. } = &part.kind {
            depth += 1;
            part = body;
        }
        assert!(depth <= MAX_DEPTH + 1, "{depth}");
    }

    /// RFC 3501 §7.4.2: a group is a start marker (NIL host, the group name as mailbox), its
    /// members, and an end marker (NIL host and mailbox); an empty group is the two markers.
    /// Nothing else: no address that is not in the header.
    #[test]
    fn groups_become_exactly_their_markers_and_members() {
        let raw = b"To: group: g1@d1.org, g2@d2.org;, group2: ;\r\nCc: a@x.org, team: b@y.org;, c@z.org\r\nSubject: g\r\n\r\nbody\r\n";
        let meta = message_meta(raw);
        let show = |v: &[Addr]| -> Vec<String> {
            v.iter()
                .map(|a| match (&a.mailbox, &a.host) {
                    (Some(m), None) => format!("start:{m}"),
                    (None, None) => "end".to_string(),
                    (m, Some(h)) => format!("{}@{h}", m.clone().unwrap_or_default()),
                })
                .collect()
        };
        assert_eq!(
            show(&meta.envelope.to),
            [
                "start:group",
                "g1@d1.org",
                "g2@d2.org",
                "end",
                "start:group2",
                "end"
            ]
        );
        assert_eq!(
            show(&meta.envelope.cc),
            ["a@x.org", "start:team", "b@y.org", "end", "c@z.org"]
        );
    }
}
