//! What the fuzz targets (crate `halyard-fuzz`, `scripts/fuzz.sh`) run inside this crate,
//! with the checks each run must pass. Not an API.

use crate::model::{BodyKind, BodyPart, MessageMeta};

/// Every part lies within its parent, its header before its body; depth stays bounded.
fn check_part(p: &BodyPart, lo: u64, hi: u64, depth: usize) {
    assert!(depth <= crate::mime::MAX_DEPTH + 2, "nesting {depth}");
    assert!(
        lo <= p.header_start
            && p.header_start <= p.body_start
            && p.body_start <= p.end
            && p.end <= hi,
        "part {}..{}..{} outside {lo}..{hi}",
        p.header_start,
        p.body_start,
        p.end
    );
    match &p.kind {
        BodyKind::Multipart { parts } => {
            assert!(!parts.is_empty(), "a multipart with no part");
            for c in parts {
                check_part(c, p.body_start, p.end, depth + 1);
            }
        }
        BodyKind::Message { body, .. } => check_part(body, p.body_start, p.end, depth + 1),
        BodyKind::Basic | BodyKind::Text => {}
    }
}

/// Target `message_meta`: the ENVELOPE and BODYSTRUCTURE extraction every delivery runs on
/// the master. Called without the `catch_unwind` that protects production, so that a panic
/// in it or in mail-parser is found; checks the part offsets, and that the record survives
/// the log's bincode encoding unchanged (followers apply what the master extracted).
pub fn message_meta(data: &[u8]) {
    let meta = crate::mime::parse(data);
    assert_eq!(meta.body.header_start, 0);
    assert_eq!(meta.body.end, data.len() as u64);
    check_part(&meta.body, 0, data.len() as u64, 0);
    let bytes = bincode::serialize(&meta).expect("encodes");
    let back: MessageMeta = bincode::deserialize(&bytes).expect("decodes");
    assert_eq!(back, meta);
}
