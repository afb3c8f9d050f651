//! Framing of the RFC 4314 commands (SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS), and
//! the lexer every small framer of this crate shares (see also [`super::listext`]).
//!
//! Why not imap-codec: 2.0.0-alpha.10 has no ACL commands or responses. Their arguments are
//! only astrings (RFC 3501 atom, quoted string or literal), so this module reads a tag, the
//! command name and up to three astrings — with the same literal rules as every other
//! command (sizes checked before anything is allocated, synchronising literals answered with
//! a continuation request, `LITERAL+`) — and leaves the meaning to the session. Responses are
//! written with [`astring`], which quotes or uses a literal as needed.

/// One parsed ACL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclCommand {
    SetAcl {
        mailbox: Vec<u8>,
        identifier: String,
        rights: String,
    },
    DeleteAcl {
        mailbox: Vec<u8>,
        identifier: String,
    },
    GetAcl {
        mailbox: Vec<u8>,
    },
    ListRights {
        mailbox: Vec<u8>,
        identifier: String,
    },
    MyRights {
        mailbox: Vec<u8>,
    },
}

/// What a framer found at the start of the buffer; `C` is the command it frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek<C = AclCommand> {
    /// Not a command of this framer: let imap-codec have it.
    Other,
    /// A command of this framer whose end has not arrived yet.
    NeedMore,
    /// A synchronising literal of an acceptable size: send a continuation request; its
    /// data ends at this buffer offset.
    Continue(usize),
    /// A literal over the size limit (tag, size, synchronising?).
    TooBig(String, u64, bool),
    /// A complete command and the number of bytes it used.
    Command(String, C, usize),
    /// A complete but malformed command: (tag, why, bytes used).
    Bad(String, String, usize),
}

const NAMES: [&str; 5] = ["SETACL", "DELETEACL", "GETACL", "LISTRIGHTS", "MYRIGHTS"];

pub(super) fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b)
}

fn is_tag_char(b: u8) -> bool {
    is_atom_char(b) && b != b'+'
}

enum Tok {
    Value(Vec<u8>),
    /// End of line reached (position after CRLF).
    Eol(usize),
}

/// Reads astrings from `buf` at `pos`. `Err(Peek)` for need-more/continue/too-big/bad.
pub(super) struct Lexer<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub tag: String,
    /// Where the literal the client was invited to send ends (0: none).
    pub literal_end: usize,
    pub max_literal: u64,
}

