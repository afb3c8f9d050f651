//! `halyard ctl domain|user|alias|list|auth|resolve` — the embedded directory.
//!
//! Changes are proposed to the meta group's leader, so they are replicated to every node and
//! acknowledged once a majority has them. Passwords are read from standard input (never from
//! the command line, where `ps` and shell history would show them) and hashed with Argon2id
//! here, before they leave this process. `auth test` and `resolve` ask the node named by
//! `--node` to use its own directory (embedded or LDAP), as a login or a delivery would.

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use halyard_directory::embedded::hash_password;
use halyard_directory::sasl::{ScramKeys, scram_keys};
use halyard_raft_store::directory::{
    DirAddress, DirCommand, DirDomain, DirStatus, DirUser, NO_LIMIT, UserPatch, canonical_address,
    canonical_domain,
};
use halyard_raft_store::{Command, Reply};

use crate::config::META_GROUP;
use halyard_api::Admin;

/// A quota: bytes with an optional K/M/G/T suffix (powers of 1024), or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub Option<u64>);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") {
            return Ok(Size(None));
        }
        let (num, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_uppercase() {
                    'K' => 1 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(format!("{s:?}: unknown unit {c:?} (use K, M, G or T)")),
                };
                (&t[..i], m)
            }
            _ => (t, 1),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as 2G, 500M or 1048576"))?;
        n.checked_mul(mult)
            .map(|v| Size(Some(v)))
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// A message count or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub Option<u64>);

impl std::str::FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Count, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(Count(None));
        }
        s.trim()
            .parse()
            .map(|n| Count(Some(n)))
            .map_err(|_| format!("{s:?} is not a number or none"))
    }
}

/// A user's quota override: a size, `none` (unlimited, whatever the domain's default) or
/// `default` (no override: the domain's). `None` inside is "the domain's".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSize(pub Option<u64>);

impl std::str::FromStr for UserSize {
    type Err = String;
    fn from_str(s: &str) -> Result<UserSize, String> {
        user_override(s, |s| s.parse::<Size>().map(|v| v.0)).map(UserSize)
    }
}

/// A user's message-count override: a number, `none` (unlimited) or `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCount(pub Option<u64>);

impl std::str::FromStr for UserCount {
    type Err = String;
    fn from_str(s: &str) -> Result<UserCount, String> {
        user_override(s, |s| s.parse::<Count>().map(|v| v.0)).map(UserCount)
    }
}

/// `default` (no override), else what `parse` makes of `s`, its `None` (the word `none`)
/// becoming [`NO_LIMIT`].
fn user_override(
    s: &str,
    parse: impl Fn(&str) -> Result<Option<u64>, String>,
) -> Result<Option<u64>, String> {
    if s.trim().eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    Ok(Some(parse(s)?.unwrap_or(NO_LIMIT)))
}

