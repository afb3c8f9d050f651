//! RFC 3516 BINARY: FETCH `BINARY[part]<partial>`, `BINARY.PEEK` and `BINARY.SIZE` answer a
//! part's content with its Content-Transfer-Encoding removed, and APPEND takes a `literal8`.
//!
//! The decoders are tolerant, as RFC 2045 asks of readers: base64 skips what is not in its
//! alphabet and ends at the padding; quoted-printable keeps a malformed `=` as it is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;

use halyard_raft_store::{BodyKind, MessageMeta, MessageRecord, SmShared};
use imap_codec::imap_types::core::{LiteralMode, NString8, Tag};
use imap_codec::imap_types::extensions::binary::Literal8;
use imap_codec::imap_types::fetch::{MessageDataItem, MessageDataItemName};
use imap_codec::imap_types::response::Code;

use super::fetch::{data, part};
use super::{Kind, status};

/// How a part's content is encoded for transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    /// 7bit, 8bit, binary: the content is the stored bytes.
    Identity,
    Base64,
    QuotedPrintable,
}

impl Cte {
    /// The encoding a Content-Transfer-Encoding value names; `None` for one this server
    /// cannot decode (x-uuencode, a private `x-` token, a typo).
    fn of(name: &str) -> Option<Cte> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("7BIT") || is("8BIT") || is("BINARY") {
            Some(Cte::Identity)
        } else if is("BASE64") {
            Some(Cte::Base64)
        } else if is("QUOTED-PRINTABLE") {
            Some(Cte::QuotedPrintable)
        } else {
            None
        }
    }

    fn decode(self, raw: Vec<u8>) -> Vec<u8> {
        match self {
            Cte::Identity => raw,
            Cte::Base64 => base64(&raw),
            Cte::QuotedPrintable => quoted_printable(&raw),
        }
    }
}

/// Base64 (RFC 2045 §6.8), tolerantly: bytes outside the alphabet (line breaks, spaces,
/// garbage) are skipped, the first `=` ends the data, and bits at the end that do not make a
/// whole octet are dropped.
fn base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (RFC 2045 §6.7), tolerantly: `=XX` (hex digits in either case) is that
/// octet; `=` ending a line is a soft line break; white space ending a line was added in
/// transport and is dropped (rule 3), also after a soft break's `=`; any other `=` is kept as
/// it is. Line breaks stay as stored (CRLF, or a bare LF).
fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        let (line, brk, next): (&[u8], &[u8], &[u8]) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) if i > 0 && rest[i - 1] == b'\r' => (&rest[..i - 1], b"\r\n", &rest[i + 1..]),
            Some(i) => (&rest[..i], b"\n", &rest[i + 1..]),
            None => (rest, b"", &[]),
        };
        rest = next;
        let kept = line
            .iter()
            .rposition(|b| *b != b' ' && *b != b'\t')
            .map_or(0, |p| p + 1);
        let line = &line[..kept];
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let escaped = (line[i] == b'=')
                .then(|| line.get(i + 1..i + 3))
                .flatten()
                .and_then(|p| Some((hex(p[0])? << 4) | hex(p[1])?));
            match escaped {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(line[i]);
                    i += 1;
                }
            }
        }
        if !soft {
            out.extend_from_slice(brk);
        }
    }
    out
}

/// Where `BINARY[section]` comes from: a byte range of the stored message and how it is
/// encoded. `Ok(None)`: no such part (the answer is empty, as for `BODY[]`); `Err(name)`: a
/// transfer encoding this server cannot decode.
fn source(
    meta: &MessageMeta,
    size: u64,
    section: &[NonZeroU32],
) -> Result<Option<(u64, u64, Cte)>, String> {
    // BINARY[]: the whole message. Its header is never encoded, and no encoding applies to a
    // message as a whole (a message/rfc822 body may only be 7bit, 8bit or binary).
    if section.is_empty() {
        return Ok(Some((0, size, Cte::Identity)));
    }
    let Some(p) = part(&meta.body, section) else {
        return Ok(None);
    };
    let cte = match &p.kind {
        // A multipart may only be 7bit, 8bit or binary (RFC 2045 §6.4), and its parts are
        // located in its stored bytes: those bytes are its content, whatever it declares.
        BodyKind::Multipart { .. } => Cte::Identity,
        // Other parts, message/rfc822 included, are decoded as they declare: a base64
        // message/rfc822 is opaque to the MIME parser, and decoding it gives the message.
        _ => Cte::of(&p.encoding).ok_or_else(|| p.encoding.clone())?,
    };
    Ok(Some((p.body_start, p.end, cte)))
}

