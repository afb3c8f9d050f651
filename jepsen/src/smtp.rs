//! The SMTP workload: clients deliver unique tokens (as the Subject) to one mailbox through
//! the group's floating address while a nemesis injects faults; each `send` is recorded as
//! invoke → ok (a `250` at the end of the data) / fail (a refusal before the data was
//! complete: nothing can have been queued) / info (anything after the data was sent that is
//! not a 250: a lost connection, a timeout, a 4xx — the outcome is unknown). After the run
//! the faults are healed and the mailbox is read over IMAP through the address; the
//! [`crate::checker::set`] checker judges the history.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halyard_chaos::{Fault, Target};
use serde_json::json;

use crate::history::{Op, OpType};

/// Faults the run cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    None,
    /// kill -9 of a random node, restarted when the fault ends.
    Kill,
    /// Random halves of the cluster network.
    Partition,
    /// SIGSTOP of a random node, SIGCONT when the fault ends.
    Pause,
    /// 30 % packet loss at a random node.
    Loss,
}

pub struct SmtpRun {
    /// The floating address (SMTP on :25, IMAP on :143).
    pub address: std::net::Ipv4Addr,
    pub recipient: String,
    pub login: String,
    pub password: String,
    pub clients: u64,
    pub duration: Duration,
    pub nemesis: Nemesis,
    /// Fault on for this long, then off for as long.
    pub interval: Duration,
    /// The nodes (their pids refreshed by `targets` before each fault).
    pub targets: Box<dyn Fn() -> Vec<Target> + Send + Sync>,
    /// Starts a killed node again.
    pub restart: Box<dyn Fn(u64) + Send + Sync>,
}

struct Recorder {
    start: Instant,
    index: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn record(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        error: Option<String>,
    ) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.push(Op {
            index: self.index.fetch_add(1, Ordering::SeqCst),
            process,
            kind,
            f: f.to_string(),
            value,
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            mono_ns: self.start.elapsed().as_nanos() as u64,
            node: None,
            error,
        });
    }
}

enum Outcome {
    Ok,
    Fail(String),
    Info(String),
}

fn send(addr: SocketAddr, to: &str, token: &str) -> Outcome {
    let s = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("connect: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut w) = s.try_clone() else {
        return Outcome::Fail("socket".into());
    };
    let mut r = BufReader::new(s);
    let mut reply = || -> Result<String, String> {
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) => return Err("connection closed".into()),
                Ok(_) if l.len() >= 4 && l.as_bytes()[3] == b'-' => continue,
                Ok(_) => return Ok(l.trim_end().to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    // Before the data is complete nothing can be queued: any failure is a `fail`.
    match reply() {
        Ok(l) if l.starts_with("220") => {}
        Ok(l) => return Outcome::Fail(l),
        Err(e) => return Outcome::Fail(e),
    }
    for (cmd, code) in [
        ("EHLO jepsen.test".to_string(), "250"),
        ("MAIL FROM:<jepsen@jepsen.test>".to_string(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_string(), "354"),
    ] {
        if let Err(e) = w.write_all(format!("{cmd}\r\n").as_bytes()) {
            return Outcome::Fail(e.to_string());
        }
        match reply() {
            Ok(l) if l.starts_with(code) => {}
            Ok(l) => return Outcome::Fail(l),
            Err(e) => return Outcome::Fail(e),
        }
    }
    if let Err(e) = w.write_all(format!("Subject: {token}\r\n\r\n{token}\r\n.\r\n").as_bytes()) {
        return Outcome::Info(format!("sending the data: {e}"));
    }
    match reply() {
        Ok(l) if l.starts_with("250") => {
            let _ = w.write_all(b"QUIT\r\n");
            Outcome::Ok
        }
        // A 5xx after the data is a definite refusal; anything else leaves it unknown.
        Ok(l) if l.starts_with('5') => Outcome::Fail(l),
        Ok(l) => Outcome::Info(l),
        Err(e) => Outcome::Info(e),
    }
}

/// Every Subject in the INBOX (with repeats), over IMAP.
pub fn read_subjects(addr: SocketAddr, login: &str, password: &str) -> Result<Vec<String>, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    fn line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(l),
            Err(e) => Err(e.to_string()),
        }
    }
    line(&mut r)?;
    let mut subjects = Vec::new();
    for (tag, cmd) in [
        ("a1", format!("LOGIN {login} {password}")),
        ("a2", "SELECT INBOX".to_string()),
        (
            "a3",
            "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])".to_string(),
        ),
    ] {
        w.write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        loop {
            let l = line(&mut r)?;
            if l.starts_with(&format!("{tag} ")) {
                if !l.starts_with(&format!("{tag} OK")) {
                    // SELECT of an empty mailbox still says OK; a NO/BAD is an error.
                    return Err(l.trim_end().to_string());
                }
                break;
            }
            // A literal: `{n}` at the end of the line, then n bytes.
            if let Some(n) = l
                .trim_end()
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut buf = vec![0u8; n];
                // The BufReader may hold part of it already.
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&buf);
                for h in text.lines() {
                    if let Some(v) = h.strip_prefix("Subject:") {
                        subjects.push(v.trim().to_string());
                    }
                }
            }
        }
    }
    Ok(subjects)
}

