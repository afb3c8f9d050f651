//! The IMAP4rev1 server: accepting connections, framing commands (imap-codec, with literal
//! limits enforced before anything is allocated; `acl` frames the RFC 4314 commands it lacks,
//! and `esearch`'s pre-pass the ESEARCH/SEARCHRES syntax it lacks), and the session state
//! machine.

mod acl;
mod binary;
pub(crate) mod conn;
mod esearch;
mod fetch;
mod listext;
mod multiappend;
mod names;
mod objectid;
mod op;
mod search;
mod session;
mod sharing;
mod sort;

use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::command::Command;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{Code, Response, Status};
use imap_codec::{CommandCodec, ResponseCodec};

use crate::Shared;
use conn::Conn;

pub use session::capabilities;

/// Serves one admitted connection (TLS already up on an implicit-TLS port).
pub(crate) async fn serve(accepted: halyard_net::Accepted, shared: Arc<Shared>) {
    let write_timeout = Duration::from_secs(shared.cfg.write_timeout_secs);
    let peer = accepted.peer;
    let conn = Conn::new(accepted.stream, peer, write_timeout);
    let mut s = session::Session::new(shared, conn);
    if let Err(e) = s.run().await {
        tracing::debug!(peer = %peer, error = %e, "IMAP session ended");
    }
}

/// A session relayed from another node's multiplexor (see [`crate::serve_relayed`]).
pub(crate) async fn serve_relayed(conn: Conn, shared: Arc<Shared>, open: crate::RelayOpen) {
    let peer = conn.peer;
    let mut s = session::Session::new(shared, conn);
    if let Err(e) = s.run_relayed(open.principal, open.via_node).await {
        tracing::debug!(peer = %peer, error = %e, "relayed IMAP session ended");
    }
}

/// Serialises one response.
pub(crate) fn encode(r: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(r).dump()
}

/// Text for status responses: IMAP `text` is 7-bit (imap-types refuses CR, LF, NUL, bytes
/// above 0x7f and empty text). A reason that quotes a user's name or a header may hold
/// anything: control characters become spaces and non-ASCII characters `?`, so the response
/// is always sent (a refused text used to turn into `* BAD internal error encoding`).
fn clean(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if !c.is_ascii() {
                '?'
            } else {
                c
            }
        })
        .collect();
    if t.trim().is_empty() {
        "done".into()
    } else if let Some(rest) = t.strip_prefix('[') {
        // A text that opens with `[` would read as a response code: quoted content must
        // never inject one.
        format!("({rest}")
    } else {
        t
    }
}

pub(crate) enum Kind {
    Ok,
    No,
    Bad,
}

/// A tagged (or untagged when `tag` is None) status response.
pub(crate) fn status(
    kind: Kind,
    tag: Option<&Tag<'_>>,
    code: Option<Code<'_>>,
    text: &str,
) -> Vec<u8> {
    let text = clean(text);
    let tag = tag.cloned();
    let s = match kind {
        Kind::Ok => Status::ok(tag, code, text.as_str()),
        Kind::No => Status::no(tag, code, text.as_str()),
        Kind::Bad => Status::bad(tag, code, text.as_str()),
    };
    match s {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BAD internal error encoding a response\r\n".to_vec(),
    }
}

pub(crate) fn bye(text: &str) -> Vec<u8> {
    match Status::bye(None, clean(text).as_str()) {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BYE\r\n".to_vec(),
    }
}

