//! IMAP and POP3 with real clients (Python's imaplib and poplib, scripts in tests/clients)
//! against `halyard serve` processes: every command, two sessions seeing each other, hostile
//! input, and an acknowledged APPEND surviving a kill -9 of the master.

use halyard_node::config::RaftConfig;
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

mod support;
use support::{WAIT, run_client, run_client_until_ok};

/// One access test at a time: they share ports.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec(nodes: u64, base_port: u16, imap: u16, pop3: u16) -> ClusterSpec {
    ClusterSpec {
        mta: Default::default(),
        nodes,
        base_port,
        groups: vec!["rg1".into()],
        plaintext: false,
        raft: RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ..RaftConfig::default()
        },
        directory: Default::default(),
        access: halyard_access::AccessConfig {
            imap_listen: Some(format!("127.0.0.1:{imap}")),
            pop3_listen: Some(format!("127.0.0.1:{pop3}")),
            max_literal_bytes: 16 << 20,
            write_timeout_secs: 5,
            ..Default::default()
        },
    }
}

async fn cluster(name: &str, spec: &ClusterSpec) -> (tempfile::TempDir, LocalCluster) {
    support::cluster(
        name,
        spec,
        &[
            ("alice@example.org", "alice", "alice-pw"),
            ("bob@example.org", "bob", "bob-pw"),
        ],
    )
    .await
}

fn accounts(imap: u16, pop3: u16) -> Vec<(&'static str, String)> {
    vec![
        ("IMAP_PORT", imap.to_string()),
        ("POP3_PORT", pop3.to_string()),
        ("USER", "alice".into()),
        ("PASSWORD", "alice-pw".into()),
        ("USER2", "bob".into()),
        ("PASSWORD2", "bob-pw".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_commands_with_imaplib() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 17600, 17643, 17610);
    let (_d, _c) = cluster("imap", &sp).await;
    run_client("imap_commands.py", &accounts(17643, 17610));
}

/// Issue 21's conformance defects, each as a raw-protocol scenario with the exact answers; then
/// QRESYNC, ESEARCH/SEARCHRES (RFC 4731, RFC 5182), UTF8=ACCEPT (RFC 6855), OBJECTID
/// (RFC 8474) and IMAP4rev2 (RFC 9051) beside IMAP4rev1, on the same server; then ImapFlow
/// as an IMAP4rev2 client using OBJECTID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_answers_exactly_as_rfc_3501_says() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 17900, 17943, 17910);
    let (_d, _c) = cluster("rfc3501", &sp).await;
    run_client("imap_rfc3501.py", &accounts(17943, 17910));
    run_client("imap_qresync.py", &accounts(17943, 17910));
    run_client("imap_extensions.py", &accounts(17943, 17910));
    run_client("imap_list_extended.py", &accounts(17943, 17910));
    run_client("imap_esearch.py", &accounts(17943, 17910));
    run_client("imap_utf8.py", &accounts(17943, 17910));
    run_client("imap_objectid.py", &accounts(17943, 17910));
    run_client("imap_rev2.py", &accounts(17943, 17910));
    run_client("imapflow_rev2.cjs", &accounts(17943, 17910));
}

/// RFC 3516 BINARY on a raw socket: decoded base64 (NULs, as a literal8) and quoted-printable
/// parts, BINARY.SIZE, partial ranges, NO [UNKNOWN-CTE], APPEND with a literal8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_binary_answers_as_rfc_3516_says() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 19400, 19443, 19410);
    let (_d, _c) = cluster("binary", &sp).await;
    run_client("imap_binary.py", &accounts(19443, 19410));
}