/// Runs the workload and returns the history (sends, nemesis events, the final read).
pub fn run(cfg: &SmtpRun) -> Vec<Op> {
    let rec = Arc::new(Recorder {
        start: Instant::now(),
        index: AtomicU64::new(0),
        ops: Mutex::new(Vec::new()),
    });
    let smtp = SocketAddr::from((cfg.address, 25));
    let stop = Arc::new(AtomicBool::new(false));
    // Tokens carry the run's id: the mailbox may hold earlier runs' mail, which this run's
    // read leaves out.
    let run_id = format!(
        "r{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let mut clients = Vec::new();
    for p in 0..cfg.clients {
        let (rec, stop, to, run_id) = (
            rec.clone(),
            stop.clone(),
            cfg.recipient.clone(),
            run_id.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) && seq < 1_000_000 {
                seq += 1;
                let token = format!("{run_id}-t{p}-{seq}");
                rec.record(p, OpType::Invoke, "send", json!(token), None);
                match send(smtp, &to, &token) {
                    Outcome::Ok => rec.record(p, OpType::Ok, "send", json!(token), None),
                    Outcome::Fail(e) => {
                        rec.record(p, OpType::Fail, "send", json!(token), Some(e));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Outcome::Info(e) => {
                        rec.record(p, OpType::Info, "send", json!(token), Some(e));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }));
    }
    // The nemesis, as process u64::MAX (Jepsen's :nemesis).
    let nem = u64::MAX;
    let mut seed = rec.start.elapsed().as_nanos() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let end = Instant::now() + cfg.duration;
    while Instant::now() < end {
        std::thread::sleep(
            cfg.interval
                .min(end.saturating_duration_since(Instant::now())),
        );
        if Instant::now() >= end || cfg.nemesis == Nemesis::None {
            continue;
        }
        let targets = (cfg.targets)();
        let ids: Vec<u64> = targets.iter().map(|t| t.id).collect();
        let victim = ids[rand(ids.len() as u64) as usize];
        let fault = match cfg.nemesis {
            Nemesis::Kill => Fault::Kill(victim),
            Nemesis::Pause => Fault::Pause(victim),
            Nemesis::Loss => Fault::Loss {
                node: victim,
                percent: 30,
            },
            Nemesis::Partition => {
                let mut v = ids.clone();
                for i in (1..v.len()).rev() {
                    v.swap(i, rand(i as u64 + 1) as usize);
                }
                let cut = v.len() / 2;
                Fault::Partition(vec![v[..cut].to_vec(), v[cut..].to_vec()])
            }
            Nemesis::None => continue,
        };
        rec.record(
            nem,
            OpType::Invoke,
            "nemesis",
            json!(fault.to_string()),
            None,
        );
        let r = halyard_chaos::apply(&targets, &fault);
        rec.record(
            nem,
            OpType::Info,
            "nemesis",
            json!(fault.to_string()),
            r.err(),
        );
        std::thread::sleep(
            cfg.interval
                .min(end.saturating_duration_since(Instant::now())),
        );
        rec.record(nem, OpType::Invoke, "nemesis", json!("heal"), None);
        let r = halyard_chaos::heal(&(cfg.targets)());
        if let Fault::Kill(n) = fault {
            (cfg.restart)(n);
        }
        rec.record(nem, OpType::Info, "nemesis", json!("heal"), r.err());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    // Heal everything, let the cluster settle, then read (retrying while it recovers).
    let _ = halyard_chaos::heal(&(cfg.targets)());
    let p = cfg.clients;
    rec.record(p, OpType::Invoke, "read", json!(null), None);
    let imap = SocketAddr::from((cfg.address, 143));
    let t = Instant::now();
    let mut last = String::new();
    let mut previous: Option<usize> = None;
    loop {
        let mine = |s: Vec<String>| -> Vec<String> {
            s.into_iter()
                .filter(|t| t.starts_with(&format!("{run_id}-")))
                .collect()
        };
        match read_subjects(imap, &cfg.login, &cfg.password).map(mine) {
            // Deliveries of the last messages may still be in flight: read until two reads
            // a second apart agree.
            Ok(s) if previous == Some(s.len()) => {
                rec.record(p, OpType::Ok, "read", json!(s), None);
                break;
            }
            Ok(s) => previous = Some(s.len()),
            Err(e) => last = e,
        }
        if t.elapsed() > Duration::from_secs(90) {
            rec.record(p, OpType::Fail, "read", json!(null), Some(last));
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut ops = std::mem::take(&mut *rec.ops.lock().unwrap_or_else(|e| e.into_inner()));
    ops.sort_by_key(|o| o.index);
    ops
}
