//! Linearizability of IMAP flag registers: is there one order of the operations, each placed
//! at an instant between its invocation and its completion, in which every read returns the
//! flags of the latest write before it? Checked the way Wing & Gong and Lowe did it (WGL),
//! with memoisation of the states already explored, as porcupine does. The flag-register
//! workload records the history; [`check`] judges it.
//!
//! # Operations
//!
//! Each message (a *key*) is a register holding a set of IMAP flags. Keys are JSON strings
//! or numbers (a number is read as its decimal text); flags are strings, compared exactly
//! (the workload sends them in one spelling) and as sets: order and repeats do not matter.
//!
//! | `f`       | invocation `value`                 | `ok` completion `value`            |
//! |-----------|------------------------------------|------------------------------------|
//! | `"write"` | `{"key": K, "value": [flags]}`     | the same (not looked at)           |
//! | `"read"`  | `{"key": K, "value": null}`        | `{"key": K, "value": [flags]}`     |
//!
//! A `write` is `STORE K FLAGS (…)`: it replaces every flag. A `read` is `FETCH K (FLAGS)`.
//! Operations with any other `f` (the nemesis, other workloads) are ignored.
//!
//! # What a completion means
//!
//! - `ok`: the operation took effect at one instant between its invocation and completion.
//! - `fail`: it certainly did not take effect; it is left out.
//! - `info`, or no completion before the history ends: unknown. A write may have taken effect
//!   at any instant after its invocation — even long after the client gave up — or never; a
//!   read that crashed returned nothing to anyone, so it constrains nothing and is left out.
//!   An unknown write whose flags no read returned is left out as well: wherever it could be
//!   placed, leaving it out changes no read.
//!
//! Real time is the history's order (`index`): an operation whose completion comes before
//! another's invocation must be linearized before it; any other two are concurrent.
//!
//! # The search
//!
//! Registers are independent, so each key is checked alone (P-compositionality): a history
//! is linearizable iff each key's sub-history is. First a read that nothing could explain —
//! flags the key did not start with and that no `ok` or unknown write invoked before the read
//! completed wrote — makes the key invalid at once. Then the invocations and completions form
//! a doubly linked list in time order, and the search walks it: at an invocation it tries to
//! linearize that operation next (a read must return the current value); on success both its
//! entries leave the list and the walk restarts at the head; at a completion whose operation
//! is not yet linearized it is stuck and backtracks. A state (the operations linearized and
//! the key's value) seen before is not explored again; states are kept as 128-bit Zobrist
//! fingerprints of the operation set, so two different sets collide with probability
//! 2⁻¹²⁸ — and a collision could only cut a branch, making a valid history look invalid,
//! never the reverse. The comment on `search` lists the reductions that keep this fast with
//! many concurrent and unknown operations.
//!
//! # Bounds and verdicts
//!
//! [`Config::max_states`] (default [`DEFAULT_MAX_STATES`], about 80 bytes a state) caps the
//! states a key's search visits. When the search hits it, windows of the key are checked
//! alone, from any starting value, with operations that cross a window's edges treated as
//! unknown or left out — so a window can only be more permissive than the whole, and an
//! invalid window is an anomaly in the whole history (and a much shorter excerpt): first
//! windows of 16, 32, … operations ending where the search got furthest, then overlapping
//! windows of [`WINDOW_OPS`] across the key, all within the same bound. If no window is
//! invalid either, the key is `unknown`: not shown linearizable, not shown otherwise —
//! rerun with a higher bound or a shorter history. The history's `valid` is true only when
//! every key is `valid`.
//!
//! An `invalid` key comes with a [`Failure`]: the end of the longest linearizable prefix the
//! search found, the operation that could not be placed after it, every operation that could
//! have gone next and why it could not, and the history records of just those operations and
//! of the writes the reads point at.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpType, pairs};

/// Default cap on the states a key's search visits.
pub const DEFAULT_MAX_STATES: u64 = 1_000_000;

/// Operations (`ok` ones, by invocation) per window when a key's whole history is too large
/// to search; windows overlap by half.
pub const WINDOW_OPS: usize = 200;

/// The states each window's search may visit (at most [`Config::max_states`]).
const WINDOW_MAX_STATES: u64 = 100_000;

/// A failure lists at most this many operations of the prefix (its end).
const PREFIX_SHOWN: usize = 8;
/// … and at most this many candidates.
const CANDIDATES_SHOWN: usize = 16;
/// … and for each read at most this many writes of the flags it returned.
const WRITERS_SHOWN: usize = 3;

/// How to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Every key's flags before its first operation: a new message has none.
    pub initial: Vec<String>,
    /// Keys that start otherwise (a message delivered with flags already set).
    pub initial_by_key: BTreeMap<String, Vec<String>>,
    /// States a key's search may visit before it falls back to windows (which share the
    /// same bound again; if none is invalid, the key is `unknown`). Memory is about 80 bytes
    /// a state.
    pub max_states: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial: Vec::new(),
            initial_by_key: BTreeMap::new(),
            max_states: DEFAULT_MAX_STATES,
        }
    }
}

/// A verdict that admits it may not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A linearization exists.
    Valid,
    /// None exists.
    Invalid,
    /// The search hit its bound (or the history could not be judged): neither shown.
    Unknown,
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearizableResult {
    /// True only when every key is `valid` (false for `invalid`, `unknown` or an error).
    pub valid: bool,
    /// `invalid` if any key is; else `unknown` if any key is or the history is unusable.
    pub outcome: Outcome,
    /// Keys with no linearization, sorted.
    pub invalid_keys: Vec<String>,
    /// Keys whose search hit the bound without finding an anomaly, sorted.
    pub unknown_keys: Vec<String>,
    /// Every key's result.
    pub keys: BTreeMap<String, KeyResult>,
    /// Why the history could not be judged at all (unpaired records, malformed values).
    pub error: Option<String>,
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyResult {
    pub outcome: Outcome,
    /// Operations the search had to place.
    pub ops: usize,
    /// Operations left out because they constrain nothing: failed ones, crashed reads,
    /// unknown writes whose flags nobody read.
    pub dropped: usize,
    /// States the whole key's search visited (the measure the bound applies to).
    pub states: u64,
    /// Why the outcome is `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the failure was found in a window (the whole key was too large to search): the
    /// history indices it spans, from its first invocation to its last completion. That part
    /// of the key alone, from any starting value, has no linearization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<[u64; 2]>,
    /// What an `invalid` key's search ran into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Where the search for a linearization of an invalid key got furthest, and what stopped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Operations in the longest linearizable prefix found.
    pub prefix_len: usize,
    /// That prefix's last operations, in linearization order.
    pub prefix_tail: Vec<Step>,
    /// The key's flags after the prefix (`None`: not yet fixed, in a window checked from any
    /// starting value).
    pub value: Option<Vec<String>>,
    /// The operation whose completion came before any order could place it.
    pub stuck: Step,
    /// The operations that could have gone next after the prefix, and why none could.
    pub candidates: Vec<Candidate>,
    /// The history records (invocations and completions) of the operations above and of the
    /// writes the reads point at, in history order: the smallest excerpt that shows it.
    pub excerpt: Vec<Op>,
}

/// One operation, as a failure names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The invocation's `index` in the history.
    pub index: u64,
    pub process: u64,
    /// `"read"` or `"write"`.
    pub f: String,
    /// The flags written or returned.
    pub value: Vec<String>,
    /// `ok`, `info` (also: never completed) or, for the writes a read points at, `fail`.
    pub completion: OpType,
}

