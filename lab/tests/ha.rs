//! Failover drills on `halyard-lab cluster up` testbeds: every node a real `halyard serve`
//! process in its own network namespace, floating addresses moved by netlink and gratuitous
//! ARP, an ARP probe in a client namespace asking every 10 ms who answers for the address
//! (two answers in one round = two holders = failure), mail sent and read back through the
//! floating address with real clients (smtp-source, Python's imaplib).
//!
//! Needs root (namespaces). Each test has its own name prefix; the testbed is torn down even
//! when the test fails (its logs are printed first).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const RG1: &str = "198.18.0.100";
const RG2: &str = "198.18.0.101";

/// A finished command's standard output and error, as text.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The lab binary (testbed, nemeses, Jepsen runner).
fn lab() -> &'static str {
    env!("CARGO_BIN_EXE_halyard-lab")
}

/// The daemon binary the testbed runs and `ctl` is, next to the lab binary. Cargo builds it
/// in the same `cargo test --workspace` run (scripts/test.sh); alone, `cargo test -p
/// halyard-lab` does not, hence the check.
fn halyard() -> PathBuf {
    let p = std::path::Path::new(lab()).with_file_name("halyard");
    assert!(
        p.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) so that the \
         halyard binary is built with halyard-lab",
        p.display()
    );
    p
}

/// Runs a client script of node/tests/clients (the clients every cluster test shares) with
/// these environment variables; fails the test with its output.
fn run_client(name: &str, env: &[(&str, String)]) {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut cmd = Command::new("python3");
    cmd.arg(dir.join("../node/tests/clients").join(name));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    eprintln!("{text}");
}

struct Bed {
    prefix: String,
    dir: PathBuf,
}

impl Bed {
    fn up(tag: &str, args: &[&str]) -> Bed {
        let prefix = format!("h{tag}{:04x}", std::process::id() & 0xffff);
        let dir = PathBuf::from("/run/halyard").join(&prefix);
        let bed = Bed { prefix, dir };
        let out = bed.cluster(&[&["up"], args].concat());
        assert!(out.0, "cluster up: {}", out.1);
        eprintln!("{}", out.1);
        bed
    }

    fn cluster(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(lab())
            .arg("cluster")
            .args(args)
            .args(["--prefix", &self.prefix])
            .output()
            .expect("halyard-lab cluster");
        (o.status.success(), text(&o))
    }

    fn kill(&self, node: u64) {
        let (ok, out) = self.cluster(&["kill", &node.to_string()]);
        assert!(ok, "kill {node}: {out}");
    }

    fn start(&self, node: u64) {
        let (ok, out) = self.cluster(&["start", &node.to_string()]);
        assert!(ok, "start {node}: {out}");
    }

    fn ctl(&self, node: u64, args: &[&str]) -> (bool, String) {
        let o = Command::new(halyard())
            .arg("ctl")
            .arg("--config")
            .arg(self.dir.join(format!("node-{node}.toml")))
            .args(args)
            .output()
            .expect("halyard ctl");
        (o.status.success(), text(&o))
    }

    /// `halyard ctl` with `input` on its standard input (passwords).
    fn ctl_stdin(&self, node: u64, args: &[&str], input: &str) -> (bool, String) {
        let mut c = Command::new(halyard())
            .arg("ctl")
            .arg("--config")
            .arg(self.dir.join(format!("node-{node}.toml")))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("halyard ctl");
        let _ = c
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{input}\n").as_bytes());
        let o = c.wait_with_output().expect("halyard ctl");
        (o.status.success(), text(&o))
    }

