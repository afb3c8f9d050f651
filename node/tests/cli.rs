//! The `halyard` binary as an operator meets it: bad configuration, unusable data
//! directories, ports in use, the demo, `ctl status`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn halyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halyard"))
}

fn run(args: &[&str]) -> Output {
    halyard().args(args).output().expect("run halyard")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn config(dir: &Path, port: u16, data_dir: &str) -> String {
    format!(
        r#"node_id = 1
data_dir = "{data_dir}"
[cluster]
listen = "127.0.0.1:{port}"
plaintext = true
[[cluster.nodes]]
id = 1
addr = "127.0.0.1:{port}"
[[groups]]
name = "rg1"
members = [1]
"#
    )
    .replace("DIR", &dir.display().to_string())
}

/// The error is one line naming the problem, and the exit status is non-zero.
fn assert_one_line_error(o: &Output, must_contain: &[&str]) {
    assert!(!o.status.success(), "expected failure, got {:?}", o.status);
    let e = stderr(o);
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("halyard: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {e}");
    for s in must_contain {
        assert!(
            lines[0].contains(s),
            "error line {:?} lacks {s:?}",
            lines[0]
        );
    }
}

#[test]
fn bad_config_is_one_line_naming_file_and_key() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("node.toml");
    std::fs::write(
        &p,
        config(d.path(), 17500, "data").replace(
            "127.0.0.1:17500\"\nplaintext",
            "not-an-address\"\nplaintext",
        ),
    )
    .unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &[p.to_str().unwrap(), "cluster.listen"]);

    std::fs::write(
        &p,
        config(d.path(), 17500, "data") + "\n[raft]\nheartbeat_ms = 500\n",
    )
    .unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["raft.election_timeout_min_ms"]);

    std::fs::write(
        &p,
        config(d.path(), 17500, "data").replace("node_id = 1", "node_id = \"one\""),
    )
    .unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &[p.to_str().unwrap(), "line 1"]);

    std::fs::write(
        &p,
        config(d.path(), 17500, "data")
            + "\n[directory.ldap]\nurls = [\"http://ldap.example.org\"]\ndomain_root = \"o=x\"\n",
    )
    .unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["directory.ldap.urls", "http://ldap.example.org"]);

    std::fs::write(
        &p,
        config(d.path(), 17500, "data")
            + "\n[directory.ldap]\nurls = [\"ldap://127.0.0.1\"]\ndomain_root = \"o=x\"\nstarttls = \"yes\"\n",
    )
    .unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &[p.to_str().unwrap(), "line 16", "expected a boolean"]);

    let o = run(&[
        "serve",
        "--config",
        d.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["missing.toml", "cannot read"]);
}

#[test]
fn unusable_data_dir_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    // A data_dir below a regular file cannot be created, even by root.
    std::fs::write(d.path().join("file"), b"x").unwrap();
    let p = d.path().join("node.toml");
    std::fs::write(&p, config(d.path(), 17501, "file/data")).unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["data_dir", "file/data"]);
}