/// `<start.length>` within `len` bytes, clamped as for `BODY[]<partial>`.
fn window(len: u64, partial: Option<(u32, NonZeroU32)>) -> (u64, u64) {
    match partial {
        Some((start, n)) => {
            let from = u64::from(start).min(len);
            (from, from.saturating_add(u64::from(n.get())).min(len))
        }
        None => (0, len),
    }
}

/// The decoded content of `BINARY[section]<partial>`; the partial range applies to the
/// decoded bytes (RFC 3516 §4.2).
///
/// An encoded part is read and decoded whole, not streamed like large `BODY[]` sections: that
/// holds at most a message in memory (bounded by the size limit a message was accepted
/// under), and the decoded content, never larger than the encoded one, once more. An
/// identity-encoded part reads only the range asked for.
fn content(
    meta: &MessageMeta,
    size: u64,
    section: &[NonZeroU32],
    partial: Option<(u32, NonZeroU32)>,
    read: &dyn Fn(u64, u64) -> Vec<u8>,
) -> Result<Vec<u8>, String> {
    Ok(match source(meta, size, section)? {
        None => Vec::new(),
        Some((a, b, Cte::Identity)) => {
            let (from, to) = window(b - a, partial);
            read(a + from, a + to)
        }
        Some((a, b, cte)) => {
            let all = cte.decode(read(a, b));
            let (from, to) = window(all.len() as u64, partial);
            all[from as usize..to as usize].to_vec()
        }
    })
}

/// The FETCH item `BINARY[section]` for `BINARY[section]<partial>` or its `.PEEK` form. A
/// content with a NUL goes as a literal8, the only string that may carry one; any other as a
/// string (RFC 3516 §4.3). The answer names no origin for a partial fetch: RFC 3516's grammar
/// (`msg-att-static`) has none for BINARY.
pub(super) fn binary(
    meta: &MessageMeta,
    size: u64,
    section: &[NonZeroU32],
    partial: Option<(u32, NonZeroU32)>,
    read: &dyn Fn(u64, u64) -> Vec<u8>,
) -> MessageDataItem<'static> {
    // An encoding this server cannot decode was refused before anything was sent
    // (`refusal`), so an error cannot come here.
    let bytes = content(meta, size, section, partial, read).unwrap_or_default();
    let value = if bytes.contains(&0) {
        NString8::Literal8(Literal8 {
            data: Cow::Owned(bytes),
            mode: LiteralMode::Sync,
        })
    } else {
        NString8::NString(data(bytes))
    };
    MessageDataItem::Binary {
        section: section.to_vec(),
        value,
    }
}

/// The FETCH item `BINARY.SIZE[section]`: the size `BINARY[section]` has. An identity-encoded
/// part's is known without reading it; an encoded part is decoded to count (RFC 3516 warns
/// clients that this may be expensive).
pub(super) fn binary_size(
    meta: &MessageMeta,
    size: u64,
    section: &[NonZeroU32],
    read: &dyn Fn(u64, u64) -> Vec<u8>,
) -> MessageDataItem<'static> {
    let n = match source(meta, size, section) {
        Ok(Some((a, b, Cte::Identity))) => b - a,
        Ok(Some((a, b, cte))) => cte.decode(read(a, b)).len() as u64,
        Ok(None) | Err(_) => 0,
    };
    MessageDataItem::BinarySize {
        section: section.to_vec(),
        size: n.min(u64::from(u32::MAX)) as u32,
    }
}

