//! The embedded directory over a real meta-group state machine (RocksDB): every resolution
//! and authentication path, domain defaults and user overrides, hostile input.

use std::sync::Arc;

use halyard_directory::embedded::{EmbeddedDirectory, hash_password};
use halyard_directory::{Directory, Resolution, UserStatus};
use halyard_raft_store::directory::{DirCommand, DirDomain, DirStatus, DirUser, UserPatch};
use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use halyard_raft_store::{Command, Reply, SmShared, StateMachineStore, TypeConfig};

struct Fixture {
    _dir: tempfile::TempDir,
    sm: StateMachineStore,
    index: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open("meta", dir.path()).unwrap();
        Fixture {
            _dir: dir,
            sm,
            index: 0,
        }
    }

    fn apply(&mut self, cmd: DirCommand) {
        self.index += 1;
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Command::Directory(cmd.clone())),
        };
        let r = self.sm.apply_entries([e]).unwrap();
        assert_eq!(r, vec![Reply::Done], "{cmd:?}");
    }

    fn shared(&self) -> Arc<SmShared> {
        self.sm.shared()
    }
}

fn user(address: &str, login: &str, password: &str) -> DirUser {
    DirUser::new(address, login, hash_password(password).unwrap())
}

fn seeded() -> (Fixture, EmbeddedDirectory) {
    let mut f = Fixture::new();
    f.apply(DirCommand::AddDomain(DirDomain {
        name: "example.org".into(),
        aliases: vec!["example.net".into()],
        default_quota_bytes: Some(1 << 30),
        default_quota_messages: Some(10_000),
        default_mail_host: Some("rg1".into()),
    }));
    f.apply(DirCommand::AddDomain(DirDomain {
        name: "example.com".into(),
        ..Default::default()
    }));
    f.apply(DirCommand::AddUser(user(
        "alice@example.org",
        "alice",
        "alice-secret",
    )));
    let mut big = user("bob@example.com", "bob@example.com", "bob-secret");
    big.quota_bytes = Some(5 << 30);
    big.mail_host = Some("rg2".into());
    f.apply(DirCommand::AddUser(big));
    let mut fwd = user("fwd@example.org", "fwd", "fwd-secret");
    fwd.forwarding = vec!["far@remote.test".into()];
    fwd.delivery_options = vec!["forward".into()];
    f.apply(DirCommand::AddUser(fwd));
    f.apply(DirCommand::AddUser(user(
        "sleepy@example.org",
        "sleepy",
        "sleepy-secret",
    )));
    f.apply(DirCommand::UpdateUser {
        address: "sleepy@example.org".into(),
        patch: UserPatch {
            status: Some(DirStatus::Inactive),
            ..Default::default()
        },
    });
    f.apply(DirCommand::AddAlias {
        alias: "a.smith@example.org".into(),
        target: "alice@example.org".into(),
    });
    f.apply(DirCommand::AddList {
        address: "staff@example.org".into(),
        members: vec!["alice@example.org".into(), "outside@remote.test".into()],
    });
    f.apply(DirCommand::AddAlias {
        alias: "team@example.org".into(),
        target: "staff@example.org".into(),
    });
    let d = EmbeddedDirectory::new(f.shared());
    (f, d)
}

fn mail_of(r: &Resolution) -> Option<(&str, bool)> {
    match r {
        Resolution::User { user, via_alias } => Some((user.mail.as_str(), *via_alias)),
        _ => None,
    }
}

#[tokio::test]
async fn resolution_paths() {
    let (_f, d) = seeded();
    for (addr, want) in [
        ("alice@example.org", Some(("alice@example.org", false))),
        ("ALICE@Example.ORG", Some(("alice@example.org", false))),
        ("alice@example.net", Some(("alice@example.org", false))),
        ("a.smith@example.org", Some(("alice@example.org", true))),
        ("a.smith@example.net.", Some(("alice@example.org", true))),
        ("nobody@example.org", None),
        ("alice@elsewhere.test", None),
    ] {
        assert_eq!(mail_of(&d.resolve(addr).await.unwrap()), want, "{addr}");
    }
    assert_eq!(
        d.resolve("nobody@example.org").await.unwrap(),
        Resolution::Unknown
    );
    match d.resolve("alice@example.org").await.unwrap() {
        Resolution::User { user, .. } => {
            // Domain defaults fill in what the user does not override.
            assert_eq!(user.quota_bytes, Some(1 << 30));
            assert_eq!(user.quota_messages, Some(10_000));
            assert_eq!(user.mail_host.as_deref(), Some("rg1"));
            assert_eq!(user.aliases, vec!["a.smith@example.org"]);
            assert_eq!(user.status, UserStatus::Active);
        }
        r => panic!("{r:?}"),
    }
    match d.resolve("bob@example.com").await.unwrap() {
        Resolution::User { user, .. } => {
            assert_eq!(user.quota_bytes, Some(5 << 30));
            assert_eq!(user.quota_messages, None);
            assert_eq!(user.mail_host.as_deref(), Some("rg2"));
        }
        r => panic!("{r:?}"),
    }
    match d.resolve("fwd@example.org").await.unwrap() {
        Resolution::Forward { to, .. } => assert_eq!(to, vec!["far@remote.test"]),
        r => panic!("{r:?}"),
    }
    for list in ["staff@example.org", "team@example.org", "Team@example.net"] {
        match d.resolve(list).await.unwrap() {
            Resolution::List { address, members } => {
                assert_eq!(address, "staff@example.org");
                assert_eq!(members, vec!["alice@example.org", "outside@remote.test"]);
            }
            r => panic!("{list}: {r:?}"),
        }
    }
    match d.resolve("sleepy@example.org").await.unwrap() {
        Resolution::User { user, .. } => assert_eq!(user.status, UserStatus::Inactive),
        r => panic!("{r:?}"),
    }
    let dom = d.domain("EXAMPLE.net").await.unwrap().unwrap();
    assert_eq!(dom.names, vec!["example.org", "example.net"]);
    assert_eq!(dom.default_quota_bytes, Some(1 << 30));
    assert!(d.domain("remote.test").await.unwrap().is_none());
}

