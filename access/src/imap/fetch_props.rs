//! Every stored message is fetchable with every FETCH item: a property test over generated
//! messages with the oddities real mail has (empty and white-space-only header fields, groups,
//! quoted display names with quotes and backslashes, valid and broken encoded words, unknown
//! charsets, raw 8-bit and control bytes in headers, missing or malformed Content-Type,
//! multipart/digest whose parts default to message/rfc822, message/rfc822 parts holding
//! further multiparts, nesting, odd transfer encodings, LF-only line ends, bodies without a
//! final line break). Each message, fetched with ENVELOPE, BODYSTRUCTURE, BODY, RFC822*, and
//! `BODY[...]` of the message and of every part, gives one FETCH response that imap-codec
//! decodes, completely, back to the same value, and whose sections are the bytes of the
//! message at the offsets of its MIME tree.

use std::collections::HashMap;

use halyard_raft_store::mime::message_meta;
use halyard_raft_store::{BodyKind, BodyPart, MessageMeta};
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::{CommandCodec, ResponseCodec};
use proptest::prelude::*;

use super::{data, envelope, nz, section_bytes, structure};

// ---------------------------------------------------------------------------------------------
// Generated messages

/// Header field names: the ENVELOPE's, the MIME ones BODYSTRUCTURE shows, and one unknown.
/// Content-Type and Content-Transfer-Encoding are written from the node's kind.
const NAMES: &[&str] = &[
    "Subject",
    "SUBJECT",
    "From",
    "from",
    "To",
    "Cc",
    "Bcc",
    "Sender",
    "Reply-To",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "Content-ID",
    "Content-Description",
    "Content-Disposition",
    "Content-Language",
    "Content-Location",
    "Content-MD5",
    "X-Junk",
];

/// Pieces of header field values; `\n` is a fold (written as the message's line break).
const VALUES: &[&str] = &[
    "",
    " ",
    "\t",
    " \t ",
    "plain words",
    "a@b.example",
    "Ann <ann@b.example>",
    "\"Doe, John\" <j@d.example>",
    "\"back\\\\slash \\\"quote\\\"\" <q@x.example>",
    "\"unclosed <u@x.example>",
    "<>",
    "<a@b",
    "undisclosed-recipients:;",
    "g: a@b.example, c@d.example;",
    ";",
    "group:;",
    "a@b.example, team: ;, c@d.example",
    "@r1,@r2:u@h.example",
    "(comment) a@b.example (more",
    "=?utf-8?q?caf=C3=A9?= <c@e.example>",
    "=?utf-8?b?w6k=?=",
    "=?iso-8859-1?q?=E9t=E9?=",
    "=?x-bogus?q?abc?=",
    "=?utf-8?q?broken",
    "=?utf-8?z?abc?=",
    "=??=",
    "=?utf-8?q?nul=00byte?= <n@x.example>",
    "=?utf-8?q?line=0D=0Abreak?= <l@x.example>",
    "=?utf-8?b?////?=",
    "Mon, 7 Feb 1994 21:52:25 -0800",
    "32 Smarch 99 25:61 +9999",
    "<id@host.example>",
    "<a@b> <c@d>",
    "attachment; filename=\"x.txt\"",
    "inline;",
    "en, fr",
    "\n folded",
    "\n\tfolded again",
];

/// Content-Type of a single part (None: no field).
const LEAF_TYPES: &[Option<&str>] = &[
    None,
    None,
    Some("text/plain"),
    Some("text/plain; charset=utf-8"),
    Some("text/plain; charset=\"x-bogus\""),
    Some("TEXT/HTML; CHARSET=ISO-8859-1"),
    Some("text/plain; charset*=utf-8''%E2%82%AC; format=flowed"),
    Some("text/plain; name=\"unterminated"),
    Some("text/plain;;; =x; y="),
    Some("text"),
    Some("bogus"),
    Some("/"),
    Some(""),
    Some("application/octet-stream; name=\"a \\\"b\\\" \\\\ c.bin\""),
    Some("image/png"),
    Some("application/x-\u{e9}t\u{e9}"),
    Some("message/delivery-status"),
    Some("message/rfc822"),
    Some("multipart/alternative"),
    Some("multipart/mixed; boundary=\"\""),
];

