//! The LDAP directory against a real OpenLDAP `slapd` on a loopback port, seeded with two
//! hosted domains (one with a domain alias), users with alternate and equivalent addresses, a
//! forwarding user, an inactive user and a list (tests/data/seed.ldif).

mod support;

use std::time::{Duration, Instant};

use halyard_directory::ldap::LdapDirectory;
use support::slapd::Slapd;

use halyard_directory::{Directory, DirectoryError, Resolution, UserStatus};

/// One slapd test at a time: each picks a free port, and a parallel test could otherwise grab
/// it while a server is stopped for the outage test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn user_mail(r: &Resolution) -> Option<(&str, bool)> {
    match r {
        Resolution::User { user, via_alias } => Some((user.mail.as_str(), *via_alias)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_and_authentication_against_slapd() {
    let _serial = SERIAL.lock().await;
    let slapd = Slapd::start();
    let d = LdapDirectory::new(slapd.config()).unwrap();

    // Primary, alternate and equivalent addresses, and a domain alias; case-insensitive.
    assert_eq!(
        user_mail(&d.resolve("alice@example.org").await.unwrap()),
        Some(("alice@example.org", false))
    );
    assert_eq!(
        user_mail(&d.resolve("Alice@EXAMPLE.org").await.unwrap()),
        Some(("alice@example.org", false))
    );
    assert_eq!(
        user_mail(&d.resolve("a.smith@example.org").await.unwrap()),
        Some(("alice@example.org", true))
    );
    assert_eq!(
        user_mail(&d.resolve("alice@example.net").await.unwrap()),
        Some(("alice@example.org", true))
    );
    match d.resolve("alice@example.org").await.unwrap() {
        Resolution::User { user, .. } => {
            assert_eq!(user.quota_bytes, Some(1_000_000));
            assert_eq!(user.quota_messages, Some(500));
            assert_eq!(user.mail_host.as_deref(), Some("rg1"));
            assert_eq!(user.status, UserStatus::Active);
            assert_eq!(user.dn, "uid=alice,ou=org1,o=example");
        }
        other => panic!("{other:?}"),
    }
    // Second hosted domain.
    assert_eq!(
        user_mail(&d.resolve("bob@example.com").await.unwrap()),
        Some(("bob@example.com", false))
    );
    // Forwarding user.
    match d.resolve("fwd@example.org").await.unwrap() {
        Resolution::Forward { to, .. } => {
            assert_eq!(to, vec!["elsewhere@remote.example".to_string()])
        }
        other => panic!("{other:?}"),
    }
    // List with a DN member and an address member.
    match d.resolve("staff@example.org").await.unwrap() {
        Resolution::List { members, .. } => {
            let mut m = members.clone();
            m.sort();
            assert_eq!(
                m,
                vec![
                    "alice@example.org".to_string(),
                    "outside@remote.example".to_string()
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // Inactive user resolves (the MTA decides) but may not log in.
    match d.resolve("sleepy@example.org").await.unwrap() {
        Resolution::User { user, .. } => assert_eq!(user.status, UserStatus::Inactive),
        other => panic!("{other:?}"),
    }
    // Unknown addresses and domains; bob is not in example.org.
    for a in [
        "nobody@example.org",
        "bob@example.org",
        "alice@not-hosted.example",
        "no-at-sign",
        "@example.org",
    ] {
        assert_eq!(d.resolve(a).await.unwrap(), Resolution::Unknown, "{a}");
    }
    // Injection attempts match nothing.
    for a in [
        "*@example.org",
        "a*@example.org",
        "alice)(mail=*@example.org",
        "ali\0ce@example.org",
        "*)(|(mail=*@example.org",
        "alice@*",
    ] {
        assert_eq!(d.resolve(a).await.unwrap(), Resolution::Unknown, "{a:?}");
    }

    // Authentication binds as the user.
    let p = d
        .authenticate("alice", "alice-secret")
        .await
        .unwrap()
        .expect("uid login");
    assert_eq!(p.mail, "alice@example.org");
    assert!(
        d.authenticate("alice@example.org", "alice-secret")
            .await
            .unwrap()
            .is_some(),
        "address login"
    );
    assert!(
        d.authenticate("a.smith@example.org", "alice-secret")
            .await
            .unwrap()
            .is_some(),
        "alias login"
    );
    assert!(d.authenticate("bob", "bob-secret").await.unwrap().is_some());
    assert!(d.authenticate("alice", "wrong").await.unwrap().is_none());
    assert!(
        d.authenticate("alice", "").await.unwrap().is_none(),
        "empty password never binds"
    );
    assert!(
        d.authenticate("sleepy", "sleepy-secret")
            .await
            .unwrap()
            .is_none(),
        "inactive user"
    );
    assert!(d.authenticate("nobody", "x").await.unwrap().is_none());
    for login in ["*", "al*", "alice)(uid=*", "*)(uid=*))(|(uid=*"] {
        assert!(
            d.authenticate(login, "alice-secret")
                .await
                .unwrap()
                .is_none(),
            "{login:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_serves_cache_fails_temporarily_and_recovers() {
    let _serial = SERIAL.lock().await;
    let mut slapd = Slapd::start();
    let d = LdapDirectory::new(slapd.config()).unwrap();
    assert!(user_mail(&d.resolve("alice@example.org").await.unwrap()).is_some());
    assert_eq!(
        d.resolve("ghost@example.org").await.unwrap(),
        Resolution::Unknown
    );

    slapd.stop();
    // Cached answers (positive and negative) keep resolving within their TTL.
    assert!(user_mail(&d.resolve("alice@example.org").await.unwrap()).is_some());
    assert_eq!(
        d.resolve("ghost@example.org").await.unwrap(),
        Resolution::Unknown
    );
    // Uncached lookups are temporary failures, never "unknown".
    match d.resolve("bob@example.com").await {
        Err(DirectoryError::Unavailable(_)) => {}
        other => panic!("expected a temporary failure, got {other:?}"),
    }
    assert!(matches!(
        d.authenticate("bob", "bob-secret").await,
        Err(DirectoryError::Unavailable(_))
    ));

    slapd.run();
    // Back without restarting anything on our side.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match d.resolve("bob@example.com").await {
            Ok(r) => {
                assert_eq!(user_mail(&r), Some(("bob@example.com", false)));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "did not recover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.authenticate("bob", "bob-secret").await.unwrap().is_some());
}

#[test]
fn bad_config_is_refused() {
    let mut c = Slapd::config(&Slapd {
        dir: tempfile::tempdir().unwrap(),
        port: 1,
        child: None,
    });
    c.urls = vec!["http://example.org".into()];
    let err = LdapDirectory::new(c.clone())
        .err()
        .expect("http URL refused");
    assert!(err.contains("directory.ldap.urls"), "{err}");
    c.urls = vec![];
    assert!(LdapDirectory::new(c).is_err());
}
