//! SMTP reception with real clients (Python's smtplib, raw sockets, swaks; scripts in
//! tests/clients) against `halyard serve` processes, with delivery read back over IMAP.

use std::process::Command;
use std::time::Duration;

use halyard_node::config::RaftConfig;
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

mod support;
use support::{WAIT, ctl, run_client};

/// One MTA test at a time: they share ports.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec(nodes: u64, base_port: u16, imap: u16, smtp: u16, submission: u16) -> ClusterSpec {
    ClusterSpec {
        nodes,
        base_port,
        groups: vec!["rg1".into()],
        plaintext: true,
        raft: RaftConfig::default(),
        directory: Default::default(),
        access: halyard_access::AccessConfig {
            imap_listen: Some(format!("127.0.0.1:{imap}")),
            ..Default::default()
        },
        mta: halyard_mta::MtaConfig {
            hostname: "mx.example.org".into(),
            smtp_listen: Some(format!("127.0.0.1:{smtp}")),
            submission_listen: Some(format!("127.0.0.1:{submission}")),
            // Loopback is not trusted here: relaying must be refused.
            trusted_networks: vec![],
            max_recipients: 100,
            ..Default::default()
        },
    }
}

async fn cluster(name: &str, spec: &ClusterSpec) -> (tempfile::TempDir, LocalCluster) {
    support::cluster(name, spec, &[("alice@example.org", "alice", "alice-pw")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_reception_with_smtplib_swaks_and_raw_pipelining() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 18100, 18143, 18125, 18187);
    let (_d, _c) = cluster("smtp", &sp).await;
    run_client(
        "smtp_commands.py",
        &[
            ("SMTP_PORT", "18125".into()),
            ("SUBMISSION_PORT", "18187".into()),
            ("IMAP_PORT", "18143".into()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("MAX_RCPTS", "100".into()),
        ],
    );
}

/// On a 3-node cluster: messages sent while the master is killed with SIGKILL; the client
/// moves to another node for anything not acknowledged. Every acknowledged message ends up
/// in the mailbox exactly once (delivered by the new master's job controller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_of_the_master() {
    use std::io::BufRead;
    let _s = SERIAL.lock().await;
    let sp = spec(3, 18200, 18243, 18225, 18287);
    let (d, mut c) = cluster("smtp-failover", &sp).await;
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    let ports = |base: u16| {
        // Start with the master, so that the kill lands mid-stream.
        let mut ids: Vec<u64> = vec![leader];
        ids.extend((1..=3).filter(|i| *i != leader));
        ids.iter()
            .map(|i| (base + 10 * (*i as u16 - 1)).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let state = d.path().join("acked.txt").display().to_string();
    let env = [
        ("SMTP_PORTS", ports(18225)),
        ("IMAP_PORTS", ports(18243)),
        ("USER", "alice".to_string()),
        ("PASSWORD", "alice-pw".to_string()),
        ("N", "120".to_string()),
        ("STATE", state),
    ];
    let script = support::script("smtp_failover.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PHASE", "send")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut killed = false;
    let mut log = String::new();
    // Bounded: the script sends N messages, each retried for at most 60 s.
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if !killed && line.starts_with("sent 40 ") {
            c.kill(leader).unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success() && killed, "sender failed:\n{log}");
    eprintln!("{}", log.lines().last().unwrap_or(""));
    let new_leader = c.wait_leader("rg1", Some(leader), WAIT).await.unwrap();
    assert_ne!(new_leader, leader);
    let mut check: Vec<(&str, String)> = env.to_vec();
    check.push(("PHASE", "check".into()));
    run_client("smtp_failover.py", &check);
}

/// Every member of a 3-node group serves SMTP: the two that are not the master forward the
/// accepted message to it and answer 250 once it is committed (PIPELINING and BDAT too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_accepts_smtp_and_the_master_commits() {
    let _s = SERIAL.lock().await;
    let sp = spec(3, 19000, 19043, 19025, 19087);
    let (_d, c) = cluster("smtp-every-node", &sp).await;
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    // The followers first, the master last.
    let mut ids: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    ids.push(leader);
    let ports: Vec<String> = ids
        .iter()
        .map(|i| (19025 + 10 * (*i as u16 - 1)).to_string())
        .collect();
    run_client(
        "smtp_every_node.py",
        &[
            ("SMTP_PORTS", ports.join(",")),
            ("IMAP_PORT", (19043 + 10 * (leader as u16 - 1)).to_string()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("ADDRESS", "alice@example.org".into()),
        ],
    );
}

/// Submission with STARTTLS and implicit TLS, AUTH PLAIN/LOGIN (TLS required first),
/// sender ownership, STARTTLS command injection, swaks with AUTH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_with_starttls_implicit_tls_and_auth() {
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("mail");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    halyard_node::tls::generate_mail_server(&certs, &names).unwrap();
    let mut sp = spec(1, 18300, 18343, 18325, 18387);
    sp.mta.submissions_listen = Some("127.0.0.1:18365".into());
    sp.mta.tls_cert = Some(certs.join("mail.pem"));
    sp.mta.tls_key = Some(certs.join("mail.key"));
    let (_d, _c) = cluster("smtp-tls", &sp).await;
    run_client(
        "smtp_auth_tls.py",
        &[
            ("SMTP_PORT", "18325".into()),
            ("SUBMISSION_PORT", "18387".into()),
            ("SUBMISSIONS_PORT", "18365".into()),
            ("IMAP_PORT", "18343".into()),
            ("CAFILE", certs.join("mail-ca.pem").display().to_string()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("ADDRESS", "alice@example.org".into()),
        ],
    );
}

/// `ctl queue`: a message that does not fit the quota waits in the queue (listed with its
/// error, as JSON too), is retried after the quota is raised and delivered; another one is
/// bounced, a third deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_management_with_ctl() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 18400, 18443, 18425, 18487);
    let (_d, c) = cluster("queue", &sp).await;
    ctl(
        &c,
        &["user", "set", "alice@example.org", "--quota", "2K"],
        "",
    );
    ctl(
        &c,
        &["user", "add", "bob@example.org", "--login", "bob"],
        "bob-pw\n",
    );
    let send = |subject: &str| {
        let body = format!(
            "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\r\n{}\r\n",
            "x".repeat(4000)
        );
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1:18425", "--to", "alice@example.org"])
            .args(["--from", "bob@example.org", "--data", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                ch.stdin.take().unwrap().write_all(body.as_bytes())?;
                ch.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.split("queued as ").nth(1))
            .unwrap_or_else(|| panic!("not queued: {text}"))
            .trim()
            .to_string()
    };
    let list = || {
        let (ok, out, err) = c.ctl(1, &["queue", "list", "--json"], "").unwrap();
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let wait_for = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let v = list();
            if pred(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "queue never became {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let a = send("too big one");
    let b = send("too big two");
    let d = send("too big three");
    let pending_with_error = |v: &serde_json::Value, id: &str| {
        v.as_array().unwrap().iter().any(|e| {
            e["entry"]["queue_id"] == id
                && e["entry"]["recipients"][0]["last_error"]
                    .as_str()
                    .is_some_and(|x| x.contains("mailbox full"))
        })
    };
    wait_for(&|v| {
        pending_with_error(v, &a) && pending_with_error(v, &b) && pending_with_error(v, &d)
    });
    let (ok, table, _) = c.ctl(1, &["queue", "list"], "").unwrap();
    assert!(
        ok && table.contains(&a) && table.contains("4.2.2 mailbox full"),
        "{table}"
    );
    let (ok, shown, _) = c.ctl(1, &["queue", "show", &a], "").unwrap();
    assert!(
        ok && shown.contains("<alice@example.org> channel store"),
        "{shown}"
    );
    // Bounce one, delete another: both leave the queue.
    let (ok, out, err) = c.ctl(1, &["queue", "bounce", &b], "").unwrap();
    assert!(
        ok && out.contains("1 pending recipient(s) failed"),
        "{out}{err}"
    );
    let (ok, out, err) = c.ctl(1, &["queue", "delete", &d], "").unwrap();
    assert!(ok, "{out}{err}");
    wait_for(&|v| {
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["entry"]["queue_id"].as_str())
            .collect();
        ids == [a.as_str()]
    });
    // Room again, and retry now: delivered, the queue empties.
    ctl(
        &c,
        &["user", "set", "alice@example.org", "--quota", "10M"],
        "",
    );
    // The store learns the new quota on the next RCPT or login; a login does it here.
    run_client(
        "imap_login_only.py",
        &[
            ("IMAP_PORT", "18443".into()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
        ],
    );
    let (ok, out, err) = c.ctl(1, &["queue", "retry", &a], "").unwrap();
    assert!(ok, "{out}{err}");
    wait_for(&|v| v.as_array().unwrap().is_empty());
    let (ok, out, _) = c.ctl(1, &["queue", "retry", &a], "").unwrap();
    assert!(
        !ok || out.contains("no message"),
        "retry of a delivered message: {out}"
    );
    // The bounced message came back to bob as an RFC 3464 report (the deleted one did not).
    run_client(
        "dsn_check.py",
        &[
            ("IMAP_PORT", "18443".into()),
            ("USER", "bob".into()),
            ("PASSWORD", "bob-pw".into()),
            ("FAILED", "alice@example.org".into()),
            ("SUBJECT", "too big two".into()),
            ("COUNT", "1".into()),
        ],
    );
}

/// Child processes (DNS server, SMTP sinks) killed when the test ends, however it ends.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Relay through the SMTP channel: a real DNS server (dnsmasq on loopback) serves MX and A
/// records, Postfix's smtp-sink instances on 127.0.0.2-4 accept, answer 4xx or answer 5xx.
/// Preference order and fallback, implicit MX, retry on 4xx, DSN on 5xx and NXDOMAIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_via_mx_with_dnsmasq_and_smtp_sink() {
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("sink");
    std::fs::create_dir_all(&dump).unwrap();
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let relay_port = 18525u16;
    let dns_port = 18553u16;
    let mut kids = Children(vec![]);
    kids.0.push(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-hosts",
                "--no-resolv",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                &format!("--port={dns_port}"),
                "--mx-host=ok.test,mx.ok.test,10",
                "--host-record=mx.ok.test,127.0.0.2",
                "--mx-host=soft.test,mx.soft.test,10",
                "--host-record=mx.soft.test,127.0.0.3",
                "--mx-host=hard.test,mx.hard.test,10",
                "--host-record=mx.hard.test,127.0.0.4",
                "--mx-host=fallback.test,dead.fallback.test,10",
                "--mx-host=fallback.test,mx.ok.test,20",
                "--host-record=dead.fallback.test,127.0.0.5",
                "--host-record=implicit.test,127.0.0.2",
                // 127.0.0.9 is on the blocklist.
                "--host-record=9.0.0.127.bl.test,127.0.0.2",
                "--local=/test/",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    let sink = |addr: &str, extra: &[&str]| {
        let mut c = Command::new("smtp-sink");
        c.args(extra)
            .args(["-u", "nobody", &format!("{addr}:{relay_port}"), "50"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let template = format!("{}/%M.", dump.display());
    // The accepting sink logs its connections (-v), to show connection reuse.
    let sink_log = tmp.path().join("sink.log");
    let mut ok_sink = sink("127.0.0.2", &["-v", "-d", &template]);
    ok_sink.stderr(std::fs::File::create(&sink_log).unwrap());
    kids.0.push(ok_sink.spawn().expect("smtp-sink"));
    kids.0.push(
        sink("127.0.0.3", &["-r", "RCPT"])
            .spawn()
            .expect("smtp-sink"),
    );
    kids.0.push(
        sink("127.0.0.4", &["-f", "RCPT"])
            .spawn()
            .expect("smtp-sink"),
    );
    let mut sp = spec(1, 18500, 18543, 18527, 18587);
    sp.mta.dns_servers = vec![format!("127.0.0.1:{dns_port}")];
    sp.mta.relay_port = relay_port;
    sp.mta.dnsbl_zones = vec!["bl.test".into()];
    sp.mta.mailfromdnsverify = true;
    sp.mta.delay_notice_secs = 1;
    sp.mta.client_access = vec!["deny 127.0.0.8".into()];
    let (_d, c) = cluster("relay", &sp).await;
    ctl(
        &c,
        &["user", "add", "bob@example.org", "--login", "bob"],
        "bob-pw\n",
    );
    run_client(
        "smtp_relay.py",
        &[
            ("SMTP_PORT", "18527".into()),
            ("SUBMISSION_PORT", "18587".into()),
            ("USER", "bob".into()),
            ("PASSWORD", "bob-pw".into()),
            ("ADDRESS", "bob@example.org".into()),
        ],
    );
    // Delivered: ok (MX 10), implicit (A record only), fallback (MX 10 dead, MX 20 ok).
    let deadline = std::time::Instant::now() + WAIT;
    let dumped = loop {
        let mut texts = Vec::new();
        for e in walk(&dump) {
            texts.push(std::fs::read_to_string(e).unwrap_or_default());
        }
        if texts.len() >= 3 || std::time::Instant::now() > deadline {
            break texts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let all = dumped.join("\n----\n");
    assert_eq!(dumped.len(), 3, "sink got: {all}");
    for s in ["relay ok", "relay implicit mx", "relay fallback"] {
        assert!(all.contains(&format!("Subject: {s}")), "{s} missing: {all}");
    }
    assert!(all.contains("\n.dotline"), "dot-stuffing: {all}");
    // 4xx: still queued for a retry, with the remote answer kept.
    let (ok, out, _) = c.ctl(1, &["queue", "list", "--json"], "").unwrap();
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let soft = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entry"]["recipients"][0]["spec"]["address"] == "d@soft.test")
        .unwrap_or_else(|| panic!("soft-failed message not queued: {out}"));
    let r = &soft["entry"]["recipients"][0];
    assert_eq!(r["state"], "Pending");
    assert!(r["last_error"].as_str().unwrap_or("").contains(" 4"), "{r}");
    // 5xx and a domain that does not exist: reports back to bob.
    run_client(
        "dsn_check.py",
        &[
            ("IMAP_PORT", "18543".into()),
            ("USER", "bob".into()),
            ("PASSWORD", "bob-pw".into()),
            ("FAILED", "e@hard.test,f@nx.test".into()),
            ("SUBJECT", "relay hard,relay nxdomain".into()),
            ("COUNT", "2".into()),
        ],
    );
    // Still deferred a second after acceptance: one delay warning for d@soft.test (no NOTIFY:
    // the default includes DELAY), none for g@soft.test (NOTIFY=FAILURE), and no second one
    // after more queue scans (every 5 s).
    run_client(
        "dsn_check.py",
        &[
            ("IMAP_PORT", "18543".into()),
            ("USER", "bob".into()),
            ("PASSWORD", "bob-pw".into()),
            ("ACTION", "delayed".into()),
            ("FAILED", "d@soft.test".into()),
            ("SUBJECT", "relay soft".into()),
            ("STATUS", "4.".into()),
            ("COUNT", "1".into()),
            ("SETTLE", "11".into()),
        ],
    );
    // Connection reuse: messages relayed one after another to the same server share one
    // connection (each after an RSET), instead of one connection per message.
    let connects = || {
        std::fs::read_to_string(&sink_log)
            .unwrap_or_default()
            .matches("smtp-sink: connect (")
            .count()
    };
    let before = (connects(), walk(&dump).len());
    for i in 0..4 {
        let sent = Command::new("python3")
            .args(["-c", &format!(
                "import smtplib; s = smtplib.SMTP('127.0.0.1', 18587); s.login('bob', 'bob-pw'); \
                 s.sendmail('bob@example.org', ['r{i}@ok.test'], b'Subject: reuse {i}\\r\\n\\r\\nx\\r\\n'); s.quit()"
            )])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + WAIT;
        while walk(&dump).len() < before.1 + i + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "reuse {i} not relayed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let new = connects() - before.0;
    assert!(new <= 1, "4 messages in a row took {new} new connections");
}

/// Files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Hostile SMTP input: 10 MB lines, bare LF/CR, smuggling with <LF>.<LF>, NUL, an
/// impossible BDAT, pipelined junk, slowloris — clear replies, bounded memory, closed where
/// right, and a well-behaved session alongside never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_smtp_clients_get_clear_answers_and_hurt_nobody() {
    let _s = SERIAL.lock().await;
    let mut sp = spec(1, 18600, 18643, 18625, 18687);
    sp.mta.command_timeout_secs = 3;
    sp.mta.max_connection_rate_per_ip = 30;
    let (_d, _c) = cluster("smtp-hostile", &sp).await;
    run_client(
        "smtp_hostile.py",
        &[
            ("SMTP_PORT", "18625".into()),
            ("IMAP_PORT", "18643".into()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("COMMAND_TIMEOUT", "3".into()),
            ("RATE", "30".into()),
        ],
    );
}

/// Graceful drain: on SIGTERM a session waiting for its next command is told 421 and
/// closed, and the node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_idle_smtp_sessions_421() {
    use std::io::{BufRead, BufReader, Write};
    let _s = SERIAL.lock().await;
    let sp = spec(1, 18950, 18993, 18975, 18997);
    let (_d, c) = cluster("smtp-drain", &sp).await;
    let tcp = std::net::TcpStream::connect("127.0.0.1:18975").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}");
    w.write_all(b"NOOP\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("250"), "{line}");
    let pid = c.pid(1).unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("421 4.3.2"), "{line:?}");
}

/// Distribution lists (nested), forward-only users and forward-with-copy users expand at
/// RCPT time; a mailbox reached several ways gets one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_forwarding_expand_to_each_mailbox_once() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 18700, 18743, 18725, 18787);
    let (_d, c) = cluster("smtp-lists", &sp).await;
    for u in ["bob", "carol", "dave"] {
        ctl(
            &c,
            &["user", "add", &format!("{u}@example.org"), "--login", u],
            &format!("{u}-pw\n"),
        );
    }
    ctl(
        &c,
        &[
            "list",
            "add",
            "inner@example.org",
            "--member",
            "bob@example.org",
        ],
        "",
    );
    ctl(
        &c,
        &[
            "list",
            "add",
            "team@example.org",
            "--member",
            "alice@example.org",
            "--member",
            "inner@example.org",
            "--member",
            "bob@example.org",
        ],
        "",
    );
    ctl(
        &c,
        &[
            "user",
            "set",
            "carol@example.org",
            "--forward",
            "bob@example.org",
            "--forward-only",
        ],
        "",
    );
    ctl(
        &c,
        &[
            "user",
            "set",
            "dave@example.org",
            "--forward",
            "alice@example.org",
        ],
        "",
    );
    for (rcpts, subject) in [
        (vec!["team@example.org"], "to the team"),
        (vec!["carol@example.org"], "to carol"),
        (vec!["dave@example.org"], "to dave"),
        (
            vec!["team@example.org", "alice@example.org"],
            "team and alice",
        ),
    ] {
        let mut cmd = Command::new("swaks");
        cmd.args(["--server", "127.0.0.1:18725", "--from", "x@remote.example"])
            .args(["--header", &format!("Subject: {subject}")]);
        cmd.args(["--to", &rcpts.join(",")]);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("queued as"), "{text}");
    }
    for (user, expect) in [
        ("alice", "to the team,to dave,team and alice"),
        ("bob", "to the team,to carol,team and alice"),
        ("carol", ""),
        ("dave", "to dave"),
    ] {
        run_client(
            "imap_subjects.py",
            &[
                ("IMAP_PORT", "18743".into()),
                ("USER", user.into()),
                ("PASSWORD", format!("{user}-pw")),
                ("EXPECT", expect.into()),
            ],
        );
    }
}

/// LMTP for two-tier delivery: LHLO, per-recipient replies, local recipients only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmtp_delivery_with_per_recipient_replies() {
    let _s = SERIAL.lock().await;
    let mut sp = spec(1, 18800, 18843, 18825, 18887);
    sp.mta.lmtp_listen = Some("127.0.0.1:18824".into());
    sp.mta.trusted_networks = vec!["127.0.0.0/8".into()];
    let (_d, c) = cluster("lmtp", &sp).await;
    ctl(
        &c,
        &["user", "add", "bob@example.org", "--login", "bob"],
        "bob-pw\n",
    );
    run_client(
        "lmtp_commands.py",
        &[
            ("LMTP_PORT", "18824".into()),
            ("IMAP_PORT", "18843".into()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("USER2", "bob".into()),
            ("PASSWORD2", "bob-pw".into()),
        ],
    );
}

/// Rewrite rules and configured channels: a rewritten domain lands in the local mailbox,
/// routed domains are accepted from anyone and go to discard, pipe (delivered / temporary /
/// permanent by exit status) and LMTP (Postfix smtp-sink -L) channels; the permanent
/// failure comes back as a DSN, the temporary one waits with the channel's retry schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_rules_and_channels() {
    use halyard_mta::rewrite::{ChannelConfig, ChannelKind, RewriteRule};
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let piped = tmp.path().join("piped");
    let lmtp_dump = tmp.path().join("lmtp");
    std::fs::create_dir_all(&piped).unwrap();
    std::fs::create_dir_all(&lmtp_dump).unwrap();
    std::fs::set_permissions(
        &lmtp_dump,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut kids = Children(vec![]);
    kids.0.push(
        Command::new("smtp-sink")
            .args([
                "-L",
                "-u",
                "nobody",
                "-d",
                &format!("{}/%M.", lmtp_dump.display()),
            ])
            .args(["127.0.0.6:18924", "20"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("smtp-sink"),
    );
    let chan = |name: &str, kind, domain: &str| ChannelConfig {
        domains: vec![domain.into()],
        max_jobs: Some(2),
        retry_minutes: vec![1, 5],
        ..ChannelConfig::new(name, kind)
    };
    let mut sp = spec(1, 18900, 18943, 18925, 18987);
    sp.mta.rewrite = vec![RewriteRule {
        pattern: "*@old.example.org".into(),
        template: "$U@example.org".into(),
    }];
    let mut pipe_ok = chan("archive", ChannelKind::Pipe, "pipe.test");
    pipe_ok.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("cat > '{}'/\"$RECIPIENT\"", piped.display()),
    ];
    let mut pipe_tmp = chan("later", ChannelKind::Pipe, "tmp.test");
    pipe_tmp.command = vec!["/bin/sh".into(), "-c".into(), "exit 75".into()];
    let mut pipe_bad = chan("broken", ChannelKind::Pipe, "fail.test");
    pipe_bad.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo no such box >&2; exit 67".into(),
    ];
    let mut lmtp = chan("backend", ChannelKind::Lmtp, "*.lmtp.test");
    lmtp.host = Some("127.0.0.6:18924".into());
    sp.mta.channels = vec![
        chan("void", ChannelKind::Discard, "void.test"),
        pipe_ok,
        pipe_tmp,
        pipe_bad,
        lmtp,
    ];
    let (_d, c) = cluster("channels", &sp).await;
    ctl(
        &c,
        &["user", "add", "bob@example.org", "--login", "bob"],
        "bob-pw\n",
    );
    for (rcpt, subject) in [
        ("alice@old.example.org", "rewritten"),
        ("x@void.test", "into the void"),
        ("x@pipe.test", "through a pipe"),
        ("y@tmp.test", "try later"),
        ("y@fail.test", "pipe fails"),
        ("z@mx.lmtp.test", "over lmtp"),
    ] {
        let out = Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1:18925",
                "--from",
                "bob@example.org",
                "--to",
                rcpt,
            ])
            .args(["--header", &format!("Subject: {subject}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("queued as"),
            "{rcpt}: {text}"
        );
    }
    run_client(
        "imap_subjects.py",
        &[
            ("IMAP_PORT", "18943".into()),
            ("USER", "alice".into()),
            ("PASSWORD", "alice-pw".into()),
            ("EXPECT", "rewritten".into()),
        ],
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let piped_ok = std::fs::read_to_string(piped.join("x@pipe.test"))
            .is_ok_and(|t| t.contains("Subject: through a pipe"));
        let lmtp_ok = walk(&lmtp_dump)
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("Subject: over lmtp")));
        if piped_ok && lmtp_ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pipe {piped_ok}, lmtp {lmtp_ok}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run_client(
        "dsn_check.py",
        &[
            ("IMAP_PORT", "18943".into()),
            ("USER", "bob".into()),
            ("PASSWORD", "bob-pw".into()),
            ("FAILED", "y@fail.test".into()),
            ("SUBJECT", "pipe fails".into()),
            ("COUNT", "1".into()),
        ],
    );
    // Only the temporarily failing one is left, due again in about a minute.
    let (ok, out, _) = c.ctl(1, &["queue", "list", "--json"], "").unwrap();
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let left = v.as_array().unwrap();
    assert_eq!(left.len(), 1, "{out}");
    let r = &left[0]["entry"]["recipients"][0];
    assert_eq!(r["spec"]["address"], "y@tmp.test");
    assert!(r["last_error"].as_str().unwrap().contains("retry"), "{r}");
    let wait_ms = r["next_attempt_ms"].as_i64().unwrap() - chrono_now_ms();
    assert!(
        (30_000..=61_000).contains(&wait_ms),
        "retry in {wait_ms} ms"
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One piece of a hostile or confused SMTP client's input.
#[derive(Debug, Clone)]
enum Piece {
    Line(String),
    Raw(Vec<u8>),
    /// DATA, then these body lines and the end-of-data line.
    Data(Vec<String>),
    /// BDAT with a truthful size.
    Bdat(Vec<u8>, bool),
    /// A whole transaction for alice: MAIL, RCPT, then DATA or one BDAT LAST.
    Txn(Vec<String>, bool),
}

fn piece() -> impl proptest::strategy::Strategy<Value = Piece> {
    use proptest::prelude::*;
    let addr = prop::sample::select(vec![
        "<alice@example.org>",
        "<ALICE@Example.Org>",
        "<nobody@example.org>",
        "<x@elsewhere.test>",
        "<>",
        "<bad",
        "alice@example.org",
        "<a@b@c>",
        "<\"quoted local\"@example.org>",
    ]);
    let verb = prop::sample::select(vec![
        "EHLO client.example",
        "HELO client.example",
        "RSET",
        "NOOP",
        "VRFY alice",
        "EXPN list",
        "HELP",
        "STARTTLS",
        "AUTH PLAIN AGFsaWNlAGFsaWNlLXB3",
        "AUTH LOGIN",
        "DATA",
        "BDAT",
        "BDAT 99999999999999 LAST",
        "MAIL FROM:<a@b.example> SIZE=999999999999",
        "MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x",
        "RCPT TO:<alice@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@b",
        "RCPT TO:<alice@example.org> NOTIFY=NEVER,SUCCESS",
        "",
        " ",
    ]);
    let body_line = prop::sample::select(vec![
        "Subject: prop",
        "",
        ".",
        "..",
        ".x",
        "x\0y",
        "a\rb",
        "long",
        "\u{e9}t\u{e9}",
    ])
    .prop_map(|l| {
        if l == "long" {
            "y".repeat(3000)
        } else {
            l.to_string()
        }
    });
    prop_oneof![
        3 => verb.prop_map(|v| Piece::Line(v.to_string())),
        3 => addr.clone().prop_map(|a| Piece::Line(format!("MAIL FROM:{a}"))),
        3 => addr.prop_map(|a| Piece::Line(format!("RCPT TO:{a}"))),
        1 => "[ -~]{0,60}".prop_map(Piece::Line),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Piece::Raw),
        1 => Just(Piece::Line("Z".repeat(20_000))),
        2 => proptest::collection::vec(body_line.clone(), 0..6).prop_map(Piece::Data),
        1 => (proptest::collection::vec(any::<u8>(), 0..300), any::<bool>())
            .prop_map(|(b, last)| Piece::Bdat(b, last)),
        3 => (proptest::collection::vec(body_line.clone(), 0..6), any::<bool>())
            .prop_map(|(lines, bdat)| Piece::Txn(lines, bdat)),
    ]
}

/// Sends `pieces` pipelined, half-closes, and reads everything the server says.
fn converse(port: u16, pieces: &[Piece]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Line(l) => out.extend_from_slice(format!("{l}\r\n").as_bytes()),
            Piece::Raw(b) => out.extend_from_slice(b),
            Piece::Data(lines) => {
                out.extend_from_slice(b"DATA\r\n");
                for l in lines {
                    out.extend_from_slice(format!("{l}\r\n").as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            Piece::Bdat(b, last) => {
                let last = if *last { " LAST" } else { "" };
                out.extend_from_slice(format!("BDAT {}{last}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Piece::Txn(lines, bdat) => {
                out.extend_from_slice(
                    b"MAIL FROM:<s@x.example>\r\nRCPT TO:<alice@example.org>\r\n",
                );
                let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
                if *bdat {
                    out.extend_from_slice(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes());
                } else {
                    // What a client sends: dot-stuffed.
                    out.extend_from_slice(b"DATA\r\n");
                    for l in lines {
                        let stuffed = if l.starts_with('.') {
                            format!(".{l}")
                        } else {
                            l.clone()
                        };
                        out.extend_from_slice(format!("{stuffed}\r\n").as_bytes());
                    }
                    out.extend_from_slice(b".\r\n");
                }
            }
        }
    }
    // The server may close early (too many errors, a BDAT over the limit): a failed write
    // is part of the conversation, not an error of the test.
    let _ = s.write_all(&out);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// Any sequence of commands, junk, DATA and BDAT pipelined into one connection: the
/// server answers only with well-formed replies (a code, then ` ` or `-`; one code per
/// multi-line reply), starts with 220, ends the conversation once the client is done, and
/// stays healthy for the next client; and every `250 ... queued as` it gave is a message in
/// the mailbox, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_command_sequence_gets_well_formed_replies() {
    use proptest::test_runner::{Config, TestRunner};
    let _s = SERIAL.lock().await;
    let sp = spec(1, 19100, 19143, 19125, 19187);
    let (_d, _c) = cluster("smtp-props", &sp).await;
    // Queue ids of every `250 … queued as`, and each conversation (for the report).
    let queued = std::sync::Mutex::new(Vec::<String>::new());
    let talks = std::sync::Mutex::new(Vec::<String>::new());
    let count_queued = |r: &[u8]| {
        let ids: Vec<String> = String::from_utf8_lossy(r)
            .lines()
            .filter_map(|l| l.strip_prefix("250 2.0.0 OK queued as "))
            .map(|id| id.trim().to_string())
            .collect();
        let n = ids.len();
        queued.lock().unwrap().extend(ids);
        n
    };
    tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(Config {
            cases: 96,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(piece(), 1..24), |pieces| {
                let got = converse(19125, &pieces);
                let text = String::from_utf8_lossy(&got);
                proptest::prop_assert!(text.starts_with("220 "), "no banner: {text:?}");
                proptest::prop_assert!(got.is_empty() || got.ends_with(b"\r\n"), "{text:?}");
                let mut open: Option<&str> = None;
                for line in text.split_terminator("\r\n") {
                    let ok = line.len() >= 4
                        && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                        && matches!(line.as_bytes()[0], b'2'..=b'5')
                        && matches!(line.as_bytes()[3], b' ' | b'-');
                    proptest::prop_assert!(ok, "malformed reply line {line:?} in {text:?}");
                    if let Some(code) = open {
                        proptest::prop_assert_eq!(code, &line[..3], "code changed inside a reply");
                    }
                    open = (line.as_bytes()[3] == b'-').then(|| &line[..3]);
                }
                proptest::prop_assert!(open.is_none(), "unfinished multi-line reply");
                count_queued(&got);
                talks.lock().unwrap().push(format!("{pieces:?}\n=> {text}"));
                // The next, well-behaved client is served.
                let good = converse(
                    19125,
                    &[
                        Piece::Line("EHLO ok.example".into()),
                        Piece::Line("MAIL FROM:<ok@ok.example>".into()),
                        Piece::Line("RCPT TO:<alice@example.org>".into()),
                        Piece::Data(vec!["Subject: good".into(), String::new(), "ok".into()]),
                        Piece::Line("QUIT".into()),
                    ],
                );
                proptest::prop_assert_eq!(
                    count_queued(&good),
                    1,
                    "{}",
                    String::from_utf8_lossy(&good)
                );
                Ok(())
            })
            .unwrap();
    });
    let mut want = queued.lock().unwrap().clone();
    want.sort();
    eprintln!("{} messages queued over the run", want.len());
    // The queue id of each message in the mailbox, from its Received: header; delivery
    // reports are left out (a random conversation may ask for NOTIFY=SUCCESS with alice as
    // the sender, and that report is mail the server sent, not mail it acknowledged).
    let check = format!(
        "import imaplib, re, time\n\
         m = imaplib.IMAP4('127.0.0.1', 19143); m.login('alice', 'alice-pw')\n\
         def ids():\n    \
         out = []\n    \
         if int(m.select('INBOX')[1][0]) == 0: return out\n    \
         typ, data = m.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (RECEIVED CONTENT-TYPE)])')\n    \
         for part in data:\n        \
         if not isinstance(part, tuple): continue\n        \
         h = part[1].decode('utf-8', 'replace')\n        \
         if 'multipart/report' in h.lower(): continue\n        \
         f = re.search(r'\\bid (\\S+)', h)\n        \
         out.append(f.group(1).rstrip(';') if f else 'no-id:' + repr(h))\n    \
         return out\n\
         for _ in range(100):\n    \
         got = ids()\n    \
         if len(got) >= {}: break\n    \
         time.sleep(0.1)\n\
         print('\\n'.join(got))\n",
        want.len()
    );
    let out = Command::new("python3")
        .args(["-c", &check])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    if got != want {
        let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
        let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
        let mut dup = got.clone();
        dup.dedup();
        for t in talks.lock().unwrap().iter().rev().take(5) {
            eprintln!("--- a recent conversation:\n{t}");
        }
        panic!(
            "mailbox holds {} messages, {} were acknowledged; in the mailbox but never \
             acknowledged: {extra:?}; acknowledged but missing: {missing:?}; duplicates: {}",
            got.len(),
            want.len(),
            got.len() - dup.len()
        );
    }
}

/// Issue 22 §5: an SMTP channel with `tls = "verify"` delivers only over TLS to a server whose
/// certificate chains to its CA and names its host. A server without STARTTLS, or with a
/// certificate from another CA, gets nothing: the message stays queued with a 4.7.5 reason.
/// The default (opportunistic) still delivers to the server without STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_channels_defer_rather_than_send_unverified() {
    use halyard_mta::rewrite::{ChannelConfig, ChannelKind, TlsMode};
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let good = tmp.path().join("good");
    let rogue = tmp.path().join("rogue");
    halyard_node::tls::generate_mail_server(&good, &names).unwrap();
    halyard_node::tls::generate_mail_server(&rogue, &names).unwrap();
    let mut kids = Children(vec![]);
    let mut sink = |port: u16, certs: Option<&std::path::Path>| {
        let out = tmp.path().join(format!("sink-{port}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = support::client_command("tls_sink.py");
        cmd.arg(port.to_string()).arg(&out);
        if let Some(d) = certs {
            cmd.arg(d.join("mail.pem")).arg(d.join("mail.key"));
        }
        kids.0.push(cmd.spawn().expect("tls_sink.py"));
        out
    };
    let good_out = sink(19711, Some(&good));
    let plain_out = sink(19712, None);
    let rogue_out = sink(19713, Some(&rogue));
    let chan = |name: &str, domain: &str, port: u16, tls| ChannelConfig {
        domains: vec![domain.into()],
        host: Some(format!("127.0.0.1:{port}")),
        retry_minutes: vec![1, 5],
        tls,
        tls_ca: (tls == TlsMode::Verify).then(|| good.join("mail-ca.pem")),
        ..ChannelConfig::new(name, ChannelKind::Smtp)
    };
    let mut sp = spec(1, 19700, 19743, 19725, 19787);
    sp.mta.channels = vec![
        chan("hub", "good.test", 19711, TlsMode::Verify),
        chan("cleartext", "plain.test", 19712, TlsMode::Verify),
        chan("impostor", "rogue.test", 19713, TlsMode::Verify),
        chan(
            "anyhow",
            "opportunistic.test",
            19712,
            TlsMode::Opportunistic,
        ),
    ];
    let (_d, c) = cluster("verified-tls", &sp).await;
    for rcpt in [
        "a@good.test",
        "b@plain.test",
        "c@rogue.test",
        "d@opportunistic.test",
    ] {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1:19725", "--from", "alice@example.org"])
            .args(["--to", rcpt, "--header", &format!("Subject: to {rcpt}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("queued as"),
            "{rcpt}: {text}"
        );
    }
    let delivered = |dir: &std::path::Path| -> Vec<String> {
        walk(dir)
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let g = delivered(&good_out);
        let p = delivered(&plain_out);
        if g.len() == 1 && p.len() == 1 {
            assert!(g[0].starts_with("X-Sink-TLS: yes"), "{}", g[0]);
            assert!(
                p[0].contains("Subject: to d@opportunistic.test"),
                "{}",
                p[0]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "good {g:?}, plain {p:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The two verified channels that could not verify kept their messages.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (ok, out, _) = c.ctl(1, &["queue", "list", "--json"], "").unwrap();
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut left: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = &e["entry"]["recipients"][0];
                (
                    r["spec"]["address"].as_str().unwrap_or("").to_string(),
                    r["last_error"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        left.sort();
        let tried = left.len() == 2 && left.iter().all(|(_, e)| !e.is_empty());
        if tried {
            assert_eq!(left[0].0, "b@plain.test", "{left:?}");
            assert!(
                left[0].1.contains("4.7.5") && left[0].1.contains("STARTTLS"),
                "{left:?}"
            );
            assert_eq!(left[1].0, "c@rogue.test", "{left:?}");
            assert!(
                left[1].1.contains("4.7.5") && left[1].1.contains("certificate"),
                "{left:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        delivered(&rogue_out).is_empty(),
        "sent to an unverified server"
    );
    assert_eq!(
        delivered(&plain_out).len(),
        1,
        "sent in clear on a verified channel"
    );
}

/// Issue 22 §7: `ctl user del` used to remove the directory entry only, so a user created
/// later with the same address inherited the old mail. Now the account is disabled at once
/// (mail refused permanently, the address still taken), and its store data is purged (at
/// once with `--purge-now`) before the entry goes; a new user of that address starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_purges_its_mail_and_a_new_one_starts_empty() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 19800, 19843, 19825, 19887);
    let (_d, c) = cluster("purge", &sp).await;
    let swaks = |subject: &str| {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1:19825", "--to", "alice@example.org"])
            .args(["--from", "someone@elsewhere.test"])
            .args(["--header", &format!("Subject: {subject}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let imap = |password: &str, expect: &str| {
        run_client(
            "imap_subjects.py",
            &[
                ("IMAP_PORT", "19843".into()),
                ("USER", "alice".into()),
                ("PASSWORD", password.into()),
                ("EXPECT", expect.into()),
            ],
        )
    };
    assert!(swaks("old mail").contains("queued as"));
    imap("alice-pw", "old mail");
    let (ok, out, err) = c.ctl(1, &["user", "del", "alice@example.org"], "").unwrap();
    assert!(ok && out.contains("purged after"), "{out}{err}");
    // Disabled now: mail refused permanently, the address not reusable yet.
    let refused = swaks("while deleted");
    assert!(refused.contains("<** 5"), "{refused}");
    let (ok, _, err) = c
        .ctl(
            1,
            &["user", "add", "alice@example.org", "--login", "alice"],
            "new-pw\n",
        )
        .unwrap();
    assert!(!ok && err.contains("already in use"), "{err}");
    let (ok, out, err) = c
        .ctl(1, &["user", "del", "alice@example.org", "--purge-now"], "")
        .unwrap();
    assert!(ok && out.contains("purged"), "{out}{err}");
    let (ok, _, err) = c
        .ctl(
            1,
            &["user", "add", "alice@example.org", "--login", "alice"],
            "new-pw\n",
        )
        .unwrap();
    assert!(ok, "{err}");
    imap("new-pw", "");
    assert!(swaks("new mail").contains("queued as"));
    imap("new-pw", "new mail");
}

/// Issue 22 §7: one transaction whose recipients live in two resource groups is committed
/// once (in the first recipient's group), so the client's `250` covers both or neither; the
/// other group's recipient is handed over by the job controller under a derived queue id, and
/// each mailbox gets exactly one copy. (Before, each group got its own `Enqueue`: a failure
/// of the second answered 451 after the first had committed, and the retry duplicated it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_to_two_groups_is_one_commit_and_one_copy_each() {
    let _s = SERIAL.lock().await;
    let mut sp = spec(1, 19900, 19943, 19925, 19987);
    sp.groups = vec!["rg1".into(), "rg2".into()];
    let (_d, c) = cluster("two-groups", &sp).await;
    ctl(
        &c,
        &[
            "user",
            "add",
            "bob@example.org",
            "--login",
            "bob",
            "--mail-host",
            "rg2",
        ],
        "bob-pw\n",
    );
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1:19925", "--from", "x@elsewhere.test"])
        .args(["--to", "alice@example.org,bob@example.org"])
        .args(["--header", "Subject: to both groups"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("queued as"), "{text}");
    let queue_id = text
        .split("queued as ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        run_client(
            "imap_subjects.py",
            &[
                ("IMAP_PORT", "19943".into()),
                ("USER", user.into()),
                ("PASSWORD", pw.into()),
                ("EXPECT", "to both groups".into()),
            ],
        );
    }
    // The node's log tells the hand-over: the derived entry in rg2.
    let log =
        std::fs::read_to_string(c.config_path(1).with_file_name("node-1.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("{queue_id}.rg2")),
        "no hand-over of {queue_id} to rg2 in the log"
    );
}