/// An operation that could have been linearized next, but was not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub op: Step,
    /// Why it could not go next.
    pub why: String,
    /// For a read: the latest writes of the flags it returned invoked before it completed,
    /// failed ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<Step>,
}

/// Checks every key's register for linearizability.
pub fn check(ops: &[Op], cfg: &Config) -> LinearizableResult {
    let mut r = LinearizableResult {
        valid: false,
        outcome: Outcome::Unknown,
        invalid_keys: Vec::new(),
        unknown_keys: Vec::new(),
        keys: BTreeMap::new(),
        error: None,
    };
    let Histories { by_key, mut values } = match parse(ops) {
        Ok(h) => h,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    for (key, calls) in by_key {
        let initial = cfg.initial_by_key.get(&key).unwrap_or(&cfg.initial);
        let initial = values.id_of(&normalise(initial.iter().cloned()));
        let kr = check_key(&calls, &values, initial, cfg.max_states);
        match kr.outcome {
            Outcome::Valid => {}
            Outcome::Invalid => r.invalid_keys.push(key.clone()),
            Outcome::Unknown => r.unknown_keys.push(key.clone()),
        }
        r.keys.insert(key, kr);
    }
    r.outcome = if !r.invalid_keys.is_empty() {
        Outcome::Invalid
    } else if !r.unknown_keys.is_empty() {
        Outcome::Unknown
    } else {
        Outcome::Valid
    };
    r.valid = r.outcome == Outcome::Valid;
    r
}

// ---------------------------------------------------------------------------------------
// The history, per key.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// One read or write, its flags interned.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    inv: &'a Op,
    done: Option<&'a Op>,
    kind: Kind,
    value: u32,
}

impl Call<'_> {
    fn completion(&self) -> OpType {
        self.done.map_or(OpType::Info, |d| d.kind)
    }
}

/// Flag sets, each given a small number so that the search compares integers.
#[derive(Default)]
struct Values {
    ids: BTreeMap<Vec<String>, u32>,
    names: Vec<Vec<String>>,
}

impl Values {
    fn id_of(&mut self, v: &[String]) -> u32 {
        if let Some(id) = self.ids.get(v) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(v.to_vec());
        self.ids.insert(v.to_vec(), id);
        id
    }

    fn name(&self, id: u32) -> Vec<String> {
        self.names.get(id as usize).cloned().unwrap_or_default()
    }
}

struct Histories<'a> {
    /// Every read and write of each key, failed and crashed ones included, in invocation
    /// order.
    by_key: BTreeMap<String, Vec<Call<'a>>>,
    values: Values,
}

fn normalise(flags: impl Iterator<Item = String>) -> Vec<String> {
    flags.collect::<BTreeSet<_>>().into_iter().collect()
}

fn key_of(v: &serde_json::Value) -> Option<String> {
    match v.get("key")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flags_of(v: &serde_json::Value) -> Option<Vec<String>> {
    let a = v.get("value")?.as_array()?;
    let mut out = Vec::with_capacity(a.len());
    for f in a {
        out.push(f.as_str()?.to_string());
    }
    Some(normalise(out.into_iter()))
}

fn parse(ops: &[Op]) -> Result<Histories<'_>, String> {
    let mut h = Histories {
        by_key: BTreeMap::new(),
        values: Values::default(),
    };
    for (inv, done) in pairs(ops)? {
        let kind = match inv.f.as_str() {
            "read" => Kind::Read,
            "write" => Kind::Write,
            _ => continue,
        };
        let key = key_of(&inv.value).ok_or_else(|| {
            format!(
                "op {}: a {}'s value must be {{\"key\": K, …}} with K a string or a number",
                inv.index, inv.f
            )
        })?;
        let flags = match (kind, done) {
            (Kind::Write, _) => flags_of(&inv.value).ok_or_else(|| {
                format!(
                    "op {}: a write's value must be {{\"key\": K, \"value\": [flags]}}",
                    inv.index
                )
            })?,
            (Kind::Read, Some(d)) if d.kind == OpType::Ok => {
                flags_of(&d.value).ok_or_else(|| {
                    format!(
                        "op {}: an ok read's value must be {{\"key\": K, \"value\": [flags]}}",
                        d.index
                    )
                })?
            }
            // A read that returned nothing: no flags to intern.
            (Kind::Read, _) => Vec::new(),
        };
        let value = h.values.id_of(&flags);
        h.by_key.entry(key).or_default().push(Call {
            inv,
            done,
            kind,
            value,
        });
    }
    Ok(h)
}

// ---------------------------------------------------------------------------------------
// The search for one key.

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;
/// The value of a window's key before anything fixed it: any.
const ANY: u32 = u32::MAX - 1;

/// An operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Placed {
    read: bool,
    value: u32,
    /// Invocation and completion times; `None`: an unknown write, completing at +∞.
    call: u64,
    ret: Option<u64>,
}

/// The invocations and completions in time order, as a doubly linked list from which a
/// linearized operation's two entries are lifted and into which they go back on backtracking
/// (in reverse order, so the links they kept are still right).
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For each node (1..): its operation, and whether it is the invocation.
    op: Vec<u32>,
    is_call: Vec<bool>,
    /// Each operation's invocation and completion node (`NIL`: completes at +∞).
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
}

impl Entries {
    fn new(ops: &[Placed]) -> Entries {
        // (time, 0 = invocation: first on a tie, so ties count as concurrent, operation)
        let mut ev: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            ev.push((o.call, 0, i as u32));
            if let Some(r) = o.ret {
                ev.push((r, 1, i as u32));
            }
        }
        ev.sort_unstable();
        let n = ev.len() + 1;
        let mut e = Entries {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            op: vec![NIL; n],
            is_call: vec![false; n],
            call_node: vec![NIL; ops.len()],
            ret_node: vec![NIL; ops.len()],
        };
        for (k, (_, which, op)) in ev.iter().enumerate() {
            let node = k as u32 + 1;
            e.prev[node as usize] = node - 1;
            e.next[node as usize - 1] = node;
            e.op[node as usize] = *op;
            e.is_call[node as usize] = *which == 0;
            if *which == 0 {
                e.call_node[*op as usize] = node;
            } else {
                e.ret_node[*op as usize] = node;
            }
        }
        e
    }

    fn unlink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = x;
        if n != NIL {
            self.prev[n as usize] = x;
        }
    }

    fn lift(&mut self, op: u32) {
        self.unlink(self.call_node[op as usize]);
        let r = self.ret_node[op as usize];
        if r != NIL {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: u32) {
        let r = self.ret_node[op as usize];
        if r != NIL {
            self.relink(r);
        }
        self.relink(self.call_node[op as usize]);
    }
}

