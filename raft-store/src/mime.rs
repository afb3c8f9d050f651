//! ENVELOPE and BODYSTRUCTURE of a message, computed once by whoever proposes it (IMAP APPEND,
//! the SMTP server at end of DATA) and kept in the index, so FETCH never re-parses a message.
//!
//! To be implemented with `mail-parser` (see the issue on message access).

use crate::model::{BodyKind, BodyPart, Envelope, MessageMeta};

/// The ENVELOPE and MIME structure of `raw` (a whole RFC 5322 message). Never fails: whatever
/// cannot be parsed is described as a single `text/plain` part covering the bytes.
pub fn message_meta(raw: &[u8]) -> MessageMeta {
    MessageMeta {
        envelope: Envelope::default(),
        body: BodyPart {
            media_type: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
            id: None,
            description: None,
            encoding: "7BIT".into(),
            md5: None,
            disposition: None,
            language: vec![],
            location: None,
            header_start: 0,
            body_start: 0,
            end: raw.len() as u64,
            lines: 0,
            kind: BodyKind::Text,
        },
    }
}
