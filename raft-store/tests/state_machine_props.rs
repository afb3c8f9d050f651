//! Property tests of the replicated state machine on real RocksDB:
//! determinism, monotonic UIDs/MODSEQs, stable UIDVALIDITY, idempotent delivery and
//! reference counts that return to zero.

use std::collections::BTreeMap;

use bytes::Bytes;
use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use halyard_raft_store::*;
use proptest::prelude::*;

const USERS: [&str; 2] = ["alice", "bob"];
const BOXES: [&str; 3] = ["INBOX", "Archive", "Work/Projects"];
const FLAGS: [&str; 4] = ["\\Seen", "\\Deleted", "\\Flagged", "$Label1"];

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn arb_body() -> impl Strategy<Value = Bytes> {
    // Few distinct bodies so that single-copy sharing is exercised.
    (0u8..4, 0usize..3).prop_map(|(b, n)| Bytes::from(vec![b'a' + b; 100 + n * 5000]))
}

fn arb_flags() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(prop::sample::select(FLAGS.to_vec()), 0..3)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn arb_uids() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(1u32..12, 0..4)
}

/// A command, sometimes done by one user on the other's mailboxes (`Command::As`).
fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => arb_plain_command(),
        1 => proptest::collection::vec(arb_plain_command(), 1..4).prop_map(Command::Atomic),
        3 => (prop::sample::select(USERS.to_vec()), arb_plain_command())
            .prop_map(|(actor, cmd)| Command::As { actor: actor.into(), cmd: Box::new(cmd) }),
    ]
}

const IDENTIFIERS: [&str; 5] = ["alice", "bob", "anyone", "-bob", "-anyone"];
const RIGHTS: [&str; 8] = ["lr", "+i", "-r", "lrswitea", "", "+k", "lrsd", "x"];