/// The result of trying to take one command from the buffer.
pub(crate) enum Framed {
    /// A command, with what the ESEARCH/SEARCHRES pre-pass took out of it (see [`esearch`]).
    Command(Box<Command<'static>>, esearch::Extras),
    /// More bytes are needed.
    NeedMore,
    /// A synchronising literal of this size may be sent: send a continuation request.
    Continue,
    /// Answer with this and go on (the bad input has been removed from the buffer).
    Reject(Vec<u8>),
    /// Answer with this, then drop input up to the end of the current line (not yet arrived).
    RejectLine(Vec<u8>),
    /// Answer with this and close the connection.
    Fatal(Vec<u8>),
    /// An RFC 4314 command (imap-codec has none; see [`acl`]).
    Acl(Tag<'static>, acl::AclCommand),
    /// An extended LIST, STATUS with APPENDLIMIT, or CREATE with parameters (forms
    /// imap-codec does not parse; see [`listext`]).
    Ext(Tag<'static>, listext::ExtCommand),
    /// An APPEND of several messages (RFC 3502), or with RFC 6855's UTF8 data item, as
    /// one-message APPEND commands for imap-codec (see [`multiappend`]).
    MultiAppend(Tag<'static>, multiappend::Appends),
}

/// Input so far is an incomplete command: fine while the current line stays within the limit.
///
/// imap-codec reports a literal (`LiteralFound`) only when the input ends right after its
/// `{n}`; a LITERAL+ client sends the data with it, and then imap-codec just says
/// "incomplete". So the command's lines and literals are walked here: inside a literal's data
/// nothing counts as line length (and `literal_end` remembers where it ends, so this walk
/// happens once per literal), a literal over `max_literal` ends the connection (its data is
/// already on its way), and only the current line is held to `max_line`.
///
/// The whole command (its lines and literals) is held to [`max_command_bytes`]: without
/// that, a SEARCH with one short literal after another (`TEXT {1}`, `TEXT {1}`, ...) would
/// grow the buffer without end (seen while writing the `imap_command` fuzz target's bound).
fn need_more(buf: &[u8], literal_end: &mut usize, max_line: usize, max_literal: u64) -> Framed {
    if buf.len() <= *literal_end {
        return Framed::NeedMore;
    }
    let max_command = max_command_bytes(max_line, max_literal);
    let too_long = || Framed::Fatal(bye(&format!("command longer than {max_command} bytes")));
    let mut line_start = 0;
    while let Some(p) = buf[line_start..].windows(2).position(|w| w == b"\r\n") {
        let next = line_start + p + 2;
        line_start = match multiappend::literal_marker(&buf[line_start..line_start + p]) {
            Some((_, n, _, _)) if n > max_literal => {
                *literal_end = 0;
                return Framed::Fatal(bye(&format!(
                    "literal of {n} bytes is over the {max_literal}-byte limit"
                )));
            }
            Some((_, n, _, _)) if next + n as usize > max_command => {
                *literal_end = 0;
                return too_long();
            }
            Some((_, n, _, _)) if next + n as usize >= buf.len() => {
                *literal_end = next + n as usize;
                return Framed::NeedMore;
            }
            Some((_, n, _, _)) => next + n as usize,
            None => next,
        };
    }
    if buf.len() - line_start > max_line {
        *literal_end = 0;
        return Framed::Fatal(bye(&format!("command line longer than {max_line} bytes")));
    }
    if buf.len() > max_command {
        *literal_end = 0;
        return too_long();
    }
    Framed::NeedMore
}

/// The most one command may hold, its lines and literals together: four literals of the
/// largest size (what a MULTIAPPEND may carry) and four lines of the longest length.
pub(crate) fn max_command_bytes(max_line: usize, max_literal: u64) -> usize {
    usize::try_from(max_literal)
        .unwrap_or(usize::MAX)
        .saturating_mul(4)
        .saturating_add(max_line.saturating_mul(4))
}

/// A literal over the limit: NO before any of it is read (synchronising), or hang up (the
/// data of a non-synchronising literal is already on its way).
fn literal_too_big(
    input: &mut bytes::BytesMut,
    literal_end: &mut usize,
    tag: Option<&Tag<'_>>,
    length: u64,
    max_literal: u64,
    sync: bool,
) -> Framed {
    let text = format!("literal of {length} bytes is over the {max_literal}-byte limit");
    too_big(input, literal_end, tag, text, sync)
}

/// A literal that would make its command too big: as [`literal_too_big`], with `text`.
fn too_big(
    input: &mut bytes::BytesMut,
    literal_end: &mut usize,
    tag: Option<&Tag<'_>>,
    text: String,
    sync: bool,
) -> Framed {
    *literal_end = 0;
    if sync {
        let r = status(Kind::No, tag, Some(Code::TooBig), &text);
        input.clear();
        Framed::Reject(r)
    } else {
        Framed::Fatal(bye(&text))
    }
}

/// What one of the small framers ([`acl`], [`listext`]) found, as a [`Framed`]; `None` when
/// the command is not theirs (imap-codec's then). `limits`: longest line, largest literal.
fn framed_by<C>(
    peek: acl::Peek<C>,
    input: &mut bytes::BytesMut,
    literal_end: &mut usize,
    limits: (usize, u64),
    command: fn(Tag<'static>, C) -> Framed,
) -> Option<Framed> {
    let (max_line, max_literal) = limits;
    Some(match peek {
        acl::Peek::Other => return None,
        acl::Peek::NeedMore => need_more(input, literal_end, max_line, max_literal),
        acl::Peek::Continue(end) => {
            *literal_end = end;
            Framed::Continue
        }
        acl::Peek::TooBig(tag, length, sync) => {
            let tag = Tag::try_from(tag).ok();
            literal_too_big(input, literal_end, tag.as_ref(), length, max_literal, sync)
        }
        acl::Peek::Command(tag, cmd, used) => {
            let _ = input.split_to(used);
            *literal_end = 0;
            match Tag::try_from(tag) {
                Ok(t) => command(t, cmd),
                Err(_) => Framed::Reject(status(Kind::Bad, None, None, "invalid tag")),
            }
        }
        acl::Peek::Bad(tag, why, used) => {
            let _ = input.split_to(used);
            *literal_end = 0;
            let tag = Tag::try_from(tag).ok();
            Framed::Reject(status(Kind::Bad, tag.as_ref(), None, &why))
        }
    })
}

/// Takes the next command out of the connection's buffer. `literal_end` remembers where the
/// literal being received ends (0: none), so literal bytes do not count as line length.
pub(crate) fn frame(
    input: &mut bytes::BytesMut,
    literal_end: &mut usize,
    max_line: usize,
    max_literal: u64,
) -> Framed {
    use imap_codec::decode::CommandDecodeError;
    use imap_codec::imap_types::core::LiteralMode;
    let acl = acl::peek(input, *literal_end, max_literal);
    let limits = (max_line, max_literal);
    if let Some(f) = framed_by(acl, input, literal_end, limits, Framed::Acl) {
        return f;
    }
    let ext = listext::peek(input, *literal_end, max_literal);
    if let Some(f) = framed_by(ext, input, literal_end, limits, Framed::Ext) {
        return f;
    }
    // All messages of one MULTIAPPEND together stay within a few literals' worth.
    let total = max_literal.saturating_mul(4);
    let multi = multiappend::peek(input, *literal_end, max_literal, total);
    if let Some(f) = framed_by(multi, input, literal_end, limits, Framed::MultiAppend) {
        return f;
    }
    let buf: &[u8] = input;
    // imap-codec reads the command with its RETURN clause cut out and `$` replaced.
    let rewrite = match esearch::prepass(buf) {
        esearch::Prepass::Same => None,
        esearch::Prepass::NeedMore => return need_more(buf, literal_end, max_line, max_literal),
        esearch::Prepass::Rewritten(r) => Some(r),
    };
    let parse: &[u8] = rewrite.as_ref().map_or(buf, |r| &r.bytes);
    match CommandCodec::default().decode_static(parse) {
        Ok((rest, cmd)) => {
            let used = parse.len() - rest.len();
            let (used, extras) = match &rewrite {
                Some(r) => (r.original_len(used), r.extras.clone()),
                None => (used, esearch::Extras::default()),
            };
            let _ = input.split_to(used);
            *literal_end = 0;
            Framed::Command(Box::new(cmd), extras)
        }
        Err(CommandDecodeError::Incomplete) => need_more(buf, literal_end, max_line, max_literal),
        Err(CommandDecodeError::LiteralFound { tag, length, mode }) => {
            let max_command = max_command_bytes(max_line, max_literal);
            let sync = mode == LiteralMode::Sync;
            if u64::from(length) <= max_literal
                && buf.len().saturating_add(length as usize) > max_command
            {
                let text = format!("command longer than {max_command} bytes");
                too_big(input, literal_end, Some(&tag), text, sync)
            } else if u64::from(length) > max_literal {
                literal_too_big(
                    input,
                    literal_end,
                    Some(&tag),
                    u64::from(length),
                    max_literal,
                    sync,
                )
            } else {
                // The literal ends the client's bytes as it ends the rewritten ones.
                *literal_end = buf.len() + length as usize;
                match mode {
                    LiteralMode::Sync => Framed::Continue,
                    LiteralMode::NonSync => Framed::NeedMore,
                }
            }
        }
        Err(CommandDecodeError::Failed) => {
            *literal_end = 0;
            // Drop the offending line; answer BAD with its tag if it has a usable one.
            let end = buf.windows(2).position(|w| w == b"\r\n").map(|p| p + 2);
            let line = &buf[..end.unwrap_or(buf.len())];
            let tag = line
                .split(|b| *b == b' ')
                .next()
                .and_then(|t| Tag::try_from(t.to_vec()).ok());
            let r = status(
                Kind::Bad,
                tag.as_ref(),
                None,
                "syntax error, or a command unknown in this state",
            );
            match end {
                Some(e) => {
                    let _ = input.split_to(e);
                    Framed::Reject(r)
                }
                None => {
                    // Keep a trailing CR, as `skip_line` does: its LF may be next, and
                    // without it the skip would run on through the following command.
                    let keep = usize::from(buf.last() == Some(&b'\r'));
                    let n = input.len() - keep;
                    let _ = input.split_to(n);
                    Framed::RejectLine(r)
                }
            }
        }
    }
}

/// Drops input up to and including the next line end; true once it has been seen.
pub(crate) fn skip_line(conn: &mut Conn) -> bool {
    skip_line_in(&mut conn.buf)
}

/// [`skip_line`] on a bare buffer.
pub(crate) fn skip_line_in(buf: &mut bytes::BytesMut) -> bool {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(p) => {
            let _ = buf.split_to(p + 2);
            true
        }
        None => {
            // Keep a trailing CR: its LF may be next.
            let keep = usize::from(buf.last() == Some(&b'\r'));
            let n = buf.len() - keep;
            let _ = buf.split_to(n);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    /// Feeds `input` in chunks the way the session does; returns what came out.
    fn drive(input: &[u8], chunk: usize) -> (usize, usize, bool) {
        let mut buf = BytesMut::new();
        let mut lit = 0;
        let (mut cmds, mut rejects) = (0, 0);
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            // Bounded: each step consumes input or asks for more.
            for _ in 0..10_000 {
                let before = buf.len();
                match frame(&mut buf, &mut lit, 1024, 1 << 20) {
                    Framed::Command(..)
                    | Framed::Acl(..)
                    | Framed::Ext(..)
                    | Framed::MultiAppend(..) => cmds += 1,
                    Framed::Reject(_) => rejects += 1,
                    Framed::RejectLine(_) => {
                        rejects += 1;
                        while !buf.is_empty() {
                            match buf.windows(2).position(|w| w == b"\r\n") {
                                Some(p) => {
                                    let _ = buf.split_to(p + 2);
                                    break;
                                }
                                None => buf.clear(),
                            }
                        }
                    }
                    Framed::Fatal(_) => return (cmds, rejects, true),
                    Framed::NeedMore | Framed::Continue => break,
                }
                assert!(buf.len() < before || buf.is_empty(), "no progress");
            }
        }
        (cmds, rejects, false)
    }

    #[test]
    fn pipelined_commands_and_literals() {
        let input = b"a NOOP\r\nb LOGIN {5}\r\nalice {3}\r\npw!\r\nc APPEND INBOX {4+}\r\nabcd\r\n\
                      d APPEND INBOX {1+}\r\nx (\\Seen) {2+}\r\nyz\r\ne NOOP\r\n";
        assert_eq!(drive(input, 3), (5, 0, false));
        assert_eq!(drive(input, 1000), (5, 0, false));
        let (c, r, fatal) = drive(b"x BOGUS\r\ny NOOP\r\n", 1000);
        assert_eq!((c, r, fatal), (1, 1, false));
    }

    #[test]
    fn extended_forms_are_framed_beside_imap_codec() {
        let input = b"a LIST (SUBSCRIBED) \"\" (\"x\" {1}\r\ny) RETURN (STATUS (SIZE))\r\n\
                      b LIST {0}\r\n *\r\nc STATUS INBOX (APPENDLIMIT)\r\n\
                      d CREATE x (USE (\\Sent))\r\ne CREATE y\r\nf STATUS y (SIZE)\r\n";
        for chunk in [1, 5, 1000] {
            assert_eq!(drive(input, chunk), (6, 0, false));
        }
        let kind = |line: &[u8]| {
            let mut buf = BytesMut::from(line);
            match frame(&mut buf, &mut 0, 1024, 1 << 20) {
                Framed::Command(..) => "imap-codec",
                Framed::Ext(..) => "ext",
                Framed::Reject(_) => "reject",
                _ => "other",
            }
        };
        assert_eq!(kind(b"a LIST \"\" *\r\n"), "imap-codec");
        assert_eq!(kind(b"a LIST () \"\" *\r\n"), "ext");
        assert_eq!(kind(b"a LIST \"\" * RETURN (CHILDREN)\r\n"), "ext");
        assert_eq!(kind(b"a STATUS x (SIZE)\r\n"), "imap-codec");
        assert_eq!(kind(b"a STATUS x (SIZE APPENDLIMIT)\r\n"), "ext");
        assert_eq!(kind(b"a CREATE x\r\n"), "imap-codec");
        assert_eq!(kind(b"a CREATE x (USE (\\Junk))\r\n"), "ext");
        assert_eq!(kind(b"a LIST (RECURSIVEMATCH) \"\" *\r\n"), "reject");
    }

    /// A non-synchronising literal larger than a line, arriving with its header and in
    /// pieces (as LITERAL+ clients send it): its data never counts as line length.
    #[test]
    fn a_big_literal_plus_arriving_in_pieces_is_one_command() {
        let data = vec![b'x'; 300_000];
        let mut input = format!("c APPEND INBOX {{{}+}}\r\n", data.len()).into_bytes();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\nd NOOP\r\n");
        for chunk in [2048, 65536, 1 << 20] {
            assert_eq!(drive(&input, chunk), (2, 0, false), "chunks of {chunk}");
        }
    }

    #[test]
    fn limits() {
        let mut buf = BytesMut::from(&b"t APPEND INBOX {99999999}\r\n"[..]);
        let mut lit = 0;
        assert!(matches!(
            frame(&mut buf, &mut lit, 1024, 1 << 20),
            Framed::Reject(_)
        ));
        let mut buf = BytesMut::from(&b"t APPEND INBOX {99999999+}\r\n"[..]);
        assert!(matches!(
            frame(&mut buf, &mut lit, 1024, 1 << 20),
            Framed::Fatal(_)
        ));
        let long = [b"t SEARCH SUBJECT \"".as_slice(), &[b'x'; 2000]].concat();
        let mut buf = BytesMut::from(&long[..]);
        assert!(matches!(
            frame(&mut buf, &mut lit, 1024, 1 << 20),
            Framed::Fatal(_)
        ));
    }

    /// What `frame` makes of `input` fed `chunk` bytes at a time: each command with what the
    /// pre-pass found in it, or the rejection (the rest of a rejected line skipped, as the
    /// session does).
    fn framed(input: &[u8], chunk: usize) -> Vec<String> {
        let mut buf = BytesMut::new();
        let mut lit = 0;
        let mut out = Vec::new();
        let mut skipping = false;
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                if skipping {
                    if !skip_line_in(&mut buf) {
                        break;
                    }
                    skipping = false;
                }
                match frame(&mut buf, &mut lit, 1024, 1 << 20) {
                    Framed::Command(c, extras) => out.push(format!("{c:?} {extras:?}")),
                    Framed::Reject(r) => out.push(String::from_utf8_lossy(&r).into_owned()),
                    Framed::RejectLine(r) => {
                        out.push(String::from_utf8_lossy(&r).into_owned());
                        skipping = true;
                    }
                    Framed::NeedMore | Framed::Continue => break,
                    Framed::Fatal(r) => panic!("{}", String::from_utf8_lossy(&r)),
                    Framed::Acl(..) | Framed::Ext(..) | Framed::MultiAppend(..) => {
                        panic!("not a command of imap-codec")
                    }
                }
            }
        }
        out
    }

    #[test]
    fn esearch_and_dollar_frame_alike_in_any_pieces() {
        let input = b"a UID SEARCH RETURN (MIN SAVE) SUBJECT {3}\r\n$ $ UID $\r\n\
            b FETCH $ (FLAGS)\r\nc SEARCH RETURN (BOGUS) ALL\r\nd UID EXPUNGE $\r\n";
        let whole = framed(input, input.len());
        assert_eq!(whole.len(), 4, "{whole:#?}");
        assert!(whole[0].contains("min: true") && whole[0].contains("save: true"));
        assert!(whole[0].contains("dollar: true") && whole[1].contains("dollar: true"));
        assert!(whole[2].starts_with("c BAD"), "{}", whole[2]);
        assert!(whole[3].contains("ExpungeUid") && whole[3].contains("dollar: true"));
        for chunk in 1..input.len() {
            assert_eq!(framed(input, chunk), whole, "in pieces of {chunk}");
        }
    }

    /// One SEARCH that never ends, a short literal after another: the connection ends once
    /// the command holds more than `max_command_bytes`, instead of the buffer growing on.
    #[test]
    fn a_command_of_endless_short_literals_is_bounded() {
        let (max_line, max_literal) = (1024, 4096u64);
        let bound = max_command_bytes(max_line, max_literal);
        let mut buf = BytesMut::from(&b"a SEARCH TEXT {1+}\r\n"[..]);
        let mut lit = 0;
        for i in 0.. {
            match frame(&mut buf, &mut lit, max_line, max_literal) {
                Framed::NeedMore => {}
                Framed::Fatal(r) => {
                    let r = String::from_utf8_lossy(&r);
                    assert!(r.contains("command longer than"), "{r}");
                    assert!(buf.len() <= bound + 32, "{} held", buf.len());
                    return;
                }
                _ => panic!("the endless SEARCH ended"),
            }
            assert!(i < 100_000, "no limit after {} bytes", buf.len());
            buf.extend_from_slice(b"x TEXT {1+}\r\n");
        }
    }

    proptest! {
        #[test]
        fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
            drive(&input, chunk);
        }

        #[test]
        fn command_like_input_never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("a NOOP".to_string()),
                    Just("b LOGIN x y".to_string()),
                    Just("c FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.10>)".to_string()),
                    Just("d APPEND INBOX {3}".to_string()),
                    Just("e UID STORE 1,3:5 +FLAGS.SILENT (\\\\Seen)".to_string()),
                    Just("f SEARCH OR FROM x NOT SEEN".to_string()),
                    "[ -~]{0,40}",
                ],
                0..20),
            chunk in 1usize..32,
        ) {
            let input = lines.join("\r\n") + "\r\n";
            drive(input.as_bytes(), chunk);
        }
    }
}