impl Lexer<'_> {
    pub(super) fn bad<C>(&self, why: &str) -> Peek<C> {
        // Drop up to the end of the current line (if it has arrived).
        let end = self.buf[self.pos.min(self.buf.len())..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| self.pos + p + 2);
        match end {
            Some(e) => Peek::Bad(self.tag.clone(), why.to_string(), e),
            None => Peek::NeedMore,
        }
    }

    /// The end of the command at `pos` (CRLF): `Some(position after it)`; `None` when the
    /// next byte is something else.
    pub(super) fn eol<C>(&self) -> Result<Option<usize>, Peek<C>> {
        match self.buf.get(self.pos) {
            None => Err(Peek::NeedMore),
            Some(b'\r') => match self.buf.get(self.pos + 1) {
                None => Err(Peek::NeedMore),
                Some(b'\n') => Ok(Some(self.pos + 2)),
                Some(_) => Err(self.bad("stray CR")),
            },
            Some(_) => Ok(None),
        }
    }

    fn next<C>(&mut self) -> Result<Tok, Peek<C>> {
        if let Some(end) = self.eol()? {
            return Ok(Tok::Eol(end));
        }
        if self.buf.get(self.pos) != Some(&b' ') {
            return Err(self.bad("expected a space between arguments"));
        }
        self.pos += 1;
        match self.buf.get(self.pos) {
            None => Err(Peek::NeedMore),
            Some(b'"') => self.quoted().map(Tok::Value),
            Some(b'{') => self.literal().map(Tok::Value),
            Some(_) => {
                let v = self.run(is_atom_char)?;
                if v.is_empty() {
                    return Err(self.bad("expected an atom, a quoted string or a literal"));
                }
                Ok(Tok::Value(v))
            }
        }
    }

    /// The quoted string that starts at `pos`, unescaped.
    pub(super) fn quoted<C>(&mut self) -> Result<Vec<u8>, Peek<C>> {
        let b = self.buf;
        let mut out = Vec::new();
        let mut i = self.pos + 1;
        loop {
            match b.get(i) {
                None => return Err(Peek::NeedMore),
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(out);
                }
                Some(b'\\') => match b.get(i + 1) {
                    None => return Err(Peek::NeedMore),
                    Some(c @ (b'"' | b'\\')) => {
                        out.push(*c);
                        i += 2;
                    }
                    Some(_) => return Err(self.bad("bad escape in quoted string")),
                },
                Some(b'\r' | b'\n' | 0) => {
                    self.pos = i;
                    return Err(self.bad("unterminated quoted string"));
                }
                Some(c) => {
                    out.push(*c);
                    i += 1;
                }
            }
        }
    }

    /// The literal (`{n}` or `{n+}`, CRLF, data) that starts at `pos`: its size is checked
    /// before anything is allocated, and a synchronising one is answered with `Continue`.
    pub(super) fn literal<C>(&mut self) -> Result<Vec<u8>, Peek<C>> {
        let b = self.buf;
        let close = match b[self.pos..].iter().position(|c| *c == b'}') {
            Some(c) => self.pos + c,
            None if b.len() - self.pos > 24 => return Err(self.bad("bad literal")),
            None => return Err(Peek::NeedMore),
        };
        let spec = &b[self.pos + 1..close];
        let (digits, nonsync) = match spec.strip_suffix(b"+") {
            Some(d) => (d, true),
            None => (spec, false),
        };
        let Some(len) = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.len() <= 19)
            .and_then(|d| d.parse::<u64>().ok())
        else {
            return Err(self.bad("bad literal size"));
        };
        match b.get(close + 1..close + 3) {
            None | Some([b'\r']) => return Err(Peek::NeedMore),
            Some(b"\r\n") => {}
            Some(_) => return Err(self.bad("a literal's size must end the line")),
        }
        if len > self.max_literal {
            return Err(Peek::TooBig(self.tag.clone(), len, !nonsync));
        }
        let start = close + 3;
        let end = start + len as usize;
        if b.len() < end {
            if !nonsync && self.literal_end < end {
                return Err(Peek::Continue(end));
            }
            return Err(Peek::NeedMore);
        }
        self.pos = end;
        Ok(b[start..end].to_vec())
    }

    /// The bytes from `pos` on that `ok` accepts (possibly none). One that reaches the end of
    /// the buffer may go on in bytes not yet received: `NeedMore`.
    pub(super) fn run<C>(&mut self, ok: fn(u8) -> bool) -> Result<Vec<u8>, Peek<C>> {
        let start = self.pos;
        while self.buf.get(self.pos).is_some_and(|c| ok(*c)) {
            self.pos += 1;
        }
        if self.pos == self.buf.len() {
            return Err(Peek::NeedMore);
        }
        Ok(self.buf[start..self.pos].to_vec())
    }
}

/// Where a command the caller frames starts: tag and command name (one of `names`, any case).
pub(super) enum Head {
    /// Not one of `names` (or no usable tag): imap-codec's.
    Other,
    /// The name may be one of `names` but has not fully arrived.
    NeedMore,
    /// `names[which]`, with the tag, and where the arguments start (after the name).
    Found {
        which: usize,
        tag: String,
        pos: usize,
    },
}