fn arb_plain_command() -> impl Strategy<Value = Command> {
    let user = prop::sample::select(USERS.to_vec()).prop_map(String::from);
    let mbox = prop::sample::select(BOXES.to_vec()).prop_map(String::from);
    prop_oneof![
        1 => (user.clone(), mbox.clone(), 1u32..5).prop_map(|(user, name, uidvalidity)| Command::CreateMailbox {
            user, name, uidvalidity, partition: "primary".into(), special_use: None }),
        1 => (user.clone(), mbox.clone()).prop_map(|(user, name)| Command::DeleteMailbox { user, name }),
        1 => (user.clone(), mbox.clone(), mbox.clone()).prop_map(|(user, from, to)| Command::RenameMailbox { user, from, to }),
        3 => (user.clone(), mbox.clone(), arb_flags(), arb_body(), 0i64..1000).prop_map(|(user, mailbox, flags, body, d)|
            Command::Append { user, mailbox, flags, internal_date_ms: d, body, meta: None }),
        2 => (user.clone(), mbox.clone(), arb_uids(), arb_flags(), 0u8..3, proptest::option::of(0u64..20)).prop_map(
            |(user, mailbox, uids, flags, a, unchanged_since)| Command::StoreFlags { user, mailbox, uids, flags,
                action: [FlagAction::Add, FlagAction::Remove, FlagAction::Replace][a as usize], unchanged_since }),
        1 => (user.clone(), mbox.clone(), proptest::option::of(arb_uids())).prop_map(|(user, mailbox, uids)| Command::Expunge { user, mailbox, uids }),
        1 => (user.clone(), mbox.clone(), proptest::option::of(user.clone()), mbox.clone(), arb_uids()).prop_map(|(user, from, to_user, to, uids)| Command::Copy { user, from, to_user, to, uids }),
        1 => (user.clone(), mbox.clone(), proptest::option::of(user.clone()), mbox.clone(), arb_uids()).prop_map(|(user, from, to_user, to, uids)| Command::Move { user, from, to_user, to, uids }),
        1 => (user.clone(), mbox.clone(), proptest::option::of(user.clone()), mbox.clone(), arb_uids()).prop_map(|(user, from, to_user, to, uids)| Command::MoveAny { user, from, to_user, to, uids }),
        1 => (user.clone(), mbox.clone()).prop_map(|(user, mailbox)| Command::ClaimRecent { user, mailbox }),
        1 => (user.clone(), mbox.clone(), proptest::option::of(arb_uids())).prop_map(|(user, mailbox, uids)| Command::Tracked(Box::new(Command::Expunge { user, mailbox, uids }))),
        1 => (user.clone(), mbox.clone(), mbox.clone(), arb_uids()).prop_map(|(user, from, to, uids)| Command::Tracked(Box::new(Command::MoveAny { user, from, to_user: None, to, uids }))),
        2 => (user.clone(), mbox.clone(), prop::sample::select(IDENTIFIERS.to_vec()), proptest::option::of(prop::sample::select(RIGHTS.to_vec())))
            .prop_map(|(user, mailbox, id, rights)| Command::SetAcl { user, mailbox, identifier: id.into(), rights: rights.map(String::from) }),
        1 => (user.clone(), mbox.clone(), any::<bool>()).prop_map(|(user, name, subscribed)| Command::Subscribe { user, name, subscribed }),
        // Recipient addresses are the users' mailbox keys: "store" recipients are delivered
        // at enqueue, "smtp" ones wait for Deliver/UpdateRecipient.
        1 => (0u8..3, arb_body(), proptest::collection::vec((prop::sample::select(USERS.to_vec()), prop::sample::select(vec!["store", "smtp"])), 1..3)).prop_map(|(q, body, rcpts)| Command::Enqueue {
            queue_id: format!("Q{q}"), mail_from: "sender@example.org".into(), params: BTreeMap::new(),
            recipients: rcpts.iter().map(|(u, ch)| RecipientSpec { address: u.to_string(), orcpt: None, notify: vec![], channel: ch.to_string() }).collect(),
            partition: "primary".into(), body, received_at_ms: 5, expires_at_ms: 10_000, priority: 0, meta: None }),
        2 => (0u8..3, user.clone(), mbox.clone()).prop_map(|(q, u, mailbox)| Command::Deliver {
            queue_id: format!("Q{q}"), recipient: u.clone(), user: u, mailbox, flags: vec![],
            internal_date_ms: 7, uidvalidity_if_created: 3 }),
        1 => (0u8..3, user.clone(), 0u8..2).prop_map(|(q, u, fail)| Command::UpdateRecipient {
            queue_id: format!("Q{q}"), recipient: u,
            state: if fail == 0 { RecipientState::Pending } else { RecipientState::Failed { code: 550, detail: "no".into() } },
            next_attempt_ms: 100, error: Some("try later".into()) }),
        1 => (user, proptest::option::of(0u64..30_000), proptest::option::of(0u64..10)).prop_map(|(user, limit_bytes, limit_messages)|
            Command::SetQuota { user, limit_bytes, limit_messages }),
    ]
}

fn open_sm(dir: &std::path::Path) -> StateMachineStore {
    StateMachineStore::open("rg1", dir).expect("open state machine")
}

/// Snapshot of what the invariants talk about: per (user, mailbox) the record and messages.
fn mailboxes(sm: &SmShared) -> BTreeMap<(String, String), (MailboxRecord, Vec<MessageRecord>)> {
    let mut out = BTreeMap::new();
    for u in USERS {
        for mb in sm.mailboxes(u).unwrap() {
            let msgs = sm.messages(u, &mb.name).unwrap().unwrap();
            out.insert((u.to_string(), mb.name.clone()), (mb, msgs));
        }
    }
    out
}

type Boxes = BTreeMap<(String, String), (MailboxRecord, Vec<MessageRecord>)>;

