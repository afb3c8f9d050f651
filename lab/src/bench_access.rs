//! `halyard-lab bench-access` — IMAP benchmarks against real `halyard serve` processes:
//!
//! - `--idle N`: N authenticated IMAP sessions held open on one node (client side spread over
//!   127.0.0.2–127.0.0.9 source addresses); reports the server's resident memory per session.
//! - throughput (default): `--clients` concurrent IMAP clients on the master of a `--nodes`
//!   cluster, APPEND of `--size`-byte messages for `--seconds`, then FETCH BODY[] of random
//!   messages for `--seconds`; ops/s and latency percentiles.
//!
//! - `--sort N`: a mailbox of N varied messages (subjects with reply markers, senders,
//!   dates, reference chains), then SORT (ARRIVAL, DATE, SUBJECT, FROM), THREAD=REFERENCES and
//!   SEARCH TEXT each run `--repeat` times on the master; p50 and p99 per command.
//!
//! The file-descriptor limit of this process (inherited by the nodes) is raised with
//! `prlimit` when it is too low for the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use halyard_directory::embedded::hash_password;
use halyard_raft_store::Command;
use halyard_raft_store::directory::{DirCommand, DirDomain, DirUser};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use halyard_node::config::{META_GROUP, RaftConfig};
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

#[derive(Debug, Args, Clone)]
pub struct BenchAccessArgs {
    /// Hold this many idle authenticated sessions on one node and report memory per session.
    #[arg(long)]
    pub idle: Option<usize>,
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 10240)]
    pub size: usize,
    #[arg(long, default_value_t = 7900)]
    pub base_port: u16,
    /// Fill a mailbox with this many messages and time SORT, THREAD and SEARCH TEXT on it.
    #[arg(long)]
    pub sort: Option<usize>,
    /// Runs of each command in the --sort benchmark.
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Throughput run: this many busy threads in this process besides the clients (CPU
    /// starvation, as the Jepsen `cpu-hog` nemesis).
    #[arg(long, default_value_t = 0)]
    pub hogs: usize,
}

/// What the nodes' logs say about their leases: (times a master stopped holding its
/// group's address because its lease ran out, times a node began holding one).
fn lease_events(dir: &std::path::Path) -> (usize, usize) {
    let (mut lost, mut taken) = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("node-") && name.ends_with(".log")) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            if line.contains("stopped holding the group's address")
                && line.contains("lease expired")
            {
                lost += 1;
            }
            if line.contains("holding the group's address") && !line.contains("stopped") {
                taken += 1;
            }
        }
    }
    (lost, taken)
}

const IMAP_PORT: u16 = 7943;

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// Raises this process's open-file limit to `want` if allowed; returns the limit in force.
fn raise_fd_limit(want: u64) -> Result<u64> {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={want}:{want}")])
        .stderr(std::process::Stdio::null())
        .status()
        .context("prlimit")?;
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--raw",
            "--noheadings",
            "-o",
            "SOFT",
        ])
        .output()
        .context("prlimit")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| anyhow!("cannot read the open-file limit"))
}

struct Client {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    n: u64,
}

impl Client {
    async fn connect(port: u16, source: Option<std::net::Ipv4Addr>) -> Result<Client> {
        let s = match source {
            Some(ip) => {
                let sock = TcpSocket::new_v4()?;
                sock.bind((ip, 0).into())?;
                sock.connect(([127, 0, 0, 1], port).into()).await?
            }
            None => TcpStream::connect(("127.0.0.1", port)).await?,
        };
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Client {
            rd: BufReader::with_capacity(1024, r),
            wr: w,
            n: 0,
        };
        let mut g = String::new();
        c.rd.read_line(&mut g).await?;
        if !g.starts_with("* OK") {
            bail!("greeting {g:?}");
        }
        Ok(c)
    }