/// Content-Transfer-Encoding (None: no field).
const ENCODINGS: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("7bit"),
    Some("8bit"),
    Some("binary"),
    Some("base64"),
    Some("quoted-printable"),
    Some("x-uuencode"),
    Some("BASE64 (comment)"),
    Some(""),
    Some("\u{e9}"),
];

/// Content-Transfer-Encoding of a message/rfc822 part: base64 makes it opaque (RFC 2046
/// forbids it, and the enclosed message is then shown as text).
const MESSAGE_ENCODINGS: &[Option<&str>] = &[None, None, None, Some("8bit"), Some("base64")];
const SUBTYPES: &[&str] = &[
    "mixed",
    "alternative",
    "digest",
    "digest",
    "related",
    "x-\u{e9}",
];
/// Written after the boundary parameter.
const JUNK_PARAMS: &[&str] = &[
    "",
    "",
    "; charset=\"x\"",
    "; ;junk",
    "; x*=utf-8''%FF",
    " (c)",
];
const PREAMBLES: &[&str] = &["", "", "\n", "preamble\n", "--=_b0=\n", "\u{e9}\n"];
const EPILOGUES: &[&str] = &["", "\n", "\nepilogue", "\n--=_b0=--\n"];

/// A generated MIME entity; `fields` are its header fields (name, value).
#[derive(Debug, Clone)]
enum Node {
    Leaf {
        fields: Vec<(&'static str, Vec<u8>)>,
        ctype: Option<&'static str>,
        cte: Option<&'static str>,
        body: Vec<u8>,
    },
    Multi {
        fields: Vec<(&'static str, Vec<u8>)>,
        subtype: &'static str,
        junk: &'static str,
        preamble: &'static str,
        epilogue: &'static str,
        /// Whether the close delimiter is there.
        close: bool,
        parts: Vec<Node>,
    },
    /// message/rfc822 enclosing `inner`; without `typed` the Content-Type field is left out
    /// (the default inside a digest, text/plain elsewhere).
    Message {
        fields: Vec<(&'static str, Vec<u8>)>,
        typed: bool,
        cte: Option<&'static str>,
        inner: Box<Node>,
    },
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(VALUES).prop_map(|v| v.as_bytes().to_vec()),
        // Raw bytes: 8-bit, controls and DEL, never NUL, CR or LF.
        1 => prop::collection::vec(
            prop_oneof![0x01u8..=0x09, 0x0bu8..=0x0c, 0x0eu8..=0x1f, 0x20u8..=0xff],
            1..12,
        ),
    ];
    prop::collection::vec(piece, 0..3).prop_map(|v| v.concat())
}

fn fields() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    prop::collection::vec((prop::sample::select(NAMES), value()), 0..6)
}

/// Body bytes: mostly printable, some line breaks (`\n`, written as the message's line
/// break), 8-bit and control bytes (never NUL: IMAP literals cannot carry it).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => 0x20u8..=0x7e,
            2 => Just(b'\n'),
            1 => 0x80u8..=0xff,
            1 => 0x01u8..=0x1f,
        ],
        0..80,
    )
}

fn leaf() -> impl Strategy<Value = Node> {
    (
        fields(),
        prop::sample::select(LEAF_TYPES),
        prop::sample::select(ENCODINGS),
        body(),
    )
        .prop_map(|(fields, ctype, cte, body)| Node::Leaf {
            fields,
            ctype,
            cte,
            body,
        })
}

