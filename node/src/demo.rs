//! `halyard demo` — N local nodes in one process on 127.0.0.1 with embedded defaults.
//!
//! Node `i` (1-based) listens on 127.0.0.1:(7700 + i - 1) for cluster gRPC, keeps its data
//! in `<data-dir>/node-<i>`, and is a member of the meta group and of one resource group,
//! `rg1`. The demo uses plaintext gRPC (loopback only); real deployments use mutual TLS
//! (`halyard certs`, then `halyard serve`). Data is kept between runs, so a second run resumes
//! the same cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use halyard_directory::embedded::hash_password;
use halyard_raft_store::directory::{DirCommand, DirDomain, DirUser};
use halyard_raft_store::{Command, Reply};

use crate::config::{ClusterConfig, GroupConfig, META_GROUP, NodeConfig, PeerConfig, RaftConfig};
use crate::runtime::Node;
use halyard_api::Admin;

pub const DEMO_BASE_PORT: u16 = 7700;
/// Node i serves IMAP on 1143 + 1000 × (i − 1) and POP3 on 1110 + 1000 × (i − 1).
pub const DEMO_IMAP_PORT: u16 = 1143;
pub const DEMO_POP3_PORT: u16 = 1110;
/// Node i serves SMTP on 2525 + 1000 × (i − 1) and submission on 2587 + 1000 × (i − 1).
pub const DEMO_SMTP_PORT: u16 = 2525;
pub const DEMO_SUBMISSION_PORT: u16 = 2587;

pub fn demo_configs(data_dir: &std::path::Path, nodes: u64) -> Vec<NodeConfig> {
    let peers: Vec<PeerConfig> = (1..=nodes)
        .map(|i| PeerConfig {
            id: i,
            addr: format!("127.0.0.1:{}", DEMO_BASE_PORT as u64 + i - 1),
            imap: Some(demo_addr(DEMO_IMAP_PORT, i)),
            pop3: Some(format!(
                "127.0.0.1:{}",
                DEMO_POP3_PORT as u64 + 1000 * (i - 1)
            )),
            witness: false,
        })
        .collect();
    (1..=nodes)
        .map(|i| NodeConfig {
            node_id: i,
            data_dir: data_dir.join(format!("node-{i}")),
            default_group: Some("rg1".into()),
            cluster: ClusterConfig {
                listen: peers[(i - 1) as usize].addr.clone(),
                advertise: None,
                plaintext: true,
                tls: None,
                nodes: peers.clone(),
            },
            groups: vec![GroupConfig {
                name: "rg1".into(),
                members: (1..=nodes).collect(),
                address: None,
                preferred: None,
                leaders: None,
                failback: true,
            }],
            raft: RaftConfig::default(),
            directory: Default::default(),
            access: halyard_access::AccessConfig {
                imap_listen: Some(demo_addr(DEMO_IMAP_PORT, i)),
                pop3_listen: Some(format!(
                    "127.0.0.1:{}",
                    DEMO_POP3_PORT as u64 + 1000 * (i - 1)
                )),
                ..Default::default()
            },
            mta: halyard_mta::MtaConfig {
                hostname: format!("node{i}.demo.test"),
                smtp_listen: Some(demo_addr(DEMO_SMTP_PORT, i)),
                submission_listen: Some(demo_addr(DEMO_SUBMISSION_PORT, i)),
                ..Default::default()
            },
            fencing: Default::default(),
        })
        .collect()
}

/// Demo data written by an older Halyard (another data format) is thrown away, with a note:
/// it is a demo; a real node refuses such a directory instead.
fn discard_old_format(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        let node = e.path();
        let has_data = node.join("raft-log").exists() || node.join("groups").exists();
        let current = std::fs::read_to_string(node.join("FORMAT"))
            .is_ok_and(|f| f.trim() == format!("halyard-data {}", crate::runtime::DATA_FORMAT));
        if has_data && !current {
            eprintln!(
                "note: {} holds demo data from an older Halyard; starting afresh",
                node.display()
            );
            let _ = std::fs::remove_dir_all(&node);
        }
    }
}

/// A demo's data directory is for one cluster size: a 1-node demo over a 3-node demo's data
/// would find its group's other voters missing and never commit (mail would wait for a
/// quorum forever), and a larger demo over a smaller one's data would start nodes that the
/// old cluster never admitted. Refuses with what to do instead; deletes nothing.
fn check_node_count(data_dir: &std::path::Path, nodes: u64) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Ok(());
    };
    let had = entries
        .flatten()
        .filter(|e| e.path().join("FORMAT").exists())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("node-")?
                .parse::<u64>()
                .ok()
        })
        .max();
    match had {
        Some(had) if had != nodes => bail!(
            "{} holds the data of a {had}-node demo; run `halyard demo --nodes {had}` to \
             continue it, give another --data-dir, or remove that directory to start afresh",
            data_dir.display()
        ),
        _ => Ok(()),
    }
}

/// Node `i`'s address for a service whose node-1 port is `base`: +1000 per node.
fn demo_addr(base: u16, i: u64) -> String {
    format!("127.0.0.1:{}", base as u64 + 1000 * (i - 1))
}