/// SORT (RFC 5256, RFC 5957's DISPLAYFROM/DISPLAYTO) and THREAD (ORDEREDSUBJECT, REFERENCES)
/// answer exactly, over a raw session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_sort_and_thread_answer_exactly_as_rfc_5256_says() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 19200, 19243, 19210);
    let (_d, _c) = cluster("sort-thread", &sp).await;
    run_client("imap_sort_thread.py", &accounts(19243, 19210));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_folders_and_acl_with_imaplib() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 17920, 17963, 17930);
    let (_d, _c) = cluster("acl", &sp).await;
    run_client("imap_acl.py", &accounts(17963, 17930));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_commands_with_poplib() {
    let _s = SERIAL.lock().await;
    let sp = spec(1, 17620, 17663, 17630);
    let (_d, _c) = cluster("pop3", &sp).await;
    run_client("pop3_commands.py", &accounts(17663, 17630));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_clear_answers_and_hurt_nobody() {
    let _s = SERIAL.lock().await;
    let mut sp = spec(1, 17640, 17683, 17650);
    sp.access.max_login_failures = 4;
    let (_d, _c) = cluster("hostile", &sp).await;
    let mut env = accounts(17683, 17650);
    env.push(("MAX_LOGIN_FAILURES", "4".into()));
    run_client("imap_hostile.py", &env);
}

/// APPEND on the master, kill -9 the master: the message (APPENDUID received) is on the new
/// master with the same UID and UIDVALIDITY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_message_survives_kill_of_the_master() {
    let _s = SERIAL.lock().await;
    let sp = spec(3, 17660, 17703, 17670);
    let (_d, mut c) = cluster("imap-failover", &sp).await;
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    let port = |id: u64| 17703 + 10 * (id as u16 - 1);
    let mut env = accounts(port(leader), 0);
    env.push(("PHASE", "append".into()));
    env.push((
        "STATE",
        _d.path().join("appended.txt").display().to_string(),
    ));
    run_client("imap_failover.py", &env);
    c.kill(leader).unwrap();
    let new_leader = c.wait_leader("rg1", Some(leader), WAIT).await.unwrap();
    // The meta group may have lost its leader too; logins need the directory only locally.
    let mut env = accounts(port(new_leader), 0);
    env.push(("PHASE", "check".into()));
    env.push((
        "STATE",
        _d.path().join("appended.txt").display().to_string(),
    ));
    run_client_until_ok("imap_failover.py", &env, WAIT).await;
}

/// ImapFlow (npm) with QRESYNC and IDLE mirrors a mailbox and sees another session's changes
/// as FETCH and VANISHED; after a kill -9 of the master it resynchronises on the new one and
/// gets exactly what changed: QRESYNC stays exact across a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imapflow_qresync_mirror_is_exact_across_a_master_kill() {
    let _s = SERIAL.lock().await;
    let sp = spec(3, 19500, 19543, 19550);
    let (d, mut c) = cluster("imapflow", &sp).await;
    let port = |id: u64| 19543 + 10 * (id as u16 - 1);
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    let with = |id: u64, phase: &str| {
        let mut e = accounts(port(id), 0);
        e.push(("PHASE", phase.to_string()));
        e.push(("STATE", d.path().join("flow.json").display().to_string()));
        e
    };
    run_client("imapflow_qresync.cjs", &with(leader, "mirror"));
    c.kill(leader).unwrap();
    let new_leader = c.wait_leader("rg1", Some(leader), WAIT).await.unwrap();
    run_client_until_ok("imapflow_qresync.cjs", &with(new_leader, "resync"), WAIT).await;
}

/// mbsync two-way sync and fetchmail's UIDL keep mode, then the same Maildir synced again
/// after a leader change and after a restart of the whole cluster: UIDVALIDITY unchanged, no
/// duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_and_fetchmail_across_failover_and_restart() {
    let _s = SERIAL.lock().await;
    let sp = spec(3, 17720, 17763, 17770);
    let (d, mut c) = cluster("sync", &sp).await;
    let imap = |id: u64| 17763 + 10 * (id as u16 - 1);
    let pop = |id: u64| 17770 + 10 * (id as u16 - 1);
    let work = d.path().join("client");
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    let with = |id: u64, phase: &str| {
        let mut e = accounts(imap(id), pop(id));
        e.push(("WORK", work.display().to_string()));
        e.push(("PHASE", phase.to_string()));
        e
    };
    run_client("mbsync_sync.py", &with(leader, "initial"));
    let mut fm = accounts(imap(leader), pop(leader));
    fm.push(("WORK", d.path().join("fetchmail").display().to_string()));
    run_client("fetchmail_uidl.py", &fm);

    // Leader change: kill -9 the master; sync against the new one.
    c.kill(leader).unwrap();
    let next = c.wait_leader("rg1", Some(leader), WAIT).await.unwrap();
    c.start(leader).unwrap();
    run_client("mbsync_sync.py", &with(next, "again"));

    // Whole-cluster restart.
    for id in 1..=3 {
        c.kill(id).unwrap();
    }
    c.start_all().unwrap();
    let after = c.wait_leader("rg1", None, WAIT).await.unwrap();
    c.wait_leader("meta", None, WAIT).await.unwrap();
    run_client("mbsync_sync.py", &with(after, "again"));
}