/// The first transfer encoding this server cannot decode among the parts that `names`' BINARY
/// and BINARY.SIZE items ask for in one message.
fn unknown_cte(names: &[MessageDataItemName<'_>], meta: &MessageMeta, size: u64) -> Option<String> {
    names.iter().find_map(|n| match n {
        MessageDataItemName::Binary { section, .. }
        | MessageDataItemName::BinarySize { section } => source(meta, size, section).err(),
        _ => None,
    })
}

fn unknown_cte_answer(tag: &Tag<'_>, cte: &str) -> Vec<u8> {
    let cte: String = cte.chars().take(64).collect();
    let text = format!("cannot decode content-transfer-encoding {cte}");
    status(Kind::No, Some(tag), Some(Code::UnknownCte), &text)
}

/// The tagged `NO [UNKNOWN-CTE]` for a FETCH whose BINARY or BINARY.SIZE items ask, in any of
/// the messages, for a part whose transfer encoding this server cannot decode (RFC 3516
/// §4.3). It is found before anything is sent or marked \Seen: the command fails as a whole.
pub(super) fn refusal(
    tag: &Tag<'_>,
    names: &[MessageDataItemName<'_>],
    records: &HashMap<u32, MessageRecord>,
    reader: &SmShared,
) -> Option<Vec<u8>> {
    let asks = names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
        )
    });
    if !asks {
        return None;
    }
    records.values().find_map(|rec| {
        let cte = match &rec.meta {
            Some(meta) => unknown_cte(names, meta, rec.size),
            // Stored before the index kept the MIME structure: computed as FETCH does.
            None => {
                let raw = reader.body(&rec.body).ok().flatten().unwrap_or_default();
                let meta = halyard_raft_store::mime::message_meta(&raw);
                unknown_cte(names, &meta, rec.size)
            }
        }?;
        Some(unknown_cte_answer(tag, &cte))
    })
}