#[test]
fn data_from_another_format_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    // Data written before the FORMAT file existed (format 1).
    std::fs::create_dir_all(d.path().join("data/raft-log")).unwrap();
    let p = d.path().join("node.toml");
    std::fs::write(&p, config(d.path(), 17504, "data")).unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["data_dir", "format 1", "move it away"]);
    // A fresh directory gets the current format written.
    let fresh = d.path().join("fresh");
    let p = d.path().join("fresh.toml");
    std::fs::write(&p, config(d.path(), 17505, "fresh")).unwrap();
    let mut node = halyard()
        .args(["serve", "--config", p.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !fresh.join("FORMAT").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    node.kill().unwrap();
    let _ = node.wait();
    let f = std::fs::read_to_string(fresh.join("FORMAT")).unwrap();
    assert!(f.starts_with("halyard-data "), "{f}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let p = d.path().join("node.toml");
    std::fs::write(&p, config(d.path(), port, "data")).unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["cluster.listen", &port.to_string(), "in use"]);
}

#[test]
fn second_process_on_same_data_dir_is_refused_and_print_config_works() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("node.toml");
    std::fs::write(&p, config(d.path(), 17502, "data")).unwrap();
    let o = run(&["serve", "--config", p.to_str().unwrap(), "--print-config"]);
    assert!(o.status.success());
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("election_timeout_min_ms"), "{printed}");

    let mut first = halyard()
        .args(["serve", "--config", p.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let p2 = d.path().join("node2.toml");
    std::fs::write(&p2, config(d.path(), 17503, "data")).unwrap();
    let o = run(&["serve", "--config", p2.to_str().unwrap()]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_one_line_error(&o, &["data_dir", "in use by another halyard process"]);
}

/// Kills the child if the test fails before it is stopped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_runs_reports_status_and_stops_cleanly_on_ctrl_c() {
    let d = tempfile::tempdir().unwrap();
    let mut demo = KillOnDrop(
        halyard()
            .args([
                "demo",
                "--nodes",
                "3",
                "--data-dir",
                d.path().to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(demo.0.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = String::new();
    while Instant::now() < deadline {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        banner.push_str(&line);
        if line.contains("Stop:") {
            break;
        }
    }
    assert!(
        banner.contains("127.0.0.1:7700") && banner.contains("127.0.0.1:7702"),
        "{banner}"
    );

    // Right after an election the leader may not have heard back from every follower yet:
    // poll (bounded) until it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let o = run(&["ctl", "--node", "127.0.0.1:7701", "status", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let all_matched = v["groups"].as_array().unwrap().iter().all(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["matched_index"].as_u64().is_some())
        });
        if all_matched || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let groups = v["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["meta", "rg1"]);
    for g in groups {
        assert!(g["leader"].as_u64().is_some(), "{g}");
        assert!(g["term"].as_u64().unwrap() >= 1);
        let members = g["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        for m in members {
            assert_eq!(m["role"], "voter");
            assert!(m["id"].as_u64().is_some());
            assert!(
                m["matched_index"].as_u64().is_some(),
                "leader's view has matched indexes: {m}"
            );
        }
    }
    let o = run(&["ctl", "--node", "127.0.0.1:7700", "status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("GROUP") && table.contains("rg1") && table.contains("voter"),
        "{table}"
    );

    // The demo user it printed logs in over IMAP on every node (1143, 2143, 3143: directly on
    // the master, through the multiplexor elsewhere) and over POP3.
    assert!(
        banner.contains("demo@demo.test") && banner.contains("demo-password"),
        "{banner}"
    );
    for port in [1143, 2143, 3143] {
        let reply = talk(
            port,
            &["a LOGIN demo demo-password\r\n", "b SELECT INBOX\r\n"],
            "b ",
        );
        assert!(
            reply.contains("a OK") && reply.contains("b OK"),
            "{port}: {reply}"
        );
    }
    let reply = talk(
        1110,
        &["USER demo\r\n", "PASS demo-password\r\n", "STAT\r\n"],
        "+OK 0",
    );
    assert!(reply.contains("+OK 0 0"), "{reply}");

    Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = demo.0.wait().unwrap();
    assert!(status.success(), "demo exit {status:?}");
    assert!(rest.contains("stopped cleanly"), "{rest}");

    // The same data directory with another cluster size: a clear refusal (a 1-node demo
    // over 3 nodes' data would wait for a quorum forever), and the data is left alone.
    let o = halyard()
        .args(["demo", "--data-dir", d.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("3-node demo") && err.contains("--nodes 3"),
        "{err}"
    );
    assert!(d.path().join("node-3").join("FORMAT").exists());
}

/// Sends each line to a local mail port and reads until a line starting with `until` (or
/// 10 s); returns everything received.
fn talk(port: u16, lines: &[&str], until: &str) -> String {
    use std::io::Write;
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "port {port}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut got = String::new();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    got.push_str(&line);
    for l in lines {
        w.write_all(l.as_bytes()).unwrap();
    }
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                got.push_str(&line);
                if line.starts_with(until) {
                    break;
                }
            }
        }
    }
    got
}

#[test]
fn ctl_against_nothing_fails_cleanly() {
    let o = run(&["ctl", "--node", "127.0.0.1:1", "status"]);
    assert_one_line_error(&o, &["127.0.0.1:1"]);
}
