//! RFC 8474 OBJECTID: the MAILBOXID, EMAILID and THREADID a client (and later the JMAP
//! interface) keeps to recognise a mailbox or a message across sessions, renames, copies and
//! moves.
//!
//! None of them is new replicated state: each is a hash of data the group already keeps and
//! never changes, so every node of the group computes the same identifier, before and after a
//! failover, and nothing has to be migrated for mailboxes stored before the extension existed.
//!
//! - **MAILBOXID** = `F` + 24 hex digits of SHA-256 over the group's name and the mailbox's
//!   internal id. That id is the key prefix of the mailbox's messages, allocated from a
//!   per-group counter that never goes back, and kept by RENAME; a deleted and re-created
//!   mailbox gets a new one (and a new UIDVALIDITY), and RENAME INBOX creates a new mailbox
//!   for the moved messages, as RFC 8474 §4 asks. The group's name is in the hash because a
//!   user may see mailboxes of several groups through sharing, and their counters overlap.
//! - **EMAILID** = `M` + 24 hex digits of SHA-256 over the stored body's SHA-256 and the
//!   INTERNALDATE. It identifies the content and everything else immutable about a message
//!   (§5.1): COPY and MOVE keep both (the body is stored once and referenced; INTERNALDATE is
//!   copied), so the copy has the source's EMAILID, and two messages share an EMAILID only
//!   if they cannot be told apart by anything but their flags.
//! - **THREADID** = `T` + 24 hex digits of SHA-256 over the message's *thread root*: the first
//!   valid Message-ID of its References field, else the first of In-Reply-To, else its own
//!   Message-ID; a message with none of them is a thread of its own (hashed from its EMAILID).
//!   A reply written by a conforming client (RFC 5322 §3.6.4: References repeats the parent's
//!   References, then adds the parent's Message-ID) has the same first reference as every
//!   other message of its conversation, so they share a THREADID, across mailboxes; the value
//!   is a function of the content, so messages with one EMAILID have one THREADID and a
//!   message's THREADID never changes once reported (§5.2). What it does not do is merge
//!   threads after the fact: a reply that carries only In-Reply-To (some old clients) starts
//!   from its parent, not the root. The THREAD command (RFC 5256) is unaffected: it threads
//!   the messages it is given by the full REFERENCES algorithm.
//!
//! 24 hex digits are 96 bits: collisions are out of reach for any mail store, and the ids
//! follow §8.1's advice (a letter first, URL-safe characters, never all digits or `NIL`).

use halyard_raft_store::{Envelope, MessageRecord};
use imap_codec::imap_types::response::{Code, CodeOther};
use sha2::{Digest, Sha256};

use super::esearch::FetchIds;

/// Hex digits kept of each hash.
const DIGITS: usize = 24;

fn hashed(prefix: char, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so that no two different part lists hash alike.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(DIGITS + 1);
    out.push(prefix);
    for b in digest.iter().take(DIGITS / 2) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The MAILBOXID of the mailbox with internal id `id` in group `group`.
pub fn mailbox_id(group: &str, id: u64) -> String {
    hashed('F', &[b"mailbox", group.as_bytes(), &id.to_be_bytes()])
}

/// RFC 8474's `MAILBOXID (id)` response code.
pub fn mailbox_code(group: &str, id: u64) -> Code<'static> {
    let text = format!("MAILBOXID ({})", mailbox_id(group, id));
    Code::Other(CodeOther::unvalidated(text.into_bytes()))
}

/// The EMAILID of a message.
pub fn email_id(rec: &MessageRecord) -> String {
    hashed(
        'M',
        &[
            b"email",
            rec.body.sha256.as_bytes(),
            &rec.internal_date_ms.to_be_bytes(),
        ],
    )
}

/// The Message-ID a message's thread is named after (see the module documentation), from its
/// envelope and its References field's value; `None` when it has none.
pub fn thread_root(env: &Envelope, references: Option<&str>) -> Option<String> {
    let first = |v: Option<&str>| v.and_then(|t| super::sort::msg_ids(t).into_iter().next());
    first(references)
        .or_else(|| first(env.in_reply_to.as_deref()))
        .or_else(|| first(env.message_id.as_deref()))
}

/// The THREADID of a message whose thread root is `root` (see [`thread_root`]).
pub fn thread_id(rec: &MessageRecord, root: Option<&str>) -> String {
    match root {
        Some(r) => hashed('T', &[b"thread", r.as_bytes()]),
        None => hashed('T', &[b"single", email_id(rec).as_bytes()]),
    }
}

