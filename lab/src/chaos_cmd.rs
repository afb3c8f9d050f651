//! `halyard-lab chaos` — one fault at a time on a running `halyard-lab cluster up` testbed, for
//! drills by hand (the Jepsen harness drives the same nemeses from `halyard-chaos`).
//!
//! ```text
//! halyard-lab chaos partition --halves            # random halves of the data nodes
//! halyard-lab chaos partition --isolate-master    # rg1's master alone
//! halyard-lab chaos partition --components 1,2/3  # explicit components
//! halyard-lab chaos bridge --node 2               # 1 | 2 | 3, with 2 seeing both sides
//! halyard-lab chaos one-way --from 1 --to 2
//! halyard-lab chaos loss --node 1 --percent 30
//! halyard-lab chaos kill|pause|resume --node 1
//! halyard-lab chaos delay --node 1 --ms 100 [--jitter 50]     # node 1's cluster traffic waits
//! halyard-lab chaos clock --node 1 --offset-ms -30000         # node 1's wall clock 30 s behind
//! halyard-lab chaos strobe --node 1 --delta-ms 5000 --period-ms 1000 --duration-ms 60000
//! halyard-lab chaos heal                          # undo every fault, resume paused nodes
//! ```
//!
//! `delay` and `strobe` leave a helper process running after this command exits (the packet
//! delayer `halyard-lab chaos-delayd` inside the node's namespace, the clock strober `halyard
//! chaos-strobed`), with pid and log files `chaos-delay-n<id>.*` / `chaos-strobe-n<id>.*` in
//! the testbed's state directory; `heal` ends them (a strobe also ends by itself after
//! `--duration-ms`, a delayer after an hour). Clock faults need the nodes started under
//! libfaketime, which `halyard-lab cluster up` does when libfaketime is installed; only their wall
//! clock moves (see `halyard_chaos::clock`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use halyard_chaos::{Fault, Target};