    /// Sends a command (with an optional literal) and reads up to its tagged answer.
    async fn cmd(&mut self, text: &str, literal: Option<&[u8]>) -> Result<String> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        match literal {
            None => {
                self.wr
                    .write_all(format!("{tag} {text}\r\n").as_bytes())
                    .await?
            }
            Some(l) => {
                let mut b = format!("{tag} {text} {{{}+}}\r\n", l.len()).into_bytes();
                b.extend_from_slice(l);
                b.extend_from_slice(b"\r\n");
                self.wr.write_all(&b).await?;
            }
        }
        let mut line = String::new();
        loop {
            line.clear();
            if self.rd.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            // Skip literal data in responses.
            if let Some(n) = line
                .trim_end()
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut skip = vec![0u8; n];
                self.rd.read_exact(&mut skip).await?;
                continue;
            }
            if line.starts_with(&format!("{tag} ")) {
                if !line.starts_with(&format!("{tag} OK")) {
                    bail!("{text}: {line}");
                }
                return Ok(line);
            }
        }
    }
}

async fn setup(c: &LocalCluster) -> Result<()> {
    let admin = c.admin(1, Duration::from_secs(30)).await?;
    let d = DirDomain {
        name: "bench.test".into(),
        ..Default::default()
    };
    admin
        .propose_to_leader(META_GROUP, &Command::Directory(DirCommand::AddDomain(d)))
        .await?;
    let u = DirUser::new(
        "bench@bench.test",
        "bench",
        hash_password("bench-pw").map_err(anyhow::Error::msg)?,
    );
    admin
        .propose_to_leader(META_GROUP, &Command::Directory(DirCommand::AddUser(u)))
        .await?;
    Ok(())
}