/// splitmix64: the Zobrist keys, the same on every run.
fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where the search got furthest before it was stuck (indices into its operations).
struct Stuck {
    /// The linearized operations, in order.
    path: Vec<u32>,
    value: u32,
    /// The operation whose completion the walk reached.
    op: u32,
    /// The operations (not unknown writes) whose invocations came before that completion.
    candidates: Vec<u32>,
}

enum Searched {
    Valid,
    Invalid(Stuck),
    /// Why it gave up, and the operation it was stuck at when it got furthest.
    Unknown(String, Option<u32>),
}

/// The search's stack: what was linearized, and the value before it.
struct Linearized {
    op: u32,
    /// The unknown write placed just before the read `op` to give it its value, or `NIL`.
    via: u32,
    before: u32,
    /// A read of the value the key already held: taken without trying anything else first,
    /// so when everything after it fails, so does the state before it.
    eager: bool,
    /// The pass in which it was tried (the walk goes on in that pass when it is undone).
    pass: u8,
}

/// How many unknown writes of each flags a state used: (flags, count), sorted.
type Used = Box<[(u32, u32)]>;

/// Per (ok operations, value), at most this many sets of unknown writes used are compared.
const DOMINANCE_KEPT: usize = 16;

/// The states explored so far — all failed, since a state that succeeds ends the search.
/// A state is the set of linearized operations and the key's value: the `ok` operations as a
/// Zobrist fingerprint, the unknown writes as how many of each flags were used (which ones
/// follows: always the earliest invoked).
#[derive(Default)]
struct Explored {
    /// An empty list: the state that used no unknown write failed, which covers the others.
    by_ok: HashMap<(u128, u32), Vec<Used>>,
    /// States beyond the `DOMINANCE_KEPT` compared ones, by the fingerprint of everything.
    overflow: HashSet<(u128, u32)>,
    states: u64,
}

impl Explored {
    /// Records a state reached. False when it needs no exploring: it was seen, or a state
    /// with the same `ok` operations and value that used no more unknown writes of any flags
    /// failed already (using fewer leaves more choices, so this one fails too).
    fn insert(&mut self, ok: u128, all: u128, value: u32, used: &BTreeMap<u32, u32>) -> bool {
        let snapshot = || -> Used { used.iter().map(|(v, n)| (*v, *n)).collect() };
        match self.by_ok.entry((ok, value)) {
            Entry::Vacant(e) => {
                e.insert(if used.is_empty() {
                    Vec::new()
                } else {
                    vec![snapshot()]
                });
            }
            Entry::Occupied(mut e) => {
                let known = e.get_mut();
                let covered = |old: &[(u32, u32)]| {
                    old.iter().all(|(v, n)| used.get(v).is_some_and(|m| m >= n))
                };
                if known.is_empty() || known.iter().any(|old| covered(old)) {
                    return false;
                }
                if used.is_empty() {
                    *known = Vec::new();
                } else if known.len() < DOMINANCE_KEPT {
                    known.push(snapshot());
                } else if !self.overflow.insert((all, value)) {
                    return false;
                }
            }
        }
        self.states += 1;
        true
    }
}

/// WGL over one key's operations from `initial` (a value, or `ANY`), with reductions that
/// keep its answer:
///
/// - A read of the value the key holds, whose invocation has been reached, is linearized at
///   once and nothing else is tried in its place: any order that works from here still works
///   with the read moved to the front (a read changes nothing, and everything that had to
///   precede it is already linearized).
/// - Unknown writes are not tried on their own: one is placed only just before a read that
///   returns its flags (an unknown write not followed by a read of its flags changes no
///   read, so leaving it out does as well), and only when no `ok` write of those flags could
///   go next instead (an order with the unknown write here works as well with the `ok` write
///   here and the unknown write where the `ok` write was).
/// - Of several unknown writes of the flags a read needs, the read takes the earliest
///   invoked one not yet used: once invoked they are interchangeable (none must happen
///   before anything), so a state need only say how many of each flags were used, and a
///   state that used more than a failed one with the same `ok` operations fails too. To
///   make the most of that, from each state the search first tries everything that uses no
///   unknown write (pass 0), then the reads that need one (pass 1).
fn search(ops: &[Placed], initial: u32, max_states: u64) -> (Searched, u64) {
    let mut list = Entries::new(ops);
    let mut seed = 0x4861_6c79_6172_6421;
    let zobrist: Vec<u128> = ops
        .iter()
        .map(|_| (u128::from(splitmix(&mut seed)) << 64) | u128::from(splitmix(&mut seed)))
        .collect();
    let unknown = |op: u32| ops[op as usize].ret.is_none();
    // The first node of the window (the invocations before the first pending completion)
    // holding an operation that satisfies `want`, or `NIL`.
    let find = |list: &Entries, want: &dyn Fn(&Placed, bool) -> bool| -> u32 {
        let mut n = list.next[HEAD as usize];
        while n != NIL && list.is_call[n as usize] {
            let o = list.op[n as usize];
            if want(&ops[o as usize], unknown(o)) {
                return n;
            }
            n = list.next[n as usize];
        }
        NIL
    };
    // Where to go on from a new state: a read of its value if one can go next, else the head.
    let start = |list: &Entries, value: u32| -> u32 {
        let n = find(list, &|o, u| !u && o.read && o.value == value);
        if n == NIL {
            list.next[HEAD as usize]
        } else {
            n
        }
    };
    let mut explored = Explored::default();
    let mut used: BTreeMap<u32, u32> = BTreeMap::new();
    let mut stack: Vec<Linearized> = Vec::new();
    // Of the `ok` operations linearized, and of everything linearized.
    let (mut ok_print, mut all_print) = (0u128, 0u128);
    let mut value = initial;
    let mut best: Option<Stuck> = None;
    // Operations linearized, unknown writes included.
    let mut depth = 0;
    let mut node = start(&list, value);
    let mut pass: u8 = 0;
    // Every step linearizes (at most max_states + 1 times), backtracks (at most as often) or
    // moves one entry along the list (at most twice its length between two of those).
    let entries = list.op.len() as u64;
    let bound = max_states
        .saturating_mul(2)
        .saturating_add(3)
        .saturating_mul(entries.saturating_add(1).saturating_mul(2));
    let mut steps: u64 = 0;
    while steps < bound {
        steps += 1;
        if node == NIL {
            // Only invocations of unknown writes are left: nothing must still happen.
            return (Searched::Valid, explored.states);
        }
        let op = list.op[node as usize];
        if list.is_call[node as usize] {
            if unknown(op) {
                node = list.next[node as usize];
                continue;
            }
            let o = ops[op as usize];
            let eager = o.read && o.value == value;
            let mut via = NIL;
            let tried = if !o.read || eager || value == ANY {
                pass == 0
            } else if pass == 1 && find(&list, &|w, u| !u && !w.read && w.value == o.value) == NIL {
                let n = find(&list, &|w, u| u && w.value == o.value);
                if n != NIL {
                    via = list.op[n as usize];
                }
                via != NIL
            } else {
                false
            };
            if tried {
                let ok = ok_print ^ zobrist[op as usize];
                let mut all = all_print ^ zobrist[op as usize];
                if via != NIL {
                    *used.entry(o.value).or_default() += 1;
                    all ^= zobrist[via as usize];
                }
                if explored.insert(ok, all, o.value, &used) {
                    if explored.states > max_states {
                        return (
                            Searched::Unknown(
                                format!("the search visited more than {max_states} states"),
                                best.map(|b| b.op),
                            ),
                            explored.states,
                        );
                    }
                    stack.push(Linearized {
                        op,
                        via,
                        before: value,
                        eager,
                        pass,
                    });
                    (ok_print, all_print) = (ok, all);
                    value = o.value;
                    depth += 1;
                    if via != NIL {
                        list.lift(via);
                        depth += 1;
                    }
                    list.lift(op);
                    node = start(&list, value);
                    pass = 0;
                    continue;
                }
                if via != NIL {
                    unuse(&mut used, o.value);
                }
            }
            // A read that had to go next leads only to a state that failed: so does this one.
            if !(tried && eager) {
                node = list.next[node as usize];
                continue;
            }
        } else if pass == 0 {
            // Everything that uses no unknown write was tried: now the reads that need one.
            pass = 1;
            node = list.next[HEAD as usize];
            continue;
        } else if best.as_ref().is_none_or(|b| depth > b.path.len()) {
            // The completion of an operation not yet linearized: no order from here works.
            let mut candidates = Vec::new();
            let mut n = list.next[HEAD as usize];
            while n != node && n != NIL {
                let c = list.op[n as usize];
                if !unknown(c) {
                    candidates.push(c);
                }
                n = list.next[n as usize];
            }
            let mut path = Vec::with_capacity(depth);
            for l in &stack {
                if l.via != NIL {
                    path.push(l.via);
                }
                path.push(l.op);
            }
            best = Some(Stuck {
                path,
                value,
                op,
                candidates,
            });
        }
        // Backtrack: undo the last choice, and the reads that had to follow it.
        let mut undone = 0;
        loop {
            let Some(last) = stack.pop() else {
                let stuck = best.unwrap_or(Stuck {
                    path: Vec::new(),
                    value,
                    op,
                    candidates: Vec::new(),
                });
                return (Searched::Invalid(stuck), explored.states);
            };
            ok_print ^= zobrist[last.op as usize];
            all_print ^= zobrist[last.op as usize];
            list.unlift(last.op);
            depth -= 1;
            if last.via != NIL {
                all_print ^= zobrist[last.via as usize];
                unuse(&mut used, ops[last.via as usize].value);
                list.unlift(last.via);
                depth -= 1;
            }
            value = last.before;
            undone += 1;
            if !last.eager {
                node = list.next[list.call_node[last.op as usize] as usize];
                pass = last.pass;
                break;
            }
        }
        steps = steps.saturating_add(undone);
    }
    (
        Searched::Unknown(
            format!("the search took more than {bound} steps"),
            best.map(|b| b.op),
        ),
        explored.states,
    )
}

