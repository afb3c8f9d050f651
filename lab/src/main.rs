//! NAME
//!     halyard-lab — testbed, fault injection, Jepsen runs and benchmarks for Halyard
//!
//! SYNOPSIS
//!     halyard-lab cluster up|down|status|kill|start|probe|drill --prefix P [...]   (root)
//!     halyard-lab chaos partition|bridge|one-way|loss|delay|clock|strobe|kill|pause|resume|heal --prefix P
//!     halyard-lab jepsen --prefix P run|campaign [...]
//!     halyard-lab bench [--nodes 3] [--proposers 64] [--seconds 20] [--size 10240]
//!     halyard-lab bench-access [--idle N | --nodes 3 --clients 16 --seconds 10 --size 10240]
//!     halyard-lab bench-smtp --target NAME=HOST:PORT --rcpt NAME=ADDR [...]
//!
//! DESCRIPTION
//!     Runs `halyard` processes (the one next to this binary unless `--binary` says
//!     otherwise); never part of a production node.
//!
//! DIAGNOSTICS
//!     Errors are one line on stderr, `halyard-lab: error: ...`, and the exit status is 1.

use anyhow::Result;
use clap::{Parser, Subcommand};
use halyard_lab::{bench, bench_access, bench_smtp, chaos_cmd, cluster_cmd, jepsen_cmd};

#[derive(Debug, Parser)]
#[command(
    name = "halyard-lab",
    version,
    about = "Halyard's testbed, nemeses, Jepsen runner and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Internal: the packet delayer `halyard-lab chaos delay` runs in a node's namespace.
    #[command(hide = true)]
    ChaosDelayd(chaos_cmd::DelaydArgs),
    /// Internal: the clock strober `halyard-lab chaos strobe` runs.
    #[command(hide = true)]
    ChaosStrobed(chaos_cmd::StrobedArgs),
    /// Internal: the busy threads `halyard-lab chaos hog` runs in a node's namespace.
    #[command(hide = true)]
    ChaosHogd(chaos_cmd::HogdArgs),
    /// One fault on a running `halyard-lab cluster up` testbed: partition, bridge, one-way,
    /// loss, delay, clock, strobe, kill, pause, resume; `heal` undoes them.
    Chaos(chaos_cmd::ChaosArgs),
    /// A Jepsen-style run on a `halyard-lab cluster up` testbed: workload + nemesis + checker.
    Jepsen(jepsen_cmd::JepsenArgs),
    /// A local cluster in network namespaces (root): up, down, status, kill, start, probe.
    Cluster(cluster_cmd::ClusterArgs),
    /// Measure commit throughput and latency of a local cluster.
    Bench(bench::BenchArgs),
    /// Measure IMAP: idle sessions' memory (--idle N) or APPEND/FETCH throughput.
    BenchAccess(bench_access::BenchAccessArgs),
    /// Measure SMTP acceptance (messages/s, time to 250) of one or more servers side by side.
    BenchSmtp(bench_smtp::BenchSmtpArgs),
}

fn main() {
    let cli = Cli::parse();
    // Chaos helpers: no runtime, and nothing to log but their summary.
    let helper = match &cli.cmd {
        Cmd::ChaosDelayd(a) => Some(chaos_cmd::delayd(a)),
        Cmd::ChaosStrobed(a) => Some(chaos_cmd::strobed(a)),
        Cmd::ChaosHogd(a) => Some(chaos_cmd::hogd(a)),
        _ => None,
    };
    if let Some(r) = helper {
        if let Err(e) = r {
            eprintln!("halyard-lab: error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halyard-lab: error: starting runtime: {e}");
            std::process::exit(1);
        }
    };
    let result: Result<()> = rt.block_on(async move {
        match cli.cmd {
            Cmd::ChaosDelayd(_) | Cmd::ChaosStrobed(_) | Cmd::ChaosHogd(_) => Ok(()),
            Cmd::Cluster(args) => cluster_cmd::main(args).await,
            Cmd::Chaos(args) => chaos_cmd::main(args).await,
            Cmd::Jepsen(args) => jepsen_cmd::main(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::BenchAccess(args) => bench_access::run(args).await,
            Cmd::BenchSmtp(args) => bench_smtp::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("halyard-lab: error: {e:#}");
        std::process::exit(1);
    }
}
