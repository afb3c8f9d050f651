//! Mailbox names on the wire, in the session's one of two conventions: modified UTF-7
//! (RFC 3501 §5.1.3, [`crate::mutf7`]) until the client gives `ENABLE UTF8=ACCEPT`, UTF-8
//! after it (RFC 6855 §3). The store keeps names as UTF-8 either way, so two sessions of one
//! user, one of each kind, see the same mailbox under its two spellings.
//!
//! In UTF-8 mode a name is taken as it is written: `&` is an ordinary character, and a
//! name the client writes in modified UTF-7 is the name of those ASCII characters. A name
//! must be valid UTF-8 and, as RFC 6855 §3 requires, free of control characters (U+0000 to
//! U+001F, U+007F to U+009F) and of the line and paragraph separators (U+2028, U+2029).
//! Names are not normalised (RFC 5198's NFC is the client's to send).
//!
//! Names go out as quoted strings where RFC 6855's quoted syntax allows (UTF-8 without NUL,
//! CR or LF): `"Entwürfe"` rather than a literal, which clients of the extension expect.

use imap_codec::imap_types::core::{AString, IString};
use imap_codec::imap_types::extensions::utf8::QuotedUtf8;
use imap_codec::imap_types::mailbox::{Mailbox, MailboxOther};

use crate::mutf7;

/// A name (or a LIST reference or pattern) as the client wrote it, in UTF-8: checked to be
/// UTF-8 (`utf8`) or decoded from modified UTF-7. Not yet checked to be a usable name.
pub(crate) fn text_of(raw: &[u8], utf8: bool) -> Result<String, String> {
    if utf8 {
        return std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| "mailbox name is not UTF-8".to_string());
    }
    let raw =
        std::str::from_utf8(raw).map_err(|_| "mailbox name is not modified UTF-7".to_string())?;
    mutf7::decode(raw)
}

/// A mailbox name the client wrote, in UTF-8: [`text_of`], and in UTF-8 mode refused when
/// it holds a character RFC 6855 §3 bars from names.
pub(crate) fn name_of(raw: &[u8], utf8: bool) -> Result<String, String> {
    let name = text_of(raw, utf8)?;
    if utf8 && let Some(c) = name.chars().find(|c| barred(*c)) {
        return Err(format!(
            "a mailbox name may not contain U+{:04X} (RFC 6855 section 3)",
            u32::from(c)
        ));
    }
    Ok(name)
}

/// Characters RFC 6855 §3 keeps out of mailbox names.
fn barred(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A stored name as the session writes it: itself (UTF-8 mode) or modified UTF-7.
pub(crate) fn spelled(name: &str, utf8: bool) -> String {
    if utf8 {
        name.to_string()
    } else {
        mutf7::encode(name)
    }
}

/// A non-ASCII name as an RFC 6855 quoted string, when the quoted syntax can carry it.
fn quoted_utf8(name: &str, utf8: bool) -> Option<QuotedUtf8<'static>> {
    if !utf8 || name.is_ascii() {
        return None;
    }
    QuotedUtf8::try_from(name.to_string()).ok()
}

/// A stored name as imap-types writes it in a response (LIST, LSUB).
pub(crate) fn wire_mailbox(name: &str, utf8: bool) -> Mailbox<'static> {
    if let Some(q) = quoted_utf8(name, utf8)
        && let Ok(other) = MailboxOther::try_from(AString::String(IString::QuotedUtf8(q)))
    {
        return Mailbox::Other(other);
    }
    Mailbox::try_from(spelled(name, utf8)).unwrap_or(Mailbox::Inbox)
}

/// A stored name as an astring for the responses written by hand (extended LIST, STATUS
/// with APPENDLIMIT): an atom, a quoted string, or a literal.
pub(crate) fn wire_astring(name: &str, utf8: bool) -> Vec<u8> {
    if let Some(q) = quoted_utf8(name, utf8) {
        let mut out = vec![b'"'];
        for b in q.inner().bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        return out;
    }
    super::acl::astring(spelled(name, utf8).as_bytes())
}

