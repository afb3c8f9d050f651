//! Framing of MULTIAPPEND (RFC 3502): `tag APPEND mailbox 1*(SP [flags SP] [date SP] literal)`.
//!
//! Why not imap-codec: 2.0.0-alpha.10 parses an APPEND of one message and fails at the space
//! that starts a second one. Its grammar is not repeated here: a one-message APPEND is left to
//! imap-codec entirely, and a longer one is only *split* at its literals: each message becomes
//! the bytes of a one-message `tag APPEND mailbox [flags] [date] literal` command that the
//! session hands to imap-codec, so flags, dates and names are parsed by imap-codec alone.
//!
//! What this module does is framing: it finds the command's lines and literals (with the same
//! rules as every other command: sizes checked before anything is read, a continuation request
//! for each synchronising literal, `LITERAL+`, literal8 `~{n}`), and bounds the whole command
//! by `max_total` bytes of message data.
//!
//! It also takes RFC 6855's `UTF8 (literal8)` data item (a message with UTF-8 headers), which
//! imap-codec does not parse, in an APPEND of one message or several: the wrapper is cut
//! away, leaving the literal8 for imap-codec, and [`Appends::utf8`] tells the session, which
//! takes it only after ENABLE UTF8=ACCEPT. (A plain literal inside the wrapper is taken
//! too: the grammar asks for a literal8, and nothing is lost by being lenient.)

/// What the framer found: the shape every framer of ours answers with (see `acl`).
pub type Peek = super::acl::Peek<Appends>;

/// A complete APPEND this framer took.
#[derive(Debug, PartialEq, Eq)]
pub struct Appends {
    /// One one-message APPEND command per message, for imap-codec.
    pub parts: Vec<Vec<u8>>,
    /// Some message came as RFC 6855's `UTF8 (literal8)`.
    pub utf8: bool,
}

/// A line of the command up to a literal (or its end), and the literal after it.
struct Piece {
    /// The line's text without its literal marker and CRLF (and without the `UTF8 (` of a
    /// UTF8 data item).
    text: std::ops::Range<usize>,
    /// The literal's data and whether it is a literal8, if the line ends with one.
    literal: Option<(std::ops::Range<usize>, bool)>,
}

/// What opens RFC 6855's UTF8 data item, `"UTF8" SP "(" literal8 ")"`, before its literal.
const UTF8_OPEN: &[u8] = b" UTF8 (";

/// Whether the text before a literal ends with [`UTF8_OPEN`] (any case).
fn opens_utf8_item(text: &[u8]) -> bool {
    text.len() >= UTF8_OPEN.len()
        && text[text.len() - UTF8_OPEN.len()..].eq_ignore_ascii_case(UTF8_OPEN)
}

/// Longest line between literals this framer waits for.
const MAX_LINE: usize = 8192;

