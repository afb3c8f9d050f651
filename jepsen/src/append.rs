//! The IMAP list-append workload: a few mailboxes are lists; clients APPEND unique tokens
//! (the Subject) to random mailboxes and read whole mailboxes (SELECT, then the UID and
//! Subject of every message), over IMAP through the group's floating address.
//!
//! Operations:
//! - `append`: invoke `{"key": K, "token": T}`; ok `{"key", "token", "uidvalidity", "uid"}`
//!   from APPENDUID; fail on a refusal (`NO` other than `[UNAVAILABLE]`, `BAD`, or nothing
//!   sent); info when the outcome is unknown (connection lost after the message was sent,
//!   a timeout, `NO [UNAVAILABLE]`, which Halyard also says when a proposal's fate is
//!   unknown).
//! - `read`: invoke `{"key": K}`; ok `{"key", "uidvalidity", "uidnext", "highestmodseq",
//!   "exists", "list": [[uid, token], …]}` in UID order (`exists`: messages at SELECT, which
//!   UIDNEXT and HIGHESTMODSEQ describe; the FETCH may show later ones, announced first). The final reads after the heal are `read`s
//!   too (the last one of each key is the reference).
//!
//! [`check`] judges: lost (acknowledged, not in the final read), duplicated (a token twice
//! in one read), failed-but-present, unexpected (never appended), order (every read is a
//! prefix of the final read: UIDs are assigned in ascending order and a message never
//! vanishes), stale read (an append acknowledged before a read began is missing from it),
//! UID ↔ token disagreements (between APPENDUIDs and reads), UIDVALIDITY changes, UIDNEXT
//! or HIGHESTMODSEQ going backwards between reads in real-time order, UIDNEXT not above the
//! largest UID read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::history::{Op, OpType, pairs};
use crate::imap::{AppendError, Imap, Pool, Response, Status, number_after};
use crate::runner::{Recorder, Rng, Testbed, Workload};

pub struct Append {
    pub run_id: String,
    pub keys: u64,
    conns: Pool,
}

impl Append {
    pub fn new(run_id: &str, keys: u64) -> Append {
        Append {
            run_id: run_id.to_string(),
            keys: keys.max(1),
            conns: Pool::default(),
        }
    }

    fn mailbox(&self, key: u64) -> String {
        format!("jepsen-{}-k{key}", self.run_id)
    }

    fn conn(&self, bed: &Testbed, p: u64) -> Result<Imap, String> {
        self.conns.take(p, bed, |_| Ok(()))
    }

    fn keep(&self, p: u64, c: Imap) {
        self.conns.put(p, c);
    }
}

fn unavailable(text: &str) -> bool {
    text.contains("[UNAVAILABLE]")
}

