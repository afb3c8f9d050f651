//! ENVELOPE / BODYSTRUCTURE extraction (`mime::message_meta`): hand-written messages checked
//! field by field and offset by offset, and property tests that it never panics, always
//! returns consistent offsets, and recovers generated MIME trees exactly.

use halyard_raft_store::mime::message_meta;
use halyard_raft_store::{Addr, BodyKind, BodyPart, Envelope, MessageMeta};
use proptest::prelude::*;

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn body<'a>(raw: &'a [u8], part: &BodyPart) -> &'a [u8] {
    &raw[part.body_start as usize..part.end as usize]
}

fn mime_header<'a>(raw: &'a [u8], part: &BodyPart) -> &'a [u8] {
    &raw[part.header_start as usize..part.body_start as usize]
}

fn children(part: &BodyPart) -> &[BodyPart] {
    match &part.kind {
        BodyKind::Multipart { parts } => parts,
        other => panic!("not a multipart: {other:?}"),
    }
}

fn enclosed(part: &BodyPart) -> (&Envelope, &BodyPart) {
    match &part.kind {
        BodyKind::Message { envelope, body } => (envelope, body),
        other => panic!("not a message/rfc822: {other:?}"),
    }
}

fn addr(name: Option<&str>, mailbox: &str, host: &str) -> Addr {
    Addr {
        name: name.map(str::to_string),
        adl: None,
        mailbox: Some(mailbox.into()),
        host: Some(host.into()),
    }
}