/// A mailbox argument echoed in a response as the client wrote it (STATUS with APPENDLIMIT,
/// the ACL responses): in UTF-8 mode a UTF-8 name goes back as a quoted string, otherwise
/// the bytes as an astring, as they always did.
pub(crate) fn echo(raw: &[u8], utf8: bool) -> Vec<u8> {
    match std::str::from_utf8(raw) {
        Ok(name) if utf8 => wire_astring(name, true),
        _ => super::acl::astring(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::response::{Data, Response};

    #[test]
    fn modified_utf7_until_enabled() {
        assert_eq!(name_of(b"Entw&APw-rfe", false).unwrap(), "Entwürfe");
        assert!(name_of("Entwürfe".as_bytes(), false).is_err());
        assert!(name_of(b"a&b", false).is_err());
        assert_eq!(spelled("Entwürfe/日本語", false), "Entw&APw-rfe/&ZeVnLIqe-");
        assert_eq!(wire_astring("Tom & Jerry", false), b"\"Tom &- Jerry\"");
        assert_eq!(wire_astring("Entwürfe", false), b"Entw&APw-rfe");
    }

    #[test]
    fn utf8_once_enabled() {
        let name = "Entwürfe/日本語";
        assert_eq!(name_of(name.as_bytes(), true).unwrap(), name);
        // `&` is an ordinary character: a modified UTF-7 spelling is taken literally.
        assert_eq!(name_of(b"Entw&APw-rfe", true).unwrap(), "Entw&APw-rfe");
        assert_eq!(name_of(b"Tom & Jerry", true).unwrap(), "Tom & Jerry");
        assert_eq!(spelled(name, true), name);
        assert_eq!(
            wire_astring(name, true),
            "\"Entwürfe/日本語\"".as_bytes().to_vec()
        );
        assert_eq!(wire_astring("a\"b\\ü", true), "\"a\\\"b\\\\ü\"".as_bytes());
        assert_eq!(wire_astring("Tom & Jerry", true), b"\"Tom & Jerry\"");
        assert_eq!(wire_astring("Sent", true), b"Sent");
        assert_eq!(echo("Grün".as_bytes(), true), "\"Grün\"".as_bytes());
        assert_eq!(echo("Grün".as_bytes(), false), b"{5}\r\nGr\xc3\xbcn");
        assert_eq!(echo(b"Gr&APw-n", true), b"Gr&APw-n");
    }

    #[test]
    fn invalid_utf8_and_barred_characters_are_refused() {
        for bad in [
            &b"caf\xe9"[..],
            b"\xed\xa0\x80",
            b"\xc3",
            "a\u{85}b".as_bytes(),
            "a\u{2028}b".as_bytes(),
            "a\u{2029}".as_bytes(),
            "a\u{7f}".as_bytes(),
            b"a\tb",
        ] {
            assert!(name_of(bad, true).is_err(), "{bad:?} accepted");
        }
        // A pattern is only checked to be UTF-8.
        assert!(text_of("a\u{2028}".as_bytes(), true).is_ok());
        assert!(text_of(b"caf\xe9", true).is_err());
    }

    #[test]
    fn list_responses_carry_utf8_quoted_names_only_once_enabled() {
        let line = |utf8| {
            let d = Data::List {
                items: vec![],
                delimiter: None,
                mailbox: wire_mailbox("Entwürfe/日本語", utf8),
            };
            String::from_utf8(crate::imap::encode(&Response::Data(d))).unwrap()
        };
        assert_eq!(line(true), "* LIST () NIL \"Entwürfe/日本語\"\r\n");
        assert_eq!(line(false), "* LIST () NIL Entw&APw-rfe/&ZeVnLIqe-\r\n");
        assert_eq!(wire_mailbox("INBOX", true), Mailbox::Inbox);
    }
}
