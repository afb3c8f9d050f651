//! `halyard ctl` — operate a running cluster through any node's admin API.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use halyard_raft_store::GroupStatus;
use serde::Serialize;

use crate::config::NodeConfig;
use crate::ctl_dir;
use crate::tls::TlsMaterial;
use halyard_api::Admin;

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
    /// The audit trail: who changed what, when (directory changes, queue commands,
    /// membership, snapshots, failovers), read on the meta group's leader.
    Audit {
        /// The newest N records (0: every record kept).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Move a group's mastership (and floating address) to another node: a graceful
    /// switchover by default (drain, release, transfer; prints the measured unavailability
    /// window), or `--force` for a master that does not answer (the target waits out the old
    /// master's lease, then stands for election, which succeeds only if a quorum agrees).
    Failover {
        #[arg(long)]
        group: String,
        /// Node to move to (default: the preferred master, else the most caught-up member).
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        force: bool,
        /// How long SMTP transactions in progress may take to finish (default: the
        /// master's `[fencing] drain_ms`).
        #[arg(long)]
        drain_ms: Option<u64>,
        #[arg(long)]
        json: bool,
    },
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
    /// Per group: floating address, holder and lease left, as the holder (else the queried
    /// node) reports it.
    fencing: std::collections::BTreeMap<String, halyard_fencing::FenceStatus>,
}

async fn connect(args: &CtlArgs) -> Result<Admin> {
    let (addr, tls) = if let Some(path) = &args.config {
        let cfg = NodeConfig::load(path)?;
        let tls = match (&cfg.cluster.tls, cfg.cluster.plaintext) {
            (Some(t), false) => Some(crate::tls::load(t)?),
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
            (Some(ca), Some(cert), Some(key)) => Some(TlsMaterial::load(ca, cert, key)?),
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
            use halyard_api::pb::MembershipAction as A;
            let (group, verb, id, addr) = match action {
                MembersCmd::Add { group, id, addr } => (group, A::Add, *id, addr.as_str()),
                MembersCmd::Promote { group, id } => (group, A::Promote, *id, ""),
                MembersCmd::Remove { group, id } => (group, A::Remove, *id, ""),
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
        CtlCmd::Audit { limit, json } => ctl_dir::audit_cmd(&admin, *limit, *json).await?,
        CtlCmd::Failover {
            group,
            to,
            force,
            drain_ms,
            json,
        } => failover_cmd(&admin, group, *to, *force, *drain_ms, *json).await?,
    }
    Ok(())
}

async fn failover_cmd(
    admin: &Admin,
    group: &str,
    to: Option<u64>,
    force: bool,
    drain_ms: Option<u64>,
    json: bool,
) -> Result<()> {
    if force {
        // The target stands for election itself; the master is not asked.
        let st = admin.status().await?;
        let g = st
            .groups
            .iter()
            .find(|g| g.name == group)
            .with_context(|| format!("no group {group:?} on node {}", st.node_id))?;
        let target = to.unwrap_or(st.node_id);
        let addr = if target == st.node_id {
            st.addr.clone()
        } else {
            g.members
                .iter()
                .find(|m| m.id == target)
                .map(|m| m.addr.clone())
                .with_context(|| format!("node {target} is not a member of {group}"))?
        };
        let t = admin.reconnect(&addr).await?;
        let r = t.elect(group, true).await?;
        if json {
            // Through a JSON value, as before the API was typed: keys in sorted order.
            println!("{}", serde_json::to_value(&r)?);
        } else {
            println!(
                "{group}: node {target} took over by forced election in term {} (waited {:.0} ms for the old master's lease)",
                r.term, r.waited_for_lease_ms
            );
        }
        return Ok(());
    }
    let leader = admin.leader_of(group).await?;
    let r = leader.failover(group, to, drain_ms).await?;
    if json {
        println!("{}", serde_json::to_value(&r)?);
    } else {
        println!(
            "{}: node {} -> node {} (term {}){}: unavailable for {:.1} ms (of which {:.1} ms draining transactions)",
            r.group,
            r.from,
            r.to,
            r.term,
            r.address
                .map(|a| format!(", address {a}"))
                .unwrap_or_default(),
            r.window_ms,
            r.drain_ms
        );
    }
    Ok(())
}

/// Status of every group, taken from the group's leader when it is reachable (only the
/// leader knows matched indexes), else from the queried node.
async fn cluster_status(admin: &Admin) -> Result<StatusOut> {
    let local = admin.status().await?;
    let mut groups = Vec::new();
    let mut fencing = local.fencing.clone();
    for g in &local.groups {
        let from_leader = match g.leader {
            Some(l) if l != local.node_id => {
                let addr = g.members.iter().find(|m| m.id == l).map(|m| m.addr.clone());
                match addr {
                    Some(a) => match admin.reconnect(&a).await {
                        Ok(c) => c.status().await.ok().and_then(|s| {
                            if let Some(f) = s.fencing.get(&g.name) {
                                fencing.insert(g.name.clone(), f.clone());
                            }
                            s.groups.into_iter().find(|x| x.name == g.name)
                        }),
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
        fencing,
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
    if !s.fencing.is_empty() {
        println!();
        println!(
            "{:<12} {:<20} {:<10} {:>10} {:<24}",
            "GROUP", "ADDRESS", "HOLDER", "LEASE-LEFT", "RECORDED (term/node)"
        );
        for (name, f) in &s.fencing {
            let holder = f
                .holding
                .map(|t| format!("node {}", t.node))
                .unwrap_or_else(|| "-".into());
            let recorded = f
                .recorded
                .as_ref()
                .map(|r| {
                    format!(
                        "{}{}",
                        r.token,
                        if r.released_at_ms.is_some() {
                            " released"
                        } else {
                            ""
                        }
                    )
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<12} {:<20} {:<10} {:>10} {:<24}",
                name,
                f.address.clone().unwrap_or_else(|| "(none)".into()),
                holder,
                f.lease_left_ms
                    .map(|m| format!("{m} ms"))
                    .unwrap_or_else(|| "-".into()),
                recorded
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