fn group_start(name: &str) -> Addr {
    Addr {
        mailbox: Some(name.into()),
        ..Addr::default()
    }
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[test]
fn simple_text_message() {
    let raw = crlf(
        "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\n\
         From: Fred Foobar <foobar@Blurdybloop.COM>\n\
         Subject: afternoon meeting\n\
         To: mooch@owatagu.siam.edu\n\
         Message-Id: <B27397-0100000@Blurdybloop.COM>\n\
         In-Reply-To: <parent@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\
         \n\
         Hello Joe, do you think we can meet at 3:30 tomorrow?\n\
         \n\
         Fred",
    );
    let MessageMeta {
        envelope,
        body: root,
    } = message_meta(&raw);
    assert_eq!(envelope.date, s("Mon, 7 Feb 1994 21:52:25 -0800 (PST)"));
    assert_eq!(envelope.subject, s("afternoon meeting"));
    let fred = vec![addr(Some("Fred Foobar"), "foobar", "Blurdybloop.COM")];
    assert_eq!(envelope.from, fred);
    assert_eq!(envelope.sender, fred);
    assert_eq!(envelope.reply_to, fred);
    assert_eq!(envelope.to, vec![addr(None, "mooch", "owatagu.siam.edu")]);
    assert!(envelope.cc.is_empty() && envelope.bcc.is_empty());
    assert_eq!(envelope.message_id, s("<B27397-0100000@Blurdybloop.COM>"));
    assert_eq!(envelope.in_reply_to, s("<parent@example.org>"));

    assert_eq!(
        (root.media_type.as_str(), root.subtype.as_str()),
        ("text", "plain")
    );
    assert_eq!(
        root.params,
        vec![("charset".to_string(), "US-ASCII".to_string())]
    );
    assert_eq!(root.encoding, "7BIT");
    assert_eq!(root.kind, BodyKind::Text);
    assert_eq!(root.header_start, 0);
    assert_eq!(root.end, raw.len() as u64);
    assert!(mime_header(&raw, &root).ends_with(b"US-ASCII\r\n\r\n"));
    assert_eq!(
        body(&raw, &root),
        b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n\r\nFred"
    );
    // Two CRLF-terminated lines and a last unterminated one.
    assert_eq!(root.lines, 3);
}

#[test]
fn message_without_content_type_gets_the_defaults() {
    let raw = crlf("Subject: x\n\nline 1\nline 2\n");
    let root = message_meta(&raw).body;
    assert_eq!(
        (root.media_type.as_str(), root.subtype.as_str()),
        ("text", "plain")
    );
    assert_eq!(
        root.params,
        vec![("charset".to_string(), "us-ascii".to_string())]
    );
    assert_eq!(root.encoding, "7BIT");
    assert_eq!(body(&raw, &root), b"line 1\r\nline 2\r\n");
    assert_eq!(root.lines, 2);
}

#[test]
fn mixed_with_text_and_base64_attachment() {
    let raw = crlf(
        "From: a@example.com\n\
         Subject: report\n\
         Content-Type: multipart/mixed; boundary=\"=_outer\"\n\
         \n\
         This is a MIME message.\n\
         --=_outer\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: quoted-printable\n\
         \n\
         See attached.=0A\n\
         Bye\n\
         \n\
         --=_outer\n\
         Content-Type: application/pdf; name=\"report.pdf\"\n\
         Content-Transfer-Encoding: base64\n\
         Content-ID: <part2@example.com>\n\
         Content-Description: The report\n\
         Content-Disposition: ATTACHMENT; filename=\"report.pdf\"; size=6\n\
         Content-Language: en, fr\n\
         Content-Location: http://example.com/report.pdf\n\
         Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\
         \n\
         JVBERi0x\n\
         --=_outer--\n\
         epilogue\n",
    );
    let root = message_meta(&raw).body;
    assert_eq!(
        (root.media_type.as_str(), root.subtype.as_str()),
        ("multipart", "mixed")
    );
    assert_eq!(
        root.params,
        vec![("boundary".to_string(), "=_outer".to_string())]
    );
    assert_eq!((root.header_start, root.end), (0, raw.len() as u64));
    assert!(body(&raw, &root).starts_with(b"This is a MIME message.\r\n--=_outer\r\n"));
    let parts = children(&root);
    assert_eq!(parts.len(), 2);

    let text = &parts[0];
    assert_eq!(
        (text.media_type.as_str(), text.subtype.as_str()),
        ("text", "plain")
    );
    assert_eq!(text.encoding, "QUOTED-PRINTABLE");
    assert_eq!(
        mime_header(&raw, text),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    );
    // The blank line before the delimiter is part of the body; the CRLF right before
    // `--=_outer` is not.
    assert_eq!(body(&raw, text), b"See attached.=0A\r\nBye\r\n");
    assert_eq!(text.lines, 2);
    assert_eq!(text.kind, BodyKind::Text);

    let pdf = &parts[1];
    assert_eq!(
        (pdf.media_type.as_str(), pdf.subtype.as_str()),
        ("application", "pdf")
    );
    assert_eq!(
        pdf.params,
        vec![("name".to_string(), "report.pdf".to_string())]
    );
    assert_eq!(pdf.encoding, "BASE64");
    assert_eq!(pdf.id, s("<part2@example.com>"));
    assert_eq!(pdf.description, s("The report"));
    assert_eq!(pdf.md5, s("Q2hlY2sgSW50ZWdyaXR5IQ=="));
    assert_eq!(pdf.location, s("http://example.com/report.pdf"));
    assert_eq!(pdf.language, vec!["en".to_string(), "fr".to_string()]);
    assert_eq!(
        pdf.disposition,
        Some((
            "attachment".to_string(),
            vec![
                ("filename".to_string(), "report.pdf".to_string()),
                ("size".to_string(), "6".to_string())
            ]
        ))
    );
    assert_eq!(pdf.kind, BodyKind::Basic);
    assert_eq!(body(&raw, pdf), b"JVBERi0x");
    assert!(mime_header(&raw, pdf).starts_with(b"Content-Type: application/pdf;"));
    assert!(mime_header(&raw, pdf).ends_with(b"IQ==\r\n\r\n"));
}

#[test]
fn alternative_nested_in_mixed() {
    let raw = crlf(
        "From: a@example.com\n\
         Content-Type: multipart/mixed; boundary=outer\n\
         \n\
         --outer\n\
         Content-Type: multipart/alternative; boundary=inner\n\
         \n\
         --inner\n\
         Content-Type: text/plain\n\
         \n\
         plain\n\
         --inner\n\
         Content-Type: text/html\n\
         \n\
         <p>html</p>\n\
         --inner--\n\
         inner epilogue\n\
         --outer\n\
         Content-Type: image/png\n\
         Content-Transfer-Encoding: base64\n\
         \n\
         iVBORw0KGgo=\n\
         --outer--\n",
    );
    let root = message_meta(&raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    let alt = &parts[0];
    assert_eq!(
        (alt.media_type.as_str(), alt.subtype.as_str()),
        ("multipart", "alternative")
    );
    assert_eq!(
        mime_header(&raw, alt),
        b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
    );
    // BODY[1] of a multipart is its whole body, epilogue included, up to the outer delimiter.
    assert_eq!(
        body(&raw, alt),
        &crlf(
            "--inner\nContent-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n\
             <p>html</p>\n--inner--\ninner epilogue"
        )[..]
    );
    let inner = children(alt);
    assert_eq!(inner.len(), 2);
    assert_eq!(body(&raw, &inner[0]), b"plain");
    assert_eq!(inner[0].lines, 1);
    assert_eq!(
        (inner[1].media_type.as_str(), inner[1].subtype.as_str()),
        ("text", "html")
    );
    assert_eq!(body(&raw, &inner[1]), b"<p>html</p>");
    assert_eq!(
        mime_header(&raw, &inner[1]),
        b"Content-Type: text/html\r\n\r\n"
    );
    let png = &parts[1];
    assert_eq!(
        (png.media_type.as_str(), png.subtype.as_str()),
        ("image", "png")
    );
    assert_eq!(body(&raw, png), b"iVBORw0KGgo=");
    assert_eq!(png.lines, 0);
}

#[test]
fn message_rfc822_attachment() {
    let raw = crlf(
        "From: outer@example.com\n\
         Subject: Fwd: hi\n\
         Content-Type: multipart/mixed; boundary=b1\n\
         \n\
         --b1\n\
         Content-Type: text/plain\n\
         \n\
         see below\n\
         --b1\n\
         Content-Type: message/rfc822\n\
         Content-Disposition: inline\n\
         \n\
         From: Inner Sender <inner@example.net>\n\
         To: Someone <someone@example.org>\n\
         Subject: hi\n\
         Date: Tue, 1 Apr 2025 10:00:00 +0000\n\
         Message-ID: <inner@example.net>\n\
         Content-Type: multipart/alternative; boundary=b2\n\
         \n\
         --b2\n\
         Content-Type: text/plain\n\
         \n\
         hi there\n\
         --b2\n\
         Content-Type: text/html\n\
         \n\
         <b>hi</b> there\n\
         --b2--\n\
         \n\
         --b1--\n",
    );
    let MessageMeta {
        envelope,
        body: root,
    } = message_meta(&raw);
    assert_eq!(envelope.subject, s("Fwd: hi"));
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    let msg = &parts[1];
    assert_eq!(
        (msg.media_type.as_str(), msg.subtype.as_str()),
        ("message", "rfc822")
    );
    assert_eq!(msg.disposition, Some(("inline".to_string(), vec![])));
    let message_body = body(&raw, msg);
    assert!(message_body.starts_with(b"From: Inner Sender <inner@example.net>\r\n"));
    assert!(message_body.ends_with(b"--b2--\r\n"));
    assert_eq!(msg.lines, 16);

    let (inner_env, inner_root) = enclosed(msg);
    assert_eq!(inner_env.subject, s("hi"));
    assert_eq!(inner_env.date, s("Tue, 1 Apr 2025 10:00:00 +0000"));
    assert_eq!(inner_env.message_id, s("<inner@example.net>"));
    let sender = vec![addr(Some("Inner Sender"), "inner", "example.net")];
    assert_eq!(inner_env.from, sender);
    assert_eq!(inner_env.sender, sender);
    assert_eq!(
        inner_env.to,
        vec![addr(Some("Someone"), "someone", "example.org")]
    );
    // The enclosed message covers the whole part body, offsets into the outer bytes.
    assert_eq!(inner_root.header_start, msg.body_start);
    assert_eq!(inner_root.end, msg.end);
    assert!(mime_header(&raw, inner_root).starts_with(b"From: Inner Sender"));
    assert!(mime_header(&raw, inner_root).ends_with(b"boundary=b2\r\n\r\n"));
    let alt = children(inner_root);
    assert_eq!(alt.len(), 2);
    assert_eq!(body(&raw, &alt[0]), b"hi there");
    assert_eq!(body(&raw, &alt[1]), b"<b>hi</b> there");
    assert_eq!(
        mime_header(&raw, &alt[1]),
        b"Content-Type: text/html\r\n\r\n"
    );
}

#[test]
fn message_directly_enclosing_a_message_inside_multipart() {
    // Found by `generated_trees_parse_back_exactly`: mail-parser's own body walk attaches the
    // second part to the enclosed message here.
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=\"=_1_=\"\n\n--=_1_=\n\
         Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: message/rfc822\n\n\
         Subject: inner2\nContent-Type: text/plain\n\nx\n--=_1_=\n\
         Content-Type: text/plain\n\nsecond\n--=_1_=--\n",
    );
    let root = message_meta(&raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    let (env, middle) = enclosed(&parts[0]);
    assert_eq!(env.subject, s("inner"));
    let (env, innermost) = enclosed(middle);
    assert_eq!(env.subject, s("inner2"));
    assert_eq!(body(&raw, innermost), b"x");
    assert_eq!(body(&raw, &parts[1]), b"second");
}

#[test]
fn delimiters_only_at_line_start_and_not_as_prefixes() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n\
         text mentioning --b mid-line\n--bb is not a delimiter either\n\
         --b  \t\n\nsecond (after transport padding)\n--b--",
    );
    let root = message_meta(&raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        body(&raw, &parts[0]),
        b"text mentioning --b mid-line\r\n--bb is not a delimiter either"
    );
    assert_eq!(body(&raw, &parts[1]), b"second (after transport padding)");
}

