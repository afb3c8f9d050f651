//! `halyard-lab jepsen run|campaign` — Jepsen-style runs on a `halyard-lab cluster up` testbed: a
//! workload through rg1's floating address while a nemesis injects faults, an ARP probe from
//! the client namespace watching for two holders of the address, then the checkers' verdict.
//!
//! Each run writes a directory: `history.jsonl`, `summary.json` (valid or not, the anomalies
//! and the smallest excerpt of history that shows the first one, counts, throughput, the
//! probe's report), `timeline.html`, `latency.svg` and `throughput.svg`. A campaign cycles
//! through workloads × nemeses and prints a table; both exit non-zero on any anomaly.
//!
//! ```text
//! halyard-lab jepsen run --workload smtp|append|register --nemesis kill --time 60
//! halyard-lab jepsen campaign --runs 26 --time 60      # every nemesis × workload, cycled
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use halyard_jepsen::runner::{Nemesis, RunOpts, Testbed, Workload};
use serde_json::{Value, json};

use crate::cluster_cmd::{ClusterState, admin_of, dir_of, load, pid_of, start_node};

#[derive(Debug, Args)]
pub struct JepsenArgs {
    #[arg(long, global = true, default_value = "hy")]
    pub prefix: String,
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: JepsenCmd,
}