/// MIME trees nested at most 5 deep. A leaf can add one level the tree does not show (one
/// typed message/rfc822, or a digest part without Content-Type, encloses a message; a
/// multipart without a boundary gets a text child), so BODYSTRUCTURE nests at most 7 bodies.
/// Not more: imap-codec's decoder refuses deeper nesting (its `body(8)` recursion limit),
/// though it is valid IMAP and `structure()` encodes it.
fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(5, 64, 2, |inner| {
        prop_oneof![
            3 => (
                fields(),
                prop::sample::select(SUBTYPES),
                prop::sample::select(JUNK_PARAMS),
                prop::sample::select(PREAMBLES),
                prop::sample::select(EPILOGUES),
                prop::bool::weighted(0.8),
                prop::collection::vec(inner.clone(), 1..4),
            )
                .prop_map(|(fields, subtype, junk, preamble, epilogue, close, parts)| {
                    Node::Multi { fields, subtype, junk, preamble, epilogue, close, parts }
                }),
            2 => (
                fields(),
                prop::bool::weighted(0.7),
                prop::sample::select(MESSAGE_ENCODINGS),
                inner,
            )
                .prop_map(|(fields, typed, cte, inner)| Node::Message {
                    fields,
                    typed,
                    cte,
                    inner: Box::new(inner),
                }),
        ]
    })
}

/// `text` with each `\n` written as `nl`.
fn lines(text: &[u8], nl: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        match b {
            b'\n' => out.extend_from_slice(nl),
            b => out.push(b),
        }
    }
    out
}

/// One header field as written: `name:`, a space unless the value is empty or starts with
/// white space (so `Subject:` with nothing stays so), the value, a line break.
fn field(name: &str, value: &[u8], nl: &[u8]) -> Vec<u8> {
    let mut f = format!("{name}:").into_bytes();
    if value.first().is_some_and(|b| !b.is_ascii_whitespace()) {
        f.push(b' ');
    }
    f.extend(lines(value, nl));
    f.extend_from_slice(nl);
    f
}

/// The top-level header as generated: its fields (name, bytes as written) and where it ends
/// (after the blank line).
struct Head {
    fields: Vec<(String, Vec<u8>)>,
    end: usize,
}

struct Render {
    raw: Vec<u8>,
    nl: &'static [u8],
    boundaries: usize,
}

impl Render {
    /// Writes `node` (header, blank line, body); returns its header fields as written.
    fn entity(&mut self, node: &Node) -> Vec<(String, Vec<u8>)> {
        let mut boundary = String::new();
        let (fields, ctype, cte) = match node {
            Node::Leaf {
                fields, ctype, cte, ..
            } => (fields, ctype.map(str::to_string), *cte),
            Node::Multi {
                fields,
                subtype,
                junk,
                ..
            } => {
                self.boundaries += 1;
                boundary = format!("=_b{}=", self.boundaries);
                let ct = format!("multipart/{subtype}; boundary=\"{boundary}\"{junk}");
                (fields, Some(ct), None)
            }
            Node::Message {
                fields, typed, cte, ..
            } => (fields, typed.then(|| "message/rfc822".to_string()), *cte),
        };
        let mut head: Vec<(String, Vec<u8>)> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), field(n, v, self.nl)))
            .collect();
        for (name, value) in [
            ("Content-Type", ctype.as_deref()),
            ("Content-Transfer-Encoding", cte),
        ] {
            if let Some(v) = value {
                head.push((name.to_string(), field(name, v.as_bytes(), self.nl)));
            }
        }
        for (_, f) in &head {
            self.raw.extend_from_slice(f);
        }
        self.raw.extend_from_slice(self.nl);
        match node {
            Node::Leaf { body, .. } => self.raw.extend(lines(body, self.nl)),
            Node::Message { inner, .. } => {
                self.entity(inner);
            }
            Node::Multi {
                preamble,
                epilogue,
                close,
                parts,
                ..
            } => {
                self.raw.extend(lines(preamble.as_bytes(), self.nl));
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        self.raw.extend_from_slice(self.nl);
                    }
                    self.raw
                        .extend(lines(format!("--{boundary}\n").as_bytes(), self.nl));
                    self.entity(part);
                }
                if *close {
                    let close = format!("\n--{boundary}--{epilogue}");
                    self.raw.extend(lines(close.as_bytes(), self.nl));
                }
            }
        }
        head
    }
}

