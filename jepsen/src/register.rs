//! The IMAP flag-register workload: the flags of a few messages are read/write registers.
//! Clients replace a message's flags with a random set of keywords (`UID STORE u FLAGS
//! (…)`) or read them (`UID FETCH u (FLAGS)`), over IMAP through the group's floating
//! address; [`crate::linearizable`] checks that the history is linearizable per message.
//!
//! Operations (the key is the message's UID):
//! - `write`: invoke `{"key": K, "value": [keywords]}`; ok the same; fail on a refusal that
//!   is certain (`NO` other than `[UNAVAILABLE]`, `BAD`, nothing sent); info when the outcome
//!   is unknown (connection lost after the command was sent, a timeout, `NO [UNAVAILABLE]`).
//! - `read`: invoke `{"key": K, "value": null}`; ok `{"key": K, "value": [keywords]}` (only
//!   this workload's keywords `$j1`…`$j5`; system flags are left out).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::history::OpType;
use crate::imap::{Imap, Pool, Status, list_after, quote};
use crate::runner::{Recorder, Rng, Testbed, Workload};

/// The keywords values are made of (5 keywords: 32 distinct register values).
pub const KEYWORDS: [&str; 5] = ["$j1", "$j2", "$j3", "$j4", "$j5"];

pub struct Register {
    pub run_id: String,
    pub keys: u64,
    uids: Mutex<Vec<u64>>,
    conns: Pool,
}

impl Register {
    pub fn new(run_id: &str, keys: u64) -> Register {
        Register {
            run_id: run_id.to_string(),
            keys: keys.max(1),
            uids: Mutex::new(Vec::new()),
            conns: Pool::default(),
        }
    }

    fn mailbox(&self) -> String {
        format!("jepsen-{}-flags", self.run_id)
    }

    fn conn(&self, bed: &Testbed, p: u64) -> Result<Imap, String> {
        let mailbox = self.mailbox();
        self.conns.take(p, bed, |c| {
            let r = c.command(&format!("SELECT {}", quote(&mailbox)))?;
            match r.status {
                Status::Ok(_) => Ok(()),
                s => Err(format!("SELECT: {s:?}")),
            }
        })
    }
}

fn ours(flags: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = flags
        .into_iter()
        .filter(|f| KEYWORDS.contains(&f.as_str()))
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Workload for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn setup(&self, bed: &Testbed) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..30 {
            let r = (|| -> Result<Vec<u64>, String> {
                let mut c = Imap::login(
                    SocketAddr::from((bed.address, 143)),
                    &bed.login,
                    &bed.password,
                )?;
                let r = c.command(&format!("CREATE {}", quote(&self.mailbox())))?;
                match r.status {
                    Status::Ok(_) => {}
                    Status::No(t) if t.contains("ALREADYEXISTS") => {}
                    s => return Err(format!("CREATE: {s:?}")),
                }
                let mut uids = Vec::new();
                for k in 0..self.keys {
                    let mut msg = Vec::new();
                    let _ = write!(
                        msg,
                        "From: jepsen@jepsen.test\r\nSubject: {}-r{k}\r\n\r\nregister {k}\r\n",
                        self.run_id
                    );
                    match c.append(&self.mailbox(), &msg) {
                        Ok(r) => match r.status {
                            Status::Ok(t) => {
                                let uid = t
                                    .find("[APPENDUID")
                                    .and_then(|i| t[i + 10..].split_whitespace().nth(1))
                                    .and_then(|u| u.trim_end_matches(']').parse::<u64>().ok())
                                    .ok_or("no APPENDUID")?;
                                uids.push(uid);
                            }
                            s => return Err(format!("APPEND: {s:?}")),
                        },
                        Err(e) => return Err(format!("APPEND: {e:?}")),
                    }
                }
                Ok(uids)
            })();
            match r {
                Ok(uids) => {
                    *self.uids.lock().unwrap_or_else(|e| e.into_inner()) = uids;
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(format!("seeding the registers: {last}"))
    }

    fn step(&self, bed: &Testbed, p: u64, _seq: u64, rng: &mut Rng, rec: &Recorder) {
        let uids = self.uids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if uids.is_empty() {
            return;
        }
        let key = *rng.pick(&uids);
        let mut c = match self.conn(bed, p) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        let keep = if rng.below(2) == 0 {
            let bits = rng.below(1 << KEYWORDS.len());
            let value: Vec<String> = KEYWORDS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, k)| k.to_string())
                .collect();
            let v = json!({"key": key, "value": value});
            rec.record(p, OpType::Invoke, "write", v.clone(), None);
            match c.command(&format!("UID STORE {key} FLAGS ({})", value.join(" "))) {
                Ok(r) => match r.status {
                    Status::Ok(_) => {
                        rec.record(p, OpType::Ok, "write", v, None);
                        true
                    }
                    Status::No(t) if t.contains("[UNAVAILABLE]") => {
                        rec.record(p, OpType::Info, "write", v, Some(format!("NO {t}")));
                        false
                    }
                    s => {
                        rec.record(p, OpType::Fail, "write", v, Some(format!("{s:?}")));
                        true
                    }
                },
                Err(e) => {
                    rec.record(p, OpType::Info, "write", v, Some(e));
                    false
                }
            }
        } else {
            rec.record(
                p,
                OpType::Invoke,
                "read",
                json!({"key": key, "value": null}),
                None,
            );
            let r = c.command(&format!("UID FETCH {key} (FLAGS)"));
            let flags = match &r {
                Ok(r) if matches!(r.status, Status::Ok(_)) => r
                    .untagged
                    .iter()
                    .find(|l| {
                        l.contains(&format!("UID {key} ")) || l.contains(&format!("UID {key})"))
                    })
                    .and_then(|l| list_after(l, "FLAGS"))
                    .ok_or_else(|| format!("no FLAGS for UID {key}")),
                Ok(r) => Err(format!("{:?}", r.status)),
                Err(e) => Err(e.clone()),
            };
            match flags {
                Ok(f) => {
                    let v = json!({"key": key, "value": ours(f)});
                    rec.record(p, OpType::Ok, "read", v, None);
                    true
                }
                Err(e) => {
                    let v = json!({"key": key, "value": null});
                    rec.record(p, OpType::Fail, "read", v, Some(e));
                    false
                }
            }
        };
        if keep {
            self.conns.put(p, c);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(&self, bed: &Testbed, p: u64, rec: &Recorder) {
        // One last read of each register after the heal (waiting for the cluster).
        let uids = self.uids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let t = std::time::Instant::now();
        for key in uids {
            for _ in 0..120 {
                rec.record(
                    p,
                    OpType::Invoke,
                    "read",
                    json!({"key": key, "value": null}),
                    None,
                );
                let r = self.conn(bed, p).and_then(|mut c| {
                    let r = c.command(&format!("UID FETCH {key} (FLAGS)"))?;
                    let l = r
                        .untagged
                        .iter()
                        .find_map(|l| list_after(l, "FLAGS"))
                        .ok_or("no FLAGS")?;
                    self.conns.put(p, c);
                    Ok(l)
                });
                match r {
                    Ok(f) => {
                        let v = json!({"key": key, "value": ours(f)});
                        rec.record(p, OpType::Ok, "read", v, None);
                        break;
                    }
                    Err(e) => {
                        let v = json!({"key": key, "value": null});
                        rec.record(p, OpType::Fail, "read", v, Some(e));
                    }
                }
                if t.elapsed() > Duration::from_secs(90) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
