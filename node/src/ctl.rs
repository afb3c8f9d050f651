//! `halyard ctl` — operate a running cluster through any node's admin API.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use halyard_raft_store::GroupStatus;
use serde::Serialize;

use crate::client::Admin;
use crate::config::{NodeConfig, TlsConfig};
use crate::ctl_dir;
use crate::tls::TlsMaterial;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin address of any node (default: the --config node's address, else 127.0.0.1:7700).
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// A node configuration file: its TLS material and address are used.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Cluster CA certificate (PEM), with --cert and --key, for mutual TLS without --config.
    #[arg(long, global = true, requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Debug, Subcommand)]
pub enum CtlCmd {
    /// Every group: leader, term, commit and applied index, members with role, matched index
    /// and lag (as seen by each group's leader).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Online membership change: add (as learner), promote (learner to voter), remove.
    Members {
        #[command(subcommand)]
        action: MembersCmd,
    },
    /// Build a snapshot of a group now (and purge the log behind it).
    Snapshot {
        #[arg(long)]
        group: String,
    },
    /// Hosted domains of the embedded directory.
    Domain {
        #[command(subcommand)]
        action: ctl_dir::DomainCmd,
    },
    /// Users of the embedded directory (passwords on standard input).
    User {
        #[command(subcommand)]
        action: ctl_dir::UserCmd,
    },
    /// Address aliases of the embedded directory.
    Alias {
        #[command(subcommand)]
        action: ctl_dir::AliasCmd,
    },
    /// Distribution lists of the embedded directory.
    List {
        #[command(subcommand)]
        action: ctl_dir::ListCmd,
    },
    /// Check credentials against the node's directory (embedded or LDAP).
    Auth {
        #[command(subcommand)]
        action: ctl_dir::AuthCmd,
    },
    /// What an address is according to the node's directory (embedded or LDAP).
    Resolve { address: String },
    /// The mail queue of the resource groups (list, show, retry, delete, bounce).
    Queue {
        #[command(subcommand)]
        action: crate::ctl_queue::QueueCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCmd {
    /// Add a node as a learner; returns when it has caught up.
    Add {
        #[arg(long)]
        group: String,
        #[arg(long)]
        id: u64,
        /// The new node's cluster address (host:port).
        #[arg(long)]
        addr: String,
    },
    /// Turn a learner into a voter.
    Promote {
        #[arg(long)]
        group: String,
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        #[arg(long)]
        group: String,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, Serialize)]
struct StatusOut {
    queried_node: u64,
    groups: Vec<GroupStatus>,
}

async fn connect(args: &CtlArgs) -> Result<Admin> {
    let (addr, tls) = if let Some(path) = &args.config {
        let cfg = NodeConfig::load(path)?;
        let tls = match (&cfg.cluster.tls, cfg.cluster.plaintext) {
            (Some(t), false) => Some(TlsMaterial::load(t)?),
            _ => None,
        };
        (
            args.node
                .clone()
                .unwrap_or_else(|| cfg.advertise().to_string()),
            tls,
        )
    } else {
        let tls = match (&args.ca, &args.cert, &args.key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsMaterial::load(&TlsConfig {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })?),
            _ => None,
        };
        (
            args.node
                .clone()
                .unwrap_or_else(|| "127.0.0.1:7700".to_string()),
            tls,
        )
    };
    Admin::connect(&addr, tls).await
}

pub async fn run(args: CtlArgs) -> Result<()> {
    let admin = connect(&args).await?;
    match &args.cmd {
        CtlCmd::Status { json } => {
            let out = cluster_status(&admin).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(&out);
            }
        }
        CtlCmd::Members { action } => {
            let (group, verb, id, addr) = match action {
                MembersCmd::Add { group, id, addr } => (group, "add", *id, addr.as_str()),
                MembersCmd::Promote { group, id } => (group, "promote", *id, ""),
                MembersCmd::Remove { group, id } => (group, "remove", *id, ""),
            };
            let leader = admin.leader_of(group).await?;
            let msg = leader.membership(group, verb, id, addr).await?;
            println!("{msg}");
        }
        CtlCmd::Snapshot { group } => {
            let leader = admin.leader_of(group).await.unwrap_or(admin.clone());
            println!("{}", leader.trigger_snapshot(group).await?);
        }
        CtlCmd::Domain { action } => ctl_dir::domain_cmd(&admin, action).await?,
        CtlCmd::Queue { action } => crate::ctl_queue::queue_cmd(&admin, action).await?,
        CtlCmd::User { action } => ctl_dir::user_cmd(&admin, action).await?,
        CtlCmd::Alias { action } => ctl_dir::alias_cmd(&admin, action).await?,
        CtlCmd::List { action } => ctl_dir::list_cmd(&admin, action).await?,
        CtlCmd::Auth { action } => {
            if !ctl_dir::auth_cmd(&admin, action).await? {
                std::process::exit(1);
            }
        }
        CtlCmd::Resolve { address } => ctl_dir::resolve_cmd(&admin, address).await?,
    }
    Ok(())
}

/// Status of every group, taken from the group's leader when it is reachable (only the
/// leader knows matched indexes), else from the queried node.
async fn cluster_status(admin: &Admin) -> Result<StatusOut> {
    let local = admin.status().await?;
    let mut groups = Vec::new();
    for g in &local.groups {
        let from_leader = match g.leader {
            Some(l) if l != local.node_id => {
                let addr = g.members.iter().find(|m| m.id == l).map(|m| m.addr.clone());
                match addr {
                    Some(a) => match admin.reconnect(&a).await {
                        Ok(c) => c
                            .status()
                            .await
                            .ok()
                            .and_then(|s| s.groups.into_iter().find(|x| x.name == g.name)),
                        Err(_) => None,
                    },
                    None => None,
                }
            }
            _ => None,
        };
        groups.push(from_leader.unwrap_or_else(|| g.clone()));
    }
    Ok(StatusOut {
        queried_node: local.node_id,
        groups,
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_table(s: &StatusOut) {
    println!(
        "{:<12} {:>6} {:>6} {:>9} {:>9}   {:>6} {:<8} {:<22} {:>9} {:>6}",
        "GROUP",
        "LEADER",
        "TERM",
        "COMMIT",
        "APPLIED",
        "MEMBER",
        "ROLE",
        "ADDRESS",
        "MATCHED",
        "LAG"
    );
    for g in &s.groups {
        for (i, m) in g.members.iter().enumerate() {
            let (name, leader, term, commit, applied) = if i == 0 {
                (
                    g.name.clone(),
                    opt(&g.leader),
                    g.term.to_string(),
                    g.commit_index.to_string(),
                    opt(&g.applied_index),
                )
            } else {
                Default::default()
            };
            let role = format!("{:?}", m.role).to_lowercase();
            println!(
                "{:<12} {:>6} {:>6} {:>9} {:>9}   {:>6} {:<8} {:<22} {:>9} {:>6}",
                name,
                leader,
                term,
                commit,
                applied,
                m.id,
                role,
                m.addr,
                opt(&m.matched_index),
                opt(&m.lag)
            );
        }
        if g.members.is_empty() {
            println!(
                "{:<12} {:>6} {:>6} {:>9} {:>9}   (no membership yet)",
                g.name,
                opt(&g.leader),
                g.term,
                g.commit_index,
                opt(&g.applied_index)
            );
        }
    }
}

pub fn parse_ids(s: &str) -> Result<Vec<u64>> {
    let ids: Vec<u64> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u64>()
                .with_context(|| format!("bad node id {p:?}"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() || ids.contains(&0) {
        bail!("node ids must be > 0");
    }
    Ok(ids)
}