use crate::cluster_cmd::{ClusterState, dir_of, load, pid_of};

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The testbed's prefix (as given to `halyard-lab cluster up`).
    #[arg(long, global = true, default_value = "hy")]
    pub prefix: String,
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ChaosCmd,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCmd {
    /// Split the cluster network (clients and the host still reach every node).
    Partition {
        #[arg(long)]
        halves: bool,
        /// Cut the current master of `--group` off from every other node.
        #[arg(long)]
        isolate_master: bool,
        #[arg(long, default_value = "rg1")]
        group: String,
        /// Components as `1,2/3`: nodes separated by `,`, components by `/`.
        #[arg(long)]
        components: Option<String>,
    },
    /// Two halves that cannot talk, and `node` talking to both.
    Bridge {
        #[arg(long)]
        node: u64,
    },
    /// Packets from one node to another are lost.
    OneWay {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// A share of the packets between a node and the others is lost.
    Loss {
        #[arg(long)]
        node: u64,
        #[arg(long)]
        percent: u8,
    },
    Kill {
        #[arg(long)]
        node: u64,
    },
    Pause {
        #[arg(long)]
        node: u64,
    },
    /// Busy threads in a node's namespace (CPU starvation) until `heal`.
    Hog {
        #[arg(long)]
        node: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    Resume {
        #[arg(long)]
        node: u64,
    },
    /// Packets between a node and the other nodes wait `ms ± jitter` (reordered when the
    /// jitter exceeds the gap between packets), both ways.
    Delay {
        #[arg(long)]
        node: u64,
        #[arg(long)]
        ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter: u64,
    },
    /// A node's wall clock jumps by an offset (negative: behind).
    Clock {
        #[arg(long)]
        node: u64,
        #[arg(long, allow_hyphen_values = true)]
        offset_ms: i64,
    },
    /// A node's wall clock flips between +delta and true every period, for a duration.
    Strobe {
        #[arg(long)]
        node: u64,
        #[arg(long, allow_hyphen_values = true)]
        delta_ms: i64,
        #[arg(long)]
        period_ms: u64,
        #[arg(long)]
        duration_ms: u64,
    },
    /// Undo every fault (network, delay, clock) and resume every paused node.
    Heal,
}

/// `halyard-lab chaos-delayd` (hidden): the packet delayer `chaos delay` starts inside a node's
/// namespace.
#[derive(Debug, Args)]
pub struct DelaydArgs {
    /// The NFQUEUE number the node's rules send packets to.
    #[arg(long, default_value_t = halyard_chaos::delay::QUEUE)]
    pub queue: u16,
    #[arg(long)]
    pub ms: u64,
    #[arg(long, default_value_t = 0)]
    pub jitter: u64,
    /// Packets held at once, at most (more pass undelayed).
    #[arg(long, default_value_t = halyard_chaos::delay::DEFAULT_MAX_QUEUE)]
    pub max_queue: u32,
    /// Give up after this long if nobody heals.
    #[arg(long, default_value_t = halyard_chaos::delay::DEFAULT_MAX_SECS)]
    pub max_secs: u64,
}

/// `halyard-lab chaos-hogd` (hidden): the busy threads `chaos hog` starts in a node's namespace.
#[derive(Debug, Args)]
pub struct HogdArgs {
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Give up after this long if nobody heals.
    #[arg(long, default_value_t = halyard_chaos::hog::DEFAULT_MAX_SECS)]
    pub max_secs: u64,
}

/// Spins until SIGTERM.
pub fn hogd(a: &HogdArgs) -> Result<()> {
    let spun = halyard_chaos::hog::daemon(a.threads, a.max_secs).map_err(|e| anyhow!(e))?;
    eprintln!("chaos-hogd: {} threads, {spun} spins", a.threads);
    Ok(())
}

/// `halyard-lab chaos-strobed` (hidden): the clock strober `chaos strobe` starts.
#[derive(Debug, Args)]
pub struct StrobedArgs {
    /// The node's libfaketime offset file.
    #[arg(long)]
    pub file: PathBuf,
    #[arg(long, allow_hyphen_values = true)]
    pub delta_ms: i64,
    #[arg(long)]
    pub period_ms: u64,
    #[arg(long)]
    pub duration_ms: u64,
}

/// Runs the delayer until SIGTERM; its summary goes to standard error (the helper's log).
pub fn delayd(a: &DelaydArgs) -> Result<()> {
    let spec = halyard_chaos::delay::DelaySpec {
        ms: a.ms,
        jitter_ms: a.jitter,
    };
    let st = halyard_chaos::delay::daemon(a.queue, spec, a.max_queue, a.max_secs)
        .map_err(|e| anyhow!(e))?;
    eprintln!("chaos-delayd: {}±{} ms: {st:?}", a.ms, a.jitter);
    Ok(())
}

/// Runs a strobe to its end or SIGTERM.
pub fn strobed(a: &StrobedArgs) -> Result<()> {
    let flips = halyard_chaos::clock::daemon(&a.file, a.delta_ms, a.period_ms, a.duration_ms)
        .map_err(|e| anyhow!(e))?;
    eprintln!("chaos-strobed: {} flips of {} ms", flips, a.delta_ms);
    Ok(())
}

pub fn targets(st: &ClusterState) -> Vec<Target> {
    st.nodes
        .iter()
        .map(|n| Target {
            id: n.id,
            ns: n.ns.clone(),
            ip: n.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            pid: pid_of(st, n.id),
            state_dir: Some(st.dir.clone()),
        })
        .collect()
}

fn components(s: &str) -> Result<Vec<Vec<u64>>> {
    s.split('/')
        .map(|c| {
            c.split(',')
                .map(|n| {
                    n.trim()
                        .parse::<u64>()
                        .with_context(|| format!("node id {n:?}"))
                })
                .collect()
        })
        .collect()
}

/// A random split of `ids` into two non-empty halves.
fn halves(ids: &[u64]) -> Vec<Vec<u64>> {
    let mut v = ids.to_vec();
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let cut = v.len() / 2;
    vec![v[..cut].to_vec(), v[cut..].to_vec()]
}

pub async fn main(args: ChaosArgs) -> Result<()> {
    let st = load(&dir_of(&args.prefix, args.dir.as_deref()))?;
    let t = targets(&st);
    let data: Vec<u64> = st.nodes.iter().map(|n| n.id).collect();
    let fault = match args.cmd {
        ChaosCmd::Heal => {
            halyard_chaos::heal(&t).map_err(|e| anyhow!(e))?;
            println!("healed: no nemesis rules or delayers left, clocks true, every node resumed");
            return Ok(());
        }
        ChaosCmd::Partition {
            halves: h,
            isolate_master,
            group,
            components: c,
        } => match (h, isolate_master, c) {
            (true, false, None) => Fault::Partition(halves(&data)),
            (false, true, None) => {
                let mut master = None;
                for n in &st.nodes {
                    if let Ok(a) = crate::cluster_cmd::admin_of(&st, n.id).await
                        && let Ok(s) = a.status().await
                        && let Some(tok) = s.fencing.get(&group).and_then(|f| f.holding)
                    {
                        master = Some(tok.node);
                    }
                }
                let m = master.with_context(|| format!("{group} has no master now"))?;
                Fault::Partition(vec![
                    vec![m],
                    data.iter().copied().filter(|x| *x != m).collect(),
                ])
            }
            (false, false, Some(c)) => Fault::Partition(components(&c)?),
            _ => bail!("partition: give exactly one of --halves, --isolate-master, --components"),
        },
        ChaosCmd::Bridge { node } => {
            let rest: Vec<u64> = data.iter().copied().filter(|x| *x != node).collect();
            let cut = rest.len() / 2;
            Fault::Bridge {
                bridge: node,
                left: rest[..cut].to_vec(),
                right: rest[cut..].to_vec(),
            }
        }
        ChaosCmd::OneWay { from, to } => Fault::OneWay { from, to },
        ChaosCmd::Loss { node, percent } => Fault::Loss { node, percent },
        ChaosCmd::Delay { node, ms, jitter } => Fault::Delay {
            node,
            ms,
            jitter_ms: jitter,
        },
        ChaosCmd::Clock { node, offset_ms } => Fault::ClockSkew { node, offset_ms },
        ChaosCmd::Strobe {
            node,
            delta_ms,
            period_ms,
            duration_ms,
        } => Fault::ClockStrobe {
            node,
            delta_ms,
            period_ms,
            duration_ms,
        },
        ChaosCmd::Kill { node } => Fault::Kill(node),
        ChaosCmd::Pause { node } => Fault::Pause(node),
        ChaosCmd::Hog { node, threads } => Fault::CpuHog { node, threads },
        ChaosCmd::Resume { node } => Fault::Resume(node),
    };
    halyard_chaos::apply(&t, &fault).map_err(|e| anyhow!(e))?;
    println!("applied: {fault}");
    Ok(())
}
