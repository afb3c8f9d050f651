//! The embedded directory on three real `halyard serve` processes, driven the way an operator
//! drives it: `halyard ctl` with passwords on standard input. A user added through one node
//! authenticates on another; the directory survives a kill -9 of the meta group's leader,
//! and the killed node catches up when it returns.

#[path = "../../directory/tests/support/slapd.rs"]
mod slapd;

use std::time::{Duration, Instant};

use halyard_node::config::{DirectoryConfig, RaftConfig};
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

use slapd::Slapd;

const WAIT: Duration = Duration::from_secs(30);

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `halyard ctl` against `node`'s configuration with `stdin`.
fn ctl(c: &LocalCluster, node: u64, args: &[&str], stdin: &str) -> Out {
    let (ok, stdout, stderr) = c.ctl(node, args, stdin).expect("run halyard ctl");
    Out { ok, stdout, stderr }
}

fn ctl_ok(c: &LocalCluster, node: u64, args: &[&str], stdin: &str) -> String {
    let o = ctl(c, node, args, stdin);
    assert!(
        o.ok,
        "ctl {args:?} on node {node} failed: {}{}",
        o.stdout, o.stderr
    );
    o.stdout
}

/// Polls `auth test` on `node` until it gives `expect` (a follower applies a change within a
/// heartbeat or two of its commit); bounded by WAIT.
fn auth_eventually(c: &LocalCluster, node: u64, login: &str, password: &str, expect: bool) {
    let deadline = Instant::now() + WAIT;
    let mut last;
    loop {
        let o = ctl(c, node, &["auth", "test", login], &format!("{password}\n"));
        if o.ok == expect {
            if expect {
                assert!(o.stdout.contains("accepted"), "{}", o.stdout);
            } else {
                assert!(o.stdout.contains("refused"), "{}{}", o.stdout, o.stderr);
            }
            return;
        }
        last = format!("{}{}", o.stdout, o.stderr);
        assert!(
            Instant::now() < deadline,
            "auth {login} on node {node}: wanted {expect}, still: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_directory_is_replicated_and_survives_meta_leader_kill() {
    let dir = tempfile::Builder::new()
        .prefix("halyard-directory-")
        .tempdir()
        .unwrap();
    let spec = ClusterSpec {
        mta: Default::default(),
        nodes: 3,
        base_port: 17500,
        groups: vec!["rg1".into()],
        plaintext: false,
        raft: RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ..RaftConfig::default()
        },
        directory: Default::default(),
        access: Default::default(),
    };
    let mut c = LocalCluster::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_halyard")),
        dir.path(),
        &spec,
    )
    .unwrap();
    c.start_all().unwrap();
    let leader = c.wait_leader("meta", None, WAIT).await.unwrap();

    // Managed through node 1 (whichever node leads: ctl finds the leader).
    ctl_ok(
        &c,
        1,
        &[
            "domain",
            "add",
            "example.org",
            "--alias",
            "example.net",
            "--quota",
            "1G",
        ],
        "",
    );
    ctl_ok(
        &c,
        1,
        &["user", "add", "alice@example.org"],
        "correct horse\n",
    );
    ctl_ok(
        &c,
        1,
        &[
            "user",
            "add",
            "bob@example.org",
            "--login",
            "bob",
            "--quota",
            "5G",
        ],
        "battery staple\n",
    );
    // A password is never taken from the command line, and an empty one is refused.
    let o = ctl(&c, 1, &["user", "add", "eve@example.org"], "");
    assert!(!o.ok && o.stderr.contains("empty password"), "{}", o.stderr);

    // Authenticates on the other nodes, by address (any case, domain alias) and by login.
    auth_eventually(&c, 3, "alice@example.org", "correct horse", true);
    auth_eventually(&c, 2, "ALICE@example.NET", "correct horse", true);
    auth_eventually(&c, 3, "bob", "battery staple", true);
    auth_eventually(&c, 3, "alice@example.org", "correct horsE", false);
    auth_eventually(&c, 2, "nobody@example.org", "correct horse", false);

    // Per-domain default quota and per-user override, as node 2 resolves them.
    let r = ctl_ok(&c, 2, &["resolve", "alice@example.net"], "");
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        v["resolution"]["User"]["user"]["quota_bytes"],
        1u64 << 30,
        "{r}"
    );
    let r = ctl_ok(&c, 3, &["resolve", "bob@example.org"], "");
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        v["resolution"]["User"]["user"]["quota_bytes"],
        5u64 << 30,
        "{r}"
    );
    // A user's override can be "unlimited" whatever the domain's default, and `default`
    // gives the domain's back.
    let quota_of = |node: u64, who: &str| -> serde_json::Value {
        let r = ctl_ok(&c, node, &["resolve", who], "");
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        v["resolution"]["User"]["user"]["quota_bytes"].clone()
    };
    let eventually = |node: u64, who: &str, want: serde_json::Value| {
        let mut got = serde_json::Value::Null;
        for _ in 0..100 {
            got = quota_of(node, who);
            if got == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{who} on node {node}: quota {got}, want {want}");
    };
    ctl_ok(
        &c,
        1,
        &["user", "set", "bob@example.org", "--quota", "none"],
        "",
    );
    eventually(3, "bob@example.org", serde_json::Value::Null);
    ctl_ok(
        &c,
        1,
        &["user", "set", "bob@example.org", "--quota", "default"],
        "",
    );
    eventually(3, "bob@example.org", serde_json::json!(1u64 << 30));
    ctl_ok(
        &c,
        1,
        &["user", "set", "bob@example.org", "--quota", "5G"],
        "",
    );
    eventually(3, "bob@example.org", serde_json::json!(5u64 << 30));

    // kill -9 of the meta leader: the others elect a new one, keep authenticating, and take
    // changes.
    c.kill(leader).unwrap();
    let new_leader = c.wait_leader("meta", Some(leader), WAIT).await.unwrap();
    let survivors: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    for &n in &survivors {
        auth_eventually(&c, n, "alice@example.org", "correct horse", true);
    }
    ctl_ok(
        &c,
        new_leader,
        &["user", "passwd", "alice@example.org"],
        "new secret\n",
    );
    ctl_ok(
        &c,
        survivors[0],
        &[
            "alias",
            "add",
            "postmaster@example.org",
            "alice@example.org",
        ],
        "",
    );
    for &n in &survivors {
        auth_eventually(&c, n, "alice@example.org", "new secret", true);
        auth_eventually(&c, n, "alice@example.org", "correct horse", false);
    }

    // The killed node comes back and catches up with what changed while it was down.
    c.start(leader).unwrap();
    auth_eventually(&c, leader, "alice@example.org", "new secret", true);
    auth_eventually(&c, leader, "alice@example.org", "correct horse", false);
    // The alias was added after the password change: it may be applied a moment later.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = ctl_ok(&c, leader, &["resolve", "postmaster@example.org"], "");
        if r.contains("\"via_alias\": true") {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = ctl_ok(&c, leader, &["user", "list"], "");
    assert!(
        list.contains("alice@example.org") && list.contains("bob@example.org"),
        "{list}"
    );
}

/// `[directory.ldap]` in a node's configuration: `halyard serve` looks users up in a real
/// slapd; when slapd is gone, uncached lookups are temporary failures, never "unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_uses_configured_ldap_directory() {
    let mut slapd = Slapd::start();
    let dir = tempfile::Builder::new()
        .prefix("halyard-ldap-node-")
        .tempdir()
        .unwrap();
    let spec = ClusterSpec {
        mta: Default::default(),
        nodes: 1,
        base_port: 17520,
        groups: vec!["rg1".into()],
        plaintext: false,
        raft: RaftConfig::default(),
        directory: DirectoryConfig {
            ldap: Some(slapd.config()),
            ..Default::default()
        },
        access: Default::default(),
    };
    let mut c = LocalCluster::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_halyard")),
        dir.path(),
        &spec,
    )
    .unwrap();
    c.start_all().unwrap();
    c.wait_leader("meta", None, WAIT).await.unwrap();

    let o = ctl(&c, 1, &["auth", "test", "alice"], "alice-secret\n");
    assert!(
        o.ok && o.stdout.contains("ldap directory"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = ctl(&c, 1, &["auth", "test", "alice"], "wrong\n");
    assert!(
        !o.ok && o.stdout.contains("refused"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let r = ctl_ok(&c, 1, &["resolve", "a.smith@example.org"], "");
    assert!(
        r.contains("\"via_alias\": true") && r.contains("\"ldap\""),
        "{r}"
    );
    // Issue 22 §7: writing the embedded directory, which nothing reads, is refused clearly.
    for args in [
        &["user", "add", "carol@example.org"][..],
        &["domain", "add", "example.net"][..],
    ] {
        let o = ctl(&c, 1, args, "secret\n");
        assert!(
            !o.ok && o.stderr.contains("directory is LDAP"),
            "{args:?}: {}{}",
            o.stdout,
            o.stderr
        );
    }

    // slapd down: the cached answer still resolves, an uncached address is a temporary
    // failure (not "Unknown").
    slapd.stop();
    let r = ctl_ok(&c, 1, &["resolve", "a.smith@example.org"], "");
    assert!(r.contains("alice@example.org"), "{r}");
    let o = ctl(&c, 1, &["resolve", "bob@example.com"], "");
    assert!(
        !o.ok && o.stderr.contains("unavailable"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    slapd.run();
    let deadline = Instant::now() + WAIT;
    loop {
        let o = ctl(&c, 1, &["resolve", "bob@example.com"], "");
        if o.ok {
            assert!(o.stdout.contains("bob@example.com"), "{}", o.stdout);
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", o.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}