#[derive(Debug, Args, Clone)]
pub struct DomainOpts {
    /// Another name of the domain (repeatable); mail to user@alias goes to user@domain.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Default quota of the domain's users (e.g. 2G; `none` for unlimited).
    #[arg(long)]
    pub quota: Option<Size>,
    /// Default message-count quota of the domain's users.
    #[arg(long)]
    pub quota_messages: Option<Count>,
    /// Resource group holding the mailboxes of the domain's users.
    #[arg(long)]
    pub mail_host: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    /// Host a new domain.
    Add {
        name: String,
        #[command(flatten)]
        opts: DomainOpts,
    },
    /// Change a domain's settings (given options replace the current values).
    Set {
        name: String,
        #[command(flatten)]
        opts: DomainOpts,
        /// Remove every domain alias.
        #[arg(long)]
        clear_aliases: bool,
    },
    /// Stop hosting a domain (it must have no users, aliases or lists left).
    Del { name: String },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct UserOpts {
    /// Quota override (e.g. 5G; `none` for unlimited; `default` for the domain's, which is
    /// what a user without an override gets).
    #[arg(long)]
    pub quota: Option<UserSize>,
    /// Message-count override (a number, `none` or `default`).
    #[arg(long)]
    pub quota_messages: Option<UserCount>,
    /// Forward mail to this address (repeatable).
    #[arg(long = "forward")]
    pub forward: Vec<String>,
    /// With --forward: do not also keep a copy in the mailbox.
    #[arg(long)]
    pub forward_only: bool,
    /// Resource group of the mailbox (default: the domain's).
    #[arg(long)]
    pub mail_host: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user; the password is read from standard input.
    Add {
        address: String,
        /// Login name (default: the address).
        #[arg(long)]
        login: Option<String>,
        #[command(flatten)]
        opts: UserOpts,
    },
    /// Set a new password, read from standard input.
    Passwd {
        address: String,
    },
    /// Change settings: status, quota override, forwarding, mailbox group.
    Set {
        address: String,
        /// active, inactive (mail deferred, no login) or deleted (mail refused).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        opts: UserOpts,
        /// Stop forwarding.
        #[arg(long)]
        no_forward: bool,
    },
    /// Delete a user: the account is disabled at once (status `deleted`), and after the
    /// grace period (`[directory] purge_grace_secs`) its mailboxes, messages and quota are
    /// purged and the entry (with its aliases) removed.
    Del {
        address: String,
        /// Purge now instead of after the grace period, and wait until it is done.
        #[arg(long)]
        purge_now: bool,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Show {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Make ALIAS another address of TARGET (a user or a list).
    Add {
        alias: String,
        target: String,
    },
    Del {
        alias: String,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ListCmd {
    /// Create a distribution list.
    Add {
        address: String,
        /// A member address (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add or remove members.
    Members {
        address: String,
        #[arg(long = "add")]
        add: Vec<String>,
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    Del {
        address: String,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    Show {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Check a login and password (from standard input) against the node's directory.
    /// Exit status 0 when accepted, 1 when refused.
    Test { login: String },
}

fn addr(a: &str) -> Result<String> {
    canonical_address(a).with_context(|| format!("{a:?} is not a valid address"))
}

fn addrs(v: &[String]) -> Result<Vec<String>> {
    v.iter().map(|a| addr(a)).collect()
}

fn domain(d: &str) -> Result<String> {
    canonical_domain(d).with_context(|| format!("{d:?} is not a valid domain name"))
}

/// Reads a password from standard input: the first line, without its line ending. On a
/// terminal it prompts on stderr and turns echo off while typing.
pub fn read_password() -> Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut s = String::new();
    if tty {
        eprint!("Password: ");
        let _ = std::process::Command::new("stty").arg("-echo").status();
        let r = stdin.read_line(&mut s);
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
        r.context("reading the password")?;
    } else {
        let mut buf = Vec::new();
        stdin
            .lock()
            .take(64 * 1024)
            .read_to_end(&mut buf)
            .context("reading the password from standard input")?;
        s = String::from_utf8(buf).context("the password is not UTF-8")?;
    }
    let line = s.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!(
            "empty password (give it on standard input, e.g. `printf '%s\\n' \"$PW\" | halyard ctl ...`)"
        );
    }
    if line.chars().any(|c| c.is_control()) {
        bail!("the password contains control characters");
    }
    Ok(line)
}

async fn change(admin: &Admin, cmd: DirCommand) -> Result<()> {
    propose_dir(admin, &Command::Directory(cmd)).await
}

async fn propose_dir(admin: &Admin, cmd: &Command) -> Result<()> {
    match admin.propose_to_leader(META_GROUP, cmd).await? {
        Reply::Done => Ok(()),
        Reply::Batch(replies) => match replies.into_iter().find(|r| *r != Reply::Done) {
            None => Ok(()),
            Some(Reply::Error(e)) => bail!("{e}"),
            Some(other) => bail!("unexpected reply {other:?}"),
        },
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// The node refused a command because a member of the meta group runs an older build.
fn older_build(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("runs an older build")
}

/// `cmd` (a new user or a new password) and the user's SCRAM keys in one atomic entry, so
/// SCRAM never authenticates a password other than the current one. A meta group with a
/// member too old for SCRAM keys gets `cmd` alone and a warning.
async fn with_scram(admin: &Admin, cmd: DirCommand, address: &str, keys: ScramKeys) -> Result<()> {
    let both = Command::Atomic(vec![
        Command::Directory(cmd.clone()),
        Command::Directory(DirCommand::SetScram {
            address: address.to_string(),
            keys: Some(keys),
        }),
    ]);
    match propose_dir(admin, &both).await {
        Err(e) if older_build(&e) => {
            eprintln!(
                "warning: a node of the meta group runs an older build: SCRAM-SHA-256 keys \
                 not set (PLAIN and LOGIN work; run `ctl user passwd` again after the upgrade)"
            );
            change(admin, cmd).await
        }
        r => r,
    }
}

/// The node to read the embedded directory on: the meta group's leader (a linearizable
/// read) when there is one within 10 s, else the node asked.
/// `audit`: the trail, oldest first.
pub async fn audit_cmd(admin: &Admin, limit: u32, json: bool) -> Result<()> {
    let records = dir_reader(admin).await.audit(limit).await?;
    if json {
        return print_json(&records);
    }
    println!("{:<24} {:>4}  {:<32} WHAT", "WHEN (UTC)", "NODE", "WHO");
    for r in records {
        let when = chrono::DateTime::from_timestamp_millis(r.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let refused = if r.refused.is_empty() {
            String::new()
        } else {
            format!("  [refused: {}]", r.refused)
        };
        println!(
            "{when:<24} {:>4}  {:<32} {}{refused}",
            r.node, r.who, r.what
        );
    }
    Ok(())
}

async fn dir_reader(admin: &Admin) -> Admin {
    admin
        .leader_of_wait(META_GROUP, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|_| admin.clone())
}

/// Prints `v` as ctl always has: through a JSON value (object keys in sorted order), pretty.
fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::to_value(v)?)?
    );
    Ok(())
}

fn quota_str(b: Option<u64>) -> String {
    match b {
        None => "unlimited".into(),
        Some(b) if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        Some(b) if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        Some(b) => b.to_string(),
    }
}

fn check_group(g: &Option<String>) -> Result<()> {
    if let Some(g) = g
        && !crate::config::valid_group_name(g)
    {
        bail!("--mail-host {g:?}: a resource group name (a-z, 0-9, '-')");
    }
    Ok(())
}

pub async fn domain_cmd(admin: &Admin, cmd: &DomainCmd) -> Result<()> {
    match cmd {
        DomainCmd::Add { name, opts } => {
            check_group(&opts.mail_host)?;
            let d = DirDomain {
                name: domain(name)?,
                aliases: opts
                    .aliases
                    .iter()
                    .map(|a| domain(a))
                    .collect::<Result<_>>()?,
                default_quota_bytes: opts.quota.and_then(|q| q.0),
                default_quota_messages: opts.quota_messages.and_then(|q| q.0),
                default_mail_host: opts.mail_host.clone(),
            };
            let n = d.name.clone();
            change(admin, DirCommand::AddDomain(d)).await?;
            println!("domain {n} added");
        }
        DomainCmd::Set {
            name,
            opts,
            clear_aliases,
        } => {
            check_group(&opts.mail_host)?;
            let name = domain(name)?;
            let all = dir_reader(admin).await.domains().await?;
            let Some(mut d) = all.into_iter().find(|d| d.name == name) else {
                bail!("no domain {name}");
            };
            if *clear_aliases {
                d.aliases.clear();
            }
            if !opts.aliases.is_empty() {
                d.aliases = opts
                    .aliases
                    .iter()
                    .map(|a| domain(a))
                    .collect::<Result<_>>()?;
            }
            if let Some(q) = opts.quota {
                d.default_quota_bytes = q.0;
            }
            if let Some(q) = opts.quota_messages {
                d.default_quota_messages = q.0;
            }
            if let Some(h) = &opts.mail_host {
                d.default_mail_host = Some(h.clone());
            }
            change(admin, DirCommand::UpdateDomain(d)).await?;
            println!("domain {name} updated");
        }
        DomainCmd::Del { name } => {
            let name = domain(name)?;
            change(admin, DirCommand::DeleteDomain { name: name.clone() }).await?;
            println!("domain {name} deleted");
        }
        DomainCmd::List { json } => {
            let all = dir_reader(admin).await.domains().await?;
            if *json {
                return print_json(&all);
            }
            println!(
                "{:<32} {:>10} {:>10} {:<12} ALIASES",
                "DOMAIN", "QUOTA", "MESSAGES", "MAIL-HOST"
            );
            for d in all {
                println!(
                    "{:<32} {:>10} {:>10} {:<12} {}",
                    d.name,
                    quota_str(d.default_quota_bytes),
                    d.default_quota_messages
                        .map(|m| m.to_string())
                        .unwrap_or("unlimited".into()),
                    d.default_mail_host.as_deref().unwrap_or("-"),
                    d.aliases.join(",")
                );
            }
        }
    }
    Ok(())
}

fn delivery(opts: &UserOpts) -> Result<Vec<String>> {
    if opts.forward_only && opts.forward.is_empty() {
        bail!("--forward-only needs at least one --forward address");
    }
    Ok(if opts.forward_only {
        vec!["forward".into()]
    } else if !opts.forward.is_empty() {
        vec!["mailbox".into(), "forward".into()]
    } else {
        vec![]
    })
}

/// `user del`: disable now and schedule the purge (see [`crate::purge`]); with `purge_now`,
/// wait until the meta leader has purged the user.
async fn user_del(admin: &Admin, address: &str, purge_now: bool) -> Result<()> {
    let address = addr(address)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let schedule = Command::Atomic(vec![
        Command::Directory(DirCommand::UpdateUser {
            address: address.clone(),
            patch: UserPatch {
                status: Some(DirStatus::Deleted),
                ..Default::default()
            },
        }),
        Command::Directory(DirCommand::SchedulePurge {
            address: address.clone(),
            deleted_at_ms: Some(if purge_now { 0 } else { now }),
        }),
    ]);
    propose_dir(admin, &schedule).await?;
    if !purge_now {
        println!(
            "user {address} deleted: logins and mail refused now; its mailboxes are \
             purged after [directory] purge_grace_secs (`ctl user del {address} \
             --purge-now` to purge now)"
        );
        return Ok(());
    }
    // The meta group's leader purges it within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let users = dir_reader(admin).await.users(None).await?;
        if !users.iter().any(|u| u.address == address) {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("user {address} is deleted but not purged yet: see the meta leader's log");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    println!("user {address} deleted and its mail purged");
    Ok(())
}

pub async fn user_cmd(admin: &Admin, cmd: &UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add {
            address,
            login,
            opts,
        } => {
            check_group(&opts.mail_host)?;
            let address = addr(address)?;
            let login = match login {
                Some(l) => l.trim().to_lowercase(),
                None => address.clone(),
            };
            let password = read_password()?;
            let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            let scram = scram_keys(&password, &password_hash).map_err(anyhow::Error::msg)?;
            let u = DirUser {
                address: address.clone(),
                login,
                password_hash,
                status: DirStatus::Active,
                quota_bytes: opts.quota.and_then(|q| q.0),
                quota_messages: opts.quota_messages.and_then(|q| q.0),
                forwarding: addrs(&opts.forward)?,
                delivery_options: delivery(opts)?,
                mail_host: opts.mail_host.clone(),
                aliases: vec![],
            };
            with_scram(admin, DirCommand::AddUser(u), &address, scram).await?;
            println!("user {address} added");
        }
        UserCmd::Passwd { address } => {
            let address = addr(address)?;
            let password = read_password()?;
            let h = hash_password(&password).map_err(anyhow::Error::msg)?;
            let scram = scram_keys(&password, &h).map_err(anyhow::Error::msg)?;
            let patch = UserPatch {
                password_hash: Some(h),
                ..Default::default()
            };
            let cmd = DirCommand::UpdateUser {
                address: address.clone(),
                patch,
            };
            with_scram(admin, cmd, &address, scram).await?;
            println!("password of {address} changed");
        }
        UserCmd::Set {
            address,
            status,
            opts,
            no_forward,
        } => {
            check_group(&opts.mail_host)?;
            let address = addr(address)?;
            let status = match status.as_deref() {
                None => None,
                Some("active") => Some(DirStatus::Active),
                Some("inactive") => Some(DirStatus::Inactive),
                Some("deleted") => Some(DirStatus::Deleted),
                Some(s) => bail!("--status {s:?}: expected active, inactive or deleted"),
            };
            let (forwarding, delivery_options) = if *no_forward {
                (Some(vec![]), Some(vec![]))
            } else if !opts.forward.is_empty() {
                (Some(addrs(&opts.forward)?), Some(delivery(opts)?))
            } else {
                (None, None)
            };
            let patch = UserPatch {
                password_hash: None,
                status,
                quota_bytes: opts.quota.map(|q| q.0),
                quota_messages: opts.quota_messages.map(|q| q.0),
                forwarding,
                delivery_options,
                mail_host: opts.mail_host.clone().map(Some),
            };
            change(
                admin,
                DirCommand::UpdateUser {
                    address: address.clone(),
                    patch,
                },
            )
            .await?;
            println!("user {address} updated");
        }
        UserCmd::Del { address, purge_now } => user_del(admin, address, *purge_now).await?,
        UserCmd::List { domain: d, json } => {
            let d = d.as_deref().map(domain).transpose()?;
            let users = dir_reader(admin).await.users(d.as_deref()).await?;
            if *json {
                return print_json(&users);
            }
            println!(
                "{:<40} {:<9} {:>10} {:>10} {:<12} LOGIN",
                "ADDRESS", "STATUS", "QUOTA", "MESSAGES", "MAIL-HOST"
            );
            for u in users {
                println!(
                    "{:<40} {:<9} {:>10} {:>10} {:<12} {}",
                    u.address,
                    u.status,
                    quota_str(u.effective_quota_bytes),
                    u.effective_quota_messages
                        .map(|m| m.to_string())
                        .unwrap_or("unlimited".into()),
                    u.mail_host.as_deref().unwrap_or("-"),
                    u.login
                );
            }
        }
        UserCmd::Show { address } => {
            let address = addr(address)?;
            let Some(u) = dir_reader(admin).await.user(&address).await? else {
                bail!("no user {address}");
            };
            print_json(&u)?;
        }
    }
    Ok(())
}

async fn addresses(admin: &Admin, d: &Option<String>) -> Result<Vec<(String, DirAddress)>> {
    let d = d.as_deref().map(domain).transpose()?;
    dir_reader(admin).await.addresses(d.as_deref()).await
}

pub async fn alias_cmd(admin: &Admin, cmd: &AliasCmd) -> Result<()> {
    match cmd {
        AliasCmd::Add { alias, target } => {
            let (alias, target) = (addr(alias)?, addr(target)?);
            change(
                admin,
                DirCommand::AddAlias {
                    alias: alias.clone(),
                    target: target.clone(),
                },
            )
            .await?;
            println!("alias {alias} -> {target} added");
        }
        AliasCmd::Del { alias } => {
            let alias = addr(alias)?;
            change(
                admin,
                DirCommand::DeleteAlias {
                    alias: alias.clone(),
                },
            )
            .await?;
            println!("alias {alias} deleted");
        }
        AliasCmd::List { domain } => {
            println!("{:<40} TARGET", "ALIAS");
            for (a, w) in addresses(admin, domain).await? {
                if let DirAddress::Alias { target } = w {
                    println!("{a:<40} {target}");
                }
            }
        }
    }
    Ok(())
}

pub async fn list_cmd(admin: &Admin, cmd: &ListCmd) -> Result<()> {
    match cmd {
        ListCmd::Add { address, members } => {
            let address = addr(address)?;
            change(
                admin,
                DirCommand::AddList {
                    address: address.clone(),
                    members: addrs(members)?,
                },
            )
            .await?;
            println!("list {address} added");
        }
        ListCmd::Members {
            address,
            add,
            remove,
        } => {
            if add.is_empty() && remove.is_empty() {
                bail!("give --add and/or --remove addresses");
            }
            let address = addr(address)?;
            change(
                admin,
                DirCommand::ChangeListMembers {
                    address: address.clone(),
                    add: addrs(add)?,
                    remove: addrs(remove)?,
                },
            )
            .await?;
            println!("list {address} updated");
        }
        ListCmd::Del { address } => {
            let address = addr(address)?;
            change(
                admin,
                DirCommand::DeleteList {
                    address: address.clone(),
                },
            )
            .await?;
            println!("list {address} deleted");
        }
        ListCmd::List { domain } => {
            println!("{:<40} MEMBERS", "LIST");
            for (a, w) in addresses(admin, domain).await? {
                if let DirAddress::List { members } = w {
                    println!("{a:<40} {}", members.len());
                }
            }
        }
        ListCmd::Show { address } => {
            let address = addr(address)?;
            let dom = address.rsplit_once('@').map(|x| x.1.to_string());
            let found = addresses(admin, &dom)
                .await?
                .into_iter()
                .find(|(a, _)| *a == address);
            match found {
                Some((_, DirAddress::List { members })) => {
                    for m in members {
                        println!("{m}");
                    }
                }
                _ => bail!("no list {address}"),
            }
        }
    }
    Ok(())
}

/// `auth test`: exit status 0 when the node's directory accepts the password.
pub async fn auth_cmd(admin: &Admin, cmd: &AuthCmd) -> Result<bool> {
    let AuthCmd::Test { login } = cmd;
    let password = read_password()?;
    let (directory, principal) = admin.authenticate(login, &password).await?;
    match principal {
        None => {
            println!("refused: wrong login or password, or the account may not log in");
            Ok(false)
        }
        Some(p) => {
            println!(
                "accepted by node {} ({directory} directory): {}",
                admin.addr,
                serde_json::to_value(&p)?
            );
            Ok(true)
        }
    }
}

pub async fn resolve_cmd(admin: &Admin, address: &str) -> Result<()> {
    print_json(&admin.resolve(address).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("2G".parse::<Size>(), Ok(Size(Some(2 << 30))));
        assert_eq!("500m".parse::<Size>(), Ok(Size(Some(500 << 20))));
        assert_eq!("1024".parse::<Size>(), Ok(Size(Some(1024))));
        assert_eq!("none".parse::<Size>(), Ok(Size(None)));
        assert!("2X".parse::<Size>().is_err());
        assert!("G".parse::<Size>().is_err());
        assert!("99999999999T".parse::<Size>().is_err());
        assert_eq!("none".parse::<Count>(), Ok(Count(None)));
        assert!("-1".parse::<Count>().is_err());
        // A user's override: unlimited is explicit, `default` clears it.
        assert_eq!("none".parse::<UserSize>(), Ok(UserSize(Some(NO_LIMIT))));
        assert_eq!("default".parse::<UserSize>(), Ok(UserSize(None)));
        assert_eq!("5G".parse::<UserSize>(), Ok(UserSize(Some(5 << 30))));
        assert_eq!("none".parse::<UserCount>(), Ok(UserCount(Some(NO_LIMIT))));
        assert_eq!("default".parse::<UserCount>(), Ok(UserCount(None)));
        assert!("lots".parse::<UserSize>().is_err());
    }
}
