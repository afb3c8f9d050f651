//! The text of a DATA command (RFC 5321 §4.1.1.4 and §4.5.2), read incrementally.
//!
//! - Lines end in CRLF. A line that starts with "." loses that dot (the sender stuffed it).
//! - Only CRLF "." CRLF ends the data. A bare LF, a bare CR, or any mixture of them
//!   (`LF . LF`, `LF . CRLF`, `CRLF . CR CRLF`, ...) never does: the "SMTP smuggling"
//!   attacks of 2023 hid a second message behind such a sequence in the hope that one hop
//!   takes it as the end and the next does not. smtp-proto's receiver, which Halyard used
//!   before, ended the data at `CRLF . CR CR LF` (seen while writing [`check`], the `smtp_data`
//!   fuzz target's invariant, which that receiver fails).
//! - A bare LF is stored as CRLF (as Postfix 3.9's `smtpd_forbid_bare_newline = normalize`
//!   does), so stored messages have CRLF lines, as IMAP and the outbound dot-stuffing expect;
//!   but the line after it is not a line start for the dot rules: its leading dot is kept and
//!   never begins an end of data (else `LF . CRLF` would end it). A bare CR is content.

/// Where the reader is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line (after CRLF).
    LineStart,
    /// A line that started with "." (the dot is not copied).
    Dot,
    /// A line that started with "." CR.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line (not yet copied: a LF may follow).
    Cr,
}

/// Reads the data of one DATA command; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct DataReader {
    at: At,
}

impl DataReader {
    /// A reader at the start of the data: the CRLF that ended the DATA command counts as
    /// the first line end, so ".\r\n" right away is an empty message.
    pub(crate) fn new() -> DataReader {
        DataReader { at: At::LineStart }
    }

    /// Copies the message text in `input` to `out`, un-stuffed and with CRLF line ends.
    /// Returns how many bytes of `input` it used and whether they ended the data (then
    /// what follows in `input` is the next command, pipelined).
    pub(crate) fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::Middle {
                // The common case: copy up to the next CR or LF in one go.
                match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                    None => {
                        out.extend_from_slice(&input[i..]);
                        return (input.len(), false);
                    }
                    Some(p) => {
                        out.extend_from_slice(&input[i..i + p]);
                        i += p;
                    }
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                return (i, true);
            }
        }
        (input.len(), false)
    }

    /// One byte; true when it ended the data.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.at = match (self.at, b) {
            (At::LineStart, b'.') => At::Dot,
            (At::Dot, b'\r') => At::DotCr,
            (At::DotCr, b'\n') => return true,
            // ".", then something else: the line goes on without its dot.
            (At::DotCr, _) => {
                out.push(b'\r');
                return self.middle(b, out);
            }
            (At::LineStart | At::Dot | At::Middle, _) => return self.middle(b, out),
            (At::Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                At::LineStart
            }
            // A bare CR is content.
            (At::Cr, _) => {
                out.push(b'\r');
                return self.middle(b, out);
            }
        };
        false
    }

    /// `b` inside a line.
    fn middle(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.at = match b {
            b'\r' => At::Cr,
            // A bare LF: a line end in what is stored, not for the dot rules.
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                At::Middle
            }
            _ => {
                out.push(b);
                At::Middle
            }
        };
        false
    }
}

/// Everything a DATA command sends until its end, through a fresh [`DataReader`] in pieces
/// of `chunk` bytes: the bytes used, whether the data ended, and the message.
pub(crate) fn read_all(input: &[u8], chunk: usize) -> (usize, bool, Vec<u8>) {
    let mut r = DataReader::new();
    let mut out = Vec::new();
    let mut used = 0;
    for piece in input.chunks(chunk.max(1)) {
        let (n, done) = r.ingest(piece, &mut out);
        used += n;
        if done {
            return (used, true, out);
        }
    }
    (used, false, out)
}