/// SELECT and read the whole mailbox.
pub fn read_mailbox(c: &mut Imap, mailbox: &str) -> Result<Value, String> {
    let sel = c.command(&format!("SELECT {}", crate::imap::quote(mailbox)))?;
    if !matches!(sel.status, Status::Ok(_)) {
        return Err(format!("SELECT: {:?}", sel.status));
    }
    let (mut validity, mut uidnext, mut modseq, mut exists) = (None, None, None, 0);
    for l in &sel.untagged {
        validity = validity.or(number_after(l, "[UIDVALIDITY"));
        uidnext = uidnext.or(number_after(l, "[UIDNEXT"));
        modseq = modseq.or(number_after(l, "[HIGHESTMODSEQ"));
        if l.ends_with(" EXISTS") {
            exists = number_after(l, "*").unwrap_or(0);
        }
    }
    let mut list: Vec<(u64, String)> = Vec::new();
    if exists > 0 {
        let f = c.command("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")?;
        if !matches!(f.status, Status::Ok(_)) {
            return Err(format!("FETCH: {:?}", f.status));
        }
        for l in &f.untagged {
            let Some(uid) = number_after(l, "(UID").or_else(|| number_after(l, " UID")) else {
                continue;
            };
            let subject = l
                .find("Subject:")
                .map(|i| {
                    l[i + 8..]
                        .split(['\r', '\n'])
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            list.push((uid, subject));
        }
    }
    list.sort();
    Ok(json!({
        "exists": exists,
        "uidvalidity": validity,
        "uidnext": uidnext,
        "highestmodseq": modseq,
        "list": list,
    }))
}

impl Workload for Append {
    fn name(&self) -> &'static str {
        "append"
    }

    fn setup(&self, bed: &Testbed) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..30 {
            let r = (|| -> Result<(), String> {
                let mut c = self.conn(bed, u64::MAX)?;
                for k in 0..self.keys {
                    let r =
                        c.command(&format!("CREATE {}", crate::imap::quote(&self.mailbox(k))))?;
                    match r.status {
                        Status::Ok(_) => {}
                        Status::No(t) if t.contains("ALREADYEXISTS") => {}
                        s => return Err(format!("CREATE: {s:?}")),
                    }
                }
                Ok(())
            })();
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(format!("creating the mailboxes: {last}"))
    }

    fn step(&self, bed: &Testbed, p: u64, seq: u64, rng: &mut Rng, rec: &Recorder) {
        let key = rng.below(self.keys);
        let mut c = match self.conn(bed, p) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        let ok = if rng.below(10) < 7 {
            let token = format!("{}-a{p}-{seq}", self.run_id);
            rec.record(
                p,
                OpType::Invoke,
                "append",
                json!({"key": key, "token": token}),
                None,
            );
            let msg = format!(
                "From: jepsen@jepsen.test\r\nSubject: {token}\r\nMessage-ID: <{token}@jepsen.test>\r\n\r\n{token}\r\n"
            );
            match c.append(&self.mailbox(key), msg.as_bytes()) {
                Ok(Response {
                    status: Status::Ok(t),
                    ..
                }) => {
                    let validity = number_after(&t, "[APPENDUID");
                    let uid = t
                        .find("[APPENDUID")
                        .and_then(|i| t[i + 10..].split_whitespace().nth(1))
                        .and_then(|u| u.trim_end_matches(']').parse::<u64>().ok());
                    rec.record(
                        p,
                        OpType::Ok,
                        "append",
                        json!({"key": key, "token": token, "uidvalidity": validity, "uid": uid}),
                        None,
                    );
                    true
                }
                Ok(Response {
                    status: Status::No(t),
                    ..
                }) if unavailable(&t) => {
                    let v = json!({"key": key, "token": token});
                    rec.record(p, OpType::Info, "append", v, Some(format!("NO {t}")));
                    false
                }
                Ok(Response { status, .. }) => {
                    let v = json!({"key": key, "token": token});
                    rec.record(p, OpType::Fail, "append", v, Some(format!("{status:?}")));
                    true
                }
                Err(AppendError::NotSent(e)) => {
                    let v = json!({"key": key, "token": token});
                    rec.record(p, OpType::Fail, "append", v, Some(e));
                    false
                }
                Err(AppendError::Unknown(e)) => {
                    let v = json!({"key": key, "token": token});
                    rec.record(p, OpType::Info, "append", v, Some(e));
                    false
                }
            }
        } else {
            rec.record(p, OpType::Invoke, "read", json!({"key": key}), None);
            match read_mailbox(&mut c, &self.mailbox(key)) {
                Ok(mut v) => {
                    v["key"] = json!(key);
                    rec.record(p, OpType::Ok, "read", v, None);
                    true
                }
                Err(e) => {
                    // A read changes nothing: a failed one is a `fail`.
                    rec.record(p, OpType::Fail, "read", json!({"key": key}), Some(e));
                    false
                }
            }
        };
        if ok {
            self.keep(p, c);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(&self, bed: &Testbed, p: u64, rec: &Recorder) {
        // Read every key until two reads a second apart agree (the cluster may still be
        // electing or catching up after the heal).
        for key in 0..self.keys {
            let mut previous: Option<Value> = None;
            let mut last = String::new();
            let t = std::time::Instant::now();
            rec.record(p, OpType::Invoke, "read", json!({"key": key}), None);
            let mut done = false;
            for _ in 0..200 {
                let r = self
                    .conn(bed, p)
                    .and_then(|mut c| read_mailbox(&mut c, &self.mailbox(key)));
                match r {
                    Ok(mut v) => {
                        v["key"] = json!(key);
                        if previous.as_ref() == Some(&v) {
                            rec.record(p, OpType::Ok, "read", v, None);
                            done = true;
                            break;
                        }
                        previous = Some(v);
                    }
                    Err(e) => last = e,
                }
                if t.elapsed() > Duration::from_secs(90) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            if !done {
                rec.record(p, OpType::Fail, "read", json!({"key": key}), Some(last));
            }
        }
    }
}

/// The verdict of the list-append checker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppendResult {
    pub valid: bool,
    pub attempted: usize,
    pub acknowledged: usize,
    /// Successful reads (the final ones included).
    pub reads: usize,
    /// Messages in each key's final read.
    pub final_lengths: BTreeMap<u64, usize>,
    /// Anomaly kind → descriptions (at most 20 each).
    pub anomalies: BTreeMap<String, Vec<String>>,
    /// The operations that show the first anomaly (reads reduced to what matters).
    pub excerpt: Vec<Op>,
    pub error: Option<String>,
}

struct Read<'a> {
    inv: &'a Op,
    done: &'a Op,
    validity: Option<u64>,
    uidnext: Option<u64>,
    modseq: Option<u64>,
    /// Messages at SELECT (the snapshot UIDNEXT and HIGHESTMODSEQ describe); the FETCH may
    /// show more, announced by EXISTS in between.
    exists: Option<u64>,
    list: Vec<(u64, String)>,
}

fn parse_list(v: &Value) -> Vec<(u64, String)> {
    v["list"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| Some((e.get(0)?.as_u64()?, e.get(1)?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A copy of a read's completion with its list reduced to the entries for `tokens` (and
/// its length), so an excerpt stays readable.
fn reduced(op: &Op, tokens: &[&str]) -> Op {
    let mut o = op.clone();
    let list = parse_list(&op.value);
    let keep: Vec<&(u64, String)> = list
        .iter()
        .filter(|(_, t)| tokens.contains(&t.as_str()))
        .collect();
    o.value["list"] = json!(keep);
    o.value["length"] = json!(list.len());
    o
}

/// Judges a list-append history.
pub fn check(ops: &[Op]) -> AppendResult {
    let mut r = AppendResult::default();
    let ps = match pairs(ops) {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let mut anomalies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut excerpt: Option<Vec<Op>> = None;
    let mut note = |kind: &str, what: String, ex: Vec<Op>| {
        let v = anomalies.entry(kind.to_string()).or_default();
        if v.len() < 20 {
            v.push(what);
        }
        if excerpt.is_none() {
            excerpt = Some(ex);
        }
    };
    // Appends: token → (key, outcome, invoke, completion).
    let mut appends: HashMap<String, (u64, OpType, &Op, Option<&Op>)> = HashMap::new();
    let mut reads: BTreeMap<u64, Vec<Read>> = BTreeMap::new();
    for (inv, done) in &ps {
        let kind = done.map_or(OpType::Info, |d| d.kind);
        let Some(key) = inv.value["key"].as_u64() else {
            continue;
        };
        match inv.f.as_str() {
            "append" => {
                let Some(tok) = inv.value["token"].as_str() else {
                    r.error = Some(format!("op {}: an append needs a token", inv.index));
                    return r;
                };
                appends.insert(tok.to_string(), (key, kind, inv, *done));
            }
            "read" if kind == OpType::Ok => {
                let Some(d) = done else { continue };
                reads.entry(key).or_default().push(Read {
                    inv,
                    done: d,
                    validity: d.value["uidvalidity"].as_u64(),
                    uidnext: d.value["uidnext"].as_u64(),
                    modseq: d.value["highestmodseq"].as_u64(),
                    exists: d.value["exists"].as_u64(),
                    list: parse_list(&d.value),
                });
            }
            _ => {}
        }
    }
    r.attempted = appends.len();
    r.acknowledged = appends.values().filter(|a| a.1 == OpType::Ok).count();
    r.reads = reads.values().map(Vec::len).sum();
    let keys: HashSet<u64> = appends
        .values()
        .map(|a| a.0)
        .chain(reads.keys().copied())
        .collect();
    for key in keys {
        let rs = reads.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        // The final read: the one that completed last.
        let Some(fin) = rs.iter().max_by_key(|x| x.done.index) else {
            if appends.values().any(|a| a.0 == key && a.1 == OpType::Ok) {
                r.error = Some(format!("no successful read of key {key}"));
                return r;
            }
            continue;
        };
        r.final_lengths.insert(key, fin.list.len());
        let fin_tokens: Vec<&str> = fin.list.iter().map(|x| x.1.as_str()).collect();
        // UIDVALIDITY, UID ↔ token, from APPENDUIDs and every read.
        let mut validity: Option<(u64, &Op)> = None;
        let mut uid_of: HashMap<&str, (u64, &Op)> = HashMap::new();
        let mut token_of: HashMap<u64, (&str, &Op)> = HashMap::new();
        // (UIDVALIDITY, (UID, token) pairs, the op that showed them).
        type Sighting<'a> = (Option<u64>, Vec<(u64, &'a str)>, &'a Op);
        let mut sightings: Vec<Sighting> = Vec::new();
        for (tok, (k, kind, _, done)) in &appends {
            if *k == key
                && *kind == OpType::Ok
                && let Some(d) = done
            {
                let uid = d.value["uid"].as_u64();
                let v = d.value["uidvalidity"].as_u64();
                sightings.push((v, uid.map(|u| (u, tok.as_str())).into_iter().collect(), d));
            }
        }
        for x in rs {
            sightings.push((
                x.validity,
                x.list.iter().map(|(u, t)| (*u, t.as_str())).collect(),
                x.done,
            ));
        }
        sightings.sort_by_key(|s| s.2.index);
        for (v, entries, op) in &sightings {
            if let Some(v) = v {
                match validity {
                    None => validity = Some((*v, op)),
                    Some((w, first)) if w != *v => note(
                        "uidvalidity-changed",
                        format!("key {key}: UIDVALIDITY {w} then {v}"),
                        vec![first.clone(), (*op).clone()],
                    ),
                    _ => {}
                }
            }
            for (uid, tok) in entries {
                if let Some((u, first)) = uid_of.get(tok)
                    && u != uid
                {
                    note(
                        "uid-token-mismatch",
                        format!("key {key}: {tok} had UID {u}, then UID {uid}"),
                        vec![reduced(first, &[tok]), reduced(op, &[tok])],
                    );
                }
                uid_of.entry(tok).or_insert((*uid, op));
                if let Some((t, first)) = token_of.get(uid)
                    && t != tok
                {
                    note(
                        "uid-token-mismatch",
                        format!("key {key}: UID {uid} was {t}, then {tok}"),
                        vec![reduced(first, &[t, tok]), reduced(op, &[t, tok])],
                    );
                }
                token_of.entry(*uid).or_insert((tok, op));
            }
        }
        // Each read on its own, and against the final read.
        for x in rs {
            let mut seen: HashSet<&str> = HashSet::new();
            for (_, t) in &x.list {
                if !seen.insert(t.as_str()) {
                    note(
                        "duplicated",
                        format!("key {key}: {t} twice in one read"),
                        vec![reduced(x.done, &[t])],
                    );
                }
            }
            let at_select = x
                .exists
                .map_or(x.list.len(), |e| (e as usize).min(x.list.len()));
            if let (Some(n), Some(max)) = (x.uidnext, x.list[..at_select].last().map(|e| e.0))
                && n <= max
            {
                note(
                    "uidnext-not-above",
                    format!("key {key}: UIDNEXT {n} with UID {max} present"),
                    vec![reduced(x.done, &[])],
                );
            }
            let toks: Vec<&str> = x.list.iter().map(|e| e.1.as_str()).collect();
            if toks.len() > fin_tokens.len() || toks[..] != fin_tokens[..toks.len()] {
                let at = toks
                    .iter()
                    .zip(&fin_tokens)
                    .position(|(a, b)| a != b)
                    .unwrap_or(toks.len().min(fin_tokens.len()));
                let mut ts: Vec<&str> = Vec::new();
                ts.extend(toks.get(at));
                ts.extend(fin_tokens.get(at));
                note(
                    "order",
                    format!(
                        "key {key}: a read of {} messages is not a prefix of the final read of {} (first difference at position {at})",
                        toks.len(),
                        fin_tokens.len()
                    ),
                    vec![reduced(x.done, &ts), reduced(fin.done, &ts)],
                );
            }
            for (tok, (k, kind, inv, done)) in &appends {
                if *k != key || *kind != OpType::Ok {
                    continue;
                }
                if let Some(d) = done
                    && d.index < x.inv.index
                    && !seen.contains(tok.as_str())
                {
                    note(
                        "stale-read",
                        format!(
                            "key {key}: {tok} was acknowledged (op {}) before a read began (op {}) that does not have it",
                            d.index, x.inv.index
                        ),
                        vec![
                            (*inv).clone(),
                            (*d).clone(),
                            x.inv.clone(),
                            reduced(x.done, &[tok]),
                        ],
                    );
                }
            }
        }
        // Real-time order between reads: UIDNEXT and HIGHESTMODSEQ never go backwards.
        let mut by_end: Vec<&Read> = rs.iter().collect();
        by_end.sort_by_key(|x| x.done.index);
        // The highest UIDNEXT and HIGHESTMODSEQ of reads completed so far, and who saw them.
        let mut hi: [Option<(u64, &Read)>; 2] = [None, None];
        let mut by_start: Vec<&Read> = rs.iter().collect();
        by_start.sort_by_key(|x| x.inv.index);
        let mut j = 0;
        for x in by_start {
            // Every read that completed before x began.
            while j < by_end.len() && by_end[j].done.index < x.inv.index {
                let y = by_end[j];
                if let Some(n) = y.uidnext
                    && hi[0].is_none_or(|(m, _)| n > m)
                {
                    hi[0] = Some((n, y));
                }
                if let Some(n) = y.modseq
                    && hi[1].is_none_or(|(m, _)| n > m)
                {
                    hi[1] = Some((n, y));
                }
                j += 1;
            }
            if let (Some((m, y)), Some(n)) = (hi[0], x.uidnext)
                && n < m
            {
                note(
                    "uidnext-backwards",
                    format!("key {key}: UIDNEXT {m}, then later {n}"),
                    vec![reduced(y.done, &[]), reduced(x.done, &[])],
                );
            }
            if let (Some((m, y)), Some(n)) = (hi[1], x.modseq)
                && n < m
            {
                note(
                    "modseq-backwards",
                    format!("key {key}: HIGHESTMODSEQ {m}, then later {n}"),
                    vec![reduced(y.done, &[]), reduced(x.done, &[])],
                );
            }
        }
        // The final read against the appends.
        let fin_set: HashSet<&str> = fin_tokens.iter().copied().collect();
        for (tok, (k, kind, inv, done)) in &appends {
            if *k != key {
                continue;
            }
            let present = fin_set.contains(tok.as_str());
            let ex = || {
                let mut v = vec![(*inv).clone()];
                v.extend(done.cloned());
                v.push(reduced(fin.done, &[tok]));
                v
            };
            match kind {
                OpType::Ok if !present => note("lost", format!("key {key}: {tok}"), ex()),
                OpType::Fail if present => {
                    note("failed-but-present", format!("key {key}: {tok}"), ex())
                }
                _ => {}
            }
        }
        for t in &fin_tokens {
            if !appends.contains_key(*t) {
                note(
                    "unexpected",
                    format!("key {key}: {t} was never appended"),
                    vec![reduced(fin.done, &[t])],
                );
            }
        }
    }
    r.valid = anomalies.is_empty();
    r.anomalies = anomalies;
    r.excerpt = excerpt.unwrap_or_default();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<Op>);
    impl H {
        fn op(&mut self, p: u64, kind: OpType, f: &str, value: Value) -> &mut H {
            let i = self.0.len() as u64;
            self.0.push(Op {
                index: i,
                process: p,
                kind,
                f: f.into(),
                value,
                time_ms: 0,
                mono_ns: i,
                node: None,
                error: None,
            });
            self
        }
        fn append(&mut self, p: u64, tok: &str, outcome: OpType, uid: Option<u64>) -> &mut H {
            self.op(p, OpType::Invoke, "append", json!({"key": 0, "token": tok}));
            self.op(
                p,
                outcome,
                "append",
                json!({"key": 0, "token": tok, "uidvalidity": 7, "uid": uid}),
            )
        }
        fn read(&mut self, p: u64, list: &[(u64, &str)], uidnext: u64, modseq: u64) -> &mut H {
            self.op(p, OpType::Invoke, "read", json!({"key": 0}));
            self.op(
                p,
                OpType::Ok,
                "read",
                json!({"key": 0, "uidvalidity": 7, "uidnext": uidnext, "highestmodseq": modseq, "list": list}),
            )
        }
    }

    fn kinds(r: &AppendResult) -> Vec<&str> {
        r.anomalies.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_good_history_is_valid() {
        let mut h = H(vec![]);
        h.append(1, "a", OpType::Ok, Some(1))
            .read(2, &[(1, "a")], 2, 3)
            .append(1, "b", OpType::Info, None)
            .append(1, "c", OpType::Fail, None)
            .append(1, "d", OpType::Ok, Some(3))
            .read(9, &[(1, "a"), (2, "b"), (3, "d")], 4, 5);
        let r = check(&h.0);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.final_lengths[&0], 3);
        assert_eq!((r.attempted, r.acknowledged, r.reads), (4, 2, 2));
    }

    #[test]
    fn every_anomaly_is_caught() {
        let cases: Vec<(&str, H)> = vec![
            ("lost", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1)).read(9, &[], 2, 1);
                h
            }),
            ("duplicated", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1))
                    .read(9, &[(1, "a"), (2, "a")], 3, 1);
                h
            }),
            ("failed-but-present", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Fail, None)
                    .read(9, &[(1, "a")], 2, 1);
                h
            }),
            ("unexpected", {
                let mut h = H(vec![]);
                h.read(9, &[(1, "zz")], 2, 1);
                h
            }),
            ("order", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Info, None)
                    .append(1, "b", OpType::Info, None)
                    .read(2, &[(2, "b")], 3, 1)
                    .read(9, &[(1, "a"), (2, "b")], 3, 1);
                h
            }),
            ("stale-read", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1))
                    .read(2, &[], 1, 1)
                    .read(9, &[(1, "a")], 2, 1);
                h
            }),
            ("uid-token-mismatch", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(5))
                    .read(9, &[(1, "a")], 6, 1);
                h
            }),
            ("uidnext-backwards", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1))
                    .read(2, &[(1, "a")], 9, 1)
                    .read(9, &[(1, "a")], 2, 1);
                h
            }),
            ("modseq-backwards", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1))
                    .read(2, &[(1, "a")], 2, 8)
                    .read(9, &[(1, "a")], 2, 3);
                h
            }),
            ("uidnext-not-above", {
                let mut h = H(vec![]);
                h.append(1, "a", OpType::Ok, Some(1))
                    .read(9, &[(1, "a")], 1, 1);
                h
            }),
        ];
        for (kind, h) in cases {
            let r = check(&h.0);
            assert!(!r.valid, "{kind}: {r:?}");
            assert!(kinds(&r).contains(&kind), "{kind}: {:?}", kinds(&r));
            assert!(!r.excerpt.is_empty(), "{kind}");
        }
        // UIDVALIDITY changes.
        let mut h = H(vec![]);
        h.append(1, "a", OpType::Ok, Some(1));
        h.op(9, OpType::Invoke, "read", json!({"key": 0}));
        h.op(
            9,
            OpType::Ok,
            "read",
            json!({"key": 0, "uidvalidity": 8, "uidnext": 2, "highestmodseq": 1, "list": [[1, "a"]]}),
        );
        assert!(kinds(&check(&h.0)).contains(&"uidvalidity-changed"));
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_an_append() {
        // b's append overlaps both reads: one sees it, the other does not — fine, as long
        // as each is a prefix and the later-started one is not shorter than one that ended
        // before it began.
        let mut h = H(vec![]);
        h.op(1, OpType::Invoke, "append", json!({"key": 0, "token": "b"}));
        h.read(2, &[], 1, 1);
        h.read(3, &[(1, "b")], 2, 2);
        h.op(
            1,
            OpType::Ok,
            "append",
            json!({"key": 0, "token": "b", "uidvalidity": 7, "uid": 1}),
        );
        h.read(9, &[(1, "b")], 2, 2);
        let r = check(&h.0);
        assert!(r.valid, "{r:?}");
        // UIDNEXT describes the SELECT's snapshot: a message announced by EXISTS before the
        // FETCH may have that UID.
        let mut h = H(vec![]);
        h.append(1, "a", OpType::Ok, Some(1));
        h.op(2, OpType::Invoke, "read", json!({"key": 0}));
        h.op(
            2,
            OpType::Ok,
            "read",
            json!({"key": 0, "uidvalidity": 7, "uidnext": 1, "highestmodseq": 1, "exists": 0, "list": [[1, "a"]]}),
        );
        h.read(9, &[(1, "a")], 2, 2);
        let r = check(&h.0);
        assert!(r.valid, "{r:?}");
    }

    /// Histories simulated from an atomic list with random overlaps and crashes are valid;
    /// the same histories with an acknowledged token dropped from the final read, or two
    /// entries of a read swapped, are not.
    #[test]
    fn simulated_lists_are_valid_and_mutations_are_caught() {
        use crate::runner::Rng;
        for seed in 1..200u64 {
            let mut rng = Rng::new(seed);
            let mut h = H(vec![]);
            let mut list: Vec<(u64, String)> = Vec::new();
            // Per process: Some(pending op) — an append (token, takes effect?) or a read.
            let mut pending: Vec<Option<(bool, String, bool)>> = vec![None; 4];
            let mut next = 0u64;
            for _ in 0..60 {
                let p = rng.below(4) as usize;
                match pending[p].take() {
                    None => {
                        if rng.below(3) > 0 {
                            next += 1;
                            let tok = format!("t{next}");
                            h.op(
                                p as u64,
                                OpType::Invoke,
                                "append",
                                json!({"key": 0, "token": tok}),
                            );
                            // Takes effect now (linearization point inside the op), or never.
                            let effective = rng.below(5) > 0;
                            if effective {
                                list.push((list.len() as u64 + 1, tok.clone()));
                            }
                            pending[p] = Some((true, tok, effective));
                        } else {
                            h.op(p as u64, OpType::Invoke, "read", json!({"key": 0}));
                            // The read takes effect at invocation: the list as it is now.
                            let snapshot = serde_json::to_string(&list).unwrap();
                            pending[p] = Some((false, snapshot, true));
                        }
                    }
                    Some((true, tok, effective)) => {
                        let uid = list.iter().find(|e| e.1 == tok).map(|e| e.0);
                        let kind = match (effective, rng.below(4)) {
                            (true, 0) => OpType::Info,
                            (true, _) => OpType::Ok,
                            (false, 0) => OpType::Info,
                            (false, _) => OpType::Fail,
                        };
                        h.op(
                            p as u64,
                            kind,
                            "append",
                            json!({"key": 0, "token": tok, "uidvalidity": 7, "uid": uid}),
                        );
                    }
                    Some((false, snapshot, _)) => {
                        let l: Vec<(u64, String)> = serde_json::from_str(&snapshot).unwrap();
                        let next_uid = l.len() as u64 + 1;
                        h.op(
                            p as u64,
                            OpType::Ok,
                            "read",
                            json!({"key": 0, "uidvalidity": 7, "uidnext": next_uid, "highestmodseq": next_uid, "list": l}),
                        );
                    }
                }
            }
            // Complete every pending op, then the final read.
            for (p, x) in pending.iter().enumerate() {
                if let Some((is_append, v, _)) = x {
                    let f = if *is_append { "append" } else { "read" };
                    let value = if *is_append {
                        json!({"key": 0, "token": v})
                    } else {
                        json!({"key": 0})
                    };
                    h.op(p as u64, OpType::Info, f, value);
                }
            }
            let l: Vec<(u64, &str)> = list.iter().map(|(u, t)| (*u, t.as_str())).collect();
            let n = l.len() as u64 + 1;
            h.read(9, &l, n, n);
            let r = check(&h.0);
            assert!(r.valid, "seed {seed}: {:?}", r.anomalies);

            // Drop an acknowledged token from the final read: lost (and the reads after it
            // are no longer prefixes).
            let acked: Vec<String> =
                h.0.iter()
                    .filter(|o| o.f == "append" && o.kind == OpType::Ok)
                    .filter_map(|o| o.value["token"].as_str().map(String::from))
                    .collect();
            if let Some(t) = acked.first() {
                let mut bad = H(h.0.clone());
                let last = bad.0.len() - 1;
                let kept: Vec<(u64, String)> = list.iter().filter(|e| &e.1 != t).cloned().collect();
                bad.0[last].value["list"] = json!(kept);
                let r = check(&bad.0);
                assert!(
                    r.anomalies.contains_key("lost"),
                    "seed {seed}: {:?}",
                    r.anomalies
                );
            }
            // Swap two entries of the final read, one of them acknowledged with its
            // APPENDUID: a UID anomaly (two unacknowledged, never-read entries swapped would
            // be indistinguishable from the truth).
            if list.len() >= 2 && (acked.contains(&list[0].1) || acked.contains(&list[1].1)) {
                let mut bad = H(h.0.clone());
                let last = bad.0.len() - 1;
                let mut swapped = list.clone();
                let (a, b) = (swapped[0].1.clone(), swapped[1].1.clone());
                swapped[0].1 = b;
                swapped[1].1 = a;
                bad.0[last].value["list"] = json!(swapped);
                let r = check(&bad.0);
                assert!(!r.valid, "seed {seed}: a swap went unnoticed");
            }
        }
    }
}
