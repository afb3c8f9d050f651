//! What the fuzz targets (crate `halyard-fuzz`, `scripts/fuzz.sh`) run inside this crate:
//! the SMTP server's input path, with the checks each run must pass. Not an API.

use bytes::BytesMut;
use smtp_proto::Request;

use crate::inbound::dataread::{DataReader, check};
use crate::inbound::{Line, take_line};

/// The first input byte picks how the input is split into reads (1 to 256 bytes).
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((c, rest)) => (usize::from(*c) + 1, rest),
        None => (1, data),
    }
}

/// Target `smtp_data`: the DATA reader (end of data only at CRLF "." CRLF, the same message
/// however the input arrives, CRLF lines stored, the relay's dot-stuffing read back).
pub fn smtp_data(data: &[u8]) {
    let (chunk, input) = split(data);
    check(input, chunk);
}

/// What the session's input is waiting for.
enum Want {
    Command,
    Data(DataReader),
    Chunk(usize),
}

/// Target `smtp_session`: a whole session's input as the server reads it, in pieces: command
/// lines (framed as the session frames them, parsed by smtp-proto), DATA's text and BDAT's
/// chunks. Checks that the buffer stays within the line limit, that the framer only hands
/// out lines within the limit, and that nothing is read twice or skipped.
pub fn smtp_session(data: &[u8]) {
    const MAX_LINE: usize = 512;
    const MAX_MESSAGE: usize = 4096;
    let (chunk, input) = split(data);
    let mut buf = BytesMut::new();
    let mut skipping = false;
    let mut want = Want::Command;
    let mut consumed = 0usize;
    let mut message = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match &mut want {
                Want::Command => match take_line(&mut buf, &mut skipping, MAX_LINE) {
                    Line::Complete(line) => {
                        assert!(line.len() <= MAX_LINE + 2 && line.ends_with(b"\n"));
                        match Request::parse(&mut line.iter()) {
                            Ok(Request::Data) => want = Want::Data(DataReader::new()),
                            Ok(Request::Bdat { chunk_size, .. }) if chunk_size <= MAX_MESSAGE => {
                                want = Want::Chunk(chunk_size)
                            }
                            // The session refuses a bigger chunk and hangs up.
                            Ok(Request::Bdat { .. }) | Ok(Request::Quit) => return,
                            _ => {}
                        }
                    }
                    Line::TooLong => {}
                    Line::NeedMore => {
                        assert!(
                            buf.len() <= MAX_LINE + chunk,
                            "buffer grew to {}",
                            buf.len()
                        );
                        break;
                    }
                },
                Want::Data(reader) => {
                    let (used, done) = reader.ingest(&buf, &mut message);
                    let _ = buf.split_to(used);
                    if message.len() > MAX_MESSAGE {
                        message.clear();
                    }
                    if done {
                        message.clear();
                        want = Want::Command;
                    } else {
                        assert!(buf.is_empty(), "the DATA reader left input unread");
                        break;
                    }
                }
                Want::Chunk(left) => {
                    let n = (*left).min(buf.len());
                    let _ = buf.split_to(n);
                    *left -= n;
                    if *left > 0 {
                        break;
                    }
                    want = Want::Command;
                }
            }
            consumed += before - buf.len();
        }
    }
    assert!(consumed <= input.len());
}