#[test]
fn unterminated_multipart_ends_at_the_end() {
    let raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\n\nlast\n");
    let root = message_meta(&raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    assert_eq!(body(&raw, &parts[0]), b"first");
    assert_eq!(body(&raw, &parts[1]), b"last\r\n");
    assert_eq!(parts[1].end, raw.len() as u64);
}

#[test]
fn encoded_message_rfc822_is_still_a_message() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\
         Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n\
         U3ViamVjdDogeAoKYm9keQo=\n--b--\n",
    );
    let root = message_meta(&raw).body;
    let msg = &children(&root)[0];
    let (env, inner) = enclosed(msg);
    assert_eq!(*env, Envelope::default());
    assert_eq!(inner.kind, BodyKind::Text);
    assert_eq!(body(&raw, inner), b"U3ViamVjdDogeAoKYm9keQo=");
    assert_eq!(body(&raw, msg), b"U3ViamVjdDogeAoKYm9keQo=");
}

#[test]
fn digest_parts_default_to_message_rfc822() {
    let raw =
        crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n--d--\n");
    let root = message_meta(&raw).body;
    let msg = &children(&root)[0];
    assert_eq!(
        (msg.media_type.as_str(), msg.subtype.as_str()),
        ("message", "rfc822")
    );
    assert_eq!(mime_header(&raw, msg), b"\r\n");
    let (env, inner) = enclosed(msg);
    assert_eq!(env.subject, s("one"));
    assert_eq!(body(&raw, inner), b"first");
}