pub async fn run(data_dir: Option<PathBuf>, nodes: u64) -> Result<()> {
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let data_dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join("halyard-demo"));
    discard_old_format(&data_dir);
    check_node_count(&data_dir, nodes)?;
    let configs = demo_configs(&data_dir, nodes);
    for c in &configs {
        c.validate()
            .map_err(|(k, m)| anyhow::anyhow!("demo config: {k}: {m}"))?;
    }
    let mut running = Vec::new();
    for c in &configs {
        let c = c.clone();
        running.push(
            crate::runtimes::on_consensus(async move { Node::start_uninitialized(&c).await })
                .await?,
        );
    }
    for n in &running {
        n.initialize().await?;
    }
    // Wait (bounded) for every group to have a leader before printing the map.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = running[0]
            .shared
            .status()
            .groups
            .iter()
            .all(|g| g.leader.is_some());
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let demo_user = match ensure_demo_user(&configs[0].cluster.listen).await {
        Ok(u) => u,
        Err(e) => format!("(could not create the demo user: {e:#})"),
    };
    println!(
        "Halyard demo: {nodes} node(s), data in {}",
        data_dir.display()
    );
    println!();
    println!(
        "  {:<6} {:<18} {:<18} {:<18} {:<18} DATA",
        "NODE", "CLUSTER gRPC", "IMAP", "POP3", "SMTP"
    );
    for c in &configs {
        println!(
            "  {:<6} {:<18} {:<18} {:<18} {:<18} {}",
            c.node_id,
            c.cluster.listen,
            c.access.imap_listen.as_deref().unwrap_or("-"),
            c.access.pop3_listen.as_deref().unwrap_or("-"),
            c.mta.smtp_listen.as_deref().unwrap_or("-"),
            c.data_dir.display()
        );
    }
    println!();
    for g in running[0].shared.status().groups {
        println!(
            "  group {:<6} leader: node {}",
            g.name,
            g.leader.map(|l| l.to_string()).unwrap_or("-".into())
        );
    }
    println!();
    println!("  Demo user: {demo_user}");
    // Mail is accepted by the master of rg1 (in production its floating address).
    let rg1_leader = running[0]
        .shared
        .status()
        .groups
        .iter()
        .find(|g| g.name == "rg1")
        .and_then(|g| g.leader)
        .unwrap_or(1);
    println!(
        "  Send mail: swaks --server {} --to demo@demo.test   (rg1's master; any node accepts)",
        demo_addr(DEMO_SMTP_PORT, rg1_leader)
    );
    println!();
    println!("  Inspect:  halyard ctl --node 127.0.0.1:{DEMO_BASE_PORT} status");
    println!("            halyard ctl --node 127.0.0.1:{DEMO_BASE_PORT} user list");
    println!("  Stop:     Ctrl-C");
    crate::runtime::wait_for_signal().await;
    // stdout may be gone by now (a closed pipe): never panic on printing while stopping.
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "stopping...");
    for n in running {
        n.shutdown().await;
    }
    let _ = writeln!(std::io::stdout(), "stopped cleanly");
    Ok(())
}

pub const DEMO_DOMAIN: &str = "demo.test";
pub const DEMO_ADDRESS: &str = "demo@demo.test";
pub const DEMO_PASSWORD: &str = "demo-password";

/// Creates the demo domain and user in the embedded directory, through the same replicated
/// path as `halyard ctl domain add` / `user add`, unless an earlier run did.
async fn ensure_demo_user(addr: &str) -> Result<String> {
    let admin = Admin::connect(addr, None).await?;
    ensure_demo_user_via(&admin).await
}

/// [`ensure_demo_user`] through an admin connection already made.
pub async fn ensure_demo_user_via(admin: &Admin) -> Result<String> {
    let domains = admin
        .leader_of_wait(META_GROUP, Duration::from_secs(20))
        .await?
        .domains()
        .await?;
    if !domains.iter().any(|d| d.name == DEMO_DOMAIN) {
        let d = DirDomain {
            name: DEMO_DOMAIN.into(),
            aliases: vec![],
            default_quota_bytes: Some(1 << 30),
            default_quota_messages: None,
            default_mail_host: Some("rg1".into()),
        };
        expect_done(
            admin
                .propose_to_leader(META_GROUP, &Command::Directory(DirCommand::AddDomain(d)))
                .await?,
        )?;
        let u = DirUser::new(
            DEMO_ADDRESS,
            "demo",
            hash_password(DEMO_PASSWORD).map_err(anyhow::Error::msg)?,
        );
        expect_done(
            admin
                .propose_to_leader(META_GROUP, &Command::Directory(DirCommand::AddUser(u)))
                .await?,
        )?;
    }
    Ok(format!(
        "{DEMO_ADDRESS} (login \"demo\"), password \"{DEMO_PASSWORD}\""
    ))
}

fn expect_done(r: Reply) -> Result<()> {
    match r {
        Reply::Done => Ok(()),
        other => bail!("{other:?}"),
    }
}
