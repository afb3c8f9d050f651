//! `halyard-lab cluster up|down|status|kill|start|probe` — a local cluster in network
//! namespaces (root only), the testbed of the HA tests and of chaos/Jepsen runs.
//!
//! ```text
//!   host ── <P>h 198.18.0.254 ──┐
//!                               │   namespace <P>-br: bridge br0
//!   <P>-n1: eth0 198.18.0.1 ────┤
//!   <P>-n2: eth0 198.18.0.2 ────┤   floating addresses 198.18.0.100 + k (one per group)
//!   <P>-n3: eth0 198.18.0.3 ────┤
//!   <P>-c1: eth0 198.18.0.200 ──┘   (client namespace: probes, partition-free vantage point)
//! ```
//!
//! Each node is one `halyard serve` process inside its namespace, with mutual TLS between
//! nodes, logs and data under the state directory (`/run/halyard/<P>` by default). The host
//! reaches every node and floating address through its leg, so `halyard ctl --config
//! <state>/node-1.toml status` and mail clients work from the host. Addresses come from
//! 198.18.0.0/24 (RFC 2544 benchmarking range) and never leave these namespaces. One cluster
//! per host at a time can have the host leg (they would share the /24).
//!
//! Topologies (`--topology`): `asymmetric` — one group rg1, preferred node 1;
//! `symmetric` — rg1 preferring node 1 and rg2 preferring node 2, both on every data node;
//! `n+1` — groups rg1..rg(N-1), group k preferring node k, and node N the spare that may lead
//! every group (the other primaries vote in a group but never lead it). `--witness` adds one
//! more node that votes in every group but never leads or serves.

use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use halyard_node::config::{
    ClusterConfig, FencingConfig, GroupConfig, NodeConfig, PeerConfig, RaftConfig, TlsConfig,
};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Prefix of every namespace and interface name (at most 8 characters).
    #[arg(long, global = true, default_value = "hy")]
    pub prefix: String,
    /// State directory (default /run/halyard/<prefix>).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    Asymmetric,
    Symmetric,
    #[value(name = "n+1")]
    #[serde(rename = "n+1")]
    NPlusOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillKind {
    Kill,
    Switchover,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create the namespaces, write configurations and start the nodes.
    Up {
        /// Data nodes (a witness, if asked for, comes on top).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, value_enum, default_value_t = Topology::Asymmetric)]
        topology: Topology,
        #[arg(long)]
        witness: bool,
        /// The halyard binary the nodes run (default: `halyard` next to this program).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Wait at most this long for every group to have a holder.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
        /// Refuse IMAP/POP3 logins without TLS (`require_tls_for_login`, the production
        /// setting). Every node always has a mail certificate (`<state>/certs/mail.pem`, for
        /// `mail.cluster.test` and the node and floating addresses, signed by
        /// `certs/mail-ca.pem`), STARTTLS/STLS, and IMAPS (993) and POP3S (995) listeners.
        #[arg(long)]
        require_tls: bool,
    },
    /// Stop the nodes and remove every namespace, interface and the state directory.
    Down {
        /// Keep the state directory (logs, data) for a post-mortem.
        #[arg(long)]
        keep: bool,
    },
    /// Addresses, processes and who holds each group's address.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a node's process (default KILL; STOP/CONT pause and resume it).
    Kill {
        node: u64,
        #[arg(long, default_value = "KILL")]
        signal: String,
    },
    /// (Re)start a node's process.
    Start { node: u64 },
    /// Failover drills on the running cluster, as a benchmark: `count` times kill -9 of
    /// rg1's master (then restart it and let it take the group back), or a graceful `ctl
    /// failover` back and forth; prints p50 / p99 / max of the time to service on the
    /// address, as a client on the host sees it (SMTP banners every 2 ms).
    Drill {
        #[arg(long, value_enum)]
        kind: DrillKind,
        #[arg(long, default_value_t = 50)]
        count: u32,
    },
    /// From the client namespace, ask every `interval_ms` who answers ARP for `address`, for
    /// `secs`; print a summary (JSON) with the holders seen and any instant at which two
    /// answered.
    Probe {
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long)]
        secs: f64,
    },
}