#[test]
fn multipart_without_boundary_gets_one_child() {
    let raw = crlf("Content-Type: multipart/mixed\n\nno boundary\n");
    let root = message_meta(&raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        (parts[0].media_type.as_str(), parts[0].kind.clone()),
        ("text", BodyKind::Text)
    );
    assert_eq!(body(&raw, &parts[0]), body(&raw, &root));
    assert_eq!(body(&raw, &root), b"no boundary\r\n");
}

#[test]
fn group_addresses() {
    let raw = crlf(
        "From: Boss <boss@example.com>\n\
         To: undisclosed-recipients:;\n\
         Cc: Team: alice@example.com, \"Bob B.\" <bob@example.com>;, carol@example.com\n\
         Bcc: postmaster\n\
         \n\
         body\n",
    );
    let env = message_meta(&raw).envelope;
    assert_eq!(
        env.to,
        vec![group_start("undisclosed-recipients"), Addr::default()]
    );
    assert_eq!(
        env.cc,
        vec![
            group_start("Team"),
            addr(None, "alice", "example.com"),
            addr(Some("Bob B."), "bob", "example.com"),
            Addr::default(),
            addr(None, "carol", "example.com"),
        ]
    );
    // An address without a domain: never a NIL host (that would read as a group).
    assert_eq!(env.bcc, vec![addr(None, "postmaster", "")]);
}