fn render(root: &Node, nl: &'static [u8]) -> (Vec<u8>, Head) {
    let mut r = Render {
        raw: Vec::new(),
        nl,
        boundaries: 0,
    };
    let fields = r.entity(root);
    let end = fields.iter().map(|(_, f)| f.len()).sum::<usize>() + nl.len();
    (r.raw, Head { fields, end })
}

// ---------------------------------------------------------------------------------------------
// Fetching every item

/// Items fetched from every message; the sections of its parts are added per message.
const ITEMS: &[&str] = &[
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822.SIZE",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "RFC822",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[]<3.10>",
];

/// Every part of the message under its RFC 3501 §6.4.5 number, found by walking the tree
/// (not by `part()`): the parts of a message are those of its body when that is multipart,
/// else the body itself as part 1 (the root entity for the top-level message); the sub-parts
/// of a multipart part are its parts, those of a message/rfc822 part the parts of the message
/// it encloses; other parts have none.
fn numbered(root: &BodyPart) -> Vec<(String, &BodyPart)> {
    fn parts_of_message(m: &BodyPart) -> Vec<&BodyPart> {
        match &m.kind {
            BodyKind::Multipart { parts } => parts.iter().collect(),
            _ => vec![m],
        }
    }
    fn walk<'p>(number: String, p: &'p BodyPart, out: &mut Vec<(String, &'p BodyPart)>) {
        let subs = match &p.kind {
            BodyKind::Multipart { parts } => parts.iter().collect(),
            BodyKind::Message { body, .. } => parts_of_message(body),
            _ => vec![],
        };
        out.push((number.clone(), p));
        for (i, sub) in subs.into_iter().enumerate() {
            walk(format!("{number}.{}", i + 1), sub, out);
        }
    }
    let mut out = Vec::new();
    for (i, p) in parts_of_message(root).into_iter().enumerate() {
        walk((i + 1).to_string(), p, &mut out);
    }
    out
}

/// The data item names of a FETCH command line, as imap-codec parses them.
fn item_names(line: &str) -> Vec<MessageDataItemName<'_>> {
    let (rest, cmd) = CommandCodec::default()
        .decode(line.as_bytes())
        .unwrap_or_else(|e| panic!("{e:?}: {line}"));
    assert!(rest.is_empty(), "{line}");
    match cmd.body {
        CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            ..
        } => names,
        other => panic!("not a FETCH: {other:?}"),
    }
}

/// The data item for `name` of the stored message `raw`, built as `Session::fetch` builds it.
fn item<'a>(name: &MessageDataItemName<'a>, meta: &MessageMeta, raw: &[u8]) -> MessageDataItem<'a> {
    let read = |a: u64, b: u64| raw[a as usize..b as usize].to_vec();
    let (size, root) = (raw.len() as u64, &meta.body);
    match name {
        MessageDataItemName::Envelope => MessageDataItem::Envelope(envelope(&meta.envelope, false)),
        MessageDataItemName::Body => MessageDataItem::Body(structure(root, false, false)),
        MessageDataItemName::BodyStructure => {
            MessageDataItem::BodyStructure(structure(root, true, false))
        }
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(size as u32),
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(data(raw.to_vec())),
        MessageDataItemName::Rfc822Header => {
            MessageDataItem::Rfc822Header(data(read(0, root.body_start)))
        }
        MessageDataItemName::Rfc822Text => {
            MessageDataItem::Rfc822Text(data(read(root.body_start, root.end)))
        }
        MessageDataItemName::BodyExt {
            section, partial, ..
        } => MessageDataItem::BodyExt {
            section: section.clone(),
            origin: partial.map(|(start, _)| start),
            data: data(section_bytes(meta, size, section, *partial, &read)),
        },
        other => panic!("not asked for: {other:?}"),
    }
}

