//! The LDAP directory against a real OpenLDAP `slapd` on a loopback port, seeded with two
//! hosted domains (one with a domain alias), users with alternate and equivalent addresses, a
//! forwarding user, an inactive user and a list (tests/data/seed.ldif).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_directory::ldap::{LdapConfig, LdapDirectory};
use halyard_directory::schema::SchemaMap;
use halyard_directory::{Directory, DirectoryError, Resolution, UserStatus};

const SLAPD: &str = "/usr/sbin/slapd";

/// One slapd test at a time: each picks a free port, and a parallel test could otherwise grab
/// it while a server is stopped for the outage test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SLAPADD: &str = "/usr/sbin/slapadd";

/// A private slapd: its own config, database and port; killed on drop.
struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// A file of tests/data. The crate directory is taken from the environment `cargo test` sets
/// when it runs the test (a binary reused from a clone elsewhere must not read that clone).
fn data(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("tests/data").join(name)
}

impl Slapd {
    fn start() -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "slapd is not installed (scripts/test.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("halyard-slapd-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {schema}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"o=example\"\n\
             rootdn \"cn=admin,o=example\"\n\
             rootpw admin-secret\n\
             directory {db}\n",
            schema = data("mail.schema").display(),
            dir = dir.path().display(),
            db = db.display(),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let out = Command::new(SLAPADD)
            .args([
                "-f",
                dir.path().join("slapd.conf").to_str().unwrap(),
                "-l",
                data("seed.ldif").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Slapd {
            dir,
            port,
            child: None,
        };
        s.run();
        s
    }

    /// (Re)starts slapd in the foreground on the same port and waits until it accepts.
    fn run(&mut self) {
        let child = Command::new(SLAPD)
            .args([
                "-d",
                "0",
                "-f",
                self.dir.path().join("slapd.conf").to_str().unwrap(),
                "-h",
                &format!("ldap://127.0.0.1:{}/", self.port),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Our slapd must be the one listening: if it exited (port taken), fail loudly
            // instead of talking to somebody else's server.
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "slapd exited at start ({status}); port {} in use?",
                    self.port
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "slapd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn config(&self) -> LdapConfig {
        LdapConfig {
            urls: vec![format!("ldap://127.0.0.1:{}", self.port)],
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            domain_root: "ou=domains,o=example".into(),
            user_base: Some("o=example".into()),
            timeout_ms: 2000,
            max_connections: 4,
            cache_size: 1000,
            cache_ttl_secs: 300,
            negative_ttl_secs: 60,
            schema: SchemaMap::default(),
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

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
