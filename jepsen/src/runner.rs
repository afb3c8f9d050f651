//! One run: client threads drive a [`Workload`] while the nemesis injects faults from
//! `halyard-chaos`; every operation goes into the history through a [`Recorder`]. At the end
//! every fault is healed (also when a client panics: the heal runs in a drop guard), the
//! cluster is given time to settle and the workload's final reads are recorded.
//!
//! Nemesis events are recorded as process [`NEMESIS`]: an `invoke`/`info` pair whose value
//! describes the fault, then an `invoke`/`info` pair whose value is `"heal"`; the fault is on
//! between the two.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halyard_chaos::{Fault, Target};
use serde_json::json;

use crate::history::{Op, OpType};

/// The process id of the nemesis in histories (Jepsen's `:nemesis`).
pub const NEMESIS: u64 = u64::MAX;

/// Faults a run injects, one at a time: on for an interval, then healed for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    None,
    /// kill -9 of a random node, restarted when the fault ends.
    Kill,
    /// Random halves of the cluster network.
    Partition,
    /// The group's master cut off from every other node.
    IsolateMaster,
    /// Two halves that cannot talk, one node talking to both.
    Bridge,
    /// Packets from one random node to another are lost (the reverse direction works).
    OneWay,
    /// SIGSTOP of a random node, SIGCONT when the fault ends.
    Pause,
    /// 30 % packet loss at a random node.
    Loss,
    /// 10 ms ± 10 ms delay (reordering) at a random node, each way.
    Delay,
    /// A random node's wall clock jumps by ± 1 h (libfaketime).
    Clock,
    /// A random node's wall clock flips between now and 10 min ahead every 50 ms.
    Strobe,
    /// A random node is removed from the group, then added back as a learner and promoted.
    Membership,
    /// CPU starvation: as many busy threads as the machine has cores, beside a random node
    /// (the master half of the time), at normal priority.
    CpuHog,
    /// Each interval a random one of the above.
    Mixed,
}

impl Nemesis {
    /// Every nemesis but `None` and `Mixed`.
    pub const ALL: [Nemesis; 12] = [
        Nemesis::Kill,
        Nemesis::Partition,
        Nemesis::IsolateMaster,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::Pause,
        Nemesis::Loss,
        Nemesis::Delay,
        Nemesis::Clock,
        Nemesis::Strobe,
        Nemesis::Membership,
        Nemesis::CpuHog,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Nemesis> {
        serde_json::from_value(json!(s)).ok()
    }
}

/// What the harness needs from the testbed.
pub struct Testbed {
    /// The group's floating address (SMTP :25, IMAP :143).
    pub address: std::net::Ipv4Addr,
    pub recipient: String,
    pub login: String,
    pub password: String,
    /// The nodes, with their current pids.
    pub targets: Box<dyn Fn() -> Vec<Target> + Send + Sync>,
    /// Starts a killed node again.
    pub restart: Box<dyn Fn(u64) + Send + Sync>,
    /// The group's master now, if any.
    pub master: Box<dyn Fn() -> Option<u64> + Send + Sync>,
    /// `(node, true)` removes the node from the group, `(node, false)` adds it back and
    /// promotes it to voter.
    pub membership: Box<dyn Fn(u64, bool) -> Result<(), String> + Send + Sync>,
}

/// A tiny xorshift generator: runs are reproducible from the seed in the summary.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Records operations into the history.
pub struct Recorder {
    start: Instant,
    index: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            index: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn record(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        error: Option<String>,
    ) {
        self.record_at(process, kind, f, value, error, None)
    }

    /// As [`Recorder::record`], naming the node that served the operation.
    pub fn record_at(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        error: Option<String>,
        node: Option<u64>,
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
            node,
            error,
        });
    }

    /// The history so far, in order.
    pub fn take(&self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()));
        ops.sort_by_key(|o| o.index);
        ops
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// A workload: what clients do, and how the run is read back at the end.
pub trait Workload: Sync {
    fn name(&self) -> &'static str;
    /// Before the clients start (create mailboxes, seed messages).
    fn setup(&self, bed: &Testbed) -> Result<(), String>;
    /// One operation of client `p` (records its own invoke and completion).
    fn step(&self, bed: &Testbed, p: u64, seq: u64, rng: &mut Rng, rec: &Recorder);
    /// After the faults are healed: the final reads, as process `p`.
    fn finish(&self, bed: &Testbed, p: u64, rec: &Recorder);
}

pub struct RunOpts {
    pub clients: u64,
    pub duration: Duration,
    pub nemesis: Nemesis,
    /// Fault on for this long, then off for as long.
    pub interval: Duration,
    pub seed: u64,
}

/// Heals on drop: a panicking client or workload still leaves a clean testbed.
struct HealGuard<'a> {
    bed: &'a Testbed,
    removed: Mutex<Option<u64>>,
    killed: Mutex<Option<u64>>,
}

impl HealGuard<'_> {
    fn heal(&self) -> Result<(), String> {
        let r = halyard_chaos::heal(&(self.bed.targets)());
        if let Some(n) = self.killed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            (self.bed.restart)(n);
        }
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(n) = removed {
            // The group may be electing after the fault: retry for a while.
            let mut last = String::new();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                match (self.bed.membership)(n, false) {
                    Ok(()) => return r,
                    Err(e) => last = e,
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            return Err(format!("adding node {n} back: {last}"));
        }
        r
    }
}

impl Drop for HealGuard<'_> {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

