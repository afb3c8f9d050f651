//! Three real `halyard serve` processes on 127.0.0.1 over mutual TLS: election, kill -9 of
//! the leader, catch-up from the log and from a snapshot, and crash safety of acknowledged
//! entries.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use halyard_api::pb::MembershipAction;
use halyard_api::{Admin, MessageSummary, NodeStatus};
use halyard_node::config::RaftConfig;
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};
use halyard_raft_store::{Command, Reply};

const G: &str = "rg1";

/// Cluster tests run one at a time: three nodes each is all two cores can time fairly.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(30);

fn spec(base_port: u16, raft: RaftConfig) -> ClusterSpec {
    ClusterSpec {
        mta: Default::default(),
        nodes: 3,
        base_port,
        groups: vec![G.into()],
        plaintext: false,
        raft,
        directory: Default::default(),
        access: Default::default(),
    }
}

fn fast_raft() -> RaftConfig {
    RaftConfig {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..RaftConfig::default()
    }
}

/// A started one-node cluster (TLS) whose meta and data groups have a leader.
async fn one_node(name: &str, base_port: u16) -> (tempfile::TempDir, LocalCluster) {
    let mut sp = spec(base_port, fast_raft());
    sp.nodes = 1;
    let (d, mut c) = cluster(name, &sp);
    c.start_all().unwrap();
    c.wait_leader("meta", None, WAIT).await.unwrap();
    c.wait_leader(G, None, WAIT).await.unwrap();
    (d, c)
}

fn cluster(name: &str, spec: &ClusterSpec) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("halyard-{name}-"))
        .tempdir()
        .unwrap();
    let c = LocalCluster::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_halyard")),
        dir.path(),
        spec,
    )
    .unwrap();
    (dir, c)
}

async fn create_inbox(a: &Admin) {
    let r = a
        .propose(
            G,
            &Command::CreateMailbox {
                user: "alice".into(),
                name: "INBOX".into(),
                uidvalidity: 1,
                partition: "primary".into(),
                special_use: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Reply::Created { .. }), "{r:?}");
}

/// Appends `n` messages tagged `tag`; returns the acknowledged UIDs.
async fn append(a: &Admin, tag: &str, n: usize) -> Vec<u32> {
    let mut uids = Vec::new();
    for i in 0..n {
        let body = Bytes::from(format!(
            "Subject: {tag} {i}\r\n\r\n{}",
            "x".repeat(2000 + i)
        ));
        let cmd = Command::Append {
            user: "alice".into(),
            mailbox: "INBOX".into(),
            flags: vec![],
            internal_date_ms: i as i64,
            body,
            meta: None,
        };
        match a.propose(G, &cmd).await.unwrap() {
            Ok(Reply::Appended { uid, .. }) => uids.push(uid),
            other => panic!("append {tag} {i}: {other:?}"),
        }
    }
    uids
}

async fn messages(a: &Admin, linearizable: bool) -> Vec<MessageSummary> {
    a.messages(G, "alice", "INBOX", linearizable)
        .await
        .unwrap()
        .expect("alice's INBOX exists")
}

async fn applied_and_digest(c: &LocalCluster, id: u64) -> (u64, String) {
    let a = c.admin(id, WAIT).await.unwrap();
    let d = a.digest(G).await.unwrap();
    (d.applied_index, d.digest)
}

