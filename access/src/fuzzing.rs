//! What the fuzz targets (crate `halyard-fuzz`, `scripts/fuzz.sh`) run inside this crate:
//! the IMAP and POP3 servers' input paths and mailbox-name decoding, with the checks each
//! run must pass. Not an API.

use bytes::BytesMut;

use crate::imap::{Framed, frame};

/// The first input byte picks how the input is split into reads (1 to 256 bytes).
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((c, rest)) => (usize::from(*c) + 1, rest),
        None => (1, data),
    }
}

/// Target `imap_command`: a session's input through the command framer (imap-codec and the
/// framers for what it lacks), in pieces, answered as the session answers. Checks that every
/// answer makes progress (no command is framed from nothing, so the session cannot spin),
/// and that the input buffer stays within the line and literal limits.
pub fn imap_command(data: &[u8]) {
    const MAX_LINE: usize = 256;
    const MAX_LITERAL: u64 = 1024;
    // Lines of one command and its literals; a MULTIAPPEND may hold four literals' worth.
    let bound = crate::imap::max_command_bytes(MAX_LINE, MAX_LITERAL);
    let (chunk, input) = split(data);
    let mut buf = BytesMut::new();
    let mut literal_end = 0usize;
    let mut skipping = false;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            if skipping {
                if !crate::imap::skip_line_in(&mut buf) {
                    break;
                }
                skipping = false;
            }
            let before = buf.len();
            match frame(&mut buf, &mut literal_end, MAX_LINE, MAX_LITERAL) {
                Framed::NeedMore | Framed::Continue => {
                    assert!(
                        buf.len() <= bound + chunk,
                        "{} bytes held for one command (bound {bound})",
                        buf.len()
                    );
                    break;
                }
                Framed::Fatal(r) => {
                    assert!(r.starts_with(b"* BYE "));
                    return;
                }
                Framed::RejectLine(r) => {
                    assert!(r.ends_with(b"\r\n"));
                    skipping = true;
                }
                Framed::Reject(r) => {
                    assert!(r.ends_with(b"\r\n"));
                    assert!(
                        buf.len() < before || before == 0,
                        "a rejection consumed nothing"
                    );
                }
                Framed::Command(..)
                | Framed::Acl(..)
                | Framed::Ext(..)
                | Framed::MultiAppend(..) => {
                    assert!(buf.len() < before, "a command framed from no input");
                }
            }
        }
    }
}

/// Target `mailbox_name`: modified UTF-7 (RFC 3501 §5.1.3). Whatever decodes encodes back
/// to the same text, and every name encodes to something that decodes to it.
pub fn mailbox_name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(decoded) = crate::mutf7::decode(&text) {
        let again = crate::mutf7::encode(&decoded);
        assert_eq!(
            crate::mutf7::decode(&again).as_deref(),
            Ok(decoded.as_str())
        );
    }
    let encoded = crate::mutf7::encode(&text);
    assert!(encoded.is_ascii());
    assert_eq!(crate::mutf7::decode(&encoded).as_deref(), Ok(&*text));
}

/// A POP3 client's reading of a multi-line answer: the lines after the status line up to
/// the one that is ".", un-stuffed, each with CRLF.
fn pop3_client_reads(answer: &[u8]) -> Vec<u8> {
    let mut lines = answer.split(|b| *b == b'\n');
    let status = lines.next().expect("a status line");
    assert_eq!(status, b"+OK message follows\r");
    let mut text = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").expect("every line ends in CRLF");
        if line == b"." {
            return text;
        }
        text.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        text.extend_from_slice(b"\r\n");
    }
    panic!("no terminating line");
}

/// Target `pop3`: command lines as the POP3 server frames and splits them, and RETR/TOP of
/// the input as a stored message: what a client reads back is the message with CRLF line
/// ends (TOP: the start of it), and nothing in the message ends the answer early.
pub fn pop3(data: &[u8]) {
    let (chunk, input) = split(data);
    let mut buf = BytesMut::new();
    'pieces: for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match crate::pop3::take_line(&mut buf) {
                Some(Ok(line)) => {
                    assert!(!line.contains('\n'));
                    let (cmd, _) = crate::pop3::command_of(&line);
                    assert!(!cmd.contains(' '));
                }
                Some(Err(())) => break 'pieces,
                None => break,
            }
        }
    }
    let answer = crate::pop3::retr_response(input, None);
    let text = pop3_client_reads(&answer);
    let mut want = Vec::new();
    for line in input.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        want.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(text, want, "RETR");
    let top = pop3_client_reads(&crate::pop3::retr_response(input, Some(chunk % 8)));
    assert!(text.starts_with(&top), "TOP is not the start of RETR");
}
