//! Large bodies are stored in chunks: reads of any range return exactly the bytes of the
//! range, reading only the chunks it overlaps, and nothing is left behind when the last
//! reference goes.

use bytes::Bytes;
use halyard_raft_store::apply::BODY_CHUNK;
use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use halyard_raft_store::*;
use proptest::prelude::*;

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A state machine holding one message with a `len`-byte body; returns it and the body ref.
fn store(dir: &std::path::Path, len: usize, seed: u8) -> (StateMachineStore, BodyRef) {
    let mut sm = StateMachineStore::open("rg1", dir).unwrap();
    sm.apply_entries([
        entry(
            1,
            Command::CreateMailbox {
                user: "u".into(),
                name: "INBOX".into(),
                uidvalidity: 1,
                partition: "primary".into(),
                special_use: None,
            },
        ),
        entry(
            2,
            Command::Append {
                user: "u".into(),
                mailbox: "INBOX".into(),
                flags: vec![],
                internal_date_ms: 0,
                body: Bytes::from(body_of(len, seed)),
                meta: None,
            },
        ),
    ])
    .unwrap();
    let m = sm.shared().messages("u", "INBOX").unwrap().unwrap();
    let b = m[0].body.clone();
    (sm, b)
}

#[test]
fn large_body_round_trips_and_is_removed_with_its_last_reference() {
    let d = tempfile::tempdir().unwrap();
    let len = 3 * BODY_CHUNK + 12345;
    let (mut sm, b) = store(d.path(), len, 7);
    let s = sm.shared();
    let want = body_of(len, 7);
    assert_eq!(s.body(&b).unwrap().unwrap(), want);
    assert_eq!(
        s.body_range(&b, BODY_CHUNK as u64 - 10, BODY_CHUNK as u64 + 10)
            .unwrap()
            .unwrap(),
        want[BODY_CHUNK - 10..BODY_CHUNK + 10]
    );
    let chunk_rows = |s: &SmShared| {
        s.dump()
            .unwrap()
            .iter()
            .filter(|(cf, _, _)| *cf == "body_chunks")
            .count()
    };
    assert_eq!(chunk_rows(&s), 5, "manifest + 4 chunks");
    sm.apply_entries([entry(
        3,
        Command::Expunge {
            user: "u".into(),
            mailbox: "INBOX".into(),
            uids: Some(vec![1]),
        },
    )])
    .unwrap();
    assert_eq!(chunk_rows(&sm.shared()), 0);
    assert!(sm.shared().body(&b).unwrap().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_range_reads_exactly_its_bytes(
        len in prop_oneof![0usize..1000, (BODY_CHUNK - 2)..(BODY_CHUNK + 2), (2 * BODY_CHUNK)..(3 * BODY_CHUNK)],
        a in any::<u64>(), b in any::<u64>(), seed in any::<u8>(),
    ) {
        let d = tempfile::tempdir().unwrap();
        let (sm, r) = store(d.path(), len, seed);
        let want = body_of(len, seed);
        let (from, to) = (a % (len as u64 + 10), b % (len as u64 + 10));
        let got = sm.shared().body_range(&r, from, to).unwrap().unwrap();
        let (f, t) = (from.min(len as u64) as usize, to.min(len as u64).max(from.min(len as u64)) as usize);
        prop_assert_eq!(got, want[f..t].to_vec());
    }
}

/// Issue 22 §7: `PurgeUser` removes everything a deleted user left (mailboxes, messages,
/// quota, rights granted to it) and frees single-copy bodies correctly: a body another user
/// still holds stays, and goes with its last reference. A user created again later under the
/// same name finds nothing of the old one.
#[test]
fn purging_a_user_frees_its_bodies_but_not_others_copies() {
    let d = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open("rg1", d.path()).unwrap();
    let mut i = 0;
    let mut apply = |sm: &mut StateMachineStore, cmds: Vec<Command>| {
        let entries: Vec<_> = cmds
            .into_iter()
            .map(|c| {
                i += 1;
                entry(i, c)
            })
            .collect();
        sm.apply_entries(entries).unwrap();
    };
    let create = |user: &str, name: &str| Command::CreateMailbox {
        user: user.into(),
        name: name.into(),
        uidvalidity: 1,
        partition: "primary".into(),
        special_use: None,
    };
    let append = |user: &str, mailbox: &str, seed: u8| Command::Append {
        user: user.into(),
        mailbox: mailbox.into(),
        flags: vec![],
        internal_date_ms: 0,
        body: Bytes::from(body_of(2 * BODY_CHUNK + 5, seed)),
        meta: None,
    };
    apply(
        &mut sm,
        vec![
            create("u", "INBOX"),
            create("u", "Archive"),
            create("v", "INBOX"),
            append("u", "INBOX", 1),
            append("u", "Archive", 1),
            append("u", "Archive", 2),
            append("v", "INBOX", 1),
            Command::SetAcl {
                user: "v".into(),
                mailbox: "INBOX".into(),
                identifier: "u".into(),
                rights: Some("lr".into()),
            },
        ],
    );
    let s = sm.shared();
    let rows = |s: &SmShared, cf: &str| {
        s.dump()
            .unwrap()
            .iter()
            .filter(|(c, _, _)| *c == cf)
            .count()
    };
    assert_eq!(rows(&s, "body_refs"), 2, "two distinct bodies");
    assert!(s.quota("u").unwrap().used_messages > 0);
    apply(&mut sm, vec![Command::PurgeUser { user: "u".into() }]);
    assert_eq!(s.mailbox("u", "INBOX").unwrap(), None);
    assert_eq!(s.mailbox("u", "Archive").unwrap(), None);
    assert_eq!(s.quota("u").unwrap().used_messages, 0);
    assert_eq!(rows(&s, "body_refs"), 1, "only v's copy is left");
    let v = s.messages("v", "INBOX").unwrap().unwrap();
    assert_eq!(
        s.body(&v[0].body).unwrap().unwrap(),
        body_of(2 * BODY_CHUNK + 5, 1)
    );
    let acl = s.mailbox("v", "INBOX").unwrap().unwrap().acl;
    assert!(!acl.contains_key("u"), "{acl:?}");
    assert_eq!(rows(&s, "shares"), 0, "the grant index still names u");
    // Idempotent, and a new "u" starts empty.
    apply(&mut sm, vec![Command::PurgeUser { user: "u".into() }]);
    apply(&mut sm, vec![create("u", "INBOX")]);
    assert!(s.messages("u", "INBOX").unwrap().unwrap().is_empty());
    apply(&mut sm, vec![Command::PurgeUser { user: "v".into() }]);
    assert_eq!(rows(&s, "body_refs"), 0);
    assert_eq!(
        rows(&s, "bodies") + rows(&s, "body_chunks"),
        0,
        "a body outlived its last reference"
    );
}