/// The THREADID of a message whose header block is `header`: the envelope from the index
/// (parsed from the header when the index has none), References from the header.
pub fn thread_id_of(rec: &MessageRecord, header: &[u8]) -> String {
    let parsed;
    let env = match &rec.meta {
        Some(m) => &m.envelope,
        None => {
            parsed = halyard_raft_store::mime::message_meta(header).envelope;
            &parsed
        }
    };
    let references = super::sort::header_value(header, "References");
    thread_id(rec, thread_root(env, references.as_deref()).as_deref())
}

/// The RFC 8474 items of one FETCH response, each with a leading space (empty when none was
/// asked for); `header` reads the message's header block, for THREADID.
pub fn fetch_text(ids: FetchIds, rec: &MessageRecord, header: &dyn Fn() -> Vec<u8>) -> String {
    let mut out = String::new();
    if ids.email {
        out.push_str(&format!(" EMAILID ({})", email_id(rec)));
    }
    if ids.thread {
        out.push_str(&format!(" THREADID ({})", thread_id_of(rec, &header())));
    }
    out
}

/// Whether `s` is an RFC 8474 `objectid`: 1 to 255 of ALPHA, DIGIT, `_` and `-`.
pub fn is_objectid(s: &[u8]) -> bool {
    (1..=255).contains(&s.len())
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_raft_store::BodyRef;

    fn rec(sha: &str, date: i64) -> MessageRecord {
        MessageRecord {
            uid: 1,
            modseq: 1,
            flags: vec![],
            internal_date_ms: date,
            size: 10,
            body: BodyRef {
                partition: "primary".into(),
                sha256: sha.into(),
            },
            meta: None,
        }
    }

    fn env(irt: Option<&str>, id: Option<&str>) -> Envelope {
        Envelope {
            in_reply_to: irt.map(str::to_string),
            message_id: id.map(str::to_string),
            ..Envelope::default()
        }
    }

    #[test]
    fn ids_have_their_prefix_and_are_objectids() {
        for id in [
            mailbox_id("g1", 7),
            email_id(&rec("ab", 1)),
            thread_id(&rec("ab", 1), Some("a@b")),
            thread_id(&rec("ab", 1), None),
        ] {
            assert_eq!(id.len(), 25, "{id}");
            assert!(is_objectid(id.as_bytes()), "{id}");
        }
        assert!(mailbox_id("g1", 7).starts_with('F'));
        assert!(email_id(&rec("ab", 1)).starts_with('M'));
        assert!(thread_id(&rec("ab", 1), None).starts_with('T'));
    }

    #[test]
    fn mailbox_ids_differ_by_group_and_id() {
        assert_eq!(mailbox_id("g1", 7), mailbox_id("g1", 7));
        assert_ne!(mailbox_id("g1", 7), mailbox_id("g2", 7));
        assert_ne!(mailbox_id("g1", 7), mailbox_id("g1", 8));
        // The length prefix keeps ("g1", id) and ("g", …) apart.
        assert_ne!(mailbox_id("g1", 0), mailbox_id("g", 0x31 << 56));
    }

    #[test]
    fn email_id_is_content_and_internal_date() {
        assert_eq!(email_id(&rec("ab", 1)), email_id(&rec("ab", 1)));
        assert_ne!(email_id(&rec("ab", 1)), email_id(&rec("ab", 2)));
        assert_ne!(email_id(&rec("ab", 1)), email_id(&rec("ac", 1)));
    }

    #[test]
    fn a_conversation_shares_its_root() {
        let root = env(None, Some("<root@x>"));
        let reply = env(Some("<root@x>"), Some("<r1@x>"));
        let deeper_refs = "<root@x> <r1@x>";
        let deeper = env(Some("<r1@x>"), Some("<r2@x>"));
        let r = |e: &Envelope, refs| thread_root(e, refs);
        assert_eq!(r(&root, None).as_deref(), Some("root@x"));
        assert_eq!(r(&reply, Some("<root@x>")).as_deref(), Some("root@x"));
        assert_eq!(r(&deeper, Some(deeper_refs)).as_deref(), Some("root@x"));
        // In-Reply-To alone: the parent names the thread.
        assert_eq!(r(&deeper, None).as_deref(), Some("r1@x"));
        // Nothing at all: a thread of its own.
        assert_eq!(r(&env(None, None), Some("no id here")), None);
        let (a, b) = (rec("aa", 1), rec("bb", 1));
        assert_ne!(thread_id(&a, None), thread_id(&b, None));
        assert_eq!(thread_id(&a, Some("root@x")), thread_id(&b, Some("root@x")));
    }

    #[test]
    fn objectid_syntax() {
        assert!(is_objectid(b"M6d99ac3275bb4e"));
        assert!(is_objectid(b"F2212ea87-6097_4256"));
        assert!(!is_objectid(b""));
        assert!(!is_objectid(b"a b"));
        assert!(!is_objectid(b"a.b"));
        assert!(!is_objectid(&[b'a'; 256]));
    }
}
