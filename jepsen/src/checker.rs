//! Checkers that judge a history.
//!
//! [`set`] — SMTP delivery as a set with multiplicities: every token whose `send` was
//! acknowledged (`ok`, a 250) must be in the final read exactly once; a token whose `send`
//! certainly failed (`fail`, a 5xx or a 4xx before DATA) must not be there; tokens whose
//! outcome is unknown (`info`) may be there at most once; nothing may be there that nobody
//! sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpType, pairs};

/// The verdict of the set checker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetResult {
    pub valid: bool,
    pub attempted: usize,
    pub acknowledged: usize,
    /// Tokens in the final read.
    pub read: usize,
    /// Acknowledged, never read.
    pub lost: Vec<String>,
    /// Read more than once (token, times).
    pub duplicated: Vec<(String, usize)>,
    /// Read, but never sent.
    pub unexpected: Vec<String>,
    /// Read, though the send certainly failed.
    pub failed_but_delivered: Vec<String>,
    /// Outcome unknown and read (fine: counted for the report).
    pub recovered: usize,
    /// The history records of the first anomalous token (the smallest excerpt that shows it).
    pub excerpt: Vec<Op>,
    /// Why the history could not be judged at all.
    pub error: Option<String>,
}

/// Judges `send` operations (value: the token) against the last successful `read` (value: the
/// list of tokens found, with repeats).
pub fn set(ops: &[Op]) -> SetResult {
    let mut r = SetResult::default();
    let ps = match pairs(ops) {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let mut sent: BTreeMap<String, OpType> = BTreeMap::new();
    let mut final_read: Option<Vec<String>> = None;
    for (inv, done) in &ps {
        let kind = done.map_or(OpType::Info, |d| d.kind);
        match inv.f.as_str() {
            "send" => {
                let Some(tok) = inv.value.as_str() else {
                    r.error = Some(format!("op {}: a send's value must be a token", inv.index));
                    return r;
                };
                sent.insert(tok.to_string(), kind);
            }
            "read" if kind == OpType::Ok => {
                let v = done.map(|d| &d.value).and_then(|v| v.as_array());
                final_read = Some(
                    v.map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                );
            }
            _ => {}
        }
    }
    let Some(read) = final_read else {
        r.error = Some("no successful final read".into());
        return r;
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &read {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    r.attempted = sent.len();
    r.acknowledged = sent.values().filter(|k| **k == OpType::Ok).count();
    r.read = read.len();
    for (tok, kind) in &sent {
        let n = counts.get(tok.as_str()).copied().unwrap_or(0);
        match kind {
            OpType::Ok if n == 0 => r.lost.push(tok.clone()),
            OpType::Fail if n > 0 => r.failed_but_delivered.push(tok.clone()),
            OpType::Info | OpType::Invoke if n > 0 => r.recovered += 1,
            _ => {}
        }
        if n > 1 {
            r.duplicated.push((tok.clone(), n));
        }
    }
    for tok in counts.keys() {
        if !sent.contains_key(*tok) {
            r.unexpected.push(tok.to_string());
        }
    }
    r.valid = r.lost.is_empty()
        && r.duplicated.is_empty()
        && r.unexpected.is_empty()
        && r.failed_but_delivered.is_empty();
    let first_bad = r
        .lost
        .first()
        .or(r.duplicated.first().map(|d| &d.0))
        .or(r.failed_but_delivered.first())
        .cloned();
    if let Some(tok) = first_bad {
        // The token's own operations, and the final read reduced to how often it saw it.
        let seen = counts.get(tok.as_str()).copied().unwrap_or(0);
        r.excerpt = ops
            .iter()
            .filter_map(|o| {
                if o.value.as_str() == Some(tok.as_str()) {
                    Some(o.clone())
                } else if o.f == "read" && o.kind == OpType::Ok {
                    let mut o = o.clone();
                    o.value = serde_json::json!({ "token": tok, "times_read": seen });
                    Some(o)
                } else {
                    None
                }
            })
            .collect();
    }
    r
}

/// At most one holder of an address at any instant: probe rounds as (time, holders seen).
/// Returns the rounds with two or more holders.
pub fn single_holder(rounds: &[(f64, Vec<String>)]) -> Vec<(f64, Vec<String>)> {
    rounds
        .iter()
        .filter(|(_, h)| h.len() > 1)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::history::from_tuples as h;

    use OpType::*;

    fn sends(tokens: &[(&str, OpType)]) -> Vec<(u64, OpType, &'static str, serde_json::Value)> {
        let mut v = Vec::new();
        for (i, (t, k)) in tokens.iter().enumerate() {
            v.push((i as u64, Invoke, "send", json!(t)));
            v.push((i as u64, *k, "send", json!(t)));
        }
        v
    }

    fn with_read(
        mut v: Vec<(u64, OpType, &'static str, serde_json::Value)>,
        read: &[&str],
    ) -> Vec<Op> {
        v.push((99, Invoke, "read", json!(null)));
        v.push((99, Ok, "read", json!(read)));
        h(&v)
    }

    #[test]
    fn a_good_history_is_valid() {
        let r = set(&with_read(
            sends(&[("a", Ok), ("b", Ok), ("c", Info), ("d", Fail)]),
            &["a", "b", "c"],
        ));
        assert!(r.valid, "{r:?}");
        assert_eq!(
            (r.attempted, r.acknowledged, r.read, r.recovered),
            (4, 2, 3, 1)
        );
    }

    #[test]
    fn each_anomaly_is_caught_and_shown() {
        let lost = set(&with_read(sends(&[("a", Ok), ("b", Ok)]), &["a"]));
        assert!(!lost.valid);
        assert_eq!(lost.lost, vec!["b"]);
        assert!(
            lost.excerpt
                .iter()
                .any(|o| o.value == json!("b") && o.kind == Ok),
            "{:?}",
            lost.excerpt
        );

        let dup = set(&with_read(
            sends(&[("a", Ok), ("b", Info)]),
            &["a", "b", "b"],
        ));
        assert!(!dup.valid);
        assert_eq!(dup.duplicated, vec![("b".to_string(), 2)]);

        let unexpected = set(&with_read(sends(&[("a", Ok)]), &["a", "zz"]));
        assert!(!unexpected.valid);
        assert_eq!(unexpected.unexpected, vec!["zz"]);

        let failed = set(&with_read(sends(&[("a", Ok), ("b", Fail)]), &["a", "b"]));
        assert!(!failed.valid);
        assert_eq!(failed.failed_but_delivered, vec!["b"]);
    }

    #[test]
    fn unusable_histories_are_reported_not_judged() {
        let no_read = set(&h(&sends(&[("a", Ok)])));
        assert!(!no_read.valid && no_read.error.is_some());
        let orphan = set(&h(&[(1, Ok, "send", json!("a"))]));
        assert!(orphan.error.unwrap().contains("without invocation"));
        let twice = set(&h(&[
            (1, Invoke, "send", json!("a")),
            (1, Invoke, "send", json!("b")),
        ]));
        assert!(twice.error.unwrap().contains("invoked twice"));
    }

    #[test]
    fn an_unfinished_send_counts_as_unknown() {
        let mut v = sends(&[("a", Ok)]);
        v.push((7, Invoke, "send", json!("late")));
        let r = set(&with_read(v, &["a", "late"]));
        assert!(r.valid, "{r:?}");
        assert_eq!(r.recovered, 1);
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let ops = with_read(sends(&[("a", Ok)]), &["a"]);
        let text = crate::history::write(&ops);
        assert_eq!(crate::history::read(&text).unwrap(), ops);
        assert!(
            crate::history::read("{not json}\n")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn two_holders_in_one_round_are_reported() {
        let rounds = vec![
            (0.0, vec!["node 1".to_string()]),
            (10.0, vec!["node 1".to_string(), "node 2".to_string()]),
            (20.0, vec![]),
        ];
        assert_eq!(single_holder(&rounds).len(), 1);
    }
}
