//! Directory lookup benchmark: lookups/s and latency percentiles for
//!
//! - LDAP resolve answered from the cache (hits),
//! - LDAP resolve that goes to a real `slapd` (misses: caching off, so each resolve is a
//!   domain search plus an address search, as a cold cache does),
//! - LDAP authentication (a bind as the user, never cached),
//! - the embedded directory's resolve (a read of the local meta-group replica) and its
//!   authentication: Argon2id for a first login (or a wrong password), the verified-login
//!   cache for a repeat login.
//!
//! Run from the repository root (the debug profile with optimised dependencies, as the tests):
//!
//! ```sh
//! cargo run --example lookup_bench -- [--seconds 5] [--concurrency 16]
//! ```
//!
//! It prints one table; numbers are for this machine and this run only (compare rows, not
//! runs). slapd must be installed (`scripts/deps.sh --test`).

#[path = "../tests/support/slapd.rs"]
mod slapd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_directory::Directory;
use halyard_directory::embedded::{EmbeddedDirectory, hash_password};
use halyard_directory::ldap::LdapDirectory;
use halyard_raft_store::directory::{DirCommand, DirDomain, DirUser};
use halyard_raft_store::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use halyard_raft_store::{Command, StateMachineStore, TypeConfig};

type Op = Arc<dyn Fn(usize) -> futures_op::BoxFut + Send + Sync>;

mod futures_op {
    pub type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
}

struct Row {
    name: &'static str,
    ops: usize,
    errors: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Runs `op` from `concurrency` tasks for `secs` seconds (each task also stops after
/// 1,000,000 operations); collects every latency.
async fn run(name: &'static str, op: Op, concurrency: usize, secs: f64) -> Row {
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = t;
            while Instant::now() < stop_at && lat.len() < 1_000_000 {
                let t0 = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                lat.push(t0.elapsed());
                i += concurrency;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Row {
        name,
        ops: all.len(),
        errors,
        secs,
        p50: pct(0.50),
        p99: pct(0.99),
        max: *all.last().unwrap(),
    }
}

fn embedded() -> (tempfile::TempDir, StateMachineStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open("meta", dir.path()).unwrap();
    let mut cmds = vec![DirCommand::AddDomain(DirDomain {
        name: "example.org".into(),
        default_quota_bytes: Some(1 << 30),
        ..Default::default()
    })];
    let hash = hash_password("alice-secret").unwrap();
    for i in 0..1000 {
        cmds.push(DirCommand::AddUser(DirUser::new(
            &format!("user{i}@example.org"),
            &format!("user{i}"),
            hash.clone(),
        )));
    }
    let entries: Vec<Entry<TypeConfig>> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
            payload: EntryPayload::Normal(Command::Directory(c)),
        })
        .collect();
    sm.apply_entries(entries).unwrap();
    (dir, sm)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut seconds = 5.0;
    let mut concurrency = 16;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--concurrency" => {
                concurrency = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--concurrency N")
            }
            other => panic!("unknown argument {other:?} (--seconds N, --concurrency N)"),
        }
    }

    let server = slapd::Slapd::start();
    let mut hits_cfg = server.config();
    hits_cfg.max_connections = 8;
    let mut miss_cfg = hits_cfg.clone();
    miss_cfg.cache_ttl_secs = 0;
    miss_cfg.negative_ttl_secs = 0;
    let cached = Arc::new(LdapDirectory::new(hits_cfg).unwrap());
    let uncached = Arc::new(LdapDirectory::new(miss_cfg).unwrap());
    const ADDRS: [&str; 4] = [
        "alice@example.org",
        "a.smith@example.org",
        "bob@example.com",
        "nobody@example.org",
    ];
    for a in ADDRS {
        cached.resolve(a).await.unwrap();
    }
    let (_dir, sm) = embedded();
    let emb = Arc::new(EmbeddedDirectory::new(sm.shared()));

    let mut rows = Vec::new();
    let d = cached.clone();
    rows.push(
        run(
            "ldap resolve, cache hit",
            Arc::new(move |i| {
                let d = d.clone();
                Box::pin(async move { d.resolve(ADDRS[i % 4]).await.is_ok() })
            }),
            concurrency,
            seconds,
        )
        .await,
    );
    let d = uncached.clone();
    rows.push(
        run(
            "ldap resolve, miss (slapd)",
            Arc::new(move |i| {
                let d = d.clone();
                Box::pin(async move { d.resolve(ADDRS[i % 4]).await.is_ok() })
            }),
            concurrency,
            seconds,
        )
        .await,
    );
    let d = uncached.clone();
    rows.push(
        run(
            "ldap authenticate (bind)",
            Arc::new(move |_| {
                let d = d.clone();
                Box::pin(async move {
                    matches!(d.authenticate("alice", "alice-secret").await, Ok(Some(_)))
                })
            }),
            concurrency,
            seconds,
        )
        .await,
    );
    let d = emb.clone();
    rows.push(
        run(
            "embedded resolve",
            Arc::new(move |i| {
                let d = d.clone();
                Box::pin(async move {
                    d.resolve(&format!("user{}@example.org", i % 1000))
                        .await
                        .is_ok()
                })
            }),
            concurrency,
            seconds,
        )
        .await,
    );
    let d = emb.clone();
    rows.push(
        run(
            "embedded authenticate, argon2id",
            // A wrong password: never cached, so every attempt runs Argon2id (as a first
            // login or a password-guessing client does).
            Arc::new(move |i| {
                let d = d.clone();
                Box::pin(async move {
                    matches!(
                        d.authenticate(&format!("user{}", i % 1000), "wrong").await,
                        Ok(None)
                    )
                })
            }),
            concurrency,
            seconds,
        )
        .await,
    );
    let d = emb.clone();
    for i in 0..16 {
        assert!(matches!(
            d.authenticate(&format!("user{i}"), "alice-secret").await,
            Ok(Some(_))
        ));
    }
    rows.push(
        run(
            "embedded authenticate, repeat login",
            Arc::new(move |i| {
                let d = d.clone();
                Box::pin(async move {
                    matches!(
                        d.authenticate(&format!("user{}", i % 16), "alice-secret")
                            .await,
                        Ok(Some(_))
                    )
                })
            }),
            concurrency,
            seconds,
        )
        .await,
    );

    println!(
        "directory lookups: {concurrency} concurrent tasks, {seconds} s per row, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>9} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "operation", "ops", "ops/s", "p50", "p99", "max", "errors"
    );
    for r in &rows {
        println!(
            "{:<34} {:>9} {:>12.0} {:>10.3?} {:>10.3?} {:>10.3?} {:>7}",
            r.name,
            r.ops,
            r.ops as f64 / r.secs,
            r.p50,
            r.p99,
            r.max,
            r.errors
        );
    }
    let (hit, miss) = (&rows[0], &rows[1]);
    println!(
        "cache hit vs miss: {:.0}x the throughput, p99 {:.0}x lower",
        (hit.ops as f64 / hit.secs) / (miss.ops as f64 / miss.secs),
        miss.p99.as_secs_f64() / hit.p99.as_secs_f64().max(1e-9)
    );
}