/// What `cluster up` records for the other subcommands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub prefix: String,
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub topology: Topology,
    pub nodes: Vec<NodeState>,
    /// Group name → floating address.
    pub groups: Vec<(String, String)>,
    pub client_ns: String,
    pub bridge_ns: String,
    pub host_leg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub id: u64,
    pub ns: String,
    pub ip: String,
    pub mac: String,
    pub witness: bool,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub const NET: &str = "198.18.0";

fn state_dir(args: &ClusterArgs) -> PathBuf {
    dir_of(&args.prefix, args.dir.as_deref())
}

/// The state directory of the cluster with this prefix.
pub fn dir_of(prefix: &str, dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/run/halyard").join(prefix))
}

fn run(cmd: &[&str]) -> Result<String> {
    let out = Proc::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .with_context(|| format!("running {}", cmd.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ns_exec(ns: &str, cmd: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(cmd);
    run(&v)
}

pub async fn main(args: ClusterArgs) -> Result<()> {
    if args.prefix.is_empty()
        || args.prefix.len() > 8
        || !args.prefix.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        bail!("--prefix: 1-8 letters or digits (interface names are at most 15 characters)");
    }
    let dir = state_dir(&args);
    match args.cmd {
        ClusterCmd::Up {
            nodes,
            topology,
            witness,
            binary,
            wait_secs,
            require_tls,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => crate::halyard_binary()?,
            };
            let st = up(
                &args.prefix,
                &dir,
                nodes,
                topology,
                witness,
                &binary,
                require_tls,
            )?;
            let ok = wait_for_holders(&st, Duration::from_secs(wait_secs)).await;
            print_state(&st).await;
            ok
        }
        ClusterCmd::Down { keep } => down(&args.prefix, &dir, keep),
        ClusterCmd::Status { json } => {
            let st = load(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_state(&st).await;
            }
            Ok(())
        }
        ClusterCmd::Kill { node, signal } => {
            let st = load(&dir)?;
            signal_node(&st, node, &signal)
        }
        ClusterCmd::Start { node } => {
            let st = load(&dir)?;
            let n = st
                .nodes
                .iter()
                .find(|n| n.id == node)
                .with_context(|| format!("no node {node}"))?;
            start_node(&st, n)?;
            println!("node {node} started");
            Ok(())
        }
        ClusterCmd::Drill { kind, count } => {
            let st = load(&dir)?;
            drill(&st, kind, count).await
        }
        ClusterCmd::Probe {
            address,
            interval_ms,
            secs,
        } => {
            let st = load(&dir)?;
            let r = probe(
                &st,
                address.parse().context("--address")?,
                Duration::from_millis(interval_ms),
                Duration::from_secs_f64(secs),
            )?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

pub fn load(dir: &Path) -> Result<ClusterState> {
    let p = dir.join("cluster.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{}: no cluster here (run `halyard-lab cluster up`)",
            p.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// The groups of a topology: (name, address, members, preferred, leaders).
type GroupPlan = (String, String, Vec<u64>, u64, Option<Vec<u64>>);

fn plan(nodes: u64, topology: Topology, witness: Option<u64>) -> Result<Vec<GroupPlan>> {
    let data: Vec<u64> = (1..=nodes).collect();
    let mut all = data.clone();
    all.extend(witness);
    let addr = |k: u64| format!("{NET}.{}/24", 99 + k);
    Ok(match topology {
        Topology::Asymmetric => {
            if nodes < 2 {
                bail!("asymmetric needs at least 2 data nodes");
            }
            vec![("rg1".into(), addr(1), all, 1, None)]
        }
        Topology::Symmetric => {
            if nodes < 2 {
                bail!("symmetric needs at least 2 data nodes");
            }
            vec![
                ("rg1".into(), addr(1), all.clone(), 1, None),
                ("rg2".into(), addr(2), all, 2, None),
            ]
        }
        Topology::NPlusOne => {
            if nodes < 3 {
                bail!("n+1 needs at least 3 data nodes (2 primaries and the spare)");
            }
            let spare = nodes;
            (1..spare)
                .map(|k| {
                    (
                        format!("rg{k}"),
                        addr(k),
                        all.clone(),
                        k,
                        Some(vec![k, spare]),
                    )
                })
                .collect()
        }
    })
}

/// The configuration of testbed node `n`: its groups, mutual TLS between nodes, fast
/// failure detection, IMAP/POP3 (plain and implicit TLS) and SMTP/submission on its address.
fn node_config(
    n: &NodeState,
    dir: &Path,
    certs: &Path,
    peers: &[PeerConfig],
    groups: Vec<GroupConfig>,
    default_group: Option<String>,
    require_tls: bool,
) -> NodeConfig {
    let serves = !n.witness;
    NodeConfig {
        node_id: n.id,
        data_dir: dir.join(format!("node-{}", n.id)),
        default_group,
        cluster: ClusterConfig {
            listen: format!("{}:7700", n.ip),
            advertise: None,
            plaintext: false,
            tls: Some(TlsConfig {
                ca: certs.join("ca.pem"),
                cert: certs.join(format!("node-{}.pem", n.id)),
                key: certs.join(format!("node-{}.key", n.id)),
            }),
            nodes: peers.to_vec(),
        },
        groups,
        // Fast failure detection on a quiet LAN: heartbeats every 50 ms, followers
        // stand for election after 400 ms (their lease) + 250-400 ms of silence.
        raft: RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 400,
            ..RaftConfig::default()
        },
        directory: Default::default(),
        access: halyard_access::AccessConfig {
            imap_listen: serves.then(|| format!("{}:143", n.ip)),
            pop3_listen: serves.then(|| format!("{}:110", n.ip)),
            imaps_listen: serves.then(|| format!("{}:993", n.ip)),
            pop3s_listen: serves.then(|| format!("{}:995", n.ip)),
            tls_cert: Some(certs.join("mail.pem")),
            tls_key: Some(certs.join("mail.key")),
            require_tls_for_login: require_tls,
            ..Default::default()
        },
        mta: halyard_mta::MtaConfig {
            hostname: format!("node{}.cluster.test", n.id),
            smtp_listen: serves.then(|| format!("{}:25", n.ip)),
            submission_listen: serves.then(|| format!("{}:587", n.ip)),
            ..Default::default()
        },
        fencing: FencingConfig {
            interface: Some("eth0".into()),
            announce_count: 3,
            announce_gap_ms: 100,
            failback_after_ms: 3_000,
            ..FencingConfig::default()
        },
    }
}

fn up(
    prefix: &str,
    dir: &Path,
    nodes: u64,
    topology: Topology,
    witness: bool,
    binary: &Path,
    require_tls: bool,
) -> Result<ClusterState> {
    if !(1..=9).contains(&nodes) || (witness && nodes > 8) {
        bail!("--nodes: 1 to 9 nodes in all (addresses .1-.9)");
    }
    if dir.join("cluster.json").exists() {
        bail!(
            "a cluster with prefix {prefix} is already up ({}); `halyard-lab cluster down --prefix {prefix}` first",
            dir.display()
        );
    }
    let witness_id = witness.then_some(nodes + 1);
    let groups = plan(nodes, topology, witness_id)?;
    let total = nodes + u64::from(witness);
    // A half-built testbed is torn down again.
    let built = (|| -> Result<ClusterState> {
        std::fs::create_dir_all(dir)?;
        let bridge_ns = format!("{prefix}-br");
        run(&["ip", "netns", "add", &bridge_ns])?;
        ns_exec(&bridge_ns, &["ip", "link", "set", "lo", "up"])?;
        ns_exec(&bridge_ns, &["ip", "link", "add", "br0", "type", "bridge"])?;
        ns_exec(&bridge_ns, &["ip", "link", "set", "br0", "up"])?;
        let leg = |ns: &str, name: &str, ip: &str| -> Result<String> {
            let a = format!("{name}a");
            let b = format!("{name}b");
            run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            run(&["ip", "link", "set", &b, "netns", &bridge_ns])?;
            ns_exec(
                &bridge_ns,
                &["ip", "link", "set", &b, "master", "br0", "up"],
            )?;
            run(&["ip", "link", "set", &a, "netns", ns])?;
            ns_exec(ns, &["ip", "link", "set", &a, "name", "eth0"])?;
            ns_exec(
                ns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            ns_exec(ns, &["ip", "link", "set", "eth0", "up"])?;
            ns_exec(ns, &["ip", "link", "set", "lo", "up"])?;
            let mac = ns_exec(ns, &["cat", "/sys/class/net/eth0/address"])?;
            Ok(mac.trim().to_string())
        };
        let client_ns = format!("{prefix}-c1");
        run(&["ip", "netns", "add", &client_ns])?;
        leg(&client_ns, &format!("{prefix}c1"), &format!("{NET}.200"))?;
        // The host leg.
        let host_leg = format!("{prefix}h");
        let hb = format!("{prefix}hb");
        run(&[
            "ip", "link", "add", &host_leg, "type", "veth", "peer", "name", &hb,
        ])?;
        run(&["ip", "link", "set", &hb, "netns", &bridge_ns])?;
        ns_exec(
            &bridge_ns,
            &["ip", "link", "set", &hb, "master", "br0", "up"],
        )?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{NET}.254/24"),
            "dev",
            &host_leg,
        ])?;
        run(&["ip", "link", "set", &host_leg, "up"])?;
        let ids: Vec<u64> = (1..=total).collect();
        let certs = dir.join("certs");
        halyard_node::tls::generate(&certs, &ids)?;
        let mut mail_names = vec!["mail.cluster.test".to_string()];
        mail_names.extend(ids.iter().map(|id| format!("{NET}.{id}")));
        mail_names.extend(
            groups
                .iter()
                .map(|g| g.1.split('/').next().unwrap_or("").to_string()),
        );
        halyard_node::tls::generate_mail_server(&certs, &mail_names)?;
        let mut node_states = Vec::new();
        for id in &ids {
            let ns = format!("{prefix}-n{id}");
            run(&["ip", "netns", "add", &ns])?;
            let ip = format!("{NET}.{id}");
            let mac = leg(&ns, &format!("{prefix}n{id}"), &ip)?;
            node_states.push(NodeState {
                id: *id,
                ns,
                ip,
                mac,
                witness: Some(*id) == witness_id,
                config: dir.join(format!("node-{id}.toml")),
                log: dir.join(format!("node-{id}.log")),
            });
        }
        let peers: Vec<PeerConfig> = node_states
            .iter()
            .map(|n| PeerConfig {
                id: n.id,
                addr: format!("{}:7700", n.ip),
                imap: (!n.witness).then(|| format!("{}:143", n.ip)),
                pop3: (!n.witness).then(|| format!("{}:110", n.ip)),
                witness: n.witness,
            })
            .collect();
        for n in &node_states {
            let mine: Vec<GroupConfig> = groups
                .iter()
                .filter(|g| g.2.contains(&n.id))
                .map(|(name, addr, members, preferred, leaders)| GroupConfig {
                    name: name.clone(),
                    members: members.clone(),
                    address: Some(addr.clone()),
                    preferred: Some(*preferred),
                    leaders: leaders.clone(),
                    failback: true,
                })
                .collect();
            let default_group = groups.first().map(|g| g.0.clone());
            let cfg = node_config(n, dir, &certs, &peers, mine, default_group, require_tls);
            std::fs::write(&n.config, toml::to_string(&cfg)?)?;
        }
        let st = ClusterState {
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
            binary: binary.to_path_buf(),
            topology,
            nodes: node_states,
            groups: groups.iter().map(|g| (g.0.clone(), g.1.clone())).collect(),
            client_ns,
            bridge_ns,
            host_leg,
        };
        std::fs::write(dir.join("cluster.json"), serde_json::to_string_pretty(&st)?)?;
        for n in &st.nodes {
            start_node(&st, n)?;
        }
        Ok(st)
    })();
    match built {
        Ok(st) => Ok(st),
        Err(e) => {
            let _ = down(prefix, dir, true);
            Err(e)
        }
    }
}

pub fn start_node(st: &ClusterState, n: &NodeState) -> Result<()> {
    use std::os::unix::process::CommandExt;
    wait_data_dir_free(st, n.id, Duration::from_secs(15));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&n.log)?;
    let mut cmd = Proc::new("ip");
    cmd.args(["netns", "exec", &n.ns])
        .arg(&st.binary)
        .args(["serve", "--config"])
        .arg(&n.config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=off".into()),
        )
        .process_group(0);
    // Under libfaketime when it is installed, so `halyard-lab chaos clock|strobe` can move this
    // node's wall clock (monotonic time stays true; see halyard_chaos::clock).
    let clock = halyard_chaos::clock::node_env(&st.dir, n.id).map_err(|e| anyhow::anyhow!(e))?;
    cmd.envs(clock.into_iter().flatten());
    let child = cmd.spawn().context("starting a node")?;
    // `ip netns exec` execs the command: this pid is the node's.
    std::fs::write(pid_file(st, n.id), child.id().to_string())?;
    Ok(())
}

/// Waits (at most `limit`) until no process holds node `id`'s data directory. A node killed
/// a moment ago may still be exiting — a thread finishing a write keeps its files, and so
/// the directory's lock, open — after its pid has stopped looking like a halyard process
/// (`pid_of`), and a node started then would be refused the directory.
fn wait_data_dir_free(st: &ClusterState, id: u64, limit: Duration) {
    let lock = st.dir.join(format!("node-{id}")).join("LOCK");
    let t = Instant::now();
    while t.elapsed() < limit {
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock) else {
            return; // never started
        };
        if f.try_lock().is_ok() {
            let _ = f.unlock();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_file(st: &ClusterState, id: u64) -> PathBuf {
    st.dir.join(format!("node-{id}.pid"))
}

pub fn pid_of(st: &ClusterState, id: u64) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(st, id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Only if it is still a halyard process (the pid may have been reused).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("serve")
        .then_some(pid)
}

fn signal_node(st: &ClusterState, id: u64, signal: &str) -> Result<()> {
    let sig = match signal.trim_start_matches("SIG") {
        "KILL" | "9" => libc::SIGKILL,
        "TERM" | "15" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        other => bail!("signal {other}: use KILL, TERM, STOP or CONT"),
    };
    let pid = pid_of(st, id).with_context(|| format!("node {id} is not running"))?;
    // SAFETY: kill(2) on a pid we started.
    if unsafe { libc::kill(pid, sig) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn down(prefix: &str, dir: &Path, keep: bool) -> Result<()> {
    if let Ok(st) = load(dir) {
        let pids: Vec<i32> = st.nodes.iter().filter_map(|n| pid_of(&st, n.id)).collect();
        for p in &pids {
            // SAFETY: signals to processes this cluster started.
            unsafe {
                libc::kill(*p, libc::SIGCONT);
                libc::kill(*p, libc::SIGTERM);
            }
        }
        let t = Instant::now();
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in &pids {
            // SAFETY: as above.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
    }
    // Whatever carries the prefix goes, even without a state file (an aborted `up`).
    let list = run(&["ip", "netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&format!("{prefix}-")) {
            // Processes left in the namespace (killed above; this catches strays).
            if let Ok(pids) = run(&["ip", "netns", "pids", name]) {
                for p in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: processes inside our own test namespace.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    let _ = run(&["ip", "link", "del", &format!("{prefix}h")]);
    if !keep {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        let _ = std::fs::remove_file(dir.join("cluster.json"));
    }
    Ok(())
}

pub async fn admin_of(st: &ClusterState, id: u64) -> Result<halyard_api::Admin> {
    let n = st
        .nodes
        .iter()
        .find(|n| n.id == id)
        .context("no such node")?;
    let cfg = NodeConfig::load(&n.config)?;
    let tls = halyard_node::tls::load(cfg.cluster.tls.as_ref().context("tls")?)?;
    halyard_api::Admin::connect(&format!("{}:7700", n.ip), Some(tls)).await
}

/// Waits until every group has a holder, then creates the demo user; false on timeout.
async fn wait_for_holders(st: &ClusterState, wait: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        let mut missing = Vec::new();
        for (g, _) in &st.groups {
            let mut held = false;
            for n in &st.nodes {
                if let Ok(a) = admin_of(st, n.id).await
                    && let Ok(s) = a.status().await
                    && s.fencing.get(g).is_some_and(|f| f.holding.is_some())
                {
                    held = true;
                    break;
                }
            }
            if !held {
                missing.push(g.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        if t.elapsed() > wait {
            bail!(
                "no holder for {missing:?} after {wait:?}; logs in {}",
                st.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = admin_of(st, 1).await?;
    halyard_node::demo::ensure_demo_user_via(&a).await?;
    Ok(())
}

async fn print_state(st: &ClusterState) {
    println!(
        "cluster {} ({:?}), state in {}",
        st.prefix,
        st.topology,
        st.dir.display()
    );
    for n in &st.nodes {
        let pid = pid_of(st, n.id).map_or("stopped".into(), |p| format!("pid {p}"));
        println!(
            "  node {}{}: {} (namespace {}, {}), log {}",
            n.id,
            if n.witness { " (witness)" } else { "" },
            n.ip,
            n.ns,
            pid,
            n.log.display()
        );
    }
    for (g, a) in &st.groups {
        let mut holder = "-".to_string();
        for n in &st.nodes {
            if let Ok(Ok(adm)) =
                tokio::time::timeout(Duration::from_secs(1), admin_of(st, n.id)).await
                && let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), adm.status()).await
                && let Some(t) = s.fencing.get(g).and_then(|f| f.holding)
            {
                holder = format!("node {} (term {})", t.node, t.term);
            }
        }
        println!("  group {g}: address {a}, held by {holder}");
    }
    println!(
        "  try: swaks --server {NET}.100 --to {} ; halyard ctl --config {} status",
        halyard_node::demo::DEMO_ADDRESS,
        st.nodes[0].config.display()
    );
}

/// What the ARP probe saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub rounds: u64,
    /// Rounds in which two or more MACs answered.
    pub overlaps: u64,
    /// Rounds with no answer.
    pub silent: u64,
    /// (ms since start, node id or MAC) each time the answering holder changed.
    pub changes: Vec<(f64, String)>,
    /// Longest stretch without an answer, in ms.
    pub longest_silence_ms: f64,
}

/// Runs the ARP probe from the client namespace (in a thread of its own: a namespace is a
/// per-thread property).
pub fn probe(
    st: &ClusterState,
    address: std::net::Ipv4Addr,
    interval: Duration,
    total: Duration,
) -> Result<ProbeReport> {
    let ns = st.client_ns.clone();
    let macs: Vec<(String, u64)> = st.nodes.iter().map(|n| (n.mac.clone(), n.id)).collect();
    std::thread::spawn(move || -> Result<ProbeReport> {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
            .with_context(|| format!("namespace {ns}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a namespace file we opened.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {ns}: {}", std::io::Error::last_os_error());
        }
        let sock = halyard_fencing::arp::ArpSocket::open("eth0")?;
        let me: std::net::Ipv4Addr = format!("{NET}.200").parse()?;
        let name = |m: &halyard_fencing::arp::Mac| {
            let s = m.to_string();
            macs.iter()
                .find(|(x, _)| *x == s)
                .map_or(s, |(_, id)| format!("node {id}"))
        };
        let start = Instant::now();
        let mut r = ProbeReport {
            rounds: 0,
            overlaps: 0,
            silent: 0,
            changes: Vec::new(),
            longest_silence_ms: 0.0,
        };
        let mut last: Option<String> = None;
        let mut silent_since: Option<Instant> = None;
        while start.elapsed() < total && r.rounds < 1_000_000 {
            let round = Instant::now();
            sock.ask(me, address)?;
            let seen = sock.replies(address, round + interval)?;
            r.rounds += 1;
            if seen.len() > 1 {
                r.overlaps += 1;
                r.changes.push((
                    start.elapsed().as_secs_f64() * 1e3,
                    format!(
                        "OVERLAP {}",
                        seen.iter().map(&name).collect::<Vec<_>>().join(" + ")
                    ),
                ));
            }
            match seen.first() {
                None => {
                    r.silent += 1;
                    silent_since.get_or_insert(round);
                }
                Some(m) => {
                    if let Some(s) = silent_since.take() {
                        r.longest_silence_ms =
                            r.longest_silence_ms.max(s.elapsed().as_secs_f64() * 1e3);
                    }
                    let who = name(m);
                    if last.as_ref() != Some(&who) {
                        r.changes
                            .push((start.elapsed().as_secs_f64() * 1e3, who.clone()));
                        last = Some(who);
                    }
                }
            }
        }
        if let Some(s) = silent_since {
            r.longest_silence_ms = r.longest_silence_ms.max(s.elapsed().as_secs_f64() * 1e3);
        }
        Ok(r)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// The node whose SMTP banner answers on `ip`:25 within `wait`.
fn banner_of(ip: std::net::Ipv4Addr, wait: Duration) -> Option<u64> {
    use std::io::Read;
    let addr = std::net::SocketAddr::from((ip, 25));
    let mut s = std::net::TcpStream::connect_timeout(&addr, wait).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).ok()?;
    let t = String::from_utf8_lossy(&buf[..n]);
    t.strip_prefix("220 node")?.split('.').next()?.parse().ok()
}

/// Polls banners every 2 ms until a node other than `old` answers (bounded by `max`):
/// (that node, when it first answered, when `old` last answered).
fn watch_for_new(
    ip: std::net::Ipv4Addr,
    old: u64,
    start: Instant,
    max: Duration,
) -> Option<(u64, Duration, Option<Duration>)> {
    let mut last_old = None;
    while start.elapsed() < max {
        // A short connect timeout: a SYN sent to the old master's MAC just before the
        // address moved is lost, and waiting long for it would be counted as downtime.
        match banner_of(ip, Duration::from_millis(20)) {
            Some(n) if n != old => return Some((n, start.elapsed(), last_old)),
            Some(_) => last_old = Some(start.elapsed()),
            None => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn drill(st: &ClusterState, kind: DrillKind, count: u32) -> Result<()> {
    let (group, cidr) = st.groups.first().context("no group")?.clone();
    let ip: std::net::Ipv4Addr = cidr.split('/').next().unwrap_or("").parse()?;
    let preferred = 1u64;
    let mut times = Vec::new();
    let mut reported = Vec::new();
    for i in 0..count {
        // Start every drill from a settled cluster: the preferred master holding the group.
        let t = Instant::now();
        let holder = loop {
            let b = tokio::task::spawn_blocking(move || banner_of(ip, Duration::from_millis(300)))
                .await?;
            if let Some(h) = b
                && (h == preferred || kind == DrillKind::Switchover)
            {
                break h;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("drill {i}: the group did not settle on node {preferred} (last: {b:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match kind {
            DrillKind::Kill => {
                signal_node(st, holder, "KILL")?;
                let start = Instant::now();
                let r = tokio::task::spawn_blocking(move || {
                    watch_for_new(ip, holder, start, Duration::from_secs(20))
                })
                .await?
                .with_context(|| format!("drill {i}: nobody took over"))?;
                times.push(r.1.as_secs_f64() * 1e3);
                eprintln!(
                    "kill drill {i}: node {holder} -> node {} in {:.0} ms",
                    r.0,
                    r.1.as_secs_f64() * 1e3
                );
                let n = st.nodes.iter().find(|n| n.id == holder).context("node")?;
                start_node(st, n)?;
            }
            DrillKind::Switchover => {
                // Operators do not switch over back to back: a master elected moments ago is
                // still inside the voters' lease, and the next election would wait for it.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let to = st
                    .nodes
                    .iter()
                    .find(|n| n.id != holder && !n.witness)
                    .context("no other data node")?
                    .id;
                let admin = admin_of(st, holder).await?;
                let start = Instant::now();
                let watcher = tokio::task::spawn_blocking(move || {
                    watch_for_new(ip, holder, start, Duration::from_secs(20))
                });
                let v = admin
                    .failover(&group, Some(to), None)
                    .await
                    .with_context(|| format!("drill {i}"))?;
                let r = watcher
                    .await?
                    .with_context(|| format!("drill {i}: nobody took over"))?;
                // What a client saw: from the last banner of the old master to the first of
                // the new one.
                let gap = r.1 - r.2.unwrap_or_default();
                times.push(gap.as_secs_f64() * 1e3);
                reported.push(v.window_ms);
                eprintln!(
                    "switchover drill {i}: node {holder} -> node {}: client saw {:.1} ms, node reported {:.1} ms",
                    r.0,
                    gap.as_secs_f64() * 1e3,
                    v.window_ms
                );
            }
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let what = match kind {
        DrillKind::Kill => "kill -9 of the master -> first banner of the new master",
        DrillKind::Switchover => {
            "graceful switchover: last banner of the old -> first of the new master"
        }
    };
    println!("| drill | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| {what} | {} | {:.0} | {:.0} | {:.0} |",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
    if !reported.is_empty() {
        reported.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| switchover window reported by the old master (listeners closed -> new master's acquisition applied) | {} | {:.1} | {:.1} | {:.1} |",
            reported.len(),
            percentile(&reported, 0.5),
            percentile(&reported, 0.99),
            reported.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