    fn probe(&self, address: &str, secs: f64) -> Child {
        Command::new(lab())
            .args([
                "cluster",
                "probe",
                "--prefix",
                &self.prefix,
                "--address",
                address,
            ])
            .args(["--secs", &secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("probe")
    }

    /// Two holders in any 10 ms round fail the test; returns the report.
    fn probe_clean(&self, p: Child) -> serde_json::Value {
        let out = p.wait_with_output().expect("probe");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("probe output: {e}: {:?}", out));
        eprintln!(
            "probe: {} rounds, {} with two holders, longest silence {:.0} ms, holders {}",
            v["rounds"],
            v["overlaps"],
            v["longest_silence_ms"].as_f64().unwrap_or(0.0),
            v["changes"]
        );
        assert_eq!(v["overlaps"], 0, "two nodes answered for the address: {v}");
        assert!(
            v["rounds"].as_u64().unwrap_or(0) > 50,
            "the probe hardly ran: {v}"
        );
        v
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 1..=4 {
                let log = self.dir.join(format!("node-{i}.log"));
                if let Ok(text) = std::fs::read_to_string(&log) {
                    let tail: Vec<&str> = text.lines().rev().take(25).collect();
                    eprintln!("--- {} (last lines)", log.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let (ok, out) = self.cluster(&["down"]);
        if !ok {
            eprintln!("cluster down: {out}");
        }
    }
}

/// The node whose banner answers on `ip`:25, if any does within 300 ms.
fn banner(ip: &str) -> Option<u64> {
    let addr = format!("{ip}:25").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut buf = [0u8; 200];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let rest = text.strip_prefix("220 node")?;
    rest.split('.').next()?.parse().ok()
}

/// Waits (bounded) until `ip` answers with a banner of a node `ok` accepts.
fn wait_banner(ip: &str, max: Duration, ok: impl Fn(u64) -> bool) -> (u64, Duration) {
    let t = Instant::now();
    while t.elapsed() < max {
        if let Some(n) = banner(ip)
            && ok(n)
        {
            return (n, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "{ip} did not answer as expected within {max:?} (last: {:?})",
        banner(ip)
    );
}

/// One message through SMTP; the queue id from `250 … queued as`, or the failure.
fn smtp_send(ip: &str, subject: &str) -> Result<String, String> {
    let addr = format!("{ip}:25").parse().map_err(|e| format!("{e}"))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut reply = || -> Result<String, String> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return Ok(l.trim_end().to_string());
            }
        }
    };
    let expect = |got: String, code: &str| {
        if got.starts_with(code) {
            Ok(got)
        } else {
            Err(got)
        }
    };
    expect(reply()?, "220")?;
    for (cmd, code) in [
        ("EHLO drill.test", "250"),
        ("MAIL FROM:<drill@drill.test>", "250"),
        ("RCPT TO:<demo@demo.test>", "250"),
        ("DATA", "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        expect(reply()?, code)?;
    }
    w.write_all(format!("Subject: {subject}\r\n\r\n{subject}\r\n.\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let done = expect(reply()?, "250")?;
    let _ = w.write_all(b"QUIT\r\n");
    done.rsplit(' ')
        .next()
        .map(str::to_string)
        .ok_or(done.clone())
}

/// Sends until acknowledged (a failover in progress answers 421/451 or not at all), bounded.
fn send_retrying(ip: &str, subject: &str) -> String {
    let t = Instant::now();
    loop {
        match smtp_send(ip, subject) {
            Ok(id) => return id,
            Err(e) if t.elapsed() > Duration::from_secs(20) => panic!("{subject}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn check_mailbox(ip: &str, acked: &[String]) {
    run_client(
        "ha_mailbox.py",
        &[
            ("IMAP_HOST", ip.to_string()),
            ("USER", "demo".into()),
            ("PASSWORD", "demo-password".into()),
            ("WANT_IDS", acked.join(",")),
        ],
    );
}

/// kill -9 of the master: another node answers SMTP on the same address (time printed), the
/// probe never sees two holders, mail acknowledged before and after is there exactly once,
/// and the preferred master gets the group back when it returns.
#[test]
fn kill_9_of_the_master_moves_the_address() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("k", &["--nodes", "3"]);
    // Node 1 is rg1's preferred master: after start-up the group settles there.
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let (ok, status) = bed.ctl(2, &["status"]);
    assert!(
        ok && status.contains("198.18.0.100/24") && status.contains("node 1"),
        "{status}"
    );
    let mut acked: Vec<String> = (0..10)
        .map(|i| send_retrying(RG1, &format!("before {i}")))
        .collect();
    let probe = bed.probe(RG1, 4.0);
    std::thread::sleep(Duration::from_millis(300));
    bed.kill(1);
    let (new, took) = wait_banner(RG1, Duration::from_secs(10), |n| n != 1);
    eprintln!("kill -9 of node 1: node {new} answered SMTP on {RG1} after {took:?}");
    acked.extend((0..10).map(|i| send_retrying(RG1, &format!("after {i}"))));
    bed.probe_clean(probe);
    check_mailbox(RG1, &acked);
    // Node 1 returns, catches up and takes its group back (failback), without two holders.
    let probe = bed.probe(RG1, 12.0);
    bed.start(1);
    let (_, back) = wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    eprintln!("failback to node 1 after {back:?}");
    bed.probe_clean(probe);
    acked.push(send_retrying(RG1, "after failback"));
    check_mailbox(RG1, &acked);
}

/// A master cut off from the majority releases its address (watchdog, within its lease);
/// the majority's new master takes it; healing does not produce two holders.
#[test]
fn a_partitioned_master_lets_go_and_healing_makes_no_second_holder() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("p", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let mut acked = vec![send_retrying(RG1, "before partition")];
    let ns = format!("{}-n1", bed.prefix);
    let nft = |rules: &str| {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft");
        assert!(o.status.success(), "nft: {o:?}");
    };
    let probe = bed.probe(RG1, 8.0);
    std::thread::sleep(Duration::from_millis(300));
    // Node 1 can still talk to clients, not to the other nodes.
    nft(
        "table inet part {\n chain i { type filter hook input priority 0; ip saddr { 198.18.0.2, 198.18.0.3 } drop; }\n chain o { type filter hook output priority 0; ip daddr { 198.18.0.2, 198.18.0.3 } drop; }\n}\n",
    );
    let t = Instant::now();
    let has_addr = || {
        let o = Command::new("ip")
            .args(["-n", &ns, "-4", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&o.stdout).contains(RG1)
    };
    while has_addr() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let released = t.elapsed();
    assert!(
        !has_addr(),
        "the cut-off master still holds {RG1} after {released:?}"
    );
    eprintln!("cut-off master released {RG1} {released:?} after the partition");
    let (new, took) = wait_banner(RG1, Duration::from_secs(10), |n| n != 1);
    eprintln!("node {new} answered on {RG1} {took:?} after the partition");
    acked.push(send_retrying(RG1, "during partition"));
    nft("delete table inet part\n");
    std::thread::sleep(Duration::from_secs(2));
    acked.push(send_retrying(RG1, "after healing"));
    bed.probe_clean(probe);
    check_mailbox(RG1, &acked);
}

/// `ctl failover` back and forth while smtp-source sends: every message that got a 250 is in
/// the mailbox exactly once; the measured unavailability window is printed.
#[test]
fn switchover_under_smtp_source_loses_and_duplicates_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("s", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let probe = bed.probe(RG1, 6.0);
    // smtp-source gives up at the first 421 (what a switchover says to sessions between
    // commands), so it runs again and again, as a client would retry, until the drill ends.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let load = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut runs = 0;
        while runs < 200 && (!d.load(std::sync::atomic::Ordering::Relaxed) || runs < 2) {
            runs += 1;
            let out = Command::new("smtp-source")
                .args([
                    "-v",
                    "-s",
                    "4",
                    "-m",
                    "40",
                    "-l",
                    "2000",
                    "-f",
                    "load@drill.test",
                ])
                .args(["-t", "demo@demo.test", &format!("{RG1}:25")])
                .output()
                .expect("smtp-source");
            let text = text(&out);
            acked.extend(
                text.lines()
                    .filter_map(|l| l.split("250 2.0.0 OK queued as ").nth(1))
                    .map(|s| s.trim().to_string()),
            );
        }
        (runs, acked)
    });
    std::thread::sleep(Duration::from_millis(700));
    for to in ["2", "1"] {
        let (ok, out) = bed.ctl(3, &["failover", "--group", "rg1", "--to", to]);
        assert!(ok, "failover to {to}: {out}");
        eprint!("{out}");
        assert!(out.contains("unavailable for"), "{out}");
        std::thread::sleep(Duration::from_millis(700));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, acked) = load.join().expect("load");
    eprintln!(
        "smtp-source: {} messages acknowledged over {runs} runs",
        acked.len()
    );
    assert!(acked.len() > 100, "too little got through: {}", acked.len());
    bed.probe_clean(probe);
    check_mailbox(RG1, &acked);
}

/// Symmetric: two groups preferring different nodes; one node dies and the survivor serves
/// both; it returns, catches up, and its group fails back. A witness keeps the quorum.
#[test]
fn symmetric_survivor_serves_both_and_the_group_fails_back() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up(
        "y",
        &["--nodes", "2", "--topology", "symmetric", "--witness"],
    );
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    wait_banner(RG2, Duration::from_secs(30), |n| n == 2);
    bed.kill(2);
    let (_, took) = wait_banner(RG2, Duration::from_secs(10), |n| n == 1);
    eprintln!("rg2 on node 1 {took:?} after node 2 died");
    assert_eq!(banner(RG1), Some(1));
    let a = send_retrying(RG2, "rg2 on the survivor");
    bed.start(2);
    let (_, back) = wait_banner(RG2, Duration::from_secs(30), |n| n == 2);
    eprintln!("rg2 failed back to node 2 {back:?} after it restarted");
    assert_eq!(banner(RG1), Some(1));
    assert!(!a.is_empty());
}

/// N+1: node 3 is the spare of rg1 (node 1) and rg2 (node 2); when node 1 dies the spare
/// takes exactly rg1.
#[test]
fn n_plus_1_spare_takes_exactly_the_failed_group() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("n", &["--nodes", "3", "--topology", "n+1"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    wait_banner(RG2, Duration::from_secs(30), |n| n == 2);
    bed.kill(1);
    let (who, took) = wait_banner(RG1, Duration::from_secs(10), |n| n != 1);
    eprintln!("rg1 on node {who} {took:?} after node 1 died");
    assert_eq!(who, 3, "the spare must take rg1");
    assert_eq!(banner(RG2), Some(2), "rg2 must stay on node 2");
}

/// Two data nodes and a witness: either data node may die and the group is served; the
/// witness never answers for the address.
#[test]
fn witness_keeps_two_data_nodes_serving_and_never_holds() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("w", &["--nodes", "2", "--witness"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let probe = bed.probe(RG1, 15.0);
    let mut acked = vec![send_retrying(RG1, "start")];
    bed.kill(1);
    wait_banner(RG1, Duration::from_secs(10), |n| n == 2);
    acked.push(send_retrying(RG1, "node 1 dead"));
    bed.start(1);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    bed.kill(2);
    std::thread::sleep(Duration::from_secs(1));
    acked.push(send_retrying(RG1, "node 2 dead"));
    assert_eq!(banner(RG1), Some(1));
    let v = bed.probe_clean(probe);
    assert!(
        !v["changes"].to_string().contains("node 3"),
        "the witness answered for the address: {v}"
    );
    check_mailbox(RG1, &acked);
}

/// A master frozen by SIGSTOP cannot remove its address itself; its address guard (a
/// separate process) does when the lease runs out, so the probe never sees two holders, and
/// the master resumed later does not take the address back behind the new master's back.
#[test]
fn a_paused_master_loses_its_address_without_two_holders() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("z", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let mut acked = vec![send_retrying(RG1, "before pause")];
    let probe = bed.probe(RG1, 6.0);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = bed.cluster(&["kill", "1", "--signal", "STOP"]);
    assert!(ok, "{out}");
    let (new, took) = wait_banner(RG1, Duration::from_secs(10), |n| n != 1);
    eprintln!("SIGSTOP of node 1: node {new} answered on {RG1} after {took:?}");
    acked.push(send_retrying(RG1, "during pause"));
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = bed.cluster(&["kill", "1", "--signal", "CONT"]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_secs(1));
    acked.push(send_retrying(RG1, "after pause"));
    bed.probe_clean(probe);
    check_mailbox(RG1, &acked);
}

/// Issue 22 §7: `ctl failover --force` while the master is frozen (SIGSTOP). The target (node
/// 2) waits out the old master's lease and stands; an automatic election may have been won
/// first, by node 2 (then the forced one finds it leading) or by node 3 (then the forced one
/// refuses, since a leader is still heard from). Every outcome must leave exactly one holder
/// of the address at any time, through the resume of the old master, and lose no mail.
#[test]
fn forced_failover_of_a_frozen_master_leaves_one_holder() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("g", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let mut acked = vec![send_retrying(RG1, "before the forced failover")];
    let probe = bed.probe(RG1, 20.0);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = bed.cluster(&["kill", "1", "--signal", "STOP"]);
    assert!(ok, "{out}");
    let t0 = std::time::Instant::now();
    let (forced, said) = bed.ctl(2, &["failover", "--group", "rg1", "--to", "2", "--force"]);
    eprintln!(
        "forced failover after {:?}: ok={forced}: {said}",
        t0.elapsed()
    );
    let (new, took) = wait_banner(RG1, Duration::from_secs(15), |n| n != 1);
    eprintln!("node {new} answered on {RG1} {took:?} after the forced failover");
    if forced {
        assert!(
            said.contains("node 2 took over by forced election in term"),
            "{said}"
        );
        assert_eq!(new, 2, "the forced target does not serve the address");
    } else {
        assert!(said.contains("still heard from"), "{said}");
        assert_eq!(
            new, 3,
            "the forced failover refused, yet node 3 does not serve"
        );
    }
    acked.push(send_retrying(RG1, "after the forced failover"));
    let (ok, out) = bed.cluster(&["kill", "1", "--signal", "CONT"]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_secs(2));
    acked.push(send_retrying(RG1, "after the old master resumed"));
    let report = bed.probe_clean(probe);
    eprintln!("probe: {report}");
    check_mailbox(RG1, &acked);
}

/// Whether a TCP connection from namespace `ns` to `ip`:7700 (the node's cluster port)
/// succeeds within a second.
fn reaches(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "1", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/7700"))
        .status()
        .is_ok_and(|s| s.success())
}

/// `halyard-lab chaos`: partitions cut exactly the node pairs across components (clients still
/// reach everyone), one-way loss cuts one direction, and `heal` restores everything.
#[test]
fn chaos_nemeses_cut_what_they_say_and_heal_restores() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("c", &["--nodes", "3"]);
    let ns = |i: u64| format!("{}-n{i}", bed.prefix);
    let client = format!("{}-c1", bed.prefix);
    let chaos = |args: &[&str]| {
        let o = Command::new(lab())
            .arg("chaos")
            .args(args)
            .args(["--prefix", &bed.prefix])
            .output()
            .expect("halyard-lab chaos");
        let text = text(&o);
        assert!(o.status.success(), "chaos {args:?}: {text}");
        eprint!("{text}");
    };
    let all = |want: &dyn Fn(u64, u64) -> bool| {
        for a in 1..=3u64 {
            for b in 1..=3u64 {
                if a != b {
                    assert_eq!(
                        reaches(&ns(a), &format!("198.18.0.{b}")),
                        want(a, b),
                        "{a} -> {b}"
                    );
                }
            }
            assert!(reaches(&client, &format!("198.18.0.{a}")), "client -> {a}");
        }
    };
    all(&|_, _| true);
    chaos(&["partition", "--components", "1/2,3"]);
    all(&|a, b| (a == 1) == (b == 1));
    // A TCP connection needs both directions: a one-way cut shows from both ends.
    chaos(&["one-way", "--from", "2", "--to", "3"]);
    assert!(
        reaches(&ns(1), "198.18.0.2"),
        "the one-way fault replaces the partition"
    );
    assert!(!reaches(&ns(2), "198.18.0.3"));
    chaos(&["heal"]);
    all(&|_, _| true);
    chaos(&["pause", "--node", "2"]);
    chaos(&["heal"]);
    // CPU starvation: busy helper processes in node 2's namespace, gone after heal.
    let hogs_in = |ns: &str| -> usize {
        let want = std::fs::metadata(format!("/run/netns/{ns}")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                let p = e.path();
                let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
                let inode = std::fs::metadata(p.join("ns/net")).map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.ino()
                });
                String::from_utf8_lossy(&cmd).contains("chaos-hogd")
                    && inode.is_ok()
                    && inode.ok() == want.as_ref().ok().copied()
            })
            .count()
    };
    chaos(&["hog", "--node", "2", "--threads", "2"]);
    assert_eq!(hogs_in(&ns(2)), 1, "a hog in node 2's namespace");
    assert_eq!(hogs_in(&ns(1)), 0);
    chaos(&["heal"]);
    assert_eq!(hogs_in(&ns(2)), 0, "heal ends the hog");
    let (ok, out) = bed.ctl(1, &["status"]);
    assert!(ok, "{out}");
}

/// A short Jepsen campaign (`halyard-lab jepsen campaign`, the one CI runs): each workload
/// (SMTP token delivery, IMAP list-append, IMAP flag registers) under a different nemesis,
/// ~20 s each; any anomaly (lost, duplicated, order/UID, not linearizable, two address
/// holders) fails it. Then the deliberately broken build (`--features jepsen-broken-ack`:
/// 250 before commit), which the same harness must catch.
#[test]
fn jepsen_campaign_is_valid_and_the_broken_build_is_caught() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("j", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let secs = std::env::var("HALYARD_JEPSEN_SECS").unwrap_or_else(|_| "20".into());
    let out = bed.dir.join("campaign");
    let o = Command::new(lab())
        .args(["jepsen", "--prefix", &bed.prefix, "campaign"])
        .args([
            "--nemeses",
            "kill,isolate-master,pause,delay,membership,cpu-hog",
        ])
        .args([
            "--runs",
            "6",
            "--time",
            &secs,
            "--interval",
            "3",
            "--clients",
            "3",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("halyard-lab jepsen campaign");
    let log = text(&o);
    eprintln!("{log}");
    assert!(o.status.success(), "{log}");
    assert_eq!(log.matches(" VALID ").count(), 6, "{log}");
    for f in ["campaign.md", "campaign.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let runs: Vec<_> = std::fs::read_dir(&out)
        .expect("campaign dir")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(runs.len(), 6);
    for r in &runs {
        for f in [
            "history.jsonl",
            "summary.json",
            "timeline.html",
            "latency.svg",
            "throughput.svg",
        ] {
            assert!(r.path().join(f).exists(), "{:?}: {f}", r.path());
        }
    }

    // The broken build: acknowledged mail that never committed must be found lost.
    let broken = std::env::var("HALYARD_BROKEN_BINARY").expect(
        "HALYARD_BROKEN_BINARY: the build with --features jepsen-broken-ack (scripts/test.sh builds it)",
    );
    let out = bed.dir.join("broken");
    let o = Command::new(lab())
        .args([
            "jepsen",
            "--prefix",
            &bed.prefix,
            "run",
            "--workload",
            "smtp",
        ])
        .args([
            "--nemesis",
            "isolate-master",
            "--time",
            &secs,
            "--interval",
            "2",
        ])
        .args(["--clients", "6", "--binary", &broken, "--out"])
        .arg(&out)
        .output()
        .expect("halyard-lab jepsen run");
    let text = text(&o);
    eprintln!("{text}");
    assert!(!o.status.success(), "the broken build passed: {text}");
    assert!(
        text.contains("INVALID") && text.contains("lost ("),
        "{text}"
    );
}

/// Issue 22 §1: with logins requiring TLS (the production setting), IMAP and POP3 logins
/// work through every node, the master's and the others' (the multiplexor), and neither the
/// user's password nor a message's body crosses the cluster bridge in clear: the whole
/// bridge is captured with tcpdump while they happen, and the capture is searched for both.
#[test]
fn multiplexed_logins_carry_no_secret_across_the_cluster_bridge() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("s", &["--nodes", "3", "--require-tls"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let tag = format!("{:08x}", std::process::id());
    let password = format!("Qx7-{tag}-never-on-the-wire");
    let marker = format!("BODY-{tag}-never-on-the-wire");
    let (ok, out) = bed.ctl_stdin(
        1,
        &["user", "add", "carol@demo.test", "--login", "carol"],
        &password,
    );
    assert!(ok, "user add: {out}");
    let pcap = bed.dir.join("bridge.pcap");
    let mut dump = Command::new("ip")
        .args(["netns", "exec", &format!("{}-br", bed.prefix)])
        .args(["tcpdump", "-i", "br0", "-n", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump (scripts/deps.sh --test installs it)");
    let started = Instant::now();
    while !pcap.exists() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let certs = bed.dir.join("certs");
    run_client(
        "mmp_secrets.py",
        &[
            ("NODES", "198.18.0.1,198.18.0.2,198.18.0.3".into()),
            ("MASTER", "198.18.0.1".into()),
            ("CAFILE", certs.join("mail-ca.pem").display().to_string()),
            ("USER", "carol".into()),
            ("PASSWORD", password.clone()),
            ("MARKER", marker.clone()),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    let bytes = std::fs::read(&pcap).expect("the capture");
    // Node-to-node traffic was captured (the relayed sessions and Raft), so a clean search
    // below means something.
    let between = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pcap)
        .arg("tcp port 7700 and src net 198.18.0.0/24 and not host 198.18.0.254")
        .output()
        .expect("tcpdump -r");
    let packets = String::from_utf8_lossy(&between.stdout).lines().count();
    eprintln!(
        "capture: {} bytes, {packets} packets between nodes on the cluster RPC port",
        bytes.len()
    );
    assert!(packets > 100, "hardly any node-to-node traffic captured");
    let found = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        !found(&password),
        "the password crossed the bridge in clear"
    );
    assert!(
        !found(&marker),
        "the message body crossed the bridge in clear"
    );
    assert!(
        !found("carol"),
        "the login name crossed the bridge in clear"
    );
}

/// The first line a server at `ip:port` sends, read from inside namespace `ns` (the host's
/// own namespace when `None`); empty when it sends nothing within 5 s.
fn first_line_from(ns: Option<&str>, ip: &str, port: u16) -> String {
    let script = format!(
        "import socket\ns = socket.create_connection(('{ip}', {port}), 5)\ns.settimeout(5)\n\
         print(s.makefile('rb').readline().decode().strip())"
    );
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("python3");
            c.args(["-c", &script]);
            c
        }
    };
    let o = cmd.output().expect("python3");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Issue 22 §3: per-service client access rules, checked before any banner. Node 2 denies
/// the testbed's client namespace for IMAP and SMTP only: from there, IMAP gets `* BYE` and
/// SMTP `554 5.7.1` with nothing else, POP3 and submission still greet; the host (another
/// address) gets every banner; the node logs each refusal.
#[test]
fn per_service_client_access_refuses_before_any_banner() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up("f", &["--nodes", "3"]);
    wait_banner(RG1, Duration::from_secs(30), |n| n == 1);
    let path = bed.dir.join("node-2.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(&path)
        .expect("node-2.toml")
        .parse()
        .expect("node-2.toml parses");
    let deny = toml::Value::Array(vec!["deny 198.18.0.200/32".into()]);
    for (section, key) in [
        ("access", "imap_client_access"),
        ("mta", "smtp_client_access"),
    ] {
        cfg.get_mut(section)
            .and_then(|s| s.as_table_mut())
            .unwrap_or_else(|| panic!("[{section}] in node-2.toml"))
            .insert(key.into(), deny.clone());
    }
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    bed.kill(2);
    bed.start(2);
    let client = format!("{}-c1", bed.prefix);
    let n2 = "198.18.0.2";
    let started = Instant::now();
    while !first_line_from(None, n2, 143).starts_with("* OK") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 2 did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let imap = first_line_from(Some(&client), n2, 143);
    assert!(
        imap.starts_with("* BYE") && imap.contains("not allowed"),
        "{imap}"
    );
    let imaps = first_line_from(Some(&client), n2, 993);
    assert!(imaps.is_empty() || imaps.starts_with("* BYE"), "{imaps}");
    let smtp = first_line_from(Some(&client), n2, 25);
    assert!(smtp.starts_with("554 5.7.1"), "{smtp}");
    let pop3 = first_line_from(Some(&client), n2, 110);
    assert!(pop3.starts_with("+OK"), "{pop3}");
    let submission = first_line_from(Some(&client), n2, 587);
    assert!(submission.starts_with("220"), "{submission}");
    // Another node, and node 2 from the host: unaffected.
    assert!(first_line_from(Some(&client), "198.18.0.3", 143).starts_with("* OK"));
    assert!(first_line_from(None, n2, 25).starts_with("220"));
    let log = std::fs::read_to_string(bed.dir.join("node-2.log")).unwrap_or_default();
    assert!(
        log.contains("refused by the listener's client_access rules")
            && log.contains("198.18.0.200"),
        "no log line for the refusals"
    );
}
