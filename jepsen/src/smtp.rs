//! The SMTP workload: clients deliver unique tokens (as the Subject) to one mailbox through
//! the group's floating address while a nemesis injects faults; each `send` is recorded as
//! invoke → ok (a `250` at the end of the data) / fail (a refusal before the data was
//! complete: nothing can have been queued) / info (anything after the data was sent that is
//! not a 250: a lost connection, a timeout, a 4xx — the outcome is unknown). After the run
//! the faults are healed and the mailbox is read over IMAP through the address; the
//! [`crate::checker::set`] checker judges the history.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::history::OpType;
use crate::runner::{Recorder, Rng, Testbed, Workload};

enum Outcome {
    Ok,
    Fail(String),
    Info(String),
}

/// Sends one token; also returns the node that answered (from its banner, `220 node<N>.…`).
fn send(addr: SocketAddr, to: &str, token: &str) -> (Outcome, Option<u64>) {
    let mut node = None;
    let o = send_inner(addr, to, token, &mut node);
    (o, node)
}

fn send_inner(addr: SocketAddr, to: &str, token: &str, node: &mut Option<u64>) -> Outcome {
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
        Ok(l) if l.starts_with("220") => {
            *node = l
                .strip_prefix("220 node")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok());
        }
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

/// The SMTP workload of one run (tokens carry the run's id: the mailbox may hold earlier runs'
/// mail, which this run's read leaves out).
pub struct Smtp {
    pub run_id: String,
}

impl Workload for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn setup(&self, _bed: &Testbed) -> Result<(), String> {
        Ok(())
    }

    fn step(&self, bed: &Testbed, p: u64, seq: u64, _rng: &mut Rng, rec: &Recorder) {
        let smtp = SocketAddr::from((bed.address, 25));
        let token = format!("{}-t{p}-{seq}", self.run_id);
        rec.record(p, OpType::Invoke, "send", json!(token), None);
        let (outcome, node) = send(smtp, &bed.recipient, &token);
        match outcome {
            Outcome::Ok => rec.record_at(p, OpType::Ok, "send", json!(token), None, node),
            Outcome::Fail(e) => {
                rec.record_at(p, OpType::Fail, "send", json!(token), Some(e), node);
                std::thread::sleep(Duration::from_millis(50));
            }
            Outcome::Info(e) => {
                rec.record_at(p, OpType::Info, "send", json!(token), Some(e), node);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn finish(&self, bed: &Testbed, p: u64, rec: &Recorder) {
        rec.record(p, OpType::Invoke, "read", json!(null), None);
        let imap = SocketAddr::from((bed.address, 143));
        let t = Instant::now();
        let mut last = String::new();
        let mut previous: Option<usize> = None;
        let prefix = format!("{}-", self.run_id);
        for _ in 0..1000 {
            match read_subjects(imap, &bed.login, &bed.password) {
                // Deliveries of the last messages may still be in flight: read until two
                // reads a second apart agree.
                Ok(s) => {
                    let s: Vec<String> = s.into_iter().filter(|t| t.starts_with(&prefix)).collect();
                    if previous == Some(s.len()) {
                        rec.record(p, OpType::Ok, "read", json!(s), None);
                        return;
                    }
                    previous = Some(s.len());
                }
                Err(e) => last = e,
            }
            if t.elapsed() > Duration::from_secs(90) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        rec.record(p, OpType::Fail, "read", json!(null), Some(last));
    }
}