/// One fewer unknown write of these flags used.
fn unuse(used: &mut BTreeMap<u32, u32>, value: u32) {
    if let Some(n) = used.get_mut(&value) {
        *n -= 1;
        if *n == 0 {
            used.remove(&value);
        }
    }
}

/// The first read (by completion) of flags the key did not start with and that no write
/// invoked before the read completed wrote: no order can explain it.
fn unexplained_read(ops: &[Placed], initial: u32) -> Option<u32> {
    // The earliest invocation of a write of each value.
    let mut first_write: HashMap<u32, u64> = HashMap::new();
    for o in ops.iter().filter(|o| !o.read) {
        let t = first_write.entry(o.value).or_insert(o.call);
        *t = (*t).min(o.call);
    }
    ops.iter()
        .enumerate()
        .filter(|(_, o)| o.read && o.value != initial)
        .filter(|(_, o)| {
            let ret = o.ret.unwrap_or(u64::MAX);
            first_write.get(&o.value).is_none_or(|t| *t > ret)
        })
        .min_by_key(|(_, o)| o.ret)
        .map(|(i, _)| i as u32)
}

/// Looks for an invalid window of the key, checked alone from any starting value: first
/// ever larger ones (16, 32, … operations) ending at the completion of `focus` (where the
/// whole key's search got stuck furthest), then overlapping windows of [`WINDOW_OPS`] across
/// the key. All together visit at most `max_states` states. Returns the first invalid one's
/// failure (in `ops` indices) and the history indices it spans.
fn invalid_window(
    ops: &[Placed],
    focus: Option<u32>,
    max_states: u64,
) -> Option<(Stuck, [u64; 2])> {
    // The completed operations, by invocation.
    let completed: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].ret.is_some()).collect();
    let mut windows: Vec<(u64, u64)> = Vec::new();
    if let Some(f) = focus
        && let Some(ret) = ops[f as usize].ret
        && let Some(at) = completed.iter().position(|i| *i == f as usize)
    {
        let mut size = 16;
        while size < 2 * WINDOW_OPS {
            windows.push((ops[completed[at.saturating_sub(size)]].call, ret + 1));
            size *= 2;
        }
    }
    let stride = (WINDOW_OPS / 2).max(1);
    let mut from = 0;
    while from < completed.len() {
        let to = from + WINDOW_OPS;
        let end = completed.get(to).map_or(u64::MAX, |i| ops[*i].call);
        windows.push((ops[completed[from]].call, end));
        if to >= completed.len() {
            break;
        }
        from += stride;
    }
    let mut budget = max_states;
    for (t1, t2) in windows {
        if budget == 0 {
            break;
        }
        let (found, states) = window(ops, t1, t2, WINDOW_MAX_STATES.min(budget));
        budget = budget.saturating_sub(states.max(1));
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Checks the operations invoked in `[t1, t2)` alone, from any starting value. Completed
/// operations inside are kept as they are; writes across an edge become unknown (they may
/// have taken effect outside), reads across an edge are left out, unknown writes invoked
/// before `t2` are kept if a read inside returned their flags: every linearization of the
/// whole history gives one of the window, so an invalid window is an invalid history.
fn window(ops: &[Placed], t1: u64, t2: u64, max_states: u64) -> (Option<(Stuck, [u64; 2])>, u64) {
    let mut read_inside: HashSet<u32> = HashSet::new();
    let mut last = t1;
    for o in ops {
        if let Some(r) = o.ret
            && o.call >= t1
            && o.call < t2
            && r < t2
        {
            last = last.max(r);
            if o.read {
                read_inside.insert(o.value);
            }
        }
    }
    if read_inside.is_empty() {
        return (None, 0);
    }
    let mut placed: Vec<Placed> = Vec::new();
    let mut map: Vec<u32> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if o.call >= t2 {
            continue;
        }
        let w = match o.ret {
            Some(r) if o.call >= t1 && r < t2 => *o,
            Some(r) if !o.read && r >= t1 => Placed { ret: None, ..*o },
            None if read_inside.contains(&o.value) => *o,
            _ => continue,
        };
        placed.push(w);
        map.push(i as u32);
    }
    let (searched, states) = search(&placed, ANY, max_states);
    let Searched::Invalid(s) = searched else {
        return (None, states);
    };
    let back = |i: u32| map[i as usize];
    let stuck = Stuck {
        path: s.path.into_iter().map(back).collect(),
        value: s.value,
        op: back(s.op),
        candidates: s.candidates.into_iter().map(back).collect(),
    };
    (Some((stuck, [t1, last])), states)
}