/// The fault for one interval, or `None` when there is nothing to do (`Nemesis::None`, or
/// no master to isolate).
fn pick_fault(nemesis: Nemesis, bed: &Testbed, ids: &[u64], rng: &mut Rng) -> Option<Fault> {
    let victim = *rng.pick(ids);
    let shuffled = |rng: &mut Rng| {
        let mut v = ids.to_vec();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.below(i as u64 + 1) as usize);
        }
        v
    };
    Some(match nemesis {
        // Membership is applied through the testbed; Mixed is resolved by the caller.
        Nemesis::None | Nemesis::Mixed | Nemesis::Membership => return None,
        Nemesis::Kill => Fault::Kill(victim),
        Nemesis::Pause => Fault::Pause(victim),
        Nemesis::CpuHog => Fault::CpuHog {
            node: match (rng.below(2), (bed.master)()) {
                (0, Some(m)) => m,
                _ => victim,
            },
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        },
        Nemesis::Loss => Fault::Loss {
            node: victim,
            percent: 30,
        },
        // Kept under the testbed's 50 ms heartbeat per round trip: openraft 0.9 gives an
        // AppendEntries exactly one heartbeat interval, so a longer round trip stalls
        // replication (a liveness limit, noted in the README) rather than testing safety.
        Nemesis::Delay => Fault::Delay {
            node: victim,
            ms: 10,
            jitter_ms: 10,
        },
        Nemesis::Clock => Fault::ClockSkew {
            node: victim,
            offset_ms: if rng.below(2) == 0 {
                3_600_000
            } else {
                -3_600_000
            },
        },
        Nemesis::Strobe => Fault::ClockStrobe {
            node: victim,
            delta_ms: 600_000,
            period_ms: 50,
            duration_ms: 1_000,
        },
        Nemesis::Partition => {
            let v = shuffled(rng);
            let cut = v.len() / 2;
            Fault::Partition(vec![v[..cut].to_vec(), v[cut..].to_vec()])
        }
        Nemesis::IsolateMaster => {
            let m = (bed.master)()?;
            Fault::Partition(vec![
                vec![m],
                ids.iter().copied().filter(|x| *x != m).collect(),
            ])
        }
        Nemesis::Bridge => {
            let v = shuffled(rng);
            let rest = &v[1..];
            let cut = rest.len() / 2;
            Fault::Bridge {
                bridge: v[0],
                left: rest[..cut].to_vec(),
                right: rest[cut..].to_vec(),
            }
        }
        Nemesis::OneWay => {
            let v = shuffled(rng);
            Fault::OneWay {
                from: v[0],
                to: *v.get(1).unwrap_or(&v[0]),
            }
        }
    })
}

/// Runs `w` under `opts` and returns the history.
pub fn run(bed: &Testbed, w: &dyn Workload, opts: &RunOpts) -> Result<Vec<Op>, String> {
    let rec = Recorder::new();
    w.setup(bed)?;
    let stop = AtomicBool::new(false);
    let guard = HealGuard {
        bed,
        removed: Mutex::new(None),
        killed: Mutex::new(None),
    };
    let mut rng = Rng::new(opts.seed);
    std::thread::scope(|s| {
        for p in 0..opts.clients {
            let (rec, stop) = (&rec, &stop);
            let mut crng = Rng::new(opts.seed ^ (p + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            s.spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && seq < 10_000_000 {
                    seq += 1;
                    w.step(bed, p, seq, &mut crng, rec);
                }
            });
        }
        let end = Instant::now() + opts.duration;
        let left = || end.saturating_duration_since(Instant::now());
        for _ in 0..100_000 {
            std::thread::sleep(opts.interval.min(left()));
            if left().is_zero() {
                break;
            }
            let targets = (bed.targets)();
            let ids: Vec<u64> = targets.iter().map(|t| t.id).collect();
            if ids.is_empty() {
                continue;
            }
            let mut nemesis = opts.nemesis;
            if nemesis == Nemesis::Mixed {
                nemesis = *rng.pick(&Nemesis::ALL);
            }
            let fault = pick_fault(nemesis, bed, &ids, &mut rng);
            if nemesis == Nemesis::Membership {
                let victim = *rng.pick(&ids);
                let what = format!("remove node {victim} from the group");
                rec.record(NEMESIS, OpType::Invoke, "nemesis", json!(what), None);
                let r = (bed.membership)(victim, true);
                if r.is_ok() {
                    *guard.removed.lock().unwrap_or_else(|e| e.into_inner()) = Some(victim);
                }
                rec.record(NEMESIS, OpType::Info, "nemesis", json!(what), r.err());
            } else if let Some(fault) = fault {
                rec.record(
                    NEMESIS,
                    OpType::Invoke,
                    "nemesis",
                    json!(fault.to_string()),
                    None,
                );
                if let Fault::Kill(n) = fault {
                    *guard.killed.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
                }
                let r = halyard_chaos::apply(&targets, &fault);
                rec.record(
                    NEMESIS,
                    OpType::Info,
                    "nemesis",
                    json!(fault.to_string()),
                    r.err(),
                );
            } else {
                continue;
            }
            std::thread::sleep(opts.interval.min(left()));
            rec.record(NEMESIS, OpType::Invoke, "nemesis", json!("heal"), None);
            let r = guard.heal();
            rec.record(NEMESIS, OpType::Info, "nemesis", json!("heal"), r.err());
        }
        stop.store(true, Ordering::Relaxed);
    });
    guard.heal()?;
    w.finish(bed, opts.clients, &rec);
    drop(guard);
    Ok(rec.take())
}