/// Reads `tag SP name` and tells whether `name` is one of `names`.
pub(super) fn head(buf: &[u8], names: &[&str]) -> Head {
    // tag SP name (SP | CRLF)
    let Some(sp) = buf.iter().position(|b| *b == b' ') else {
        return Head::Other;
    };
    let tag = &buf[..sp];
    if tag.is_empty() || !tag.iter().all(|b| is_tag_char(*b)) {
        return Head::Other;
    }
    let rest = &buf[sp + 1..];
    let name_len = rest
        .iter()
        .position(|b| *b == b' ' || *b == b'\r')
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    let Some(which) = names
        .iter()
        .position(|n| n.as_bytes().eq_ignore_ascii_case(name))
    else {
        return Head::Other;
    };
    if name_len == rest.len() {
        return Head::NeedMore;
    }
    Head::Found {
        which,
        tag: String::from_utf8_lossy(tag).into_owned(),
        pos: sp + 1 + name_len,
    }
}

/// Looks at the start of `buf` for an ACL command. `literal_end` is where the literal the
/// client was invited to send ends (0: none).
pub fn peek(buf: &[u8], literal_end: usize, max_literal: u64) -> Peek {
    let (which, tag, pos) = match head(buf, &NAMES) {
        Head::Other => return Peek::Other,
        Head::NeedMore => return Peek::NeedMore,
        Head::Found { which, tag, pos } => (which, tag, pos),
    };
    let mut lx = Lexer {
        buf,
        pos,
        tag,
        literal_end,
        max_literal,
    };
    let want = match which {
        0 => 3,
        1 | 3 => 2,
        _ => 1,
    };
    let mut args: Vec<Vec<u8>> = Vec::new();
    let end = loop {
        match lx.next() {
            Ok(Tok::Value(v)) => {
                if args.len() == want {
                    return lx.bad("too many arguments");
                }
                args.push(v);
            }
            Ok(Tok::Eol(end)) => break end,
            Err(p) => return p,
        }
    };
    let tag = lx.tag.clone();
    if args.len() != want {
        return Peek::Bad(
            tag,
            format!("{} takes {want} argument(s)", NAMES[which]),
            end,
        );
    }
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).map_err(|_| ());
    let mut it = args.into_iter();
    let mailbox = it.next().unwrap_or_default();
    let cmd = match which {
        0 => {
            let (Ok(identifier), Ok(rights)) = (
                text(&it.next().unwrap_or_default()),
                text(&it.next().unwrap_or_default()),
            ) else {
                return Peek::Bad(tag, "identifier and rights must be UTF-8".into(), end);
            };
            AclCommand::SetAcl {
                mailbox,
                identifier,
                rights,
            }
        }
        1 | 3 => {
            let Ok(identifier) = text(&it.next().unwrap_or_default()) else {
                return Peek::Bad(tag, "identifier must be UTF-8".into(), end);
            };
            if which == 1 {
                AclCommand::DeleteAcl {
                    mailbox,
                    identifier,
                }
            } else {
                AclCommand::ListRights {
                    mailbox,
                    identifier,
                }
            }
        }
        2 => AclCommand::GetAcl { mailbox },
        _ => AclCommand::MyRights { mailbox },
    };
    Peek::Command(tag, cmd, end)
}