/// `{n}`, `{n+}`, `~{n}` or `~{n+}` at the end of `line`: (where it starts, n, synchronising,
/// literal8).
pub(super) fn literal_marker(line: &[u8]) -> Option<(usize, u64, bool, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let spec = &body[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let eight = open > 0 && line[open - 1] == b'~';
    Some((if eight { open - 1 } else { open }, n, sync, eight))
}

/// The end of the mailbox argument at the start of `text` (an atom or a quoted string).
fn mailbox_end(text: &[u8]) -> Option<usize> {
    if text.first() == Some(&b'"') {
        let mut i = 1;
        while i < text.len() {
            match text[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        return None;
    }
    let end = text.iter().position(|b| *b == b' ').unwrap_or(text.len());
    (end > 0).then_some(end)
}

/// Looks at the start of `buf` for an APPEND of more than one message, or with a UTF8 data
/// item. `literal_end` is where the literal the client was invited to send ends (0: none).
///
/// Until the line with the first message's literal has arrived, an APPEND may still turn out
/// to be one of these (`UTF8 (` comes just before that literal): it waits for the line, and
/// leaves it to imap-codec once it knows it is a plain one.
pub fn peek(buf: &[u8], literal_end: usize, max_literal: u64, max_total: u64) -> Peek {
    let Some(sp) = buf.iter().position(|b| *b == b' ') else {
        return Peek::Other;
    };
    let tag = String::from_utf8_lossy(&buf[..sp]).into_owned();
    let start = sp + 1 + b"APPEND ".len();
    match buf.get(sp + 1..start) {
        Some(w) if w.eq_ignore_ascii_case(b"APPEND ") => {}
        _ => return Peek::Other,
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut pos = start;
    let mut total = 0u64;
    // Literals after the mailbox's own (if it is one) are messages.
    let mut messages = 0;
    // Some message is a UTF8 data item: the command is this framer's, however many.
    let mut utf8 = false;
    loop {
        let multi = utf8 || messages >= 2 || (messages == 1 && buf.get(pos) == Some(&b' '));
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return match multi {
                true if buf.len() - pos > MAX_LINE => bad(tag, "line too long", buf),
                true => Peek::NeedMore,
                // The first message's line may yet end in `UTF8 (~{n}`.
                false if messages == 0 => Peek::NeedMore,
                false => Peek::Other,
            };
        };
        let line = &buf[pos..pos + eol];
        let Some((at, n, sync, eight)) = literal_marker(line) else {
            if !multi {
                return Peek::Other;
            }
            pieces.push(Piece {
                text: pos..pos + eol,
                literal: None,
            });
            return finish(&tag, buf, &pieces, pos + eol + 2, utf8);
        };
        let is_mailbox = pieces.is_empty() && at == 0;
        let item = !is_mailbox && opens_utf8_item(&line[..at]);
        utf8 |= item;
        if !is_mailbox {
            messages += 1;
            total += n;
        }
        let ours = utf8 || multi || messages >= 2;
        if n > max_literal || (messages >= 2 && total > max_total) {
            return match ours {
                true => Peek::TooBig(tag, n, sync),
                false => Peek::Other,
            };
        }
        let data = pos + eol + 2;
        let end = data + n as usize;
        if buf.len() < end {
            if !ours {
                return Peek::Other;
            }
            return if sync && literal_end < end {
                Peek::Continue(end)
            } else {
                Peek::NeedMore
            };
        }
        let text_end = if item {
            pos + at + 1 - UTF8_OPEN.len()
        } else {
            pos + at
        };
        pieces.push(Piece {
            text: pos..text_end,
            literal: Some((data..end, eight)),
        });
        pos = end;
        if item {
            // The item's closing parenthesis, right after the literal.
            match buf.get(end) {
                None => return Peek::NeedMore,
                Some(b')') => pos += 1,
                Some(_) => return unclosed(tag, buf, end),
            }
        }
    }
}

/// A UTF8 data item whose literal is not followed by `)`: BAD, once its line has ended.
fn unclosed(tag: String, buf: &[u8], from: usize) -> Peek {
    match buf[from..].windows(2).position(|w| w == b"\r\n") {
        Some(p) => {
            let why = "a UTF8 data item ends with \")\" right after its literal";
            Peek::Bad(tag, why.into(), from + p + 2)
        }
        None => Peek::NeedMore,
    }
}

fn bad(tag: String, why: &str, buf: &[u8]) -> Peek {
    Peek::Bad(tag, why.to_string(), buf.len())
}

/// Splits a complete command into one-message APPEND commands (`utf8`: some message was a
/// UTF8 data item).
fn finish(tag: &str, buf: &[u8], pieces: &[Piece], used: usize, utf8: bool) -> Peek {
    let last = &pieces[pieces.len() - 1];
    if !buf[last.text.clone()].is_empty() {
        return Peek::Bad(
            tag.to_string(),
            "unexpected text after the last message".into(),
            used,
        );
    }
    // The mailbox: a literal of its own, or the first word of the first line.
    let (mailbox, first) = match &pieces[0] {
        Piece {
            text,
            literal: Some((data, false)),
        } if text.is_empty() => {
            let mut m = format!("{{{}+}}\r\n", data.len()).into_bytes();
            m.extend_from_slice(&buf[data.clone()]);
            (m, 1)
        }
        Piece { text, .. } => match mailbox_end(&buf[text.clone()]) {
            Some(e) => (buf[text.start..text.start + e].to_vec(), 0),
            None => return Peek::Bad(tag.to_string(), "bad mailbox name".into(), used),
        },
    };
    let mut commands = Vec::new();
    for (i, p) in pieces[first..pieces.len() - 1].iter().enumerate() {
        let Some((data, eight)) = &p.literal else {
            continue;
        };
        let mut text = &buf[p.text.clone()];
        if i == 0 && first == 0 {
            text = &text[mailbox.len()..];
        }
        let mut c = format!("{tag} APPEND ").into_bytes();
        c.extend_from_slice(&mailbox);
        c.extend_from_slice(text);
        if !text.ends_with(b" ") {
            c.push(b' ');
        }
        c.extend_from_slice(
            format!("{}{{{}+}}\r\n", if *eight { "~" } else { "" }, data.len()).as_bytes(),
        );
        c.extend_from_slice(&buf[data.clone()]);
        c.extend_from_slice(b"\r\n");
        commands.push(c);
    }
    let appends = Appends {
        parts: commands,
        utf8,
    };
    Peek::Command(tag.to_string(), appends, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 1 << 20;

    #[test]
    fn one_message_is_left_to_imap_codec() {
        for cmd in [
            &b"a APPEND INBOX {3}\r\nabc\r\n"[..],
            b"a APPEND INBOX (\\Seen) {3+}\r\nabc\r\n",
            b"a APPEND INBOX {3}\r\n",
            b"a APPEND INBOX {3}\r\nab",
            b"a APPEND INBOX {3}\r\nabc",
            b"a NOOP\r\n",
            b"a LOGIN {5}\r\nalice {3}\r\npw!\r\n",
        ] {
            assert_eq!(
                peek(cmd, 0, MAX, MAX),
                Peek::Other,
                "{}",
                String::from_utf8_lossy(cmd)
            );
        }
    }

    #[test]
    fn several_messages_are_split_into_one_message_appends() {
        let cmd = b"a1 APPEND \"Sent Items\" (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {3+}\r\nabc (\\Draft) {2+}\r\nde ~{1+}\r\nf\r\n";
        let Peek::Command(tag, Appends { parts, utf8 }, used) = peek(cmd, 0, MAX, MAX) else {
            panic!("{:?}", peek(cmd, 0, MAX, MAX));
        };
        assert_eq!((tag.as_str(), used, utf8), ("a1", cmd.len(), false));
        let parts: Vec<String> = parts
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(
            parts,
            [
                "a1 APPEND \"Sent Items\" (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {3+}\r\nabc\r\n",
                "a1 APPEND \"Sent Items\" (\\Draft) {2+}\r\nde\r\n",
                "a1 APPEND \"Sent Items\" ~{1+}\r\nf\r\n",
            ]
        );
    }

    #[test]
    fn a_mailbox_literal_is_kept_as_one() {
        let cmd = b"t APPEND {5}\r\nINBOX {1}\r\nx {1}\r\ny\r\n";
        let parts = vec![
            b"t APPEND {5+}\r\nINBOX {1+}\r\nx\r\n".to_vec(),
            b"t APPEND {5+}\r\nINBOX {1+}\r\ny\r\n".to_vec(),
        ];
        assert_eq!(
            peek(cmd, 0, MAX, MAX),
            Peek::Command("t".into(), Appends { parts, utf8: false }, cmd.len())
        );
    }

    #[test]
    fn synchronising_literals_after_the_first_get_continuations() {
        let head = b"t APPEND INBOX {1}\r\nx {4}\r\n";
        assert_eq!(peek(head, 0, MAX, MAX), Peek::Continue(head.len() + 4));
        assert_eq!(peek(head, head.len() + 4, MAX, MAX), Peek::NeedMore);
        assert_eq!(
            peek(b"t APPEND INBOX {1}\r\nx {4+}\r\nab", 0, MAX, MAX),
            Peek::NeedMore
        );
        // The whole command is bounded, not only each message.
        assert_eq!(
            peek(b"t APPEND INBOX {1}\r\nx {9}\r\n", 0, MAX, 5),
            Peek::TooBig("t".into(), 9, true)
        );
        assert_eq!(
            peek(b"t APPEND INBOX {1}\r\nx {9999999}\r\n", 0, MAX, MAX),
            Peek::TooBig("t".into(), 9_999_999, true)
        );
    }

    /// What `peek` makes of `cmd` when it is complete: the parts as text and the UTF8 mark.
    fn split(cmd: &[u8]) -> (Vec<String>, bool) {
        let Peek::Command(_, Appends { parts, utf8 }, used) = peek(cmd, 0, MAX, MAX) else {
            panic!("{:?}", peek(cmd, 0, MAX, MAX));
        };
        assert_eq!(used, cmd.len());
        let parts = parts
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        (parts.collect(), utf8)
    }

    #[test]
    fn a_utf8_data_item_becomes_a_literal8_and_is_marked() {
        let (parts, utf8) = split(b"u APPEND INBOX (\\Seen) utf8 (~{3+}\r\nabc)\r\n");
        assert_eq!(parts, ["u APPEND INBOX (\\Seen) ~{3+}\r\nabc\r\n"]);
        assert!(utf8);
        let (parts, utf8) = split(b"u APPEND \"a b\" UTF8 (~{1+}\r\nx) {1+}\r\ny\r\n");
        assert_eq!(
            parts,
            [
                "u APPEND \"a b\" ~{1+}\r\nx\r\n",
                "u APPEND \"a b\" {1+}\r\ny\r\n"
            ]
        );
        assert!(utf8);
        let (parts, _) = split(b"u APPEND {5}\r\nINBOX UTF8 (~{1}\r\nz)\r\n");
        assert_eq!(parts, ["u APPEND {5+}\r\nINBOX ~{1+}\r\nz\r\n"]);
    }

    #[test]
    fn a_utf8_data_item_is_framed_here_from_its_first_byte() {
        // imap-codec would refuse `UTF8`: the framer waits for the line, asks for the
        // literal, and for the closing parenthesis.
        assert_eq!(peek(b"u APPEND INBOX UT", 0, MAX, MAX), Peek::NeedMore);
        let head = b"u APPEND INBOX UTF8 (~{3}\r\n";
        assert_eq!(peek(head, 0, MAX, MAX), Peek::Continue(head.len() + 3));
        let data = [&head[..], b"abc"].concat();
        assert_eq!(peek(&data, head.len() + 3, MAX, MAX), Peek::NeedMore);
        assert_eq!(
            peek(b"u APPEND INBOX UTF8 (~{9}\r\n", 0, 5, MAX),
            Peek::TooBig("u".into(), 9, true)
        );
        let unclosed = b"u APPEND INBOX UTF8 (~{1+}\r\nx x\r\nv NOOP\r\n";
        let Peek::Bad(tag, _, used) = peek(unclosed, 0, MAX, MAX) else {
            panic!("{:?}", peek(unclosed, 0, MAX, MAX));
        };
        assert_eq!(
            (tag.as_str(), used),
            ("u", unclosed.len() - b"v NOOP\r\n".len())
        );
        // A plain one-message APPEND is still imap-codec's once its line is in.
        assert_eq!(peek(b"u APPEND INBOX {3}\r\n", 0, MAX, MAX), Peek::Other);
    }

    proptest! {
        /// Any command that is not an APPEND of several messages is left alone, whatever its
        /// bytes.
        #[test]
        fn other_commands_are_left_alone(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut cmd = b"x NOOP".to_vec();
            cmd.extend_from_slice(&tail);
            prop_assert_eq!(peek(&cmd, 0, MAX, MAX), Peek::Other);
        }

        /// Split parts parse back, with imap-codec, to the messages that were sent (any bytes
        /// but NUL, which no IMAP literal may carry).
        #[test]
        fn parts_parse_back_to_the_messages(msgs in proptest::collection::vec(proptest::collection::vec(1u8.., 1..50), 2..5)) {
            use imap_codec::CommandCodec;
            use imap_codec::decode::Decoder;
            use imap_codec::imap_types::command::CommandBody;
            use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
            let mut cmd = b"m APPEND INBOX".to_vec();
            for m in &msgs {
                cmd.extend_from_slice(format!(" (\\Seen) {{{}+}}\r\n", m.len()).as_bytes());
                cmd.extend_from_slice(m);
            }
            cmd.extend_from_slice(b"\r\n");
            let Peek::Command(_, Appends { parts, .. }, used) = peek(&cmd, 0, MAX, MAX) else {
                panic!("not split");
            };
            prop_assert_eq!(used, cmd.len());
            prop_assert_eq!(parts.len(), msgs.len());
            for (p, m) in parts.iter().zip(&msgs) {
                let (rest, c) = CommandCodec::default().decode(p).unwrap();
                prop_assert!(rest.is_empty());
                let CommandBody::Append { message: LiteralOrLiteral8::Literal(l), .. } = c.body else {
                    panic!("not an append");
                };
                prop_assert_eq!(l.as_ref(), &m[..]);
            }
        }
    }
}