/// The fuzz target `smtp_data`'s checks, for any input and any piece size.
pub(crate) fn check(input: &[u8], chunk: usize) {
    let (used, done, out) = read_all(input, chunk);
    // The data ends at the first CRLF "." CRLF (the CRLF before it may be the one that ended
    // the DATA command) and nowhere else.
    let mut seen = b"\r\n".to_vec();
    seen.extend_from_slice(&input[..used]);
    let first_end = seen
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5 - 2);
    match first_end {
        Some(end) => assert!(done && end == used, "end of data at {end}, reader: {used}"),
        None => assert!(
            !done && used == input.len(),
            "reader ended the data at {used}"
        ),
    }
    // The same message whatever the pieces.
    let whole = read_all(input, usize::MAX);
    assert_eq!((used, done), (whole.0, whole.1));
    assert_eq!(
        out, whole.2,
        "the message depends on how the input was split"
    );
    // No bare LF in what is stored.
    for (i, b) in out.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF stored at {i}");
        }
    }
    // What the relay sends of it reads back as the same message.
    if done {
        let wire = crate::outbound::relay::dot_stuff(&out);
        let (n, again_done, again) = read_all(&wire, chunk);
        assert!(
            again_done && n == wire.len(),
            "the relay's dot-stuffing ends elsewhere"
        );
        let mut want = out.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        if want.is_empty() {
            want = b"\r\n".to_vec();
        }
        assert_eq!(again, want, "relay round trip");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(input: &[u8]) -> (usize, bool, Vec<u8>) {
        read_all(input, usize::MAX)
    }

    #[test]
    fn plain_message_and_pipelined_command() {
        let (n, done, out) = read(b"Subject: x\r\n\r\n..hidden dot\r\nbody\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(out, b"Subject: x\r\n\r\n.hidden dot\r\nbody\r\n");
        assert_eq!(n, b"Subject: x\r\n\r\n..hidden dot\r\nbody\r\n.\r\n".len());
        assert_eq!(read(b".\r\n"), (3, true, Vec::new()));
    }

    /// Each of these is how some server of 2023 could be made to see the end of the data
    /// where another did not; none of them ends it here.
    #[test]
    fn smuggling_sequences_do_not_end_the_data() {
        for s in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\r\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\r.\r\nMAIL FROM:<x@y>\r\n",
        ] {
            let (n, done, _) = read(s);
            assert!(!done, "{:?} ended the data", String::from_utf8_lossy(s));
            assert_eq!(n, s.len());
        }
    }

    #[test]
    fn bare_line_ends_are_stored_as_crlf_and_bare_cr_is_kept() {
        let (_, done, out) = read(b"a\nb\r\nc\rd\n.\r\n");
        assert!(!done);
        assert_eq!(out, b"a\r\nb\r\nc\rd\r\n.\r\n");
        let (_, done, out) = read(b"a\nb\r\nc\rd\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\nb\r\nc\rd\r\n");
    }

    /// Throughput of this reader against smtp-proto's, which it replaced, on the same input
    /// in one run (a table; no assertion on time). `cargo test -p halyard-mta --release --lib
    /// data_reader_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn data_reader_throughput() {
        let mut msg = Vec::new();
        while msg.len() < 10 * 1024 {
            msg.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789\r\n");
            msg.extend_from_slice(b"..a stuffed line\r\n");
        }
        let mut wire = msg.clone();
        wire.extend_from_slice(b".\r\n");
        let rounds = 20_000;
        let mut rows = Vec::new();
        for round in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                let mut rx = smtp_proto::request::receiver::DataReceiver::new();
                let mut out = Vec::with_capacity(wire.len());
                rx.ingest(&mut b"\r\n".iter(), &mut out);
                for piece in wire.chunks(4096) {
                    rx.ingest(&mut piece.iter(), &mut out);
                }
                std::hint::black_box(out);
            }
            let old = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                let mut rx = DataReader::new();
                let mut out = Vec::with_capacity(wire.len());
                for piece in wire.chunks(4096) {
                    rx.ingest(piece, &mut out);
                }
                std::hint::black_box(out);
            }
            rows.push((round, old, t.elapsed()));
        }
        let mb = (wire.len() * rounds) as f64 / 1e6;
        println!(
            "{:<6} {:>18} {:>18}",
            "round", "smtp-proto MB/s", "DataReader MB/s"
        );
        for (round, old, new) in rows {
            println!(
                "{:<6} {:>18.0} {:>18.0}",
                round,
                mb / old.as_secs_f64(),
                mb / new.as_secs_f64()
            );
        }
    }

    proptest! {
        #[test]
        fn invariants(
            input in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..300),
            chunk in 1usize..40,
        ) {
            check(&input, chunk);
        }

        /// What the relay channel sends (dot-stuffed, terminated) is read back as exactly
        /// the message (normalised to end in CRLF).
        #[test]
        fn dot_stuffing_round_trip(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..200),
            chunk in 1usize..50,
        ) {
            let text: Vec<u8> = String::from_utf8(body).unwrap()
                .replace('\r', "").replace('\n', "\r\n").into_bytes();
            let wire = crate::outbound::relay::dot_stuff(&text);
            let (n, done, out) = read_all(&wire, chunk);
            prop_assert!(done);
            prop_assert_eq!(n, wire.len());
            let mut want = text.clone();
            if !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(out, want);
        }
    }
}