#[test]
fn sender_and_reply_to_default_to_from_but_not_when_present() {
    let raw = crlf("From: a@example.com, b@example.com\nSubject: s\n\nx");
    let env = message_meta(&raw).envelope;
    let from = vec![
        addr(None, "a", "example.com"),
        addr(None, "b", "example.com"),
    ];
    assert_eq!(env.from, from);
    assert_eq!(env.sender, from);
    assert_eq!(env.reply_to, from);

    let raw = crlf(
        "From: a@example.com\nSender: s@example.com\nReply-To: r@example.com\nSubject: s\n\nx",
    );
    let env = message_meta(&raw).envelope;
    assert_eq!(env.sender, vec![addr(None, "s", "example.com")]);
    assert_eq!(env.reply_to, vec![addr(None, "r", "example.com")]);

    // Present but empty also defaults (RFC 3501 §7.4.2).
    let raw = crlf("From: a@example.com\nReply-To:\n\nx");
    let env = message_meta(&raw).envelope;
    assert_eq!(env.reply_to, vec![addr(None, "a", "example.com")]);

    // No From at all: nothing to default to.
    let env = message_meta(&crlf("Subject: s\n\nx")).envelope;
    assert!(env.from.is_empty() && env.sender.is_empty() && env.reply_to.is_empty());
}

#[test]
fn non_ascii_display_names_are_reencoded() {
    let raw = crlf(
        "From: =?iso-8859-1?q?J=F6rg?= <jorg@example.de>\n\
         To: \"Zoë\" <zoe@example.com>, =?utf-8?b?QWxpY2U=?= <alice@example.com>\n\
         \n\
         x",
    );
    assert!(
        raw.windows(4).any(|w| w == "Zoë".as_bytes()),
        "raw UTF-8 (RFC 6532)"
    );
    let env = message_meta(&raw).envelope;
    // base64("Jörg" in UTF-8) = "SsO2cmc=".
    assert_eq!(
        env.from,
        vec![addr(Some("=?utf-8?b?SsO2cmc=?="), "jorg", "example.de")]
    );
    assert_eq!(
        env.to,
        vec![
            addr(Some("=?utf-8?b?Wm/Dqw==?="), "zoe", "example.com"),
            // Decoded to plain ASCII: kept decoded.
            addr(Some("Alice"), "alice", "example.com"),
        ]
    );
}

#[test]
fn folded_headers_are_unfolded_and_encoded_words_kept() {
    let raw = crlf(
        "Subject: a long\n \tsubject =?utf-8?q?with_=C3=A9?=\n  continued\n\
         From: a@example.com\n\
         Message-ID:\n <folded@example.com>\n\
         \n\
         body",
    );
    let env = message_meta(&raw).envelope;
    assert_eq!(
        env.subject,
        s("a long \tsubject =?utf-8?q?with_=C3=A9?=  continued")
    );
    assert_eq!(env.message_id, s("<folded@example.com>"));
}

#[test]
fn lf_only_message() {
    let raw = b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\nfirst\n--x\nContent-Type: text/plain\n\nsecond\nline\n--x--\n";
    let root = message_meta(raw).body;
    let parts = children(&root);
    assert_eq!(parts.len(), 2);
    assert_eq!(body(raw, &parts[0]), b"first");
    assert_eq!(mime_header(raw, &parts[0]), b"\n");
    assert_eq!(body(raw, &parts[1]), b"second\nline");
    assert_eq!(parts[1].lines, 2);
}