/// `raw` fetched with the items `specs` in one response, which must decode completely and to
/// the value encoded; the bytes of each item that has some (RFC822* and BODY[...]), by spec.
fn fetch(raw: &[u8], meta: &MessageMeta, specs: &[String]) -> HashMap<String, Vec<u8>> {
    let line = format!("a FETCH 1 ({})\r\n", specs.join(" "));
    let names = item_names(&line);
    assert_eq!(names.len(), specs.len(), "{line}");
    let items: Vec<MessageDataItem> = names.iter().map(|n| item(n, meta, raw)).collect();
    let resp = Response::Data(Data::Fetch {
        seq: nz(1),
        items: Vec1::try_from(items).expect("items"),
    });
    let bytes = crate::imap::encode(&resp);
    let shown = || String::from_utf8_lossy(&bytes).into_owned();
    let (rest, back) = ResponseCodec::default()
        .decode(&bytes)
        .unwrap_or_else(|e| panic!("{e:?}: {}", shown()));
    assert!(rest.is_empty(), "left over {rest:?}: {}", shown());
    assert_eq!(back, resp, "{}", shown());
    let Response::Data(Data::Fetch { items, .. }) = back else {
        unreachable!("equal to a FETCH response");
    };
    let mut out = HashMap::new();
    for (spec, item) in specs.iter().zip(items.as_ref()) {
        match item {
            MessageDataItem::BodyExt { data, .. }
            | MessageDataItem::Rfc822(data)
            | MessageDataItem::Rfc822Header(data)
            | MessageDataItem::Rfc822Text(data) => {
                let bytes = data.clone().into_option().expect("sections are never NIL");
                out.insert(spec.clone(), bytes.into_owned());
            }
            MessageDataItem::Rfc822Size(n) => assert_eq!(*n as usize, raw.len(), "RFC822.SIZE"),
            _ => {}
        }
    }
    out
}

fn sec<'g>(got: &'g HashMap<String, Vec<u8>>, spec: &str) -> &'g [u8] {
    got.get(spec)
        .unwrap_or_else(|| panic!("no {spec}"))
        .as_slice()
}

/// Fetches `raw` with every item and checks what came back against the message's bytes: the
/// whole message, its header and text, and every part located by the offsets of the tree
/// walk; `head`, when the header is known, also checks the header and its field filters.
fn check(raw: &[u8], head: Option<&Head>) {
    let meta = message_meta(raw);
    let parts = numbered(&meta.body);
    let top = parts.iter().filter(|(n, _)| !n.contains('.')).count();
    let mut specs: Vec<String> = ITEMS.iter().map(|s| s.to_string()).collect();
    for (n, p) in &parts {
        for suffix in ["", ".MIME", ".HEADER"] {
            specs.push(format!("BODY.PEEK[{n}{suffix}]"));
        }
        if matches!(p.kind, BodyKind::Message { .. }) {
            specs.push(format!("BODY.PEEK[{n}.TEXT]"));
        }
    }
    // A part that does not exist is empty.
    let missing = format!("BODY.PEEK[{}]", top + 1);
    specs.push(missing.clone());
    let got = fetch(raw, &meta, &specs);

    assert_eq!(sec(&got, "BODY.PEEK[]"), raw);
    assert_eq!(sec(&got, "RFC822"), raw);
    let (header, text) = (sec(&got, "BODY.PEEK[HEADER]"), sec(&got, "BODY.PEEK[TEXT]"));
    assert_eq!([header, text].concat(), raw, "HEADER and TEXT");
    let (header, text) = (sec(&got, "RFC822.HEADER"), sec(&got, "RFC822.TEXT"));
    assert_eq!(
        [header, text].concat(),
        raw,
        "RFC822.HEADER and RFC822.TEXT"
    );
    let (from, to) = (3.min(raw.len()), 13.min(raw.len()));
    assert_eq!(sec(&got, "BODY.PEEK[]<3.10>"), &raw[from..to]);
    assert!(sec(&got, &missing).is_empty(), "{missing}");
    for (n, p) in &parts {
        let (h, b, e) = (
            p.header_start as usize,
            p.body_start as usize,
            p.end as usize,
        );
        assert!(h <= b && b <= e && e <= raw.len(), "offsets of {n}: {p:?}");
        let mime = sec(&got, &format!("BODY.PEEK[{n}.MIME]"));
        let body = sec(&got, &format!("BODY.PEEK[{n}]"));
        assert_eq!(mime, &raw[h..b], "{n}.MIME");
        assert_eq!([mime, body].concat(), &raw[h..e], "{n}.MIME and {n}");
        let header = sec(&got, &format!("BODY.PEEK[{n}.HEADER]"));
        match &p.kind {
            BodyKind::Message { body: inner, .. } => {
                let text = sec(&got, &format!("BODY.PEEK[{n}.TEXT]"));
                let (ih, ib) = (inner.header_start as usize, inner.body_start as usize);
                assert_eq!(header, &raw[ih..ib], "{n}.HEADER");
                assert_eq!([header, text].concat(), body, "{n}.HEADER and {n}.TEXT");
            }
            _ => assert!(header.is_empty(), "{n}.HEADER of a part that is no message"),
        }
    }
    if let Some(head) = head {
        check_header(&got, raw, head);
    }
}