/// `actor` held, before the command, the rights the command needs on others' mailboxes.
fn check_authorised(before: &Boxes, actor: &str, cmd: &Command) -> Result<(), TestCaseError> {
    let rights = |owner: &str, name: &str| -> acl::Rights {
        let name = apply::canonical_mailbox(name);
        before
            .get(&(owner.to_string(), name))
            .map(|(mb, _)| acl::effective(owner, actor, &mb.acl))
            .unwrap_or(acl::Rights::NONE)
    };
    let has = |owner: &str, name: &str, letters: &str| {
        rights(owner, name).contains(acl::Rights::of(letters))
    };
    match cmd {
        Command::Append { user, mailbox, .. } => prop_assert!(has(user, mailbox, "i")),
        Command::Expunge { user, mailbox, .. } => prop_assert!(has(user, mailbox, "e")),
        Command::DeleteMailbox { user, name } => prop_assert!(has(user, name, "x")),
        Command::SetAcl { user, mailbox, .. } => prop_assert!(has(user, mailbox, "a")),
        Command::StoreFlags { user, mailbox, .. } => {
            let r = rights(user, mailbox);
            prop_assert!(r.has('s') || r.has('t') || r.has('w'));
        }
        Command::Copy {
            user,
            from,
            to_user,
            to,
            ..
        }
        | Command::Move {
            user,
            from,
            to_user,
            to,
            ..
        }
        | Command::MoveAny {
            user,
            from,
            to_user,
            to,
            ..
        } => {
            prop_assert!(has(user, from, "r"));
            prop_assert!(has(to_user.as_deref().unwrap_or(user), to, "i"));
            if matches!(cmd, Command::Move { .. } | Command::MoveAny { .. }) {
                prop_assert!(has(user, from, "te"));
            }
        }
        Command::RenameMailbox { user, from, .. } => prop_assert!(has(user, from, "x")),
        Command::ClaimRecent { user, mailbox } => prop_assert!(has(user, mailbox, "r")),
        _ => {}
    }
    Ok(())
}

