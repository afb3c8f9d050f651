//! # halyard-chaos — fault injection on a namespace testbed
//!
//! Nemeses for clusters started by `halyard-lab cluster up` (each node in its own network
//! namespace): network partitions of several shapes and probabilistic loss with nftables
//! rules inside the node namespaces (traffic between nodes only: clients and the host leg keep
//! reaching every node, as in a real split of the cluster network); delay and reordering of a
//! node's cluster traffic through NFQUEUE and a userspace delayer ([`delay`], as this kernel has
//! no `tc netem`); wall-clock skew and strobe through libfaketime ([`clock`]); and process
//! faults (kill -9, SIGSTOP/SIGCONT) by pid. [`heal`] undoes every network and clock fault and
//! resumes every paused node; it is idempotent, so a harness calls it on every exit path.
//!
//! Delay and clock faults need helper processes that outlive the call that applies them
//! ([`helper`]): they are `halyard` subcommands (`chaos-delayd`, `chaos-strobed`), started from
//! the running binary, with pid files in [`Target::state_dir`]. Membership changes are not
//! here yet — see the issue "Jepsen-style harness and chaos nemeses".

pub mod clock;
pub mod delay;
pub mod helper;
pub mod hog;
pub mod nfqueue;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Name of the nftables table the nemeses own in each node namespace.
pub const TABLE: &str = "halyard_chaos";

/// One node of the testbed, as the nemeses see it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: u64,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the cluster network.
    pub ip: Ipv4Addr,
    /// Its process, when running.
    pub pid: Option<i32>,
    /// The testbed's state directory: where the node's clock file (`clock-n<id>`, see
    /// [`clock::file`]) is, and where helper processes keep their pid files and logs. `None`
    /// means no clock faults, and helper files under `/run/halyard-chaos/<ns>`.
    pub state_dir: Option<PathBuf>,
}

impl Default for Target {
    fn default() -> Target {
        Target {
            id: 0,
            ns: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
            pid: None,
            state_dir: None,
        }
    }
}

/// A fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Nodes in different components cannot talk to each other (both directions); nodes in
    /// no component are left connected to everyone.
    Partition(Vec<Vec<u64>>),
    /// `bridge` talks to both halves, which cannot talk to each other (the non-transitive
    /// partition of Jepsen's "bridge" nemesis).
    Bridge {
        bridge: u64,
        left: Vec<u64>,
        right: Vec<u64>,
    },
    /// Packets from `from` to `to` are lost; the other direction works.
    OneWay {
        from: u64,
        to: u64,
    },
    /// `percent` of the packets between `node` and the other nodes are lost, each way.
    Loss {
        node: u64,
        percent: u8,
    },
    /// Packets between `node` and the other nodes wait `ms ± jitter_ms` (drawn per packet, so
    /// a jitter above the gap between packets reorders them), in both directions. Stacks with
    /// the other network faults; one delay per node (a second replaces the first).
    Delay {
        node: u64,
        ms: u64,
        jitter_ms: u64,
    },
    /// `node`'s wall clock (`CLOCK_REALTIME` only) is off by `offset_ms`.
    ClockSkew {
        node: u64,
        offset_ms: i64,
    },
    /// `node`'s wall clock flips between `+delta_ms` and true every `period_ms`, for
    /// `duration_ms` (then it is true again).
    ClockStrobe {
        node: u64,
        delta_ms: i64,
        period_ms: u64,
        duration_ms: u64,
    },
    Kill(u64),
    Pause(u64),
    Resume(u64),
    /// `threads` busy threads in `node`'s namespace ([`hog`]).
    CpuHog {
        node: u64,
        threads: usize,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Partition(c) => write!(f, "partition {c:?}"),
            Fault::Bridge {
                bridge,
                left,
                right,
            } => write!(f, "bridge {left:?} <- {bridge} -> {right:?}"),
            Fault::OneWay { from, to } => write!(f, "one-way loss {from} -> {to}"),
            Fault::Loss { node, percent } => write!(f, "{percent}% loss at node {node}"),
            Fault::Delay {
                node,
                ms,
                jitter_ms,
            } => write!(f, "delay {ms}±{jitter_ms} ms at node {node}"),
            Fault::ClockSkew { node, offset_ms } => {
                write!(f, "clock of node {node} off by {offset_ms} ms")
            }
            Fault::ClockStrobe {
                node,
                delta_ms,
                period_ms,
                duration_ms,
            } => write!(
                f,
                "clock of node {node} strobing by {delta_ms} ms every {period_ms} ms for {duration_ms} ms"
            ),
            Fault::Kill(n) => write!(f, "kill -9 node {n}"),
            Fault::Pause(n) => write!(f, "SIGSTOP node {n}"),
            Fault::CpuHog { node, threads } => {
                write!(f, "{threads} busy threads beside node {node}")
            }
            Fault::Resume(n) => write!(f, "SIGCONT node {n}"),
        }
    }
}