/// An astring for a response: an atom when it is one, a quoted string when it can be, a
/// literal otherwise.
pub fn astring(s: &[u8]) -> Vec<u8> {
    if !s.is_empty() && s.iter().all(|b| is_atom_char(*b)) {
        return s.to_vec();
    }
    if s.iter().all(|b| *b >= 0x20 && *b < 0x7f) {
        let mut out = vec![b'"'];
        for b in s {
            if *b == b'"' || *b == b'\\' {
                out.push(b'\\');
            }
            out.push(*b);
        }
        out.push(b'"');
        return out;
    }
    let mut out = format!("{{{}}}\r\n", s.len()).into_bytes();
    out.extend_from_slice(s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmd(input: &[u8]) -> Peek {
        peek(input, 0, 1 << 20)
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(
            cmd(b"a1 SETACL INBOX bob@x.test +lr\r\n"),
            Peek::Command(
                "a1".into(),
                AclCommand::SetAcl {
                    mailbox: b"INBOX".to_vec(),
                    identifier: "bob@x.test".into(),
                    rights: "+lr".into()
                },
                32
            )
        );
        assert!(matches!(
            cmd(b"t getacl \"Work/Q\\\"1\"\r\n"),
            Peek::Command(_, AclCommand::GetAcl { mailbox }, _) if mailbox == b"Work/Q\"1"
        ));
        assert!(matches!(
            cmd(b"t MyRights INBOX\r\n"),
            Peek::Command(_, AclCommand::MyRights { .. }, 18)
        ));
        assert!(matches!(
            cmd(b"t DELETEACL INBOX anyone\r\n"),
            Peek::Command(_, AclCommand::DeleteAcl { .. }, _)
        ));
        assert!(matches!(
            cmd(b"t LISTRIGHTS INBOX {3+}\r\nbob\r\n"),
            Peek::Command(_, AclCommand::ListRights { identifier, .. }, 30) if identifier == "bob"
        ));
    }

    #[test]
    fn other_commands_and_partial_input() {
        assert_eq!(cmd(b"a1 SELECT INBOX\r\n"), Peek::Other);
        assert_eq!(cmd(b"a1 SETACLX INBOX\r\n"), Peek::Other);
        assert_eq!(cmd(b"a1 SETACL INBOX bob"), Peek::NeedMore);
        assert_eq!(cmd(b"a1 GETACL \"INB"), Peek::NeedMore);
        assert_eq!(cmd(b"a1 GETACL {5}\r\n"), Peek::Continue(20));
        assert_eq!(peek(b"a1 GETACL {5}\r\nIN", 20, 100), Peek::NeedMore);
        assert_eq!(
            cmd(b"a1 GETACL {2147483648}\r\n"),
            Peek::TooBig("a1".into(), 2147483648, true)
        );
        assert!(matches!(cmd(b"a1 GETACL\r\n"), Peek::Bad(_, _, 11)));
        assert!(matches!(
            cmd(b"a1 GETACL INBOX extra\r\nnext"),
            Peek::Bad(_, _, 23)
        ));
        assert!(matches!(cmd(b"a1 GETACL  INBOX\r\n"), Peek::Bad(..)));
    }

    #[test]
    fn astring_forms() {
        assert_eq!(astring(b"INBOX"), b"INBOX");
        assert_eq!(astring(b"Other Users/a"), b"\"Other Users/a\"");
        assert_eq!(astring(b"a\"b"), b"\"a\\\"b\"");
        assert_eq!(astring(b""), b"\"\"");
        assert_eq!(astring("é".as_bytes()), b"{2}\r\n\xc3\xa9");
    }

    proptest! {
        /// Whatever arrives, in whatever pieces: no panic, and a complete command never uses
        /// more bytes than it was given.
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
            let cut = cut.min(input.len());
            for part in [&input[..cut], &input[..]] {
                match peek(part, 0, 1000) {
                    Peek::Command(_, _, used) | Peek::Bad(_, _, used) => prop_assert!(used <= part.len()),
                    Peek::Continue(end) => prop_assert!(end > part.len()),
                    _ => {}
                }
            }
        }

        /// A command written with astring() parses back to the same arguments.
        #[test]
        fn round_trip(mailbox in proptest::collection::vec(any::<u8>(), 0..40), id in "[ -~]{0,20}", rights in "[+-]?[lrswipkxtea]{0,11}") {
            let mut line = b"x SETACL ".to_vec();
            for a in [&mailbox[..], id.as_bytes(), rights.as_bytes()] {
                line.extend(astring(a));
                line.push(b' ');
            }
            line.pop();
            line.extend_from_slice(b"\r\n");
            let mut literal_end = 0;
            loop {
                match peek(&line, literal_end, 1000) {
                    Peek::Continue(end) => literal_end = end,
                    Peek::Command(tag, c, used) => {
                        prop_assert_eq!(tag, "x");
                        prop_assert_eq!(used, line.len());
                        prop_assert_eq!(c, AclCommand::SetAcl { mailbox: mailbox.clone(), identifier: id.clone(), rights: rights.clone() });
                        break;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