/// Alice's ACL changes interleaved with everything bob may try on her mailboxes.
fn arb_sharing_step() -> impl Strategy<Value = Command> {
    let mbox = || prop::sample::select(BOXES.to_vec()).prop_map(String::from);
    let alice = || Just("alice".to_string());
    let bob_tries = prop_oneof![
        (mbox(), arb_flags(), arb_body()).prop_map(|(mailbox, flags, body)| Command::Append {
            user: "alice".into(),
            mailbox,
            flags,
            internal_date_ms: 1,
            body,
            meta: None
        }),
        (mbox(), arb_uids(), arb_flags(), 0u8..3).prop_map(|(mailbox, uids, flags, a)| {
            Command::StoreFlags {
                user: "alice".into(),
                mailbox,
                uids,
                flags,
                unchanged_since: None,
                action: [FlagAction::Add, FlagAction::Remove, FlagAction::Replace][a as usize],
            }
        }),
        (mbox(), proptest::option::of(arb_uids())).prop_map(|(mailbox, uids)| Command::Expunge {
            user: "alice".into(),
            mailbox,
            uids
        }),
        (mbox(), mbox(), arb_uids(), any::<bool>(), any::<bool>()).prop_map(
            |(from, to, uids, mv, into_bob)| {
                let (user, to_user) = if into_bob {
                    ("alice", Some("bob".to_string()))
                } else {
                    ("bob", Some("alice".to_string()))
                };
                if mv {
                    Command::Move {
                        user: user.into(),
                        from,
                        to_user,
                        to,
                        uids,
                    }
                } else {
                    Command::Copy {
                        user: user.into(),
                        from,
                        to_user,
                        to,
                        uids,
                    }
                }
            }
        ),
        (mbox(), arb_uids()).prop_map(|(mailbox, uids)| Command::MoveAny {
            user: "alice".into(),
            from: mailbox.clone(),
            to_user: None,
            to: mailbox,
            uids,
        }),
        mbox().prop_map(|mailbox| Command::ClaimRecent {
            user: "alice".into(),
            mailbox
        }),
        mbox().prop_map(|name| Command::DeleteMailbox {
            user: "alice".into(),
            name
        }),
        (mbox(), mbox()).prop_map(|(from, to)| Command::RenameMailbox {
            user: "alice".into(),
            from,
            to
        }),
        (
            mbox(),
            prop::sample::select(IDENTIFIERS.to_vec()),
            prop::sample::select(RIGHTS.to_vec())
        )
            .prop_map(|(mailbox, id, r)| Command::SetAcl {
                user: "alice".into(),
                mailbox,
                identifier: id.into(),
                rights: Some(r.into())
            }),
        mbox().prop_map(|n| Command::CreateMailbox {
            user: "alice".into(),
            name: format!("{n}/Sub"),
            uidvalidity: 1,
            partition: "primary".into(),
            special_use: None
        }),
    ]
    .prop_map(|cmd| Command::As {
        actor: "bob".into(),
        cmd: Box::new(cmd),
    });
    prop_oneof![
        2 => (alice(), mbox(), prop::sample::select(IDENTIFIERS.to_vec()), proptest::option::of(prop::sample::select(RIGHTS.to_vec())))
            .prop_map(|(user, mailbox, id, rights)| Command::SetAcl { user, mailbox, identifier: id.into(), rights: rights.map(String::from) }),
        5 => bob_tries,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever bob tries on alice's mailboxes succeeds only with the rights alice granted
    /// at that moment, and a refusal changes nothing.
    #[test]
    fn acl_is_enforced_at_apply(steps in proptest::collection::vec(arb_sharing_step(), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let mut sm = open_sm(d.path());
        let s = sm.shared();
        let mut setup = Vec::new();
        for u in USERS {
            for name in BOXES {
                setup.push(Command::CreateMailbox { user: u.into(), name: name.into(), uidvalidity: 1, partition: "primary".into(), special_use: None });
                for b in 0..3u8 {
                    setup.push(Command::Append { user: u.into(), mailbox: name.into(), flags: vec![], internal_date_ms: 0,
                        body: Bytes::from(vec![b'a' + b; 50]), meta: None });
                }
            }
        }
        let mut i = 0u64;
        for c in setup { i += 1; sm.apply_entries([entry(i, c)]).unwrap(); }
        for step in steps {
            let before = mailboxes(&s);
            i += 1;
            let reply = sm.apply_entries([entry(i, step.clone())]).unwrap().remove(0);
            let after = mailboxes(&s);
            match (&reply, &step) {
                (Reply::Error(_), _) => prop_assert_eq!(&before, &after, "refused {:?} changed state", step),
                (_, Command::As { actor, cmd }) => check_authorised(&before, actor, cmd)?,
                _ => {}
            }
        }
    }


    /// Two replicas fed the same commands end byte-identical, applied one by one or in
    /// batches; and the mail invariants hold after every step.
    #[test]
    fn replicas_agree_and_invariants_hold(cmds in proptest::collection::vec(arb_command(), 1..60), batch in 1usize..8) {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let mut a = open_sm(d1.path());
        let mut b = open_sm(d2.path());
        let sa = a.shared();
        let mut uidvalidity_seen: BTreeMap<(String, String, u64), u32> = BTreeMap::new();
        let mut used_pairs: BTreeMap<(u32, u32), String> = BTreeMap::new();
        let mut prev = mailboxes(&sa);
        let mut replies_a = Vec::new();
        let mut recent_claimed: BTreeMap<u32, u32> = BTreeMap::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let reply = a.apply_entries([entry(i as u64 + 1, cmd.clone())]).unwrap().remove(0);
            let now = mailboxes(&sa);
            if let Reply::Error(e) = &reply {
                // A refused command changes nothing.
                prop_assert_eq!(&prev, &now, "refused {:?} ({}) changed the mailboxes", cmd, e);
            } else if let Command::As { actor, cmd } = cmd {
                // Done on someone else's mailbox only with the right for it, as the ACL stood.
                check_authorised(&prev, actor, cmd)?;
            }
            if let Reply::RecentClaimed { uidvalidity, from, to } = &reply {
                // Claims of one mailbox follow each other without overlap: a message is
                // recent in exactly one session.
                let last = recent_claimed.insert(*uidvalidity, *to);
                prop_assert!(from <= to, "claim {}..{}", from, to);
                prop_assert!(last.is_none_or(|l| l == *from), "claim {}..{} after ..{:?}", from, to, last);
            }
            replies_a.push(reply);
            for ((u, name), (mb, msgs)) in &now {
                prop_assert!(sa.recent_mark(mb.id).unwrap() <= mb.uidnext.max(1));
                // UIDVALIDITY of a live mailbox (same internal id) never changes.
                let key = (u.clone(), name.clone(), mb.id);
                if let Some(old) = uidvalidity_seen.insert(key, mb.uidvalidity) {
                    prop_assert_eq!(old, mb.uidvalidity);
                }
                if let Some((old_mb, old_msgs)) = prev.get(&(u.clone(), name.clone()))
                    && old_mb.id == mb.id
                    && matches!(cmd, Command::Tracked(_))
                    && let Some(v) = sa.vanished_since(mb.id, old_mb.highestmodseq).unwrap()
                {
                    // A tracked expunge's tombstones name exactly what it removed.
                    let gone: Vec<u32> = old_msgs.iter().map(|m| m.uid).filter(|u| !msgs.iter().any(|m| m.uid == *u)).collect();
                    prop_assert_eq!(v, gone, "tombstones of {:?}", cmd);
                }
                if let Some((old_mb, _)) = prev.get(&(u.clone(), name.clone()))
                    && old_mb.id == mb.id
                {
                    prop_assert!(mb.uidnext >= old_mb.uidnext, "UIDNEXT went backwards");
                    prop_assert!(mb.highestmodseq >= old_mb.highestmodseq, "HIGHESTMODSEQ went backwards");
                }
                for m in msgs {
                    prop_assert!(m.uid < mb.uidnext);
                    prop_assert!(m.modseq <= mb.highestmodseq);
                    // A (UIDVALIDITY, UID) pair always names the same message body.
                    let prev_body = used_pairs.insert((mb.uidvalidity, m.uid), m.body.sha256.clone());
                    if let Some(pb) = prev_body { prop_assert_eq!(pb, m.body.sha256.clone()); }
                }
                prop_assert_eq!(mb.exists as usize, msgs.len());
            }
            prev = now;
        }
        let mut replies_b = Vec::new();
        let mut idx = 1u64;
        for chunk in cmds.chunks(batch) {
            let entries: Vec<_> = chunk.iter().map(|c| { let e = entry(idx, c.clone()); idx += 1; e }).collect();
            replies_b.extend(b.apply_entries(entries).unwrap());
        }
        prop_assert_eq!(replies_a, replies_b);

        // The grant index lists exactly the positive ACL entries of existing mailboxes, and
        // each user's shared view is what the ACLs say.
        let mut expected_grants = std::collections::BTreeSet::new();
        for ((owner, name), (mb, _)) in mailboxes(&sa) {
            for id in mb.acl.keys().filter(|id| !id.starts_with('-')) {
                let mut k = format!("g\0{id}\0{owner}\0").into_bytes();
                k.extend_from_slice(name.as_bytes());
                expected_grants.insert(k);
            }
        }
        let grants: std::collections::BTreeSet<Vec<u8>> = sa.dump().unwrap().into_iter()
            .filter(|(cf, k, _)| *cf == "shares" && k.starts_with(b"g\0"))
            .map(|(_, k, _)| k).collect();
        prop_assert_eq!(grants, expected_grants);
        for u in USERS {
            let seen: Vec<(String, String)> = sa.shared_with(u).unwrap().into_iter().map(|(o, mb, _)| (o, mb.name)).collect();
            let want: Vec<(String, String)> = mailboxes(&sa).into_iter()
                .filter(|((o, _), (mb, _))| o != u && acl::effective(o, u, &mb.acl).has('l'))
                .map(|((o, n), _)| (o, n)).collect();
            prop_assert_eq!(seen, want);
        }
        prop_assert_eq!(sa.dump().unwrap(), b.shared().dump().unwrap());

        // Reference counts equal the number of referencing messages and queue entries.
        let mut refs: BTreeMap<BodyRef, u64> = BTreeMap::new();
        for (_, (_, msgs)) in mailboxes(&sa) { for m in msgs { *refs.entry(m.body).or_default() += 1; } }
        for q in sa.queue().unwrap() { *refs.entry(q.body).or_default() += 1; }
        for (body, n) in &refs { prop_assert_eq!(sa.body_refcount(body).unwrap(), *n); }
        prop_assert_eq!(sa.body_count().unwrap(), refs.len());
    }

    /// Delivering the same (queue id, recipient) twice stores one message.
    #[test]
    fn deliver_is_idempotent(body in arb_body(), repeats in 2usize..5) {
        let d = tempfile::tempdir().unwrap();
        let mut sm = open_sm(d.path());
        let mut i = 0u64;
        let mut next = |c: Command| { i += 1; entry(i, c) };
        let enqueue = Command::Enqueue { queue_id: "Q1".into(), mail_from: "".into(), params: BTreeMap::new(),
            recipients: vec![
                RecipientSpec { address: "alice@example.org".into(), orcpt: None, notify: vec![], channel: "lmtp".into() },
                RecipientSpec { address: "bob@example.org".into(), orcpt: None, notify: vec![], channel: "lmtp".into() }],
            partition: "primary".into(), body: body.clone(), received_at_ms: 1, expires_at_ms: 2, priority: 0, meta: None };
        sm.apply_entries([next(enqueue)]).unwrap();
        let deliver = Command::Deliver { queue_id: "Q1".into(), recipient: "alice@example.org".into(), user: "alice".into(),
            mailbox: "INBOX".into(), flags: vec![], internal_date_ms: 1, uidvalidity_if_created: 9 };
        let mut first = None;
        for _ in 0..repeats {
            let r = sm.apply_entries([next(deliver.clone())]).unwrap().remove(0);
            match (&first, r) {
                (None, Reply::Delivered { uid, duplicate: false, .. }) => first = Some(uid),
                (Some(u), Reply::Delivered { uid, duplicate: true, .. }) => prop_assert_eq!(*u, uid),
                (_, other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        let s = sm.shared();
        prop_assert_eq!(s.messages("alice", "INBOX").unwrap().unwrap().len(), 1);
        // One stored body shared by the queue entry and the delivered message.
        prop_assert_eq!(s.body_count().unwrap(), 1);
        // Deliver bob too: the entry retires, the queue's reference is dropped.
        sm.apply_entries([next(Command::Deliver { queue_id: "Q1".into(), recipient: "bob@example.org".into(), user: "bob".into(),
            mailbox: "INBOX".into(), flags: vec![], internal_date_ms: 1, uidvalidity_if_created: 9 })]).unwrap();
        prop_assert!(s.queue().unwrap().is_empty());
        let m = &s.messages("bob", "INBOX").unwrap().unwrap()[0];
        prop_assert_eq!(s.body_refcount(&m.body).unwrap(), 2);
        // A late duplicate after the entry retired is refused, not stored again.
        let late = sm.apply_entries([next(deliver)]).unwrap().remove(0);
        prop_assert!(matches!(late, Reply::Error(ApplyError::NoSuchQueueEntry(_))), "late deliver stored");
        prop_assert_eq!(s.messages("alice", "INBOX").unwrap().unwrap().len(), 1);
    }

    /// Copying a message around and expunging every copy frees its body.
    #[test]
    fn refcounts_return_to_zero(copies in 1usize..6, body in arb_body()) {
        let d = tempfile::tempdir().unwrap();
        let mut sm = open_sm(d.path());
        let mut i = 0u64;
        let mut next = |c: Command| { i += 1; entry(i, c) };
        for name in ["INBOX", "Archive"] {
            sm.apply_entries([next(Command::CreateMailbox { user: "alice".into(), name: name.into(), uidvalidity: 1,
                partition: "primary".into(), special_use: None })]).unwrap();
        }
        sm.apply_entries([next(Command::Append { user: "alice".into(), mailbox: "INBOX".into(), flags: vec![],
            internal_date_ms: 0, body, meta: None })]).unwrap();
        for _ in 0..copies {
            sm.apply_entries([next(Command::Copy { user: "alice".into(), from: "INBOX".into(), to_user: None, to: "Archive".into(), uids: vec![1] })]).unwrap();
        }
        let s = sm.shared();
        prop_assert_eq!(s.body_count().unwrap(), 1);
        let body_ref = s.messages("alice", "INBOX").unwrap().unwrap()[0].body.clone();
        prop_assert_eq!(s.body_refcount(&body_ref).unwrap(), copies as u64 + 1);
        sm.apply_entries([next(Command::Expunge { user: "alice".into(), mailbox: "INBOX".into(), uids: Some(vec![1]) })]).unwrap();
        sm.apply_entries([next(Command::DeleteMailbox { user: "alice".into(), name: "Archive".into() })]).unwrap();
        prop_assert_eq!(s.body_refcount(&body_ref).unwrap(), 0);
        prop_assert_eq!(s.body_count().unwrap(), 0);
        prop_assert!(s.body(&body_ref).unwrap().is_none());
        prop_assert_eq!(s.quota("alice").unwrap().used_messages, 0);
    }
}

#[test]
fn recreated_mailbox_gets_new_uidvalidity() {
    let d = tempfile::tempdir().unwrap();
    let mut sm = open_sm(d.path());
    let create = Command::CreateMailbox {
        user: "a".into(),
        name: "X".into(),
        uidvalidity: 100,
        partition: "primary".into(),
        special_use: None,
    };
    let r1 = sm
        .apply_entries([entry(1, create.clone())])
        .unwrap()
        .remove(0);
    sm.apply_entries([entry(
        2,
        Command::DeleteMailbox {
            user: "a".into(),
            name: "X".into(),
        },
    )])
    .unwrap();
    // The proposer's clock went backwards: apply still hands out a larger UIDVALIDITY.
    let create2 = Command::CreateMailbox {
        user: "a".into(),
        name: "X".into(),
        uidvalidity: 50,
        partition: "primary".into(),
        special_use: None,
    };
    let r2 = sm.apply_entries([entry(3, create2)]).unwrap().remove(0);
    match (r1, r2) {
        (Reply::Created { uidvalidity: v1 }, Reply::Created { uidvalidity: v2 }) => {
            assert!(v2 > v1, "{v1} {v2}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn state_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut sm = open_sm(d.path());
        sm.apply_entries([
            entry(
                1,
                Command::CreateMailbox {
                    user: "a".into(),
                    name: "inbox".into(),
                    uidvalidity: 7,
                    partition: "primary".into(),
                    special_use: None,
                },
            ),
            entry(
                2,
                Command::Append {
                    user: "a".into(),
                    mailbox: "INBOX".into(),
                    flags: vec!["\\seen".into()],
                    internal_date_ms: 3,
                    body: Bytes::from_static(b"hello"),
                    meta: None,
                },
            ),
        ])
        .unwrap();
    }
    let sm = open_sm(d.path());
    let s = sm.shared();
    assert_eq!(s.applied_index(), 2);
    let msgs = s.messages("a", "INBOX").unwrap().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].flags, vec!["\\Seen".to_string()]);
    assert_eq!(s.body(&msgs[0].body).unwrap().unwrap(), b"hello");
}

/// A delay report marks only recipients still pending and never stands in for the report of
/// a final outcome: a recipient that failed after its delay warning still owes a failure
/// report, and a second delay warning is not queued.
#[test]
fn delay_reports_never_replace_failure_reports() {
    let d = tempfile::tempdir().unwrap();
    let mut sm = open_sm(d.path());
    let mut i = 0u64;
    let mut next = |c: Command| {
        i += 1;
        entry(i, c)
    };
    let spec = |a: &str| RecipientSpec {
        address: a.into(),
        orcpt: None,
        notify: vec![],
        channel: "smtp".into(),
    };
    let enqueue = |id: &str, from: &str, to: &str| Command::Enqueue {
        queue_id: id.into(),
        mail_from: from.into(),
        params: BTreeMap::new(),
        recipients: vec![spec(to)],
        partition: "primary".into(),
        body: Bytes::from_static(b"Subject: x\r\n\r\nx\r\n"),
        received_at_ms: 1,
        expires_at_ms: 2,
        priority: 0,
        meta: None,
    };
    let report = |n: u32, delay: bool| Command::ReportDsn {
        queue_id: "Q1".into(),
        recipients: vec!["r@remote.example".into()],
        dsn: Box::new(enqueue(&format!("Q1.R{n}"), "", "sender@example.org")),
        delay,
    };
    sm.apply_entries([next(enqueue(
        "Q1",
        "sender@example.org",
        "r@remote.example",
    ))])
    .unwrap();
    let s = sm.shared();
    let rcpt = || s.queue_entry("Q1").unwrap().unwrap().recipients[0].clone();
    // Pending: a final-outcome report is a no-op, a delay report is queued once.
    sm.apply_entries([next(report(0, false))]).unwrap();
    assert!(s.queue_entry("Q1.R0").unwrap().is_none());
    sm.apply_entries([next(report(1, true))]).unwrap();
    assert!(s.queue_entry("Q1.R1").unwrap().is_some());
    assert!(rcpt().delay_notified && !rcpt().notified);
    sm.apply_entries([next(report(2, true))]).unwrap();
    assert!(
        s.queue_entry("Q1.R2").unwrap().is_none(),
        "second delay warning queued"
    );
    // It fails: a delay report (one built before the failure) changes nothing, the failure
    // report still goes out.
    sm.apply_entries([next(Command::UpdateRecipient {
        queue_id: "Q1".into(),
        recipient: "r@remote.example".into(),
        state: RecipientState::Failed {
            code: 550,
            detail: "5.1.1 no".into(),
        },
        next_attempt_ms: 0,
        error: None,
    })])
    .unwrap();
    sm.apply_entries([next(report(3, true))]).unwrap();
    assert!(
        s.queue_entry("Q1.R3").unwrap().is_none(),
        "delay report after failure queued"
    );
    assert!(rcpt().needs_dsn("sender@example.org"));
    sm.apply_entries([next(report(4, false))]).unwrap();
    assert!(s.queue_entry("Q1.R4").unwrap().is_some());
    // Everything reported and final: the entry left the queue.
    assert!(s.queue_entry("Q1").unwrap().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever order fence operations arrive in (stale masters, retries, releases by
    /// someone else), the recorded holder's token never goes backwards, each reply reports
    /// the record that stood before, only the current holder can release, and the history is
    /// the sequence of acquisitions.
    #[test]
    fn fence_holders_only_move_forward(ops in proptest::collection::vec((any::<bool>(), 1u64..6, 1u64..4), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let mut sm = open_sm(d.path());
        let s = sm.shared();
        let mut model: Option<HolderRecord> = None;
        let mut acquisitions = Vec::new();
        for (i, (acquire, term, node)) in ops.into_iter().enumerate() {
            let token = FenceToken { term, node };
            let op = if acquire {
                FenceOp::Acquire { token, address: Some("198.18.0.100/24".into()), at_ms: i as i64 }
            } else {
                FenceOp::Release { token, at_ms: i as i64, reason: "test".into() }
            };
            let replies = sm.apply_entries([entry(i as u64 + 1, Command::Fence(op))]).unwrap();
            let reply = replies.into_iter().next().unwrap();
            let before = model.clone();
            let refused = match (&model, acquire) {
                (Some(c), true) => token.term < c.token.term || (token.term == c.token.term && token.node != c.token.node),
                (None, true) => false,
                (Some(c), false) => c.token != token,
                (None, false) => true,
            };
            if refused {
                prop_assert!(matches!(reply, Reply::Error(_)), "{reply:?}");
            } else {
                prop_assert_eq!(&reply, &Reply::Fenced { previous: before.clone() });
                match (acquire, &model) {
                    (true, Some(c)) if c.token == token && c.released_at_ms.is_none() => {}
                    (true, _) => {
                        model = Some(HolderRecord { token, address: Some("198.18.0.100/24".into()),
                            acquired_at_ms: i as i64, released_at_ms: None, release_reason: None });
                        acquisitions.push(token);
                    }
                    (false, Some(c)) if c.released_at_ms.is_some() => {}
                    (false, _) => {
                        let m = model.as_mut().unwrap();
                        m.released_at_ms = Some(i as i64);
                        m.release_reason = Some("test".into());
                    }
                }
            }
            prop_assert_eq!(s.fence_holder().unwrap(), model.clone());
            if let (Some(b), Some(m)) = (&before, &model) {
                prop_assert!(m.token >= b.token, "holder went backwards");
            }
        }
        let history: Vec<FenceToken> = s.fence_history().unwrap().iter().map(|h| h.token).collect();
        prop_assert_eq!(history, acquisitions);
    }
}