fn spec(args: &BenchAccessArgs, nodes: u64) -> ClusterSpec {
    ClusterSpec {
        mta: Default::default(),
        nodes,
        base_port: args.base_port,
        groups: vec!["rg1".into()],
        plaintext: true,
        raft: RaftConfig {
            snapshot_every: 1_000_000,
            ..RaftConfig::default()
        },
        directory: Default::default(),
        access: halyard_access::AccessConfig {
            imap_listen: Some(format!("127.0.0.1:{IMAP_PORT}")),
            max_connections: 1_000_000,
            max_connections_per_ip: 1_000_000,
            ..Default::default()
        },
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(args: BenchAccessArgs) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("halyard-bench-access-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let binary = crate::halyard_binary()?;
    let result = match (args.idle, args.sort) {
        (Some(n), _) => idle(&args, n, &binary, &tmp).await,
        (None, Some(n)) => sort(&args, n, &binary, &tmp).await,
        (None, None) => throughput(&args, &binary, &tmp).await,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn idle(
    args: &BenchAccessArgs,
    n: usize,
    binary: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<()> {
    let limit = raise_fd_limit(n as u64 + 1_000)?;
    // The node and this client each hold one descriptor per session.
    let n = if (n as u64) + 500 > limit {
        let capped = limit.saturating_sub(500) as usize;
        println!(
            "note: open-file limit is {limit} here and cannot be raised; measuring {capped} sessions and projecting"
        );
        capped
    } else {
        n
    };
    let mut c = LocalCluster::new(binary, tmp, &spec(args, 1))?;
    c.start_all()?;
    c.wait_leader("rg1", None, Duration::from_secs(30)).await?;
    setup(&c).await?;
    let pid = c.pid(1).ok_or_else(|| anyhow!("node not running"))?;
    // One login first so the INBOX exists and the verified-login cache is warm.
    let mut first = Client::connect(IMAP_PORT, None).await?;
    first.cmd("LOGIN bench bench-pw", None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = rss_kib(pid)?;
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let mut c = Client::connect(IMAP_PORT, Some(src)).await?;
            c.cmd("LOGIN bench bench-pw", None).await?;
            drop(permit);
            Ok::<_, anyhow::Error>(c)
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut last_err = String::new();
    for t in tasks {
        match t.await? {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                last_err = format!("{e:#}");
            }
        }
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    // Every session still answers.
    let mut alive = 0;
    let step = (held.len() / 1000).max(1);
    for c in held.iter_mut().step_by(step) {
        if c.cmd("NOOP", None).await.is_ok() {
            alive += 1;
        }
    }
    let per = (after.saturating_sub(base)) as f64 * 1024.0 / held.len().max(1) as f64;
    println!(
        "idle IMAP sessions on one node ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>14} {:>16} {:>10}",
        "sessions", "failed", "rss before", "rss after", "per session", "150k projected", "login/s"
    );
    println!(
        "{:>10} {:>8} {:>9} MiB {:>9} MiB {:>10.1} KiB {:>12.2} GiB {:>10.0}",
        held.len(),
        failed,
        base / 1024,
        after / 1024,
        per / 1024.0,
        (base as f64 * 1024.0 + per * 150_000.0) / (1u64 << 30) as f64,
        held.len() as f64 / setup_secs
    );
    println!("sampled NOOPs answered: {alive}");
    if failed > 0 {
        println!("last error: {last_err}");
    }
    drop(held);
    Ok(())
}

/// Message `i` of the --sort mailbox: 400 topics, replies chained by References, 97
/// senders, dates over a year in several zones, one rare word per 1,000 messages.
fn sort_message(i: usize) -> Vec<u8> {
    let topic = i % 400;
    let reply = if i >= 400 { "Re: " } else { "" };
    let refs = if i >= 400 {
        format!("References: <m{}@bench.test>\r\n", i - 400)
    } else {
        String::new()
    };
    let zone = ["+0000", "-0500", "+0900", "+0130"][i % 4];
    format!(
        "From: \"Sender {s}\" <sender{s}@bench.test>\r\nTo: bench@bench.test\r\n\
         Subject: {reply}Topic number {topic}\r\nDate: {day:02} {month} 2025 {h:02}:{m:02}:00 {zone}\r\n\
         Message-ID: <m{i}@bench.test>\r\n{refs}\r\n\
         Body of message {i}, about topic {topic}; word{w} appears here.\r\n",
        s = i % 97,
        day = 1 + i % 28,
        month = ["Jan", "Mar", "May", "Jul", "Sep", "Nov"][i % 6],
        h = i % 24,
        m = i % 60,
        w = i % 1000,
    )
    .into_bytes()
}

async fn sort(
    args: &BenchAccessArgs,
    n: usize,
    binary: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<()> {
    let mut c = LocalCluster::new(binary, tmp, &spec(args, args.nodes))?;
    c.start_all()?;
    let leader = c.wait_leader("rg1", None, Duration::from_secs(30)).await?;
    c.wait_leader(META_GROUP, None, Duration::from_secs(30))
        .await?;
    setup(&c).await?;
    let port = IMAP_PORT + 10 * (leader as u16 - 1);
    // Filled by several clients at once (APPENDs commit in shared batches).
    let per = n.div_ceil(args.clients.max(1));
    let mut fills = Vec::new();
    for k in 0..args.clients.max(1) {
        fills.push(tokio::spawn(async move {
            let mut cl = Client::connect(port, None).await?;
            cl.cmd("LOGIN bench bench-pw", None).await?;
            for i in (k * per)..((k + 1) * per).min(n) {
                cl.cmd("APPEND INBOX", Some(&sort_message(i))).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for f in fills {
        f.await??;
    }
    let mut cl = Client::connect(port, None).await?;
    cl.cmd("LOGIN bench bench-pw", None).await?;
    let mut tries = 0;
    while let Err(e) = cl.cmd("SELECT INBOX", None).await {
        tries += 1;
        if tries >= 10 {
            return Err(e.context("SELECT INBOX, 10 tries"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let commands = [
        "SORT (ARRIVAL) UTF-8 ALL",
        "SORT (DATE) UTF-8 ALL",
        "SORT (SUBJECT) UTF-8 ALL",
        "SORT (FROM) UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
        "SEARCH TEXT word123",
    ];
    println!(
        "IMAP on the master of a {}-node cluster, a mailbox of {n} messages, {} runs each",
        args.nodes, args.repeat
    );
    println!("{:<30} {:>10} {:>10}", "command", "p50", "p99");
    for text in commands {
        let mut lat = Vec::new();
        for _ in 0..args.repeat {
            let t = Instant::now();
            cl.cmd(text, None).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "{:<30} {:>10.2?} {:>10.2?}",
            text,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
    Ok(())
}

async fn throughput(
    args: &BenchAccessArgs,
    binary: &std::path::Path,
    tmp: &std::path::Path,
) -> Result<()> {
    let mut c = LocalCluster::new(binary, tmp, &spec(args, args.nodes))?;
    c.start_all()?;
    let leader = c.wait_leader("rg1", None, Duration::from_secs(30)).await?;
    c.wait_leader(META_GROUP, None, Duration::from_secs(30))
        .await?;
    setup(&c).await?;
    let port = IMAP_PORT + 10 * (leader as u16 - 1);
    let body: Arc<Vec<u8>> = Arc::new({
        let mut v = b"From: bench@bench.test\r\nSubject: bench\r\n\r\n".to_vec();
        while v.len() < args.size {
            v.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789\r\n");
        }
        v.truncate(args.size);
        v
    });
    let (lost_before, taken_before) = lease_events(&c.dir);
    let hogging = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hogs: Vec<_> = (0..args.hogs)
        .map(|_| {
            let on = hogging.clone();
            std::thread::spawn(move || {
                while on.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                }
            })
        })
        .collect();
    let mut rows = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for phase in ["APPEND", "FETCH BODY[]"] {
        let stop = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut cl = Client::connect(port, None).await.context("connect")?;
                cl.cmd("LOGIN bench bench-pw", None)
                    .await
                    .context("login")?;
                let mut lat = Vec::new();
                if phase == "APPEND" {
                    while Instant::now() < stop {
                        let t = Instant::now();
                        cl.cmd("APPEND INBOX", Some(&body)).await?;
                        lat.push(t.elapsed());
                    }
                } else {
                    // SELECT is a linearizable read: right after the APPEND phase the
                    // followers may still be catching up and the leader unable to confirm
                    // its leadership in time (NO [UNAVAILABLE]); a client retries, as a
                    // mail client would.
                    let mut tries = 0;
                    while let Err(e) = cl.cmd("SELECT INBOX", None).await {
                        tries += 1;
                        if tries >= 10 {
                            return Err(e.context("SELECT INBOX, 10 tries"));
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    let mut i: u64 = 1;
                    while Instant::now() < stop {
                        let t = Instant::now();
                        cl.cmd(
                            &format!("FETCH {} (BODY.PEEK[])", 1 + (i * 7919) % 500),
                            None,
                        )
                        .await?;
                        lat.push(t.elapsed());
                        i += 1;
                    }
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let t0 = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            // A client that fails (its master lost the lease, say) or hangs is reported, not
            // fatal: what the run measures includes that.
            let abort = t.abort_handle();
            let late = tokio::time::Instant::from_std(stop) + Duration::from_secs(30);
            match tokio::time::timeout_at(late, t).await {
                Ok(r) => match r? {
                    Ok(lat) => all.extend(lat),
                    Err(e) => failures.push(format!("{phase} client: {e:#}")),
                },
                Err(_) => {
                    abort.abort();
                    failures.push(format!("{phase} client: no answer 30 s after the phase"));
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        all.sort();
        rows.push((phase, all.len(), secs, pct(&all, 0.5), pct(&all, 0.99)));
    }
    hogging.store(false, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    let (lost, taken) = lease_events(&c.dir);
    println!(
        "IMAP on the master of a {}-node cluster: {} clients, {} B messages, {} s per phase, {} busy threads, runtimes: {}",
        args.nodes,
        args.clients,
        args.size,
        args.seconds,
        args.hogs,
        std::env::var("HALYARD_RUNTIMES").unwrap_or_else(|_| "split".into())
    );
    println!(
        "leases lost (lease expired): {}; addresses taken during the run: {}; failed clients: {}",
        lost - lost_before,
        taken - taken_before,
        failures.len()
    );
    if let Some(first) = failures.first() {
        println!("first client failure: {first}");
    }
    println!(
        "{:<14} {:>9} {:>10} {:>10} {:>10}",
        "operation", "ops", "ops/s", "p50", "p99"
    );
    for (name, ops, secs, p50, p99) in rows {
        println!(
            "{:<14} {:>9} {:>10.0} {:>10.2?} {:>10.2?}",
            name,
            ops,
            ops as f64 / secs,
            p50,
            p99
        );
    }
    Ok(())
}