#[test]
fn degenerate_inputs() {
    for raw in [
        &b""[..],
        b"\r\n",
        b"no header at all",
        b"Subject: no body, no final newline",
        b"From: a@b",
        b"\0\0\0\xff\xfe:\r\n\r\n\0",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Type: message/rfc822",
    ] {
        let meta = message_meta(raw);
        check_invariants(raw, &meta.body, 0);
        assert_eq!((meta.body.header_start, meta.body.end), (0, raw.len() as u64));
    }
    let env = message_meta(b"From: a@b").envelope;
    assert_eq!(env.from, vec![addr(None, "a", "b")]);
}

#[test]
fn deep_multipart_nesting_is_bounded() {
    let mut raw = Vec::new();
    for i in 0..500 {
        raw.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}x\r\n\r\n--b{i}x\r\n").as_bytes(),
        );
    }
    raw.extend_from_slice(b"\r\nleaf");
    let meta = message_meta(&raw);
    check_invariants(&raw, &meta.body, 0);
    let mut depth = 0;
    let mut part = &meta.body;
    while let BodyKind::Multipart { parts } = &part.kind {
        depth += 1;
        part = &parts[0];
    }
    assert!(depth <= 40, "{depth}");
}

// ---------------------------------------------------------------------------------------------
// Invariants

/// Offsets are ordered and in bounds, children nest inside their parent's body in order,
/// multiparts have children, an enclosed message covers its part's body.
fn check_invariants(raw: &[u8], part: &BodyPart, depth: usize) {
    assert!(depth < 80, "tree too deep");
    assert!(
        part.header_start <= part.body_start
            && part.body_start <= part.end
            && part.end <= raw.len() as u64,
        "bad offsets {part:?}"
    );
    assert_eq!(part.media_type, part.media_type.to_ascii_lowercase());
    assert_eq!(part.subtype, part.subtype.to_ascii_lowercase());
    assert_eq!(part.encoding, part.encoding.to_ascii_uppercase());
    match &part.kind {
        BodyKind::Multipart { parts } => {
            assert_eq!(part.media_type, "multipart");
            assert!(!parts.is_empty());
            let mut low = part.body_start;
            for child in parts {
                assert!(
                    child.header_start >= low && child.end <= part.end,
                    "{child:?}"
                );
                low = child.end;
                check_invariants(raw, child, depth + 1);
            }
        }
        BodyKind::Message { body, .. } => {
            assert_eq!(part.media_type, "message");
            assert_eq!((body.header_start, body.end), (part.body_start, part.end));
            check_invariants(raw, body, depth + 1);
        }
        BodyKind::Text => assert_eq!(part.media_type, "text"),
        BodyKind::Basic => {
            assert!(!["text", "multipart"].contains(&part.media_type.as_str()));
            assert!(!(part.media_type == "message" && part.subtype == "rfc822"));
        }
    }
}

fn fragments() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"Content-Type: multipart/digest; boundary=\"b\"\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain; charset*=utf-8''%C3%A9\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"From: \"x\" <a@b>, g: c@d;\r\n",
        b"To: =?utf-8?q?=C3=A9?= <e@f>\r\n",
        b"\r\n",
        b"\n",
        b"--a\r\n",
        b"--b\r\n",
        b"--a--",
        b"--b--\r\n",
        b"QUJD=\r\n",
        b" folded\r\n",
    ];
    let piece = prop_oneof![
        prop::sample::select(pieces).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..20),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------------------------
// Generated MIME trees

#[derive(Debug, Clone)]
enum Node {
    /// text/plain, no transfer encoding.
    Text(Vec<u8>),
    /// application/octet-stream, `Content-Transfer-Encoding: binary`, raw bytes.
    Binary(Vec<u8>),
    /// image/png, base64 of the data in 76-column lines.
    Base64(Vec<u8>),
    Multipart {
        subtype: &'static str,
        tag: String,
        preamble: &'static str,
        padding: &'static str,
        epilogue: &'static str,
        children: Vec<Node>,
    },
    Message(Box<Node>),
}

/// What the generated message must parse back to.
#[derive(Debug)]
struct Expected {
    media_type: &'static str,
    subtype: &'static str,
    encoding: &'static str,
    header_start: usize,
    body_start: usize,
    end: usize,
    kind: ExpectedKind,
}