/// The operations the search must place (see the module's notes on completions), and each
/// as the search sees it.
fn to_place<'a, 'c>(calls: &'c [Call<'a>]) -> (Vec<&'c Call<'a>>, Vec<Placed>) {
    let read: HashSet<u32> = calls
        .iter()
        .filter(|c| c.kind == Kind::Read && c.completion() == OpType::Ok)
        .map(|c| c.value)
        .collect();
    let placed: Vec<&Call<'_>> = calls
        .iter()
        .filter(|c| match (c.kind, c.completion()) {
            (_, OpType::Ok) => true,
            (Kind::Write, OpType::Info | OpType::Invoke) => read.contains(&c.value),
            _ => false,
        })
        .collect();
    let ops: Vec<Placed> = placed
        .iter()
        .map(|c| Placed {
            read: c.kind == Kind::Read,
            value: c.value,
            call: c.inv.index,
            ret: match c.completion() {
                OpType::Ok => c.done.map(|d| d.index),
                _ => None,
            },
        })
        .collect();
    (placed, ops)
}

fn check_key(calls: &[Call<'_>], values: &Values, initial: u32, max_states: u64) -> KeyResult {
    let (placed, ops) = to_place(calls);
    let mut r = KeyResult {
        outcome: Outcome::Valid,
        ops: placed.len(),
        dropped: calls.len() - placed.len(),
        states: 0,
        reason: None,
        window: None,
        failure: None,
    };
    if let Some(op) = unexplained_read(&ops, initial) {
        let stuck = Stuck {
            path: Vec::new(),
            value: initial,
            op,
            candidates: vec![op],
        };
        r.outcome = Outcome::Invalid;
        r.failure = Some(explain(&stuck, &placed, calls, values, initial));
        return r;
    }
    let (searched, states) = search(&ops, initial, max_states);
    r.states = states;
    match searched {
        Searched::Valid => {}
        Searched::Invalid(stuck) => {
            r.outcome = Outcome::Invalid;
            r.failure = Some(explain(&stuck, &placed, calls, values, initial));
        }
        Searched::Unknown(why, focus) => match invalid_window(&ops, focus, max_states) {
            Some((stuck, window)) => {
                r.outcome = Outcome::Invalid;
                r.window = Some(window);
                r.failure = Some(explain(&stuck, &placed, calls, values, ANY));
            }
            None => {
                r.outcome = Outcome::Unknown;
                r.reason = Some(format!(
                    "{why}, and no window of the key checked alone is invalid"
                ));
            }
        },
    }
    r
}

fn step(c: &Call<'_>, values: &Values) -> Step {
    Step {
        index: c.inv.index,
        process: c.inv.process,
        f: c.inv.f.clone(),
        value: values.name(c.value),
        completion: c.completion(),
    }
}

fn show(flags: &[String]) -> String {
    serde_json::to_string(flags).unwrap_or_default()
}

/// Turns where the search got stuck into a [`Failure`] a human can read. `initial`: the
/// key's starting value, or `ANY` in a window.
fn explain(
    stuck: &Stuck,
    placed: &[&Call<'_>],
    all: &[Call<'_>],
    values: &Values,
    initial: u32,
) -> Failure {
    let mut shown: Vec<&Call<'_>> = Vec::new();
    let tail = &stuck.path[stuck.path.len().saturating_sub(PREFIX_SHOWN)..];
    let prefix_tail = tail
        .iter()
        .map(|o| {
            shown.push(placed[*o as usize]);
            step(placed[*o as usize], values)
        })
        .collect();
    let held = (stuck.value != ANY).then(|| values.name(stuck.value));
    let candidates = stuck
        .candidates
        .iter()
        .take(CANDIDATES_SHOWN)
        .map(|o| {
            let c = placed[*o as usize];
            shown.push(c);
            let mut writers = Vec::new();
            let flags = show(&values.name(c.value));
            let why = match c.kind {
                Kind::Read => {
                    // The latest writes of what it read, invoked before it completed.
                    let until = c.done.map_or(u64::MAX, |d| d.index);
                    for w in all
                        .iter()
                        .rev()
                        .filter(|w| w.kind == Kind::Write && w.value == c.value)
                        .filter(|w| w.inv.index < until)
                        .take(WRITERS_SHOWN)
                    {
                        shown.push(w);
                        writers.push(step(w, values));
                    }
                    writers.reverse();
                    let written = all.iter().any(|w| {
                        w.kind == Kind::Write
                            && w.value == c.value
                            && w.inv.index < until
                            && w.completion() != OpType::Fail
                    });
                    match &held {
                        _ if !written && initial != ANY && c.value != initial => format!(
                            "it read {flags}, which the key did not start with and no write \
                             invoked before the read completed wrote, except failed ones"
                        ),
                        Some(h) if c.value != stuck.value => {
                            format!("it read {flags} but the key held {}", show(h))
                        }
                        _ => "it fits here, but every order going on from it fails".into(),
                    }
                }
                Kind::Write => {
                    format!("every order going on from writing {flags} here fails")
                }
            };
            Candidate {
                op: step(c, values),
                why,
                writers,
            }
        })
        .collect();
    let stuck_op = placed[stuck.op as usize];
    shown.push(stuck_op);
    let mut excerpt: Vec<Op> = Vec::new();
    let mut indices: BTreeSet<u64> = BTreeSet::new();
    for c in shown {
        for o in std::iter::once(c.inv).chain(c.done) {
            if indices.insert(o.index) {
                excerpt.push(o.clone());
            }
        }
    }
    excerpt.sort_by_key(|o| o.index);
    Failure {
        prefix_len: stuck.path.len(),
        prefix_tail,
        value: held,
        stuck: step(stuck_op, values),
        candidates,
        excerpt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    use OpType::*;

    use crate::history::from_tuples as h;

    fn w(key: &str, flags: &[&str]) -> Value {
        json!({ "key": key, "value": flags })
    }

    fn r(key: &str) -> Value {
        json!({ "key": key, "value": null })
    }

    fn run(ops: &[Op]) -> LinearizableResult {
        check(ops, &Config::default())
    }

    #[test]
    fn a_sequential_history_is_valid() {
        let v = run(&h(&[
            (0, Invoke, "write", w("m1", &["\\Seen"])),
            (0, Ok, "write", w("m1", &["\\Seen"])),
            (1, Invoke, "read", r("m1")),
            (1, Ok, "read", w("m1", &["\\Seen"])),
            (0, Invoke, "write", w("m1", &["\\Flagged", "\\Seen"])),
            (0, Ok, "write", w("m1", &["\\Flagged", "\\Seen"])),
            // Order and repeats of flags do not matter.
            (1, Invoke, "read", r("m1")),
            (1, Ok, "read", w("m1", &["\\Seen", "\\Flagged", "\\Seen"])),
            (0, Invoke, "write", w("m1", &[])),
            (0, Ok, "write", w("m1", &[])),
            (1, Invoke, "read", r("m1")),
            (1, Ok, "read", w("m1", &[])),
        ]));
        assert!(v.valid, "{v:#?}");
        assert_eq!(v.outcome, Outcome::Valid);
        assert_eq!(v.keys["m1"].ops, 6);
    }

    #[test]
    fn a_concurrent_history_that_needs_reordering_is_valid() {
        // A is invoked first but must take effect after B: the first read sees B, the second A.
        let v = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (1, Invoke, "write", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["b"])),
            (1, Ok, "write", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (0, Ok, "write", w("m1", &["a"])),
            (2, Ok, "read", w("m1", &["a"])),
            (3, Invoke, "read", r("m1")),
            (3, Ok, "read", w("m1", &["a"])),
        ]));
        assert!(v.valid, "{v:#?}");
    }

    #[test]
    fn a_stale_read_is_invalid_and_explained() {
        let ops = h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (0, Ok, "write", w("m1", &["a"])),
            (1, Invoke, "write", w("m1", &["b"])),
            (1, Ok, "write", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["a"])),
        ]);
        let v = run(&ops);
        assert!(!v.valid);
        assert_eq!(v.outcome, Outcome::Invalid);
        assert_eq!(v.invalid_keys, vec!["m1"]);
        let f = v.keys["m1"].failure.as_ref().expect("a failure");
        assert_eq!(f.prefix_len, 2);
        assert_eq!(f.value, Some(vec!["b".to_string()]));
        assert_eq!((f.stuck.f.as_str(), f.stuck.index), ("read", 4));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].why.contains("held [\"b\"]"), "{f:#?}");
        assert_eq!(f.candidates[0].writers.len(), 1);
        assert_eq!(f.candidates[0].writers[0].index, 0);
        assert_eq!(f.excerpt, ops);
        // The verdict is what summary.json will hold.
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["outcome"], "invalid");
        assert_eq!(j["keys"]["m1"]["failure"]["stuck"]["completion"], "ok");
    }

    #[test]
    fn a_read_of_flags_never_written_is_invalid() {
        let v = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (1, Invoke, "read", r("m1")),
            (0, Ok, "write", w("m1", &["a"])),
            (1, Ok, "read", w("m1", &["zz"])),
        ]));
        assert_eq!(v.outcome, Outcome::Invalid);
        let f = v.keys["m1"].failure.as_ref().unwrap();
        assert_eq!(f.stuck.value, vec!["zz"]);
        assert!(
            f.candidates.iter().any(|c| c.op.f == "read"
                && c.writers.is_empty()
                && c.why.contains("read [\"zz\"]"))
        );
    }

    #[test]
    fn an_unknown_write_may_take_effect_later_or_never() {
        // It timed out, then a later write completed, then a read saw the unknown one.
        let later = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (0, Info, "write", w("m1", &["a"])),
            (1, Invoke, "write", w("m1", &["b"])),
            (1, Ok, "write", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["a"])),
        ]));
        assert!(later.valid, "{later:#?}");
        // The same with no completion at all (the run ended first).
        let unfinished = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (1, Invoke, "write", w("m1", &["b"])),
            (1, Ok, "write", w("m1", &["b"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["a"])),
        ]));
        assert!(unfinished.valid, "{unfinished:#?}");
        // Never visible: left out, nothing else changes.
        let never = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (0, Info, "write", w("m1", &["a"])),
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &[])),
            // A crashed read constrains nothing.
            (2, Invoke, "read", r("m1")),
            (2, Info, "read", r("m1")),
        ]));
        assert!(never.valid, "{never:#?}");
        assert_eq!((never.keys["m1"].ops, never.keys["m1"].dropped), (1, 2));
        // But an unknown write cannot take effect before it was invoked.
        let too_early = run(&h(&[
            (2, Invoke, "read", r("m1")),
            (2, Ok, "read", w("m1", &["a"])),
            (0, Invoke, "write", w("m1", &["a"])),
            (0, Info, "write", w("m1", &["a"])),
        ]));
        assert_eq!(too_early.outcome, Outcome::Invalid);
    }

    #[test]
    fn a_failed_write_that_was_read_is_invalid() {
        let v = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (0, Fail, "write", w("m1", &["a"])),
            (1, Invoke, "read", r("m1")),
            (1, Ok, "read", w("m1", &["a"])),
        ]));
        assert_eq!(v.outcome, Outcome::Invalid);
        let f = v.keys["m1"].failure.as_ref().unwrap();
        // The read points at the failed write, and the excerpt shows both.
        assert_eq!(f.candidates[0].writers[0].completion, Fail);
        assert_eq!(f.excerpt.len(), 4);
    }

    #[test]
    fn each_key_is_judged_alone_and_the_bad_one_is_named() {
        let v = run(&h(&[
            (0, Invoke, "write", w("m1", &["a"])),
            (1, Invoke, "write", w("m2", &["x"])),
            (0, Ok, "write", w("m1", &["a"])),
            (1, Ok, "write", w("m2", &["x"])),
            (0, Invoke, "read", r("m1")),
            (0, Ok, "read", w("m1", &["a"])),
            (1, Invoke, "read", r("m2")),
            (1, Ok, "read", w("m2", &[])),
            (9, Invoke, "nemesis", json!("kill 2")),
            (9, Info, "nemesis", json!("kill 2")),
        ]));
        assert!(!v.valid);
        assert_eq!(v.invalid_keys, vec!["m2"]);
        assert_eq!(v.keys["m1"].outcome, Outcome::Valid);
        let f = v.keys["m2"].failure.as_ref().unwrap();
        assert!(f.excerpt.iter().all(|o| o.value["key"] == "m2"));
    }

    #[test]
    fn the_initial_flags_are_a_parameter() {
        let ops = h(&[
            (0, Invoke, "read", r("m1")),
            (0, Ok, "read", w("m1", &["\\Recent"])),
            (0, Invoke, "read", r("m2")),
            (0, Ok, "read", w("m2", &["\\Seen"])),
        ]);
        assert_eq!(run(&ops).invalid_keys, vec!["m1", "m2"]);
        let cfg = Config {
            initial: vec!["\\Recent".into()],
            initial_by_key: BTreeMap::from([("m2".to_string(), vec!["\\Seen".to_string()])]),
            ..Config::default()
        };
        assert!(check(&ops, &cfg).valid);
    }

    #[test]
    fn a_search_over_its_bound_is_unknown_not_valid() {
        // Five concurrent writes, then two reads that cannot both be right: every order of
        // the writes must be ruled out.
        let mut v = Vec::new();
        for p in 0..5 {
            v.push((p, Invoke, "write", w("m1", &[&format!("f{p}")])));
        }
        for p in 0..5 {
            v.push((p, Ok, "write", w("m1", &[&format!("f{p}")])));
        }
        for f in ["f0", "f1"] {
            v.push((7, Invoke, "read", r("m1")));
            v.push((7, Ok, "read", w("m1", &[f])));
        }
        let ops = h(&v);
        assert_eq!(run(&ops).outcome, Outcome::Invalid);
        let cfg = Config {
            max_states: 10,
            ..Config::default()
        };
        let r = check(&ops, &cfg);
        assert!(!r.valid);
        assert_eq!(r.outcome, Outcome::Unknown);
        assert_eq!(r.unknown_keys, vec!["m1"]);
        assert!(r.invalid_keys.is_empty());
        assert!(r.keys["m1"].reason.as_ref().unwrap().contains("10 states"));
        assert!(r.keys["m1"].failure.is_none());
    }

    #[test]
    fn unusable_histories_are_reported_not_judged() {
        let no_key = run(&h(&[
            (0, Invoke, "write", json!(["a"])),
            (0, Ok, "write", json!(["a"])),
        ]));
        assert!(!no_key.valid && no_key.outcome == Outcome::Unknown);
        assert!(no_key.error.unwrap().contains("op 0"));
        let bad_read = run(&h(&[
            (0, Invoke, "read", r("m1")),
            (0, Ok, "read", json!({"key": "m1", "value": "a"})),
        ]));
        assert!(bad_read.error.unwrap().contains("op 1"));
        let orphan = run(&h(&[(0, Ok, "read", w("m1", &[]))]));
        assert!(orphan.error.unwrap().contains("without invocation"));
        // Nothing to check is valid.
        assert!(run(&[]).valid);
    }

    // -----------------------------------------------------------------------------------
    // Randomised: simulated atomic registers, and a brute-force oracle on small histories.

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    const FLAGS: [&str; 4] = ["\\Seen", "\\Answered", "\\Flagged", "$Label1"];

    fn flags(rng: &mut Rng, universe: usize) -> Vec<String> {
        let bits = rng.below(1 << universe);
        (0..universe)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| FLAGS[i].to_string())
            .collect()
    }

    fn op(out: &[Op], process: u64, kind: OpType, f: &str, value: Value) -> Op {
        Op {
            index: out.len() as u64,
            process,
            kind,
            f: f.to_string(),
            value,
            time_ms: 0,
            mono_ns: out.len() as u64 * 1_000,
            node: None,
            error: None,
        }
    }

    struct Busy {
        f: &'static str,
        key: String,
        flags: Vec<String>,
        applied: bool,
    }

    /// A linearizable history of about `n` operations: `procs` clients on `keys` atomic
    /// registers, each operation taking effect at a random instant inside its interval — or,
    /// for an unknown write, possibly after it, or never.
    fn simulate(seed: u64, n: usize, procs: usize, keys: &[&str], unknown: bool) -> Vec<Op> {
        simulate_stale(seed, n, procs, keys, unknown, false)
    }

    /// The same; with `stale`, at 30 % of the invocations two extra clients write flags
    /// nobody else writes and at once write back what the register held, and at 70 % a third
    /// one reads those flags: a stale read, the history's only anomaly.
    fn simulate_stale(
        seed: u64,
        n: usize,
        procs: usize,
        keys: &[&str],
        unknown: bool,
        stale: bool,
    ) -> Vec<Op> {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut regs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut late: Vec<(String, Vec<String>)> = Vec::new();
        let mut clients: Vec<Option<Busy>> = (0..procs).map(|_| None).collect();
        let mut out: Vec<Op> = Vec::new();
        let mut invoked = 0;
        for _ in 0..n * 50 {
            if invoked >= n && clients.iter().all(Option::is_none) {
                break;
            }
            if !late.is_empty() && rng.percent(5) {
                let (k, v) = late.swap_remove(rng.below(late.len() as u64) as usize);
                regs.insert(k, v);
            }
            let p = rng.below(procs as u64) as usize;
            let pid = p as u64;
            match clients[p].take() {
                None if invoked < n => {
                    invoked += 1;
                    if stale && invoked == n * 3 / 10 {
                        let k = keys[0];
                        let back = regs.get(k).cloned().unwrap_or_default();
                        for (q, v) in [(procs, vec!["$Stale".to_string()]), (procs + 1, back)] {
                            let v = json!({"key": k, "value": v});
                            out.push(op(&out, q as u64, Invoke, "write", v.clone()));
                            out.push(op(&out, q as u64, Ok, "write", v));
                        }
                    }
                    if stale && invoked == n * 7 / 10 {
                        let q = procs as u64 + 2;
                        out.push(op(&out, q, Invoke, "read", r(keys[0])));
                        let v = json!({"key": keys[0], "value": ["$Stale"]});
                        out.push(op(&out, q, Ok, "read", v));
                    }
                    let key = keys[rng.below(keys.len() as u64) as usize].to_string();
                    let b = if rng.percent(50) {
                        let fl = flags(&mut rng, FLAGS.len());
                        let o = op(&out, pid, Invoke, "write", json!({"key": key, "value": fl}));
                        out.push(o);
                        Busy {
                            f: "write",
                            key,
                            flags: fl,
                            applied: false,
                        }
                    } else {
                        out.push(op(&out, pid, Invoke, "read", r(&key)));
                        Busy {
                            f: "read",
                            key,
                            flags: Vec::new(),
                            applied: false,
                        }
                    };
                    clients[p] = Some(b);
                }
                None => {}
                Some(mut b) if !b.applied => {
                    let v = json!({"key": b.key, "value": b.flags});
                    match rng.below(20) {
                        0 if b.f == "write" => out.push(op(&out, pid, Fail, "write", v)),
                        1 if b.f == "write" && unknown => {
                            out.push(op(&out, pid, Info, "write", v));
                            if rng.percent(50) {
                                late.push((b.key, b.flags));
                            }
                        }
                        _ => {
                            if b.f == "write" {
                                regs.insert(b.key.clone(), b.flags.clone());
                            } else {
                                b.flags = regs.get(&b.key).cloned().unwrap_or_default();
                            }
                            b.applied = true;
                            clients[p] = Some(b);
                        }
                    }
                }
                Some(b) => {
                    if unknown && rng.percent(5) {
                        let v = if b.f == "read" {
                            r(&b.key)
                        } else {
                            json!({"key": b.key, "value": b.flags})
                        };
                        out.push(op(&out, pid, Info, b.f, v));
                    } else {
                        let v = json!({"key": b.key, "value": b.flags});
                        out.push(op(&out, pid, Ok, b.f, v));
                    }
                }
            }
        }
        out
    }

    /// Makes one ok read return flags nobody wrote.
    fn corrupt(ops: &mut [Op], rng: &mut Rng) -> bool {
        let reads: Vec<usize> = (0..ops.len())
            .filter(|i| ops[*i].f == "read" && ops[*i].kind == Ok)
            .collect();
        if reads.is_empty() {
            return false;
        }
        let i = reads[rng.below(reads.len() as u64) as usize];
        let key = ops[i].value["key"].clone();
        ops[i].value = json!({"key": key, "value": ["$Never"]});
        true
    }

    #[test]
    fn simulated_registers_are_valid_and_a_corrupted_read_is_not() {
        let mut rng = Rng(7);
        let mut corrupted = 0;
        for seed in 0..300 {
            let n = 5 + (seed as usize % 60);
            let mut ops = simulate(seed, n, 1 + (seed as usize % 6), &["m1", "m2"], true);
            let v = run(&ops);
            assert!(v.valid, "seed {seed}: {v:#?}");
            if corrupt(&mut ops, &mut rng) {
                corrupted += 1;
                let v = run(&ops);
                assert_eq!(v.outcome, Outcome::Invalid, "seed {seed}");
                assert_eq!(v.invalid_keys.len(), 1, "seed {seed}");
            }
        }
        assert!(corrupted > 250, "{corrupted}");
    }

    /// Linearizable by the definition: some order of the ok operations and any of the unknown
    /// writes, consistent with real time, in which every read returns the latest write.
    fn oracle(ops: &[Op]) -> bool {
        // (is read, flags, invocation, completion or +∞, must appear)
        type OracleOp = (bool, Vec<String>, u64, u64, bool);
        let mut by_key: BTreeMap<String, Vec<OracleOp>> = BTreeMap::new();
        for (inv, done) in pairs(ops).unwrap() {
            let kind = done.map_or(Info, |d| d.kind);
            let is_read = inv.f == "read";
            let (flags, ret, must) = match (is_read, kind) {
                (_, Fail) | (true, Info) => continue,
                (true, _) => (done.unwrap().value.clone(), done.unwrap().index, true),
                (false, Ok) => (inv.value.clone(), done.unwrap().index, true),
                (false, _) => (inv.value.clone(), u64::MAX, false),
            };
            let set: BTreeSet<String> = flags["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            by_key
                .entry(inv.value["key"].as_str().unwrap().to_string())
                .or_default()
                .push((is_read, set.into_iter().collect(), inv.index, ret, must));
        }
        fn dfs(ops: &[OracleOp], used: &mut [bool], v: &[String]) -> bool {
            if (0..ops.len()).all(|i| used[i] || !ops[i].4) {
                return true;
            }
            for i in 0..ops.len() {
                if used[i] {
                    continue;
                }
                // Nothing still to come may have completed before this was invoked.
                if (0..ops.len()).any(|j| j != i && !used[j] && ops[j].4 && ops[j].3 < ops[i].2) {
                    continue;
                }
                if ops[i].0 && ops[i].1 != v {
                    continue;
                }
                used[i] = true;
                let next = if ops[i].0 { v } else { &ops[i].1[..] };
                let ok = dfs(ops, used, next);
                used[i] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        by_key
            .values()
            .all(|k| dfs(k, &mut vec![false; k.len()], &[]))
    }

    /// Small arbitrary histories (reads return anything): the checker agrees with the oracle.
    #[test]
    fn the_checker_agrees_with_a_brute_force_oracle() {
        let (mut valid, mut invalid, mut invalid_windows) = (0, 0, 0);
        for seed in 0..3000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let procs = 1 + rng.below(4);
            let n = 1 + rng.below(8) as usize;
            let mut busy: Vec<Option<(&str, Value)>> = vec![None; procs as usize];
            let mut hung = vec![false; procs as usize];
            let mut out = Vec::new();
            let mut invoked = 0;
            for _ in 0..100 {
                let p = rng.below(procs) as usize;
                if hung[p] {
                    continue;
                }
                match busy[p].take() {
                    None if invoked < n => {
                        invoked += 1;
                        let (f, v) = if rng.percent(50) {
                            ("write", json!({"key": "m", "value": flags(&mut rng, 2)}))
                        } else {
                            ("read", r("m"))
                        };
                        out.push(op(&out, p as u64, Invoke, f, v.clone()));
                        busy[p] = Some((f, v));
                    }
                    None => {}
                    Some((f, v)) => {
                        let kind = match rng.below(10) {
                            0 => Info,
                            1 => Fail,
                            2 => {
                                // Never completes: the process stays busy to the end.
                                hung[p] = true;
                                busy[p] = Some((f, v));
                                continue;
                            }
                            _ => Ok,
                        };
                        let v = if f == "read" && kind == Ok {
                            json!({"key": "m", "value": flags(&mut rng, 2)})
                        } else {
                            v
                        };
                        out.push(op(&out, p as u64, kind, f, v));
                    }
                }
            }
            let want = oracle(&out);
            let got = run(&out);
            // A window checked alone is never stricter than the whole history.
            let h = parse(&out).unwrap();
            if let Some(calls) = h.by_key.get("m") {
                let (_, placed) = to_place(calls);
                let end = out.len() as u64;
                for t1 in 0..end {
                    for t2 in t1 + 1..=end {
                        let (found, _) = window(&placed, t1, t2, 100_000);
                        assert!(!want || found.is_none(), "seed {seed}: [{t1}, {t2})");
                        invalid_windows += usize::from(found.is_some());
                    }
                }
            }
            assert_eq!(got.valid, want, "seed {seed}: {out:#?}\n{got:#?}");
            assert_ne!(got.outcome, Outcome::Unknown);
            if want {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(
            valid > 500 && invalid > 500 && invalid_windows > 500,
            "{valid} valid, {invalid} invalid, {invalid_windows} invalid windows"
        );
    }

    /// ~5,000 operations on one key from 10 clients, with and without unknown operations:
    /// valid well within the bound; a read of flags never written, and a stale read, found.
    #[test]
    fn five_thousand_operations_on_one_key() {
        for (seed, unknown) in [(1, true), (3, false)] {
            let t = std::time::Instant::now();
            let ops = simulate(seed, 5_000, 10, &["m1"], unknown);
            let v = run(&ops);
            let k = &v.keys["m1"];
            eprintln!(
                "seed {seed}: {} records, {} placed, {} dropped: {:?}, {} states, {:?}",
                ops.len(),
                k.ops,
                k.dropped,
                v.outcome,
                k.states,
                t.elapsed()
            );
            assert!(v.valid, "{:?}", k.reason);
            assert!(k.ops > 4_000);

            let mut never = ops.clone();
            assert!(corrupt(&mut never, &mut Rng(seed)));
            let v = run(&never);
            assert_eq!(v.outcome, Outcome::Invalid);
            let f = v.keys["m1"].failure.as_ref().unwrap();
            assert!(f.candidates.iter().any(|c| c.op.value == vec!["$Never"]));
            assert!(f.excerpt.len() <= 4, "{:#?}", f.excerpt);

            let t = std::time::Instant::now();
            let stale = simulate_stale(seed, 5_000, 10, &["m1"], unknown, true);
            let v = run(&stale);
            let k = &v.keys["m1"];
            eprintln!(
                "seed {seed} stale: {:?}, {} states, window {:?}, {:?}",
                v.outcome,
                k.states,
                k.window,
                t.elapsed()
            );
            assert_eq!(v.outcome, Outcome::Invalid, "{:?}", k.reason);
            let f = k.failure.as_ref().unwrap();
            assert!(f.excerpt.len() <= 2 * (PREFIX_SHOWN + CANDIDATES_SHOWN * 4 + 1));
            assert!(
                f.candidates.iter().any(|c| c.op.value == vec!["$Stale"]),
                "{f:#?}"
            );
        }
    }
}
