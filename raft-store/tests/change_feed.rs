//! The change feed: subscribers see applied changes, in log order, tagged with term and
//! index; refused commands publish nothing.

use bytes::Bytes;
use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use halyard_raft_store::*;

fn entry(term: u64, index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

#[test]
fn subscribers_see_applied_changes_in_order() {
    let d = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open("rg1", d.path()).unwrap();
    let mut feed = sm.shared().subscribe();
    let mut other = sm.shared().subscribe();
    sm.apply_entries([
        entry(
            2,
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
            2,
            Command::Append {
                user: "u".into(),
                mailbox: "INBOX".into(),
                flags: vec![],
                internal_date_ms: 0,
                body: Bytes::from_static(b"x"),
                meta: None,
            },
        ),
        // Refused (no such mailbox): no event.
        entry(
            2,
            3,
            Command::Append {
                user: "u".into(),
                mailbox: "Nope".into(),
                flags: vec![],
                internal_date_ms: 0,
                body: Bytes::from_static(b"y"),
                meta: None,
            },
        ),
        entry(
            3,
            4,
            Command::StoreFlags {
                user: "u".into(),
                mailbox: "INBOX".into(),
                uids: vec![1],
                action: FlagAction::Add,
                flags: vec!["\\Seen".into()],
                unchanged_since: None,
            },
        ),
        entry(
            3,
            5,
            Command::Expunge {
                user: "u".into(),
                mailbox: "INBOX".into(),
                uids: Some(vec![1]),
            },
        ),
    ])
    .unwrap();
    let mut got = Vec::new();
    while let Ok(c) = feed.try_recv() {
        got.push(((c.term, c.index), c.event.clone()));
    }
    assert_eq!(
        got,
        vec![
            (
                (2, 1),
                Event::MailboxCreated {
                    user: "u".into(),
                    mailbox: "INBOX".into()
                }
            ),
            (
                (2, 2),
                Event::MessageAdded {
                    user: "u".into(),
                    mailbox: "INBOX".into(),
                    uid: 1,
                    modseq: 2
                }
            ),
            (
                (3, 4),
                Event::FlagsChanged {
                    user: "u".into(),
                    mailbox: "INBOX".into(),
                    uid: 1,
                    modseq: 3,
                    flags: vec!["\\Seen".into()]
                }
            ),
            (
                (3, 5),
                Event::Expunged {
                    user: "u".into(),
                    mailbox: "INBOX".into(),
                    uids: vec![1],
                    modseq: 4
                }
            ),
        ]
    );
    assert_eq!(
        other.try_recv().unwrap().index,
        1,
        "every subscriber gets every change"
    );
}