/// STARTTLS/STLS, implicit TLS, LOGINDISABLED before TLS, and a certificate reloaded on SIGHUP
/// without dropping open sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_starttls_implicit_and_reload_on_sighup() {
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("mail");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    halyard_node::tls::generate_mail_server(&certs, &names).unwrap();
    let next = tmp.path().join("next");
    halyard_node::tls::generate_mail_server(&next, &names).unwrap();
    let mut sp = spec(1, 17800, 17843, 17810);
    sp.access.imaps_listen = Some("127.0.0.1:17893".into());
    sp.access.pop3s_listen = Some("127.0.0.1:17895".into());
    sp.access.tls_cert = Some(certs.join("mail.pem"));
    sp.access.tls_key = Some(certs.join("mail.key"));
    sp.access.require_tls_for_login = true;
    let (_d, c) = cluster("tls", &sp).await;
    let mut env = accounts(17843, 17810);
    env.extend([
        ("IMAPS_PORT", "17893".to_string()),
        ("POP3S_PORT", "17895".to_string()),
        ("CAFILE", certs.join("mail-ca.pem").display().to_string()),
        ("NODE_PID", c.pid(1).unwrap().to_string()),
        ("NEW_CERT", next.join("mail.pem").display().to_string()),
        ("NEW_KEY", next.join("mail.key").display().to_string()),
        ("NEW_CAFILE", next.join("mail-ca.pem").display().to_string()),
        ("CERT_PATH", certs.join("mail.pem").display().to_string()),
        ("KEY_PATH", certs.join("mail.key").display().to_string()),
    ]);
    run_client("tls_clients.py", &env);
}

/// The multiplexor relays sessions from a non-master node to the master; a master change
/// ends sessions with BYE; clients reconnect to any node and find their mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexor_relays_to_the_master_and_says_bye_when_it_moves() {
    let _s = SERIAL.lock().await;
    let sp = spec(3, 17820, 17863, 17870);
    let (_d, c) = cluster("mmp", &sp).await;
    let leader = c.wait_leader("rg1", None, WAIT).await.unwrap();
    let ports: Vec<String> = (1..=3)
        .map(|i| (17863 + 10 * (i - 1)).to_string())
        .collect();
    let pops: Vec<String> = (1..=3)
        .map(|i| (17870 + 10 * (i - 1)).to_string())
        .collect();
    let mut env = accounts(0, 0);
    env.extend([
        ("PORTS", ports.join(",")),
        ("POP_PORTS", pops.join(",")),
        ("LEADER", leader.to_string()),
        ("LEADER_PID", c.pid(leader).unwrap().to_string()),
    ]);
    run_client("multiplexor.py", &env);
}

/// Modern SASL (issue 22 §2) with client implementations we did not write: Python's scramp
/// drives SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (tls-server-end-point over imaplib, poplib and
/// smtplib; tls-exporter with the keying material OpenSSL's s_client exports); EXTERNAL with
/// client certificates from a users CA (`halyard certs --users`); failures of every mechanism
/// count against the same throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_and_external_with_real_clients() {
    let _s = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("mail");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    halyard_node::tls::generate_mail_server(&certs, &names).unwrap();
    halyard_node::tls::generate_user_certs(
        &certs,
        &["alice@example.org".into(), "mallory@example.org".into()],
    )
    .unwrap();
    let mut sp = spec(1, 19600, 19643, 19610);
    sp.access.imaps_listen = Some("127.0.0.1:19693".into());
    sp.access.pop3s_listen = Some("127.0.0.1:19695".into());
    sp.access.tls_cert = Some(certs.join("mail.pem"));
    sp.access.tls_key = Some(certs.join("mail.key"));
    sp.access.tls_client_ca = Some(certs.join("users-ca.pem"));
    sp.access.require_tls_for_login = true;
    sp.access.max_login_failures = 4;
    sp.mta.submission_listen = Some("127.0.0.1:19687".into());
    sp.mta.tls_cert = Some(certs.join("mail.pem"));
    sp.mta.tls_key = Some(certs.join("mail.key"));
    sp.mta.tls_client_ca = Some(certs.join("users-ca.pem"));
    let (_d, _c) = cluster("sasl", &sp).await;
    let mut env = accounts(19643, 19610);
    let cert = |n: &str| certs.join(n).display().to_string();
    env.extend([
        ("IMAPS_PORT", "19693".to_string()),
        ("POP3S_PORT", "19695".to_string()),
        ("SUBMISSION_PORT", "19687".to_string()),
        ("CAFILE", cert("mail-ca.pem")),
        ("ALICE_CERT", cert("user-alice@example.org.pem")),
        ("ALICE_KEY", cert("user-alice@example.org.key")),
        ("MALLORY_CERT", cert("user-mallory@example.org.pem")),
        ("MALLORY_KEY", cert("user-mallory@example.org.key")),
    ]);
    run_client("sasl_modern.py", &env);
}
