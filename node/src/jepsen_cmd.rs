//! `halyard jepsen run` — one Jepsen-style run on a `halyard cluster up` testbed: a workload
//! through rg1's floating address while a nemesis injects faults, then the checker's verdict.
//! The history (`history.jsonl`) and the verdict (`summary.json`) go to `--out`. Exits non-zero
//! when the history is not valid.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use halyard_jepsen::smtp::{Nemesis, SmtpRun};

use crate::cluster_cmd::{dir_of, load, start_node};

#[derive(Debug, Args)]
pub struct JepsenArgs {
    #[arg(long, default_value = "hy")]
    pub prefix: String,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The workload (only `smtp` so far).
    #[arg(long, default_value = "smtp")]
    pub workload: String,
    #[arg(long, value_enum, default_value = "kill")]
    pub nemesis: NemesisArg,
    /// Seconds of workload.
    #[arg(long, default_value_t = 30)]
    pub time: u64,
    /// Seconds a fault stays on, then off.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Where the history and the verdict go (default: the testbed's state directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NemesisArg {
    None,
    Kill,
    Partition,
    Pause,
    Loss,
}

pub async fn main(args: JepsenArgs) -> Result<()> {
    if args.workload != "smtp" {
        bail!("--workload {}: only smtp exists so far", args.workload);
    }
    let dir = dir_of(&args.prefix, args.dir.as_deref());
    let st = load(&dir)?;
    let address: std::net::Ipv4Addr = st
        .groups
        .first()
        .context("no group")?
        .1
        .split('/')
        .next()
        .unwrap_or("")
        .parse()?;
    let nemesis = match args.nemesis {
        NemesisArg::None => Nemesis::None,
        NemesisArg::Kill => Nemesis::Kill,
        NemesisArg::Partition => Nemesis::Partition,
        NemesisArg::Pause => Nemesis::Pause,
        NemesisArg::Loss => Nemesis::Loss,
    };
    let (st1, st2) = (st.clone(), st.clone());
    let cfg = SmtpRun {
        address,
        recipient: crate::demo::DEMO_ADDRESS.into(),
        login: "demo".into(),
        password: crate::demo::DEMO_PASSWORD.into(),
        clients: args.clients,
        duration: Duration::from_secs(args.time),
        nemesis,
        interval: Duration::from_secs(args.interval.max(1)),
        targets: Box::new(move || crate::chaos_cmd::targets(&st1)),
        restart: Box::new(move |id| {
            if let Some(n) = st2.nodes.iter().find(|n| n.id == id)
                && let Err(e) = start_node(&st2, n)
            {
                eprintln!("restarting node {id}: {e:#}");
            }
        }),
    };
    let ops = tokio::task::spawn_blocking(move || halyard_jepsen::smtp::run(&cfg)).await?;
    let verdict = halyard_jepsen::checker::set(&ops);
    let out = args.out.unwrap_or_else(|| {
        dir.join(format!(
            "jepsen-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ))
    });
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("history.jsonl"),
        halyard_jepsen::history::write(&ops),
    )?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&verdict)?,
    )?;
    let faults = ops.iter().filter(|o| o.f == "nemesis").count() / 4;
    println!(
        "workload smtp, nemesis {:?}, {} s, {} faults: {} — attempted {}, acknowledged {}, read {}, lost {}, duplicated {}, unexpected {}, failed-but-delivered {}, unknown-but-delivered {}; history in {}",
        args.nemesis,
        args.time,
        faults,
        if verdict.valid { "VALID" } else { "INVALID" },
        verdict.attempted,
        verdict.acknowledged,
        verdict.read,
        verdict.lost.len(),
        verdict.duplicated.len(),
        verdict.unexpected.len(),
        verdict.failed_but_delivered.len(),
        verdict.recovered,
        out.display()
    );
    if let Some(e) = &verdict.error {
        bail!("the history could not be judged: {e}");
    }
    if !verdict.valid {
        bail!(
            "anomalies; first excerpt:\n{}",
            halyard_jepsen::history::write(&verdict.excerpt)
        );
    }
    Ok(())
}