/// Whether an APPENDed message can be stored: a literal8 may carry NULs (RFC 3516 §4.4), but
/// a stored message is also served by `BODY[]` and `RFC822`, whose strings cannot hold a NUL,
/// and this server does not re-encode parts to base64. Such a message is refused as §4.4 says
/// for a mailbox that cannot store binary content: `NO [UNKNOWN-CTE]`.
pub(super) fn storable(message: &[u8]) -> bool {
    !message.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::core::Vec1;
    use imap_codec::imap_types::response::{Data, Response};
    use imap_codec::{CommandCodec, ResponseCodec};

    #[test]
    fn base64_skips_line_breaks_and_garbage_and_ends_at_padding() {
        assert_eq!(base64(b"AAEC\r\nA/8=\r\n"), vec![0, 1, 2, 3, 0xff]);
        assert_eq!(base64(b"aGVs\r\nbG8g\n d29y bGQ=\r\n"), b"hello world");
        assert_eq!(base64(b"aGVs*bG8!"), b"hello");
        // The first `=` ends the data; what follows it is not decoded.
        assert_eq!(base64(b"QQ==QUJD"), b"A");
        // Unpadded, and a lone sixth bit group at the end, are tolerated.
        assert_eq!(base64(b"QUI"), b"AB");
        assert_eq!(base64(b"QUJDR"), b"ABC");
        assert_eq!(base64(b""), b"");
    }

    #[test]
    fn base64_round_trips_every_octet() {
        use base64::Engine;
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&all);
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(76)
            .flat_map(|l| [l, &b"\r\n"[..]].concat())
            .collect();
        assert_eq!(base64(&wrapped), all);
    }

    #[test]
    fn quoted_printable_soft_breaks_escapes_and_bad_escapes() {
        assert_eq!(quoted_printable(b"caf=C3=A9 a=3Db"), "café a=b".as_bytes());
        assert_eq!(quoted_printable(b"lower =c3=a9"), "lower é".as_bytes());
        // Soft line breaks join lines; transport padding after the `=` is dropped.
        assert_eq!(
            quoted_printable(b"one=\r\ntwo= \t\r\nthree"),
            b"onetwothree"
        );
        assert_eq!(quoted_printable(b"bare=\nlf\nnext"), b"barelf\nnext");
        // Hard line breaks stay; trailing white space is dropped, encoded space is not.
        assert_eq!(quoted_printable(b"a  \r\nb=20\r\n"), b"a\r\nb \r\n");
        // Malformed escapes stay as they are.
        assert_eq!(quoted_printable(b"=ZZ =4 x=\t=G1"), b"=ZZ =4 x=\t=G1");
        assert_eq!(quoted_printable(b"100% =\r\n"), b"100% ");
        assert_eq!(quoted_printable(b"a==41"), b"a=A");
        assert_eq!(quoted_printable(b"end="), b"end");
    }

    const PAYLOAD: &[u8] = b"\x00\x01\x02\x03binary\x00data\r\n\xff\xfe";

    /// A message: a quoted-printable text, a base64 attachment holding `PAYLOAD`, a part in
    /// an unknown encoding, a nested multipart, a forwarded message.
    fn message() -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(PAYLOAD);
        let (b1, b2) = b64.split_at(8);
        format!(
            "Subject: binary\r\nContent-Type: multipart/mixed; boundary=bb\r\n\r\n\
             --bb\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=C3=A9 so=\r\nft =3D=ZZ\r\n\
             --bb\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {b1}\r\n{b2}\r\n\
             --bb\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\
             begin 644 x\r\n`\r\nend\r\n\
             --bb\r\nContent-Type: multipart/alternative; boundary=cc\r\n\r\n\
             --cc\r\nContent-Type: text/plain\r\n\r\nplain\r\n--cc--\r\n\
             --bb\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n\
             --bb--\r\n"
        )
        .into_bytes()
    }

    /// The FETCH items named in `items` for `raw`, built as `Session::fetch` builds them,
    /// encoded in one response, which must decode back to the same.
    fn fetch(raw: &[u8], items: &str) -> (Vec<MessageDataItem<'static>>, Vec<u8>) {
        use imap_codec::imap_types::command::CommandBody;
        use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
        let line = format!("a FETCH 1 ({items})\r\n");
        let (_, cmd) = CommandCodec::default().decode(line.as_bytes()).unwrap();
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            ..
        } = cmd.body
        else {
            panic!("not a fetch");
        };
        let meta = halyard_raft_store::mime::message_meta(raw);
        let size = raw.len() as u64;
        let read = |a: u64, b: u64| raw[a as usize..b as usize].to_vec();
        assert_eq!(unknown_cte(&names, &meta, size), None, "{items}");
        let out: Vec<MessageDataItem<'static>> = names
            .iter()
            .map(|n| match n {
                MessageDataItemName::Binary {
                    section, partial, ..
                } => binary(&meta, size, section, *partial, &read),
                MessageDataItemName::BinarySize { section } => {
                    binary_size(&meta, size, section, &read)
                }
                other => panic!("not BINARY: {other:?}"),
            })
            .collect();
        let resp = Response::Data(Data::Fetch {
            seq: NonZeroU32::MIN,
            items: Vec1::try_from(out.clone()).unwrap(),
        });
        let bytes = crate::imap::encode(&resp);
        let (rest, back) = ResponseCodec::default()
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(&bytes)));
        assert!(rest.is_empty());
        assert_eq!(back, resp);
        (out, bytes)
    }

    /// The bytes of a `BINARY[...]` item, and whether they came as a literal8.
    fn value(item: &MessageDataItem<'_>) -> (Vec<u8>, bool) {
        match item {
            MessageDataItem::Binary {
                value: NString8::Literal8(l),
                ..
            } => (l.data.to_vec(), true),
            MessageDataItem::Binary {
                value: NString8::NString(s),
                ..
            } => (s.clone().into_option().unwrap().into_owned(), false),
            other => panic!("not BINARY: {other:?}"),
        }
    }

    #[test]
    fn base64_content_with_nuls_is_a_literal8() {
        let raw = message();
        let (items, bytes) = fetch(&raw, "BINARY[2]");
        assert_eq!(value(&items[0]), (PAYLOAD.to_vec(), true));
        let want = [
            format!("* 1 FETCH (BINARY[2] ~{{{}}}\r\n", PAYLOAD.len()).as_bytes(),
            PAYLOAD,
            b")\r\n",
        ]
        .concat();
        assert_eq!(bytes, want, "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn quoted_printable_content_is_a_string() {
        let raw = message();
        let (items, _) = fetch(&raw, "BINARY.PEEK[1]");
        assert_eq!(
            value(&items[0]),
            ("café soft ==ZZ".as_bytes().to_vec(), false)
        );
        let (items, bytes) = fetch(&raw, "BINARY[4.1]");
        assert_eq!(value(&items[0]), (b"plain".to_vec(), false));
        assert_eq!(bytes, b"* 1 FETCH (BINARY[4.1] \"plain\")\r\n");
    }

    #[test]
    fn binary_size_is_the_decoded_size() {
        let raw = message();
        let (items, bytes) = fetch(
            &raw,
            "BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[4] BINARY.SIZE[9] BINARY.SIZE[]",
        );
        let sizes: Vec<u32> = items
            .iter()
            .map(|i| match i {
                MessageDataItem::BinarySize { size, .. } => *size,
                other => panic!("{other:?}"),
            })
            .collect();
        let multipart = "--cc\r\nContent-Type: text/plain\r\n\r\nplain\r\n--cc--";
        assert_eq!(
            sizes,
            vec![
                "café soft ==ZZ".len() as u32,
                PAYLOAD.len() as u32,
                multipart.len() as u32,
                0,
                raw.len() as u32
            ]
        );
        assert!(bytes.starts_with(b"* 1 FETCH (BINARY.SIZE[1] 15 BINARY.SIZE[2] 19 "));
        // BINARY.SIZE is the size BINARY answers with.
        for part in ["1", "2", "3.1", "4", "4.1", "5", "5.1", "9", ""] {
            let (items, _) = fetch(&raw, &format!("BINARY[{part}] BINARY.SIZE[{part}]"));
            let MessageDataItem::BinarySize { size, .. } = items[1] else {
                panic!("{part}: {items:?}");
            };
            assert_eq!(value(&items[0]).0.len(), size as usize, "{part}");
        }
    }

    #[test]
    fn composite_parts_and_the_whole_message_are_their_stored_bytes() {
        let raw = message();
        let (items, _) = fetch(&raw, "BINARY[]");
        assert_eq!(value(&items[0]), (raw.clone(), false));
        let (items, _) = fetch(&raw, "BINARY[4]");
        let want = b"--cc\r\nContent-Type: text/plain\r\n\r\nplain\r\n--cc--";
        assert_eq!(value(&items[0]), (want.to_vec(), false));
        let (items, _) = fetch(&raw, "BINARY[5]");
        assert_eq!(
            value(&items[0]),
            (b"Subject: inner\r\n\r\ninner body".to_vec(), false)
        );
        // A part that does not exist is empty, as BODY[] is.
        let (items, _) = fetch(&raw, "BINARY[9]");
        assert_eq!(value(&items[0]), (Vec::new(), false));
    }

    #[test]
    fn partial_ranges_are_of_the_decoded_content() {
        let raw = message();
        let (items, bytes) = fetch(&raw, "BINARY.PEEK[2]<0.4>");
        assert_eq!(value(&items[0]), (PAYLOAD[..4].to_vec(), true));
        assert_eq!(bytes, b"* 1 FETCH (BINARY[2] ~{4}\r\n\x00\x01\x02\x03)\r\n");
        let (items, _) = fetch(&raw, "BINARY.PEEK[2]<4.6>");
        assert_eq!(value(&items[0]), (b"binary".to_vec(), false));
        let (items, _) = fetch(&raw, "BINARY.PEEK[2]<17.100>");
        assert_eq!(value(&items[0]), (b"\xff\xfe".to_vec(), false));
        let (items, _) = fetch(&raw, "BINARY.PEEK[2]<50.1>");
        assert_eq!(value(&items[0]), (Vec::new(), false));
        // An identity part: the range of the stored bytes.
        let (items, _) = fetch(&raw, "BINARY.PEEK[4.1]<1.3>");
        assert_eq!(value(&items[0]), (b"lai".to_vec(), false));
        let (items, _) = fetch(&raw, "BINARY.PEEK[1]<3.2>");
        assert_eq!(value(&items[0]), ("é".as_bytes().to_vec(), false));
    }

    #[test]
    fn an_unknown_transfer_encoding_is_refused_with_unknown_cte() {
        let raw = message();
        let meta = halyard_raft_store::mime::message_meta(&raw);
        let size = raw.len() as u64;
        let names = |spec: &str| -> Vec<MessageDataItemName<'static>> {
            use imap_codec::imap_types::command::CommandBody;
            use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
            let line = format!("a FETCH 1 ({spec})\r\n");
            let (_, cmd) = CommandCodec::default()
                .decode_static(line.as_bytes())
                .unwrap();
            match cmd.body {
                CommandBody::Fetch {
                    macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(n),
                    ..
                } => n,
                _ => panic!("not a fetch"),
            }
        };
        for spec in ["BINARY[3]", "BINARY.PEEK[3]<0.1>", "FLAGS BINARY.SIZE[3]"] {
            assert_eq!(
                unknown_cte(&names(spec), &meta, size).as_deref(),
                Some("X-UUENCODE"),
                "{spec}"
            );
        }
        // Other items of that part, and other parts, are fine.
        for spec in [
            "BODY.PEEK[3]",
            "BINARY[2] BINARY[1]",
            "BINARY[3.1]",
            "BINARY[]",
        ] {
            assert_eq!(unknown_cte(&names(spec), &meta, size), None, "{spec}");
        }
        let tag = Tag::try_from("a1").unwrap();
        assert_eq!(
            unknown_cte_answer(&tag, "X-UUENCODE"),
            b"a1 NO [UNKNOWN-CTE] cannot decode content-transfer-encoding X-UUENCODE\r\n"
        );
    }

    #[test]
    fn every_known_encoding_is_recognised_in_any_case() {
        assert_eq!(Cte::of("7BIT"), Some(Cte::Identity));
        assert_eq!(Cte::of("8bit"), Some(Cte::Identity));
        assert_eq!(Cte::of("Binary"), Some(Cte::Identity));
        assert_eq!(Cte::of("BASE64"), Some(Cte::Base64));
        assert_eq!(Cte::of("quoted-printable"), Some(Cte::QuotedPrintable));
        assert_eq!(Cte::of("X-UUENCODE"), None);
        assert_eq!(Cte::of(""), None);
    }

    #[test]
    fn append_takes_a_literal8_and_refuses_nuls() {
        use imap_codec::imap_types::command::CommandBody;
        use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
        let mut buf = bytes::BytesMut::from(&b"t APPEND INBOX ~{6}\r\n"[..]);
        let mut lit = 0;
        assert!(matches!(
            crate::imap::frame(&mut buf, &mut lit, 1024, 1 << 20),
            crate::imap::Framed::Continue
        ));
        buf.extend_from_slice(b"a\x00\xffcd\n\r\n");
        let crate::imap::Framed::Command(cmd, _) =
            crate::imap::frame(&mut buf, &mut lit, 1024, 1 << 20)
        else {
            panic!("no command");
        };
        let CommandBody::Append { message, .. } = cmd.body else {
            panic!("not an APPEND");
        };
        let LiteralOrLiteral8::Literal8(l) = message else {
            panic!("not a literal8");
        };
        assert_eq!(l.data.as_ref(), b"a\x00\xffcd\n");
        assert!(buf.is_empty());
        assert!(!storable(&l.data));
        assert!(storable(b"Subject: x\r\n\r\n\xff\xfe 8-bit\r\n"));
    }
}
