//! NAME
//!     halyard — a highly available Internet mail server
//!
//! SYNOPSIS
//!     halyard serve --config node.toml [--print-config]
//!     halyard demo [--data-dir DIR] [--nodes N]
//!     halyard ctl [--node ADDR | --config node.toml] status [--json]
//!     halyard ctl ... members add|promote|remove --group G --id N [--addr HOST:PORT]
//!     halyard ctl ... snapshot --group G
//!     halyard certs --out DIR --nodes 1,2,3
//!     halyard certs --out DIR --users alice@example.org,bob@example.org
//!     halyard certs --out DIR --admin NAME --domains example.org,example.net
//!     halyard-lab bench [--nodes 3] [--proposers 64] [--seconds 20] [--size 10240]
//!     halyard-lab bench-access [--idle N | --nodes 3 --clients 16 --seconds 10 --size 10240]
//!
//! DIAGNOSTICS
//!     Errors are one line on stderr, `halyard: error: ...`, and the exit status is 1.

use std::path::PathBuf;

/// mimalloc instead of glibc's allocator: under SMTP load glibc handed large buffers (log
/// batches, RPC frames) back to the kernel and faulted them in again, zeroed, a tenth of the
/// CPU; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// RocksDB allocates through glibc, not mimalloc: each memtable is a chain of arena blocks of
/// several MiB, above glibc's mmap threshold, so every memtable (one per 64 MiB of log and per
/// state-machine flush) was mapped fresh and faulted in page by page, then unmapped after its
/// flush — about 9 page faults per 10 KB message on a 3-node box. Serving from the heap and
/// keeping up to 256 MiB of freed heap halves that (measured 9–10.7 → 4.4–4.9 per message);
/// the cost is that much memory kept by an idle node after a burst.
fn keep_native_heap() {
    // SAFETY: mallopt only sets allocator parameters (it takes the allocator's own lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

use anyhow::Result;
use clap::{Parser, Subcommand};
use halyard_node::config::NodeConfig;
use halyard_node::{ctl, demo, runtime, runtimes, tls};

#[derive(Debug, Parser)]
#[command(
    name = "halyard",
    version,
    about = "Halyard: a highly available Internet mail server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one node from a configuration file.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Print the effective configuration (defaults filled in) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Run N local nodes on 127.0.0.1 with embedded defaults.
    Demo {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        nodes: u64,
    },
    /// Inspect and operate a running cluster.
    Ctl(ctl::CtlArgs),
    /// Internal: the helper a node starts to remove its floating addresses if it dies.
    #[command(hide = true)]
    FenceGuard,
    /// Generate a cluster CA and node certificates for mutual TLS (--nodes), or a CA and
    /// client certificates for mail users' SASL EXTERNAL (--users).
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated node ids.
        #[arg(long, required_unless_present_any = ["users", "admin"])]
        nodes: Option<String>,
        /// A domain administrator's certificate, signed by the cluster CA already in --out.
        #[arg(long, requires = "domains")]
        admin: Option<String>,
        /// Comma-separated domains the --admin certificate may manage.
        #[arg(long)]
        domains: Option<String>,
        /// Comma-separated mail addresses: a users CA and a client certificate for each.
        #[arg(long)]
        users: Option<String>,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(config: PathBuf, print_config: bool) -> Result<()> {
    let cfg = NodeConfig::load(&config)?;
    if print_config {
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let node = runtimes::on_consensus(async move { runtime::Node::start(&cfg).await }).await?;
    runtime::wait_for_signal().await;
    node.shutdown().await;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::FenceGuard = cli.cmd {
        // No runtime, no logging set-up: a loop over standard input.
        if let Err(e) = halyard_fencing::guard::run_guard() {
            eprintln!("halyard fence-guard: {e}");
            std::process::exit(1);
        }
        return;
    }
    let default_log = match &cli.cmd {
        Cmd::Serve { .. } => "info,openraft=warn",
        // openraft logs peers that stop first as errors while the demo shuts down; RUST_LOG
        // overrides this.
        Cmd::Demo { .. } => "warn,openraft=off",
        _ => "error",
    };
    init_logging(default_log);
    if matches!(cli.cmd, Cmd::Serve { .. } | Cmd::Demo { .. }) {
        keep_native_heap();
    }
    // A serving process has two runtimes (consensus, service: see `runtimes`); the others one.
    // HALYARD_RUNTIMES=single runs everything on one runtime, as before the split: only to
    // measure what the split does (`halyard-lab bench-lease`).
    let split = std::env::var("HALYARD_RUNTIMES").map_or(true, |v| v != "single");
    let serving = matches!(cli.cmd, Cmd::Serve { .. } | Cmd::Demo { .. });
    let (rt, _consensus) = match if serving && split {
        runtimes::build().map(|(service, consensus)| {
            runtimes::install(consensus.handle().clone(), service.handle().clone());
            (service, Some(consensus))
        })
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|rt| (rt, None))
    } {
        Ok(rts) => rts,
        Err(e) => {
            eprintln!("halyard: error: starting runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                config,
                print_config,
            } => serve(config, print_config).await,
            Cmd::Demo { data_dir, nodes } => demo::run(data_dir, nodes).await,
            Cmd::Ctl(args) => ctl::run(args).await,
            Cmd::FenceGuard => Ok(()),
            Cmd::Certs {
                out,
                nodes,
                users,
                admin,
                domains,
            } => {
                if let Some(nodes) = nodes {
                    let ids = ctl::parse_ids(&nodes)?;
                    tls::generate(&out, &ids)?;
                    println!(
                        "wrote cluster CA and certificates for nodes {nodes} and ctl to {}",
                        out.display()
                    );
                }
                if let Some(name) = admin {
                    let list: Vec<String> = domains
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    tls::generate_admin(&out, &name, &list)?;
                    println!(
                        "wrote {}/admin-{name}.pem and .key: a domain administrator of {}",
                        out.display(),
                        list.join(", ")
                    );
                }
                if let Some(users) = users {
                    let list: Vec<String> = users.split(',').map(str::to_string).collect();
                    tls::generate_user_certs(&out, &list)?;
                    println!(
                        "wrote users CA and client certificates for {users} to {}",
                        out.display()
                    );
                }
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("halyard: error: {e:#}");
        std::process::exit(1);
    }
}