/// What each node must drop: (node, addresses it must not receive from, addresses it must
/// not send to, loss percent for everyone else in the cluster).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rules {
    pub drop_from: Vec<Ipv4Addr>,
    pub drop_to: Vec<Ipv4Addr>,
    pub loss: Option<(u8, Vec<Ipv4Addr>)>,
}

/// The nftables rules a network fault puts in each node's namespace (process faults: none).
pub fn rules(targets: &[Target], fault: &Fault) -> Result<Vec<(u64, Rules)>, String> {
    let ip = |id: u64| {
        targets
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.ip)
            .ok_or_else(|| format!("no node {id}"))
    };
    let mut out: Vec<(u64, Rules)> = targets.iter().map(|t| (t.id, Rules::default())).collect();
    let mut cut = |a: u64, b: u64| -> Result<(), String> {
        let (ia, ib) = (ip(a)?, ip(b)?);
        for (me, other) in [(a, ib), (b, ia)] {
            let r = &mut out.iter_mut().find(|x| x.0 == me).ok_or("node")?.1;
            if !r.drop_from.contains(&other) {
                r.drop_from.push(other);
                r.drop_to.push(other);
            }
        }
        Ok(())
    };
    match fault {
        Fault::Partition(components) => {
            for (i, c) in components.iter().enumerate() {
                for d in &components[i + 1..] {
                    for a in c {
                        for b in d {
                            cut(*a, *b)?;
                        }
                    }
                }
            }
        }
        Fault::Bridge { left, right, .. } => {
            for a in left {
                for b in right {
                    cut(*a, *b)?;
                }
            }
        }
        Fault::OneWay { from, to } => {
            let (f, t) = (ip(*from)?, ip(*to)?);
            out.iter_mut()
                .find(|x| x.0 == *from)
                .ok_or("node")?
                .1
                .drop_to
                .push(t);
            out.iter_mut()
                .find(|x| x.0 == *to)
                .ok_or("node")?
                .1
                .drop_from
                .push(f);
        }
        Fault::Loss { node, percent } => {
            if *percent > 100 {
                return Err("loss: percent must be 0-100".into());
            }
            let others: Vec<Ipv4Addr> = targets
                .iter()
                .filter(|t| t.id != *node)
                .map(|t| t.ip)
                .collect();
            out.iter_mut()
                .find(|x| x.0 == *node)
                .ok_or_else(|| format!("no node {node}"))?
                .1
                .loss = Some((*percent, others));
        }
        Fault::Delay { .. }
        | Fault::ClockSkew { .. }
        | Fault::ClockStrobe { .. }
        | Fault::Kill(_)
        | Fault::Pause(_)
        | Fault::CpuHog { .. }
        | Fault::Resume(_) => {}
    }
    Ok(out)
}

fn set(addrs: &[Ipv4Addr]) -> String {
    let v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

/// The nftables script for one namespace: replaces the table with these rules.
pub fn script(r: &Rules) -> String {
    let mut input = String::new();
    let mut output = String::new();
    if !r.drop_from.is_empty() {
        input.push_str(&format!("  ip saddr {} drop\n", set(&r.drop_from)));
    }
    if !r.drop_to.is_empty() {
        output.push_str(&format!("  ip daddr {} drop\n", set(&r.drop_to)));
    }
    if let Some((p, others)) = &r.loss
        && !others.is_empty()
    {
        input.push_str(&format!(
            "  ip saddr {} numgen random mod 100 < {p} drop\n",
            set(others)
        ));
        output.push_str(&format!(
            "  ip daddr {} numgen random mod 100 < {p} drop\n",
            set(others)
        ));
    }
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n chain input {{\n  type filter hook input priority -10;\n{input} }}\n chain output {{\n  type filter hook output priority -10;\n{output} }}\n}}\n"
    )
}

fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn signal(t: &Target, sig: i32) -> Result<(), String> {
    let pid = t
        .pid
        .ok_or_else(|| format!("node {} is not running", t.id))?;
    // SAFETY: kill(2) on the pid of a testbed node.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(format!(
            "signal to node {}: {}",
            t.id,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Applies a fault. Partition, bridge, one-way and loss replace the nftables rules in every
/// node namespace (one of them at a time; combine shapes with [`Fault::Partition`]'s
/// components); a delay or clock fault comes on top of them, one of each kind per node.
pub fn apply(targets: &[Target], fault: &Fault) -> Result<(), String> {
    let by_id = |id: u64| {
        targets
            .iter()
            .find(|t| t.id == id)
            .ok_or(format!("no node {id}"))
    };
    match fault {
        Fault::Kill(n) => signal(by_id(*n)?, libc::SIGKILL),
        Fault::Pause(n) => signal(by_id(*n)?, libc::SIGSTOP),
        Fault::Resume(n) => signal(by_id(*n)?, libc::SIGCONT),
        Fault::CpuHog { node, threads } => hog::start(by_id(*node)?, *threads),
        Fault::Delay {
            node,
            ms,
            jitter_ms,
        } => {
            let t = by_id(*node)?;
            let peers: Vec<Ipv4Addr> = targets
                .iter()
                .filter(|o| o.id != *node)
                .map(|o| o.ip)
                .collect();
            delay::start(
                t,
                &peers,
                delay::DelaySpec {
                    ms: *ms,
                    jitter_ms: *jitter_ms,
                },
            )
        }
        Fault::ClockSkew { node, offset_ms } => clock::skew(by_id(*node)?, *offset_ms),
        Fault::ClockStrobe {
            node,
            delta_ms,
            period_ms,
            duration_ms,
        } => clock::start_strobe(by_id(*node)?, *delta_ms, *period_ms, *duration_ms),
        Fault::Partition(_) | Fault::Bridge { .. } | Fault::OneWay { .. } | Fault::Loss { .. } => {
            for (id, r) in rules(targets, fault)? {
                nft(&by_id(id)?.ns, &script(&r))?;
            }
            Ok(())
        }
    }
}

/// Undoes every fault that can be undone: removes the nemesis tables and delay rules from
/// every namespace, ends the delayers and strobes, puts every clock back, and resumes every
/// paused node (killed nodes are restarted by the testbed, not here). Idempotent; reports the
/// first error after trying everything.
pub fn heal(targets: &[Target]) -> Result<(), String> {
    let mut first = None;
    for t in targets {
        if let Err(e) = nft(
            &t.ns,
            &format!("table inet {TABLE}\ndelete table inet {TABLE}\n"),
        ) {
            first.get_or_insert(e);
        }
        if let Err(e) = delay::stop(t) {
            first.get_or_insert(e);
        }
        if let Err(e) = clock::stop(t) {
            first.get_or_insert(e);
        }
        if let Err(e) = hog::stop(t) {
            first.get_or_insert(e);
        }
        if let Some(pid) = t.pid {
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        (1..=5)
            .map(|i| Target {
                id: i,
                ns: format!("t-n{i}"),
                ip: Ipv4Addr::new(198, 18, 0, i as u8),
                ..Target::default()
            })
            .collect()
    }

    fn can_talk(r: &[(u64, Rules)], a: u64, b: u64) -> bool {
        let ip = |n: u64| Ipv4Addr::new(198, 18, 0, n as u8);
        let ra = &r.iter().find(|x| x.0 == a).unwrap().1;
        let rb = &r.iter().find(|x| x.0 == b).unwrap().1;
        !ra.drop_to.contains(&ip(b)) && !rb.drop_from.contains(&ip(a))
    }

    #[test]
    fn partitions_cut_exactly_the_pairs_across() {
        let t = targets();
        let r = rules(&t, &Fault::Partition(vec![vec![1, 2], vec![3, 4, 5]])).unwrap();
        for a in 1..=5u64 {
            for b in 1..=5u64 {
                if a != b {
                    assert_eq!(can_talk(&r, a, b), (a <= 2) == (b <= 2), "{a}->{b}");
                }
            }
        }
        let r = rules(
            &t,
            &Fault::Bridge {
                bridge: 3,
                left: vec![1, 2],
                right: vec![4, 5],
            },
        )
        .unwrap();
        assert!(can_talk(&r, 1, 3) && can_talk(&r, 3, 5) && can_talk(&r, 1, 2));
        assert!(!can_talk(&r, 1, 4) && !can_talk(&r, 5, 2));
        let r = rules(&t, &Fault::OneWay { from: 1, to: 2 }).unwrap();
        assert!(!can_talk(&r, 1, 2) && can_talk(&r, 2, 1));
        assert!(rules(&t, &Fault::Partition(vec![vec![1], vec![9]])).is_err());
    }

    #[test]
    fn scripts_replace_the_table_and_drop_only_what_they_say() {
        let r = Rules {
            drop_from: vec![Ipv4Addr::new(198, 18, 0, 2)],
            drop_to: vec![Ipv4Addr::new(198, 18, 0, 2)],
            loss: Some((30, vec![Ipv4Addr::new(198, 18, 0, 3)])),
        };
        let s = script(&r);
        assert!(s.starts_with("table inet halyard_chaos\ndelete table inet halyard_chaos\n"));
        assert!(s.contains("ip saddr { 198.18.0.2 } drop"));
        assert!(s.contains("ip daddr { 198.18.0.2 } drop"));
        assert!(s.contains("numgen random mod 100 < 30 drop"));
        let empty = script(&Rules::default());
        assert!(!empty.contains("drop"), "{empty}");
    }
}