/// Waits until every running node reports the same applied index and digest.
async fn assert_replicas_converge(c: &LocalCluster) {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = Vec::new();
    while std::time::Instant::now() < deadline {
        let mut seen = Vec::new();
        for id in 1..=3 {
            if c.is_running(id) {
                seen.push(applied_and_digest(c, id).await);
            }
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        last = seen;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("replicas did not converge: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_new_leader_elected_and_old_leader_catches_up() {
    let _serial = SERIAL.lock().await;
    let (_d, mut c) = cluster("failover", &spec(17100, fast_raft()));
    c.start_all().unwrap();
    let l1 = c.wait_leader(G, None, WAIT).await.unwrap();
    let leader = c.admin(l1, WAIT).await.unwrap();
    create_inbox(&leader).await;
    let mut acked = append(&leader, "before", 40).await;

    c.kill(l1).unwrap();
    let l2 = c.wait_leader(G, Some(l1), WAIT).await.unwrap();
    assert_ne!(l1, l2);
    let leader2 = c.admin(l2, WAIT).await.unwrap();
    // Every entry acknowledged by the old leader is on the new one, with the same UID.
    let have: BTreeSet<u32> = messages(&leader2, true)
        .await
        .iter()
        .map(|m| m.uid)
        .collect();
    assert!(
        acked.iter().all(|u| have.contains(u)),
        "lost acknowledged messages after failover"
    );
    acked.extend(append(&leader2, "after", 40).await);

    c.start(l1).unwrap();
    assert_replicas_converge(&c).await;
    let old = c.admin(l1, WAIT).await.unwrap();
    let uids: Vec<u32> = messages(&old, false).await.iter().map(|m| m.uid).collect();
    assert_eq!(uids, acked, "restarted node has a different mailbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_behind_purged_log_catches_up_by_snapshot() {
    let raft = RaftConfig {
        snapshot_every: 40,
        keep_logs_after_snapshot: 5,
        snapshot_chunk_bytes: 64 * 1024,
        ..fast_raft()
    };
    let _serial = SERIAL.lock().await;
    let (_d, mut c) = cluster("snapshot", &spec(17200, raft));
    c.start_all().unwrap();
    let l = c.wait_leader(G, None, WAIT).await.unwrap();
    let leader = c.admin(l, WAIT).await.unwrap();
    create_inbox(&leader).await;
    append(&leader, "early", 5).await;
    let lagger = (1..=3).find(|i| *i != l).unwrap();
    assert_replicas_converge(&c).await;
    c.kill(lagger).unwrap();
    let (lagger_applied, _) = {
        // Index the lagging node had reached: everything up to now was converged.
        applied_and_digest(&c, l).await
    };

    // Enough appends (with >64 KiB of bodies) for several snapshots and a multi-chunk transfer.
    let acked = append(&leader, "while-down", 150).await;
    leader.trigger_snapshot(G).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let st = leader.status().await.unwrap();
        let g = st.groups.iter().find(|g| g.name == G).unwrap();
        if g.purged_index.unwrap_or(0) > lagger_applied {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader never purged its log past {lagger_applied}: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    c.start(lagger).unwrap();
    assert_replicas_converge(&c).await;
    let a = c.admin(lagger, WAIT).await.unwrap();
    let st = a.status().await.unwrap();
    let g = st.groups.iter().find(|g| g.name == G).unwrap();
    assert!(
        g.snapshot_index.unwrap_or(0) > lagger_applied,
        "lagging node did not install a snapshot: {g:?}"
    );
    let have: BTreeSet<u32> = messages(&a, false).await.iter().map(|m| m.uid).collect();
    assert!(acked.iter().all(|u| have.contains(u)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_kill_of_every_node() {
    let _serial = SERIAL.lock().await;
    let (_d, mut c) = cluster("crash", &spec(17300, fast_raft()));
    c.start_all().unwrap();
    let l = c.wait_leader(G, None, WAIT).await.unwrap();
    let leader = c.admin(l, WAIT).await.unwrap();
    create_inbox(&leader).await;
    // Concurrent writers, so acknowledgements come from batched (group-committed) syncs.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let a = leader.clone();
        tasks.push(tokio::spawn(async move {
            append(&a, &format!("w{w}"), 25).await
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // Power loss everywhere at once.
    for id in 1..=3 {
        c.kill(id).unwrap();
    }
    c.start_all().unwrap();
    let l = c.wait_leader(G, None, WAIT).await.unwrap();
    let leader = c.admin(l, WAIT).await.unwrap();
    let have: BTreeSet<u32> = messages(&leader, true)
        .await
        .iter()
        .map(|m| m.uid)
        .collect();
    let missing: Vec<_> = acked.iter().filter(|u| !have.contains(u)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged UIDs lost after kill -9 of all nodes: {missing:?}"
    );
    assert_replicas_converge(&c).await;
    for id in 1..=3 {
        let a = c.admin(id, WAIT).await.unwrap();
        let have: BTreeSet<u32> = messages(&a, false).await.iter().map(|m| m.uid).collect();
        assert!(
            acked.iter().all(|u| have.contains(u)),
            "node {id} lacks acknowledged entries"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_promoted_and_removed_online() {
    // Start a 3-node config but only run nodes 1 and 2 at first... instead: run all three,
    // remove node 3 from the group, then add it back as learner and promote it.
    let _serial = SERIAL.lock().await;
    let (_d, mut c) = cluster("members", &spec(17400, fast_raft()));
    c.start_all().unwrap();
    let l = c.wait_leader(G, None, WAIT).await.unwrap();
    let leader = c.admin(l, WAIT).await.unwrap();
    create_inbox(&leader).await;
    append(&leader, "m", 10).await;
    let other = (1..=3).find(|i| *i != l).unwrap();
    leader
        .membership(G, MembershipAction::Remove, other, "")
        .await
        .unwrap();
    let voters = |st: &NodeStatus| {
        st.groups
            .iter()
            .find(|g| g.name == G)
            .unwrap()
            .members
            .iter()
            .map(|m| (m.id, m.role))
            .collect::<Vec<_>>()
    };
    assert!(
        !voters(&leader.status().await.unwrap())
            .iter()
            .any(|(id, _)| *id == other)
    );
    append(&leader, "n", 10).await;
    let addr = c.addr(other);
    leader
        .membership(G, MembershipAction::Add, other, &addr)
        .await
        .unwrap();
    let st = leader.status().await.unwrap();
    assert!(
        voters(&st).contains(&(other, halyard_raft_store::Role::Learner)),
        "{:?}",
        voters(&st)
    );
    leader
        .membership(G, MembershipAction::Promote, other, "")
        .await
        .unwrap();
    let st = leader.status().await.unwrap();
    assert!(
        voters(&st).contains(&(other, halyard_raft_store::Role::Voter)),
        "{:?}",
        voters(&st)
    );
    assert_replicas_converge(&c).await;
}

/// Issue 22 (found reading the code): the Raft RPCs accepted any certificate of the cluster
/// CA, so an operator's `ctl` certificate could send a raw AppendEntries or Vote into a
/// group. Only node certificates may speak Raft now; a node's request still reaches Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_certificates_may_speak_raft() {
    use halyard_api::pb::raft_client::RaftClient;
    let _s = SERIAL.lock().await;
    let (d, c) = one_node("raft-peers", 16900).await;
    let certs = d.path().join("certs");
    let vote = |who: &str| {
        let material = halyard_api::tls::TlsMaterial::load(
            &certs.join("ca.pem"),
            &certs.join(format!("{who}.pem")),
            &certs.join(format!("{who}.key")),
        )
        .unwrap();
        let addr = c.addr(1);
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(material.client(halyard_api::tls::CLUSTER_DOMAIN))
                .unwrap()
                .connect()
                .await
                .unwrap();
            RaftClient::new(ch)
                .vote(halyard_api::pb::GroupPayload {
                    group: G.into(),
                    payload: vec![1, 2, 3],
                    from_node: 0,
                    command_level: 0,
                })
                .await
        }
    };
    let from_ctl = vote("ctl").await.unwrap_err();
    assert_eq!(from_ctl.code(), tonic::Code::PermissionDenied, "{from_ctl}");
    // A node's certificate gets through to Raft (which refuses the garbage payload).
    let from_node = vote("node-1").await.unwrap_err();
    assert_eq!(
        from_node.code(),
        tonic::Code::InvalidArgument,
        "{from_node}"
    );
}

/// Issue 22 §4: every administrative change is a replicated audit record — who (the
/// caller's certificate and address), what (never a password hash or a key), when — listed
/// by `ctl audit`. Directory changes commit with their record; others are recorded after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrative_changes_leave_an_audit_trail() {
    let _s = SERIAL.lock().await;
    let (_d, c) = one_node("audit", 16950).await;
    let ok = |args: &[&str], stdin: &str| {
        let (ok, out, err) = c.ctl(1, args, stdin).unwrap();
        assert!(ok, "{args:?}: {out}{err}");
    };
    ok(&["domain", "add", "example.org"], "");
    ok(
        &["user", "add", "ann@example.org", "--login", "ann"],
        "ann-secret\n",
    );
    ok(&["user", "passwd", "ann@example.org"], "ann-new-secret\n");
    ok(&["snapshot", "--group", G], "");
    // A refused change leaves no record of a change that did not happen.
    let (refused, _, _) = c.ctl(1, &["domain", "add", "example.org"], "").unwrap();
    assert!(!refused);
    let deadline = std::time::Instant::now() + WAIT;
    let (text, trail) = loop {
        let (ok, out, err) = c.ctl(1, &["audit", "--json"], "").unwrap();
        assert!(ok, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let whats: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} | {}",
                    r["who"].as_str().unwrap(),
                    r["what"].as_str().unwrap()
                )
            })
            .collect();
        if whats.iter().any(|w| w.contains("snapshot")) || std::time::Instant::now() > deadline {
            break (out, whats);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let want = [
        "meta: add domain example.org",
        "meta: add user ann@example.org (login ann); set SCRAM keys of ann@example.org",
        "meta: update user ann@example.org (password); set SCRAM keys of ann@example.org",
        &format!("{G}: snapshot"),
    ];
    assert_eq!(trail.len(), want.len(), "{trail:#?}");
    for (got, want) in trail.iter().zip(want) {
        assert!(got.starts_with("node-1 from 127.0.0.1:"), "{got}");
        assert!(got.ends_with(want), "{got} (want {want})");
    }
    assert!(
        !text.contains("argon2") && !text.contains("secret"),
        "{text}"
    );
}

/// Issue 22 §4: a domain administrator (a certificate from `halyard certs --admin NAME
/// --domains ...`) manages the users of its domains and nothing else, enforced by the node;
/// its changes are in the audit trail under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_administrator_is_refused_outside_its_domains() {
    let _s = SERIAL.lock().await;
    let (d, c) = one_node("domain-admin", 16970).await;
    let root = |args: &[&str], stdin: &str| {
        let (ok, out, err) = c.ctl(1, args, stdin).unwrap();
        assert!(ok, "{args:?}: {out}{err}");
        out
    };
    root(&["domain", "add", "example.org"], "");
    root(&["domain", "add", "other.org"], "");
    root(&["user", "add", "eve@other.org"], "eve-pw\n");
    let certs = d.path().join("certs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halyard"))
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--admin", "ann", "--domains", "example.org"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ann = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_halyard"))
            .arg("ctl")
            .args(["--node", &c.addr(1), "--ca"])
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("admin-ann.pem"))
            .arg("--key")
            .arg(certs.join("admin-ann.key"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = ann(&["user", "add", "bob@example.org"], "bob-pw\n");
    assert!(ok, "{out}");
    let (ok, out) = ann(&["user", "passwd", "bob@example.org"], "bob-pw2\n");
    assert!(ok, "{out}");
    for args in [
        &["user", "add", "mallory@other.org"][..],
        &["user", "passwd", "eve@other.org"][..],
        &["user", "del", "eve@other.org", "--purge-now"][..],
        &["domain", "add", "mine.test"][..],
        &["snapshot", "--group", G][..],
        &["audit"][..],
    ] {
        let (ok, out) = ann(args, "x-pw\n");
        assert!(
            !ok && out.contains("domain administrator"),
            "{args:?}: {out}"
        );
    }
    let (ok, out) = ann(&["user", "list"], "");
    assert!(
        ok && out.contains("bob@example.org") && !out.contains("eve@"),
        "{out}"
    );
    let trail = root(&["audit"], "");
    assert!(
        trail.contains("ann from") && trail.contains("meta: add user bob@example.org"),
        "{trail}"
    );
    assert!(
        !trail.contains("mallory"),
        "a refused change was recorded as made: {trail}"
    );
}
