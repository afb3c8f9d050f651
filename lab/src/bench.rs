//! `halyard-lab bench` — commit throughput and latency of a local 3-node cluster.
//!
//! Starts `--nodes` real `halyard serve` processes on 127.0.0.1 (mutual TLS unless
//! `--plaintext`), waits for the leader of the `bench` group, then runs `--proposers`
//! concurrent proposers, each appending `--size`-byte messages (IMAP APPEND commands: the body
//! is stored, indexed and replicated like real mail) to the leader in a loop for `--seconds`
//! after a short warm-up. Every measured proposal is acknowledged only after commit on a
//! majority. It prints commits/s, latency percentiles and how many WAL fsyncs each commit
//! cost on the leader and on the followers (group commit shows as fsyncs/commit < 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use halyard_raft_store::{Command, Reply};

use halyard_node::config::RaftConfig;
use halyard_node::local_cluster::{ClusterSpec, LocalCluster};

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[arg(long, default_value_t = 64)]
    pub proposers: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Bytes per proposal (message body size).
    #[arg(long, default_value_t = 10240)]
    pub size: usize,
    #[arg(long, default_value_t = 7800)]
    pub base_port: u16,
    /// Use plaintext gRPC instead of mutual TLS.
    #[arg(long)]
    pub plaintext: bool,
    /// Keep the cluster's directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

fn body(size: usize, proposer: usize, seq: u64) -> Bytes {
    let head = format!("From: bench@example.org\r\nSubject: bench {proposer}-{seq}\r\n\r\n");
    let mut v = head.into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog. 0123456789\r\n";
    while v.len() < size {
        let n = (size - v.len()).min(line.len());
        v.extend_from_slice(&line[..n]);
    }
    v.truncate(size.max(1));
    Bytes::from(v)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.nodes == 0 || args.proposers == 0 || args.seconds == 0 {
        bail!("--nodes, --proposers and --seconds must be > 0");
    }
    let tmp = tempdir_path(&args)?;
    let binary = crate::halyard_binary()?;
    let spec = ClusterSpec {
        mta: Default::default(),
        nodes: args.nodes,
        base_port: args.base_port,
        groups: vec!["bench".into()],
        plaintext: args.plaintext,
        raft: RaftConfig {
            snapshot_every: 1_000_000,
            ..RaftConfig::default()
        },
        directory: Default::default(),
        access: Default::default(),
    };
    let mut cluster = LocalCluster::new(&binary, &tmp, &spec)?;
    cluster.start_all()?;
    let leader_id = cluster
        .wait_leader("bench", None, Duration::from_secs(30))
        .await?;
    let leader = cluster.admin(leader_id, Duration::from_secs(10)).await?;
    let created = leader
        .propose(
            "bench",
            &Command::CreateMailbox {
                user: "bench".into(),
                name: "INBOX".into(),
                uidvalidity: 1,
                partition: "primary".into(),
                special_use: None,
            },
        )
        .await?;
    match created {
        Ok(Reply::Created { .. })
        | Ok(Reply::Error(halyard_raft_store::ApplyError::MailboxExists(_))) => {}
        other => bail!("creating the bench mailbox: {other:?}"),
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..args.proposers {
        let (leader, measuring, stop, size) =
            (leader.clone(), measuring.clone(), stop.clone(), args.size);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let cmd = Command::Append {
                    user: "bench".into(),
                    mailbox: "INBOX".into(),
                    flags: vec![],
                    internal_date_ms: 0,
                    body: body(size, p, seq),
                    meta: None,
                };
                let counted = measuring.load(Ordering::Relaxed);
                let t = Instant::now();
                match leader.propose("bench", &cmd).await {
                    Ok(Ok(Reply::Appended { .. })) => {
                        if counted && measuring.load(Ordering::Relaxed) {
                            lat.push(t.elapsed());
                        }
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let mut before = Vec::new();
    for id in 1..=args.nodes {
        before.push(
            cluster
                .admin(id, Duration::from_secs(5))
                .await?
                .status()
                .await?,
        );
    }
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut after = Vec::new();
    for id in 1..=args.nodes {
        after.push(
            cluster
                .admin(id, Duration::from_secs(5))
                .await?
                .status()
                .await?,
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| anyhow!("proposer: {e}"))?;
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    let commits = lat.len() as f64;
    let per_sec = commits / elapsed.as_secs_f64();

    println!();
    println!(
        "halyard-lab bench: {} nodes, {} proposers, {} B proposals, {} s measured, {}",
        args.nodes,
        args.proposers,
        args.size,
        args.seconds,
        if args.plaintext {
            "plaintext"
        } else {
            "mutual TLS"
        }
    );
    println!();
    println!("| metric | value |");
    println!("|---|---|");
    println!("| commits | {} |", lat.len());
    println!("| commits/s | {per_sec:.0} |");
    println!(
        "| MiB/s committed | {:.1} |",
        per_sec * args.size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "| latency p50 | {:.2} ms |",
        pct(&lat, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "| latency p90 | {:.2} ms |",
        pct(&lat, 0.90).as_secs_f64() * 1e3
    );
    println!(
        "| latency p99 | {:.2} ms |",
        pct(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| latency max | {:.2} ms |",
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("| failed proposals | {errors} |");
    for (b, a) in before.iter().zip(&after) {
        let syncs = a.log_syncs.saturating_sub(b.log_syncs);
        let entries = a.log_entries_synced.saturating_sub(b.log_entries_synced);
        let role = if a.node_id == leader_id {
            "leader"
        } else {
            "follower"
        };
        println!(
            "| node {} ({role}) fsyncs/commit | {:.3} ({syncs} syncs, {:.1} entries/sync) |",
            a.node_id,
            if commits > 0.0 {
                syncs as f64 / commits
            } else {
                0.0
            },
            if syncs > 0 {
                entries as f64 / syncs as f64
            } else {
                0.0
            },
        );
    }
    println!();
    drop(cluster);
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

fn tempdir_path(args: &BenchArgs) -> Result<PathBuf> {
    let p = match &args.keep {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("halyard-bench-{}", std::process::id())),
    };
    if p.exists() {
        std::fs::remove_dir_all(&p)?;
    }
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