#[derive(Debug, Subcommand)]
pub enum JepsenCmd {
    /// One run: a workload under one nemesis, then the verdict.
    Run {
        /// smtp (token delivery as a set), append (IMAP mailboxes as lists), register
        /// (IMAP flags as linearizable registers).
        #[arg(long, default_value = "smtp")]
        workload: String,
        /// none, kill, partition, isolate-master, bridge, one-way, pause, loss, delay,
        /// clock, strobe, membership, cpu-hog, mixed.
        #[arg(long, default_value = "kill")]
        nemesis: String,
        #[command(flatten)]
        opts: CommonOpts,
        /// Where the run's directory goes (default: `jepsen-<time>` in the testbed's
        /// state directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Many runs cycling through workloads × nemeses; a table at the end.
    Campaign {
        /// Number of runs (default: one per workload × nemesis).
        #[arg(long)]
        runs: Option<usize>,
        /// Comma-separated workloads (default: all three).
        #[arg(long, default_value = "smtp,append,register")]
        workloads: String,
        /// Comma-separated nemeses (default: every one but none and mixed).
        #[arg(long)]
        nemeses: Option<String>,
        #[command(flatten)]
        opts: CommonOpts,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct CommonOpts {
    /// Seconds of workload per run.
    #[arg(long, default_value_t = 30)]
    pub time: u64,
    /// Seconds a fault stays on, then off.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Random seed (default: from the clock; printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Path of a halyard binary to run the nodes with for these runs (e.g. the deliberately
    /// broken build); the testbed's own binary is put back afterwards.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

pub async fn main(args: JepsenArgs) -> Result<()> {
    let dir = dir_of(&args.prefix, args.dir.as_deref());
    let st = load(&dir)?;
    match args.cmd {
        JepsenCmd::Run {
            workload,
            nemesis,
            opts,
            out,
        } => {
            let n = Nemesis::parse(&nemesis).with_context(|| format!("--nemesis {nemesis}"))?;
            let out = out.unwrap_or_else(|| dir.join(format!("jepsen-{}", now_s())));
            let s = with_binary(&st, opts.binary.as_deref(), || {
                one_run(&st, &workload, n, &opts, &out)
            })
            .await?;
            println!("{}", line(&s));
            println!("details: {}", out.display());
            if s["valid"] != json!(true) {
                bail!(
                    "anomalies: {}; first excerpt:\n{}",
                    s["anomalies"],
                    excerpt_text(&s)
                );
            }
            Ok(())
        }
        JepsenCmd::Campaign {
            runs,
            workloads,
            nemeses,
            opts,
            out,
        } => {
            let ws: Vec<String> = workloads.split(',').map(|s| s.trim().to_string()).collect();
            let ns: Vec<Nemesis> = match nemeses {
                Some(s) => s
                    .split(',')
                    .map(|x| Nemesis::parse(x.trim()).with_context(|| format!("nemesis {x}")))
                    .collect::<Result<_>>()?,
                None => Nemesis::ALL.to_vec(),
            };
            if ws.is_empty() || ns.is_empty() {
                bail!("a campaign needs at least one workload and one nemesis");
            }
            let plan = plan(&ws, &ns);
            let count = runs.unwrap_or(plan.len()).min(100_000);
            let out = out.unwrap_or_else(|| dir.join(format!("campaign-{}", now_s())));
            std::fs::create_dir_all(&out)?;
            let mut rows: Vec<Value> = Vec::new();
            let started = Instant::now();
            let result = with_binary(&st, opts.binary.as_deref(), || {
                for i in 0..count {
                    let (w, n) = &plan[i % plan.len()];
                    let mut o = opts.clone();
                    o.seed = Some(opts.seed.unwrap_or_else(now_ns) + i as u64);
                    let d = out.join(format!("{:03}-{w}-{}", i + 1, n.name()));
                    let s = one_run(&st, w, *n, &o, &d).unwrap_or_else(
                        |e| json!({"workload": w, "nemesis": n.name(), "valid": false, "anomalies": [format!("harness error: {e:#}")]}),
                    );
                    println!("{:>3}/{count} {}", i + 1, line(&s));
                    rows.push(s);
                }
                Ok(())
            })
            .await;
            result?;
            let table = table(&rows);
            std::fs::write(out.join("campaign.md"), &table)?;
            std::fs::write(
                out.join("campaign.json"),
                serde_json::to_string_pretty(&rows)?,
            )?;
            println!("\n{table}");
            println!(
                "{} runs in {:.0} s; details in {}",
                rows.len(),
                started.elapsed().as_secs_f64(),
                out.display()
            );
            let bad = rows.iter().filter(|r| r["valid"] != json!(true)).count();
            if bad > 0 {
                bail!("{bad} of {} runs found anomalies", rows.len());
            }
            Ok(())
        }
    }
}

/// Every (workload, nemesis) pair once, ordered so that consecutive runs change both and the
/// first N runs see every nemesis: run k has nemesis k mod N and workload
/// (k div N + k mod N) mod W.
fn plan(ws: &[String], ns: &[Nemesis]) -> Vec<(String, Nemesis)> {
    (0..ws.len() * ns.len())
        .map(|k| {
            let n = k % ns.len();
            (ws[(k / ns.len() + n) % ws.len()].clone(), ns[n])
        })
        .collect()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Runs `f` with the nodes running `binary` (restarting every node on it, and back on the
/// testbed's own binary afterwards, also when `f` fails).
async fn with_binary<T: Send>(
    st: &ClusterState,
    binary: Option<&Path>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let Some(b) = binary else {
        return tokio::task::block_in_place(f);
    };
    let mut alt = st.clone();
    alt.binary = b
        .canonicalize()
        .with_context(|| format!("{}", b.display()))?;
    restart_all(&alt)?;
    let r = tokio::task::block_in_place(|| {
        wait_ready(&alt, Duration::from_secs(60))?;
        f()
    });
    let back = restart_all(st)
        .and_then(|_| tokio::task::block_in_place(|| wait_ready(st, Duration::from_secs(60))));
    let r = r?;
    back?;
    Ok(r)
}

fn restart_all(st: &ClusterState) -> Result<()> {
    for n in &st.nodes {
        if let Some(pid) = pid_of(st, n.id) {
            // SAFETY: kill(2) on a testbed node we started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            for _ in 0..100 {
                if pid_of(st, n.id).is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for n in &st.nodes {
        start_node(st, n)?;
    }
    Ok(())
}

fn address(st: &ClusterState) -> Result<std::net::Ipv4Addr> {
    Ok(st
        .groups
        .first()
        .context("no group")?
        .1
        .split('/')
        .next()
        .unwrap_or("")
        .parse()?)
}

/// Waits until every node runs and the address answers SMTP with a banner.
fn wait_ready(st: &ClusterState, limit: Duration) -> Result<()> {
    let addr = std::net::SocketAddr::from((address(st)?, 25));
    let t = Instant::now();
    while t.elapsed() < limit {
        let all = st.nodes.iter().all(|n| pid_of(st, n.id).is_some());
        if all
            && let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        {
            use std::io::Read;
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut b = [0u8; 3];
            if (&s).read_exact(&mut b).is_ok() && &b == b"220" {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the testbed did not become ready in {limit:?}")
}

fn testbed(st: &ClusterState) -> Result<Testbed> {
    let group = st.groups.first().context("no group")?.0.clone();
    let rt = tokio::runtime::Handle::current();
    let (st1, st2, st3, st4) = (st.clone(), st.clone(), st.clone(), st.clone());
    let (rt1, rt2) = (rt.clone(), rt);
    let (g1, g2) = (group.clone(), group);
    Ok(Testbed {
        address: address(st)?,
        recipient: halyard_node::demo::DEMO_ADDRESS.into(),
        login: "demo".into(),
        password: halyard_node::demo::DEMO_PASSWORD.into(),
        targets: Box::new(move || crate::chaos_cmd::targets(&st1)),
        restart: Box::new(move |id| {
            if let Some(n) = st2.nodes.iter().find(|n| n.id == id)
                && pid_of(&st2, id).is_none()
                && let Err(e) = start_node(&st2, n)
            {
                eprintln!("restarting node {id}: {e:#}");
            }
        }),
        master: Box::new(move || {
            rt1.block_on(async {
                for n in &st3.nodes {
                    if let Ok(a) = admin_of(&st3, n.id).await
                        && let Ok(s) =
                            tokio::time::timeout(Duration::from_secs(1), a.status()).await
                        && let Ok(s) = s
                        && let Some(tok) = s.fencing.get(&g1).and_then(|f| f.holding)
                    {
                        return Some(tok.node);
                    }
                }
                None
            })
        }),
        membership: Box::new(move |id, remove| {
            rt2.block_on(async {
                let ip = st4
                    .nodes
                    .iter()
                    .find(|n| n.id == id)
                    .map(|n| format!("{}:7700", n.ip))
                    .ok_or("no such node")?;
                let mut last = String::from("no node answered");
                for n in st4.nodes.iter().filter(|n| n.id != id) {
                    let Ok(a) = admin_of(&st4, n.id).await else {
                        continue;
                    };
                    let Ok(leader) = a.leader_of(&g2).await else {
                        continue;
                    };
                    use halyard_api::pb::MembershipAction as A;
                    let steps: &[A] = if remove {
                        &[A::Remove]
                    } else {
                        &[A::Add, A::Promote]
                    };
                    let mut ok = true;
                    for &verb in steps {
                        let addr = if verb == A::Add { ip.as_str() } else { "" };
                        let r = tokio::time::timeout(
                            Duration::from_secs(20),
                            leader.membership(&g2, verb, id, addr),
                        )
                        .await;
                        match r {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                last = format!("{} node {id}: {e:#}", verb.as_str_name());
                                ok = false;
                                break;
                            }
                            Err(_) => {
                                last = format!("{} node {id}: timed out", verb.as_str_name());
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok {
                        return Ok(());
                    }
                }
                Err(last)
            })
        }),
    })
}

/// One run into `out`; returns its summary.
fn one_run(
    st: &ClusterState,
    workload: &str,
    nemesis: Nemesis,
    opts: &CommonOpts,
    out: &Path,
) -> Result<Value> {
    let bed = testbed(st)?;
    let seed = opts.seed.unwrap_or_else(now_ns);
    let run_id = format!("r{}", now_ns() / 1_000_000);
    let w: Box<dyn Workload> = match workload {
        "smtp" => Box::new(halyard_jepsen::smtp::Smtp {
            run_id: run_id.clone(),
        }),
        "append" => Box::new(halyard_jepsen::append::Append::new(&run_id, 3)),
        "register" => Box::new(halyard_jepsen::register::Register::new(&run_id, 3)),
        other => bail!("--workload {other}: smtp, append or register"),
    };
    wait_ready(st, Duration::from_secs(60))?;
    let ro = RunOpts {
        clients: opts.clients.max(1),
        duration: Duration::from_secs(opts.time),
        nemesis,
        interval: Duration::from_secs(opts.interval.max(1)),
        seed,
    };
    // The ARP probe watches the address for the whole run.
    let addr = address(st)?;
    let st_probe = st.clone();
    let probe_for = Duration::from_secs(opts.time);
    let probe = std::thread::spawn(move || {
        crate::cluster_cmd::probe(&st_probe, addr, Duration::from_millis(10), probe_for)
    });
    let log_marks = log_lengths(st);
    let started = Instant::now();
    let ops = halyard_jepsen::runner::run(&bed, w.as_ref(), &ro).map_err(anyhow::Error::msg)?;
    let leases_lost = leases_lost_since(st, &log_marks);
    let elapsed = started.elapsed().as_secs_f64();
    let probe = probe
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))?
        .map_err(|e| anyhow::anyhow!("probe: {e:#}"));
    let (checker, valid, mut anomalies, excerpt) = judge(workload, &ops);
    let probe_json = match &probe {
        Ok(p) => {
            if p.overlaps > 0 {
                anomalies.push(format!("two-holders ({} probe rounds)", p.overlaps));
            }
            serde_json::to_value(p)?
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    let count =
        |f: &dyn Fn(&halyard_jepsen::history::Op) -> bool| ops.iter().filter(|o| f(o)).count();
    use halyard_jepsen::history::OpType;
    let client = |o: &halyard_jepsen::history::Op| o.process != halyard_jepsen::runner::NEMESIS;
    let oks = count(&|o| client(o) && o.kind == OpType::Ok);
    let faults = count(&|o| !client(o) && o.kind == OpType::Invoke) / 2;
    let summary = json!({
        "workload": workload,
        "nemesis": nemesis.name(),
        "seed": seed,
        "time_s": opts.time,
        "clients": ro.clients,
        "valid": valid && anomalies.is_empty() && probe.is_ok(),
        "anomalies": anomalies,
        "ops": {
            "invoked": count(&|o| client(o) && o.kind == OpType::Invoke),
            "ok": oks,
            "fail": count(&|o| client(o) && o.kind == OpType::Fail),
            "info": count(&|o| client(o) && o.kind == OpType::Info),
        },
        "ok_per_s": oks as f64 / elapsed.max(0.001),
        "faults": faults,
        "leases_lost": leases_lost,
        "probe": probe_json,
        "checker": checker,
        "excerpt": excerpt,
    });
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("history.jsonl"),
        halyard_jepsen::history::write(&ops),
    )?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    halyard_jepsen::report::write_report(out, &ops, &summary)?;
    Ok(summary)
}

/// (checker output, valid, anomaly kinds, excerpt) for a workload's history.
fn judge(workload: &str, ops: &[halyard_jepsen::history::Op]) -> (Value, bool, Vec<String>, Value) {
    fn to<T: serde::Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }
    match workload {
        "smtp" => {
            let r = halyard_jepsen::checker::set(ops);
            let mut a = Vec::new();
            for (k, n) in [
                ("lost", r.lost.len()),
                ("duplicated", r.duplicated.len()),
                ("unexpected", r.unexpected.len()),
                ("failed-but-delivered", r.failed_but_delivered.len()),
            ] {
                if n > 0 {
                    a.push(format!("{k} ({n})"));
                }
            }
            if let Some(e) = &r.error {
                a.push(format!("unjudgeable: {e}"));
            }
            let ex = json!(r.excerpt);
            (to(&r), r.valid && r.error.is_none(), a, ex)
        }
        "append" => {
            let r = halyard_jepsen::append::check(ops);
            let mut a: Vec<String> = r
                .anomalies
                .iter()
                .map(|(k, v)| format!("{k} ({})", v.len()))
                .collect();
            if let Some(e) = &r.error {
                a.push(format!("unjudgeable: {e}"));
            }
            let ex = json!(r.excerpt);
            (to(&r), r.valid && r.error.is_none(), a, ex)
        }
        _ => {
            let r = halyard_jepsen::linearizable::check(
                ops,
                &halyard_jepsen::linearizable::Config::default(),
            );
            let mut a = Vec::new();
            if !r.invalid_keys.is_empty() {
                a.push(format!("not-linearizable ({})", r.invalid_keys.len()));
            }
            if !r.unknown_keys.is_empty() {
                a.push(format!(
                    "search-bound ({} keys unknown)",
                    r.unknown_keys.len()
                ));
            }
            if let Some(e) = &r.error {
                a.push(format!("unjudgeable: {e}"));
            }
            let ex = r
                .keys
                .values()
                .find_map(|k| k.failure.as_ref())
                .map_or(Value::Null, |f| json!(f.excerpt));
            (to(&r), r.valid, a, ex)
        }
    }
}

/// How long each node's log is now.
fn log_lengths(st: &ClusterState) -> Vec<u64> {
    st.nodes
        .iter()
        .map(|n| std::fs::metadata(&n.log).map_or(0, |m| m.len()))
        .collect()
}

/// Times a master stopped holding its group's address because its lease ran out (no quorum
/// acknowledged its heartbeats in time), in what the nodes logged after `marks`.
fn leases_lost_since(st: &ClusterState, marks: &[u64]) -> usize {
    use std::io::{Read, Seek};
    let mut lost = 0;
    for (n, mark) in st.nodes.iter().zip(marks) {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&n.log)
            && f.seek(std::io::SeekFrom::Start(*mark)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        lost += text
            .lines()
            .filter(|l| {
                l.contains("stopped holding the group's address") && l.contains("lease expired")
            })
            .count();
    }
    lost
}

fn line(s: &Value) -> String {
    format!(
        "{:<8} {:<14} {:<8} ok {:>6} info {:>4} fail {:>5} {:>7.1} ok/s faults {:>2} overlaps {} leases lost {} {}",
        s["workload"].as_str().unwrap_or("?"),
        s["nemesis"].as_str().unwrap_or("?"),
        if s["valid"] == json!(true) {
            "VALID"
        } else {
            "INVALID"
        },
        s["ops"]["ok"],
        s["ops"]["info"],
        s["ops"]["fail"],
        s["ok_per_s"].as_f64().unwrap_or(0.0),
        s["faults"],
        s["probe"]["overlaps"],
        s["leases_lost"],
        s["anomalies"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    )
}

fn excerpt_text(s: &Value) -> String {
    s["excerpt"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The campaign's table (Markdown).
fn table(rows: &[Value]) -> String {
    let mut t = String::from(
        "| # | workload | nemesis | verdict | ok ops | info | fail | ok/s | faults | leases lost | lost | duplicated | order/UID | not linearizable | overlapping holders | anomalies |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, s) in rows.iter().enumerate() {
        let an: Vec<&str> = s["anomalies"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let has = |k: &str| an.iter().filter(|a| a.starts_with(k)).count();
        let order = ["order", "uid-", "uidvalidity", "uidnext", "modseq", "stale"]
            .iter()
            .map(|k| has(k))
            .sum::<usize>();
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            s["workload"].as_str().unwrap_or("?"),
            s["nemesis"].as_str().unwrap_or("?"),
            if s["valid"] == json!(true) {
                "valid"
            } else {
                "INVALID"
            },
            s["ops"]["ok"],
            s["ops"]["info"],
            s["ops"]["fail"],
            s["ok_per_s"].as_f64().unwrap_or(0.0),
            s["faults"],
            s["leases_lost"].as_u64().unwrap_or(0),
            has("lost"),
            has("duplicated"),
            order,
            has("not-linearizable"),
            s["probe"]["overlaps"].as_u64().unwrap_or(0),
            if an.is_empty() {
                "-".to_string()
            } else {
                an.join("; ")
            },
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_plan_has_every_pair_once_and_starts_with_every_nemesis() {
        let ws: Vec<String> = ["smtp", "append", "register"].map(String::from).to_vec();
        for n in 1..=Nemesis::ALL.len() {
            let ns = &Nemesis::ALL[..n];
            let p = plan(&ws, ns);
            assert_eq!(p.len(), ws.len() * n);
            let pairs: std::collections::HashSet<_> = p.iter().cloned().collect();
            assert_eq!(pairs.len(), p.len(), "a pair twice with {n} nemeses");
            let first: std::collections::HashSet<_> = p[..n].iter().map(|x| x.1).collect();
            assert_eq!(first.len(), n);
        }
        let p = plan(&ws, &Nemesis::ALL[..5]);
        let w: Vec<&str> = p[..5].iter().map(|x| x.0.as_str()).collect();
        assert_eq!(w, ["smtp", "append", "register", "smtp", "append"]);
    }
}