#[tokio::test]
async fn authentication_paths() {
    let (_f, d) = seeded();
    for login in [
        "alice",
        "ALICE",
        "alice@example.org",
        "a.smith@example.org",
        "alice@example.net",
    ] {
        let p = d.authenticate(login, "alice-secret").await.unwrap();
        assert_eq!(
            p.map(|p| p.mail).as_deref(),
            Some("alice@example.org"),
            "{login}"
        );
    }
    assert!(
        d.authenticate("bob@example.com", "bob-secret")
            .await
            .unwrap()
            .is_some()
    );
    for (login, pw) in [
        ("alice", "wrong"),
        ("alice", "Alice-secret"),
        ("alice", ""),
        ("", "alice-secret"),
        ("nobody", "alice-secret"),
        ("sleepy", "sleepy-secret"), // inactive: may not log in
        ("staff@example.org", "x"),  // a list is no account
        ("alice\0", "alice-secret"),
    ] {
        assert!(
            d.authenticate(login, pw).await.unwrap().is_none(),
            "{login:?}/{pw:?} must be refused"
        );
    }
}

#[tokio::test]
async fn remembered_logins_follow_password_and_status_changes() {
    let (mut f, d) = seeded();
    assert!(
        d.authenticate("alice", "alice-secret")
            .await
            .unwrap()
            .is_some()
    );
    // Remembered now; a new password must end it at once.
    f.apply(DirCommand::UpdateUser {
        address: "alice@example.org".into(),
        patch: UserPatch {
            password_hash: Some(hash_password("new-secret").unwrap()),
            ..Default::default()
        },
    });
    assert!(
        d.authenticate("alice", "alice-secret")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        d.authenticate("alice", "new-secret")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        d.authenticate("alice", "new-secret")
            .await
            .unwrap()
            .is_some()
    );
    // So must disabling the account.
    f.apply(DirCommand::UpdateUser {
        address: "alice@example.org".into(),
        patch: UserPatch {
            status: Some(DirStatus::Inactive),
            ..Default::default()
        },
    });
    assert!(
        d.authenticate("alice", "new-secret")
            .await
            .unwrap()
            .is_none()
    );
    // And deleting it.
    f.apply(DirCommand::UpdateUser {
        address: "alice@example.org".into(),
        patch: UserPatch {
            status: Some(DirStatus::Active),
            ..Default::default()
        },
    });
    assert!(
        d.authenticate("alice", "new-secret")
            .await
            .unwrap()
            .is_some()
    );
    f.apply(DirCommand::DeleteUser {
        address: "alice@example.org".into(),
    });
    assert!(
        d.authenticate("alice", "new-secret")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn hostile_addresses_match_nothing() {
    let (_f, d) = seeded();
    for a in [
        "*@example.org",
        "alice*@example.org",
        "*",
        ")(mail=*)@example.org",
        "alice)(|(mail=*)@example.org",
        "alice\0@example.org",
        "alice@example.org\0",
        "alice@*",
        "@example.org",
        "alice@",
        "<alice@example.org>",
        "alice@example..org",
        &format!("{}@example.org", "a".repeat(5000)),
    ] {
        assert_eq!(d.resolve(a).await.unwrap(), Resolution::Unknown, "{a:?}");
        assert!(
            d.authenticate(a, "alice-secret").await.unwrap().is_none(),
            "{a:?}"
        );
    }
}

#[test]
fn password_hashes_are_argon2id_and_salted() {
    let a = hash_password("same").unwrap();
    let b = hash_password("same").unwrap();
    assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
    assert_ne!(a, b, "each hash has its own salt");
    assert!(halyard_directory::embedded::verify_password("same", &a));
    assert!(!halyard_directory::embedded::verify_password("Same", &a));
    assert!(!halyard_directory::embedded::verify_password(
        "same",
        "not a hash"
    ));
}