#[derive(Debug)]
enum ExpectedKind {
    Leaf,
    Multipart(Vec<Expected>),
    Message(Box<Expected>),
}

/// Bodies never contain `=`, boundaries always do, so a body never contains a delimiter, and
/// boundaries are `=_<unique number>_<tag>=` so no boundary is a prefix of another.
fn no_equals(bytes: Vec<u8>) -> Vec<u8> {
    bytes
        .into_iter()
        .map(|b| if b == b'=' { b'x' } else { b })
        .collect()
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        "[ -<>-~\t\r\néü€\n]{0,120}".prop_map(|t| Node::Text(t.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| Node::Binary(no_equals(b))),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Node::Base64),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            3 => (
                prop::sample::select(vec!["mixed", "alternative", "related", "parallel", "x-custom"]),
                "[A-Za-z0-9'()+_,./:?-]{0,30}",
                prop::sample::select(vec!["", "preamble\r\n", "\r\n", "two\r\nlines\r\n"]),
                prop::sample::select(vec!["", " ", "\t  "]),
                prop::sample::select(vec!["", "\r\n", "\r\nepilogue\r\n", "\r\nepi"]),
                prop::collection::vec(inner.clone(), 1..4),
            )
                .prop_map(|(subtype, tag, preamble, padding, epilogue, children)| {
                    Node::Multipart { subtype, tag, preamble, padding, epilogue, children }
                }),
            1 => inner.prop_map(|n| Node::Message(Box::new(n))),
        ]
    })
}

struct Renderer {
    out: Vec<u8>,
    boundaries: usize,
}

impl Renderer {
    /// Writes one entity (header fields, blank line, body) and returns what it must parse to.
    fn entity(&mut self, node: &Node, extra_header: &str) -> Expected {
        let header_start = self.out.len();
        self.out.extend_from_slice(extra_header.as_bytes());
        let (media_type, subtype, encoding) = match node {
            Node::Text(_) => ("text", "plain", "7BIT"),
            Node::Binary(_) => ("application", "octet-stream", "BINARY"),
            Node::Base64(_) => ("image", "png", "BASE64"),
            Node::Multipart { subtype, .. } => ("multipart", *subtype, "7BIT"),
            Node::Message(_) => ("message", "rfc822", "7BIT"),
        };
        let boundary = match node {
            Node::Multipart { tag, .. } => {
                self.boundaries += 1;
                format!("=_{}_{tag}=", self.boundaries)
            }
            _ => String::new(),
        };
        match node {
            Node::Multipart { .. } => self.line(&format!(
                "Content-Type: multipart/{subtype}; boundary=\"{boundary}\""
            )),
            Node::Text(_) => self.line("Content-Type: text/plain; charset=utf-8"),
            _ => self.line(&format!("Content-Type: {media_type}/{subtype}")),
        }
        if encoding != "7BIT" {
            self.line(&format!(
                "Content-Transfer-Encoding: {}",
                encoding.to_ascii_lowercase()
            ));
        }
        self.out.extend_from_slice(b"\r\n");
        let body_start = self.out.len();
        let kind = match node {
            Node::Text(bytes) | Node::Binary(bytes) => {
                self.out.extend_from_slice(bytes);
                ExpectedKind::Leaf
            }
            Node::Base64(data) => {
                let encoded = base64(data);
                let lines: Vec<&[u8]> = encoded.as_bytes().chunks(76).collect();
                self.out.extend_from_slice(&lines.join(&b"\r\n"[..]));
                ExpectedKind::Leaf
            }
            Node::Message(inner) => ExpectedKind::Message(Box::new(self.entity(
                inner,
                "From: Inner <inner@example.com>\r\nSubject: inner\r\n",
            ))),
            Node::Multipart {
                preamble,
                padding,
                epilogue,
                children,
                ..
            } => {
                self.out.extend_from_slice(preamble.as_bytes());
                let mut parts = Vec::new();
                for (i, child) in children.iter().enumerate() {
                    let crlf = if i == 0 { "" } else { "\r\n" };
                    self.out
                        .extend_from_slice(format!("{crlf}--{boundary}{padding}\r\n").as_bytes());
                    parts.push(self.entity(child, ""));
                }
                self.out
                    .extend_from_slice(format!("\r\n--{boundary}--{epilogue}").as_bytes());
                ExpectedKind::Multipart(parts)
            }
        };
        Expected {
            media_type,
            subtype,
            encoding,
            header_start,
            body_start,
            end: self.out.len(),
            kind,
        }
    }

    fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

fn render(node: &Node) -> (Vec<u8>, Expected) {
    let mut renderer = Renderer {
        out: Vec::new(),
        boundaries: 0,
    };
    let expected = renderer.entity(
        node,
        "From: Gen <gen@example.com>\r\nSubject: generated\r\nMIME-Version: 1.0\r\n",
    );
    (renderer.out, expected)
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

fn lines_of(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
        + u64::from(bytes.last().is_some_and(|&b| b != b'\n'))
}

fn check_matches(raw: &[u8], expected: &Expected, got: &BodyPart, path: &str) {
    assert_eq!(
        (got.media_type.as_str(), got.subtype.as_str()),
        (expected.media_type, expected.subtype),
        "media type at {path}"
    );
    assert_eq!(got.encoding, expected.encoding, "encoding at {path}");
    assert_eq!(
        (got.header_start, got.body_start, got.end),
        (
            expected.header_start as u64,
            expected.body_start as u64,
            expected.end as u64
        ),
        "offsets at {path}"
    );
    assert_eq!(
        body(raw, got),
        &raw[expected.body_start..expected.end],
        "body at {path}"
    );
    match (&expected.kind, &got.kind) {
        (ExpectedKind::Leaf, BodyKind::Text) => {
            assert_eq!(got.lines, lines_of(body(raw, got)), "lines at {path}")
        }
        (ExpectedKind::Leaf, BodyKind::Basic) => assert_ne!(expected.media_type, "text"),
        (ExpectedKind::Multipart(want), BodyKind::Multipart { parts }) => {
            assert_eq!(parts.len(), want.len(), "children at {path}");
            for (i, (w, g)) in want.iter().zip(parts).enumerate() {
                check_matches(raw, w, g, &format!("{path}.{}", i + 1));
            }
        }
        (ExpectedKind::Message(want), BodyKind::Message { envelope, body }) => {
            assert_eq!(got.lines, lines_of(self::body(raw, got)), "lines at {path}");
            assert_eq!(
                envelope.subject.as_deref(),
                Some("inner"),
                "envelope at {path}"
            );
            check_matches(raw, want, body, &format!("{path}.msg"));
        }
        (want, got) => panic!("kind at {path}: expected {want:?}, got {got:?}"),
    }
}

proptest! {
    // No regression file: failures found here are turned into the unit tests above.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic_and_offsets_are_consistent(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        let meta = message_meta(&raw);
        check_invariants(&raw, &meta.body, 0);
        prop_assert_eq!((meta.body.header_start, meta.body.end), (0, raw.len() as u64));
    }

    #[test]
    fn mime_like_garbage_never_panics_and_offsets_are_consistent(raw in fragments()) {
        let meta = message_meta(&raw);
        check_invariants(&raw, &meta.body, 0);
        prop_assert_eq!((meta.body.header_start, meta.body.end), (0, raw.len() as u64));
    }

    #[test]
    fn truncated_or_damaged_trees_never_panic(node in tree(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (mut raw, _) = render(&node);
        if !raw.is_empty() {
            let at = flip.index(raw.len());
            raw[at] = byte;
            let len = cut.index(raw.len() + 1);
            raw.truncate(len);
        }
        let meta = message_meta(&raw);
        check_invariants(&raw, &meta.body, 0);
    }

    #[test]
    fn generated_trees_parse_back_exactly(node in tree()) {
        let (raw, expected) = render(&node);
        let meta = message_meta(&raw);
        check_invariants(&raw, &meta.body, 0);
        prop_assert_eq!(meta.envelope.subject.as_deref(), Some("generated"));
        check_matches(&raw, &expected, &meta.body, "root");
    }
}
