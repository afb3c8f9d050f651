//! Histories as Jepsen records them: every operation a client performs is an `invoke`
//! followed by exactly one completion — `ok` (it happened), `fail` (it certainly did not
//! happen) or `info` (unknown: a timeout, a lost connection, a 451 "outcome unknown").
//! Stored as JSON lines, one operation per line.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One history record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// The client process (a completion has its invocation's process).
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation: "send", "read", "append", "store", … or "nemesis".
    pub f: String,
    pub value: serde_json::Value,
    /// Wall-clock milliseconds (for humans and plots).
    pub time_ms: i64,
    /// Monotonic nanoseconds since the start of the run (for ordering and latencies).
    pub mono_ns: u64,
    /// The node the client talked to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Why a `fail` or `info` happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads a JSON-lines history; a malformed line is an error naming its number.
pub fn read(text: &str) -> Result<Vec<Op>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}

/// Writes a history as JSON lines.
pub fn write(ops: &[Op]) -> String {
    let mut s = String::new();
    for op in ops {
        if let Ok(l) = serde_json::to_string(op) {
            s.push_str(&l);
            s.push('\n');
        }
    }
    s
}

/// Pairs each invocation with its completion (by process, in order). Returns (invoke,
/// completion) pairs; an invocation without a completion is paired with `None` (the run ended
/// first: treat it as `info`). A completion without an invocation is an error.
pub fn pairs(ops: &[Op]) -> Result<Vec<(&Op, Option<&Op>)>, String> {
    let mut open: std::collections::HashMap<u64, usize> = Default::default();
    let mut out: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in ops {
        match op.kind {
            OpType::Invoke => {
                if open.contains_key(&op.process) {
                    return Err(format!(
                        "op {}: process {} invoked twice without completing",
                        op.index, op.process
                    ));
                }
                open.insert(op.process, out.len());
                out.push((op, None));
            }
            _ => {
                let i = open.remove(&op.process).ok_or_else(|| {
                    format!(
                        "op {}: completion without invocation (process {})",
                        op.index, op.process
                    )
                })?;
                out[i].1 = Some(op);
            }
        }
    }
    Ok(out)
}

/// A history from (process, type, f, value) tuples, in that order, for tests: positions
/// 0, 1, …, monotonic times 1 µs apart.
#[cfg(test)]
pub(crate) fn from_tuples(ops: &[(u64, OpType, &str, serde_json::Value)]) -> Vec<Op> {
    ops.iter()
        .enumerate()
        .map(|(i, (p, k, f, v))| Op {
            index: i as u64,
            process: *p,
            kind: *k,
            f: f.to_string(),
            value: v.clone(),
            time_ms: 0,
            mono_ns: i as u64 * 1_000,
            node: None,
            error: None,
        })
        .collect()
}