/// The header is the generated one, and HEADER.FIELDS (.NOT) pick its fields by name.
fn check_header(got: &HashMap<String, Vec<u8>>, raw: &[u8], head: &Head) {
    assert_eq!(sec(got, "BODY.PEEK[HEADER]"), &raw[..head.end], "HEADER");
    let pick = |keep: &dyn Fn(&str) -> bool| -> Vec<u8> {
        let mut v: Vec<u8> = head
            .fields
            .iter()
            .filter(|(name, _)| keep(name))
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        v.extend_from_slice(b"\r\n");
        v
    };
    let is = |name: &str, wanted: &str| name.eq_ignore_ascii_case(wanted);
    assert_eq!(
        sec(got, "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"),
        pick(&|n| is(n, "subject") || is(n, "from")),
        "HEADER.FIELDS"
    );
    assert_eq!(
        sec(got, "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]"),
        pick(&|n| !is(n, "subject")),
        "HEADER.FIELDS.NOT"
    );
}

proptest! {
    // No regression file: failures found here are turned into the unit test below.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_generated_message_is_fetchable_with_every_item(
        root in tree(),
        lf_only in prop::bool::weighted(0.2),
    ) {
        let nl: &'static [u8] = if lf_only { b"\n" } else { b"\r\n" };
        let (raw, head) = render(&root, nl);
        check(&raw, Some(&head));
    }
}

/// Header fields that are empty or have nothing an ENVELOPE can show (NIL-valued fields),
/// at the top level and in an attached message, fetch with every item.
#[test]
fn empty_and_nil_header_fields_are_fetchable_with_every_item() {
    let fields: &[(&str, &str)] = &[
        ("Subject", ""),
        ("From", ""),
        ("To", ";"),
        ("Cc", "group:;"),
        ("Date", "not a date, at all"),
        ("Message-ID", ""),
        ("In-Reply-To", ""),
        ("Sender", " "),
        ("Reply-To", "undisclosed-recipients:;"),
        ("Bcc", "\"\" <>"),
    ];
    for nl in [&b"\r\n"[..], b"\n"] {
        let fields: Vec<(String, Vec<u8>)> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), field(n, v.as_bytes(), nl)))
            .collect();
        let header: Vec<u8> = fields.iter().flat_map(|(_, f)| f.clone()).collect();
        let mut raw = header.clone();
        raw.extend_from_slice(nl);
        let end = raw.len();
        raw.extend_from_slice(b"body");
        check(&raw, Some(&Head { fields, end }));

        let mut raw = lines(
            b"Subject: outer\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\
              Content-Type: message/rfc822\n\n",
            nl,
        );
        raw.extend_from_slice(&header);
        raw.extend(lines(b"\nbody\n--x--\n", nl));
        check(&raw, None);
    }
    for raw in [
        &b""[..],
        b"Subject:",
        b"Subject:\r\n",
        b"\r\n",
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject:\r\nTo: ;\r\n\r\n--d--",
    ] {
        check(raw, None);
    }
}
