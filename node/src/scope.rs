//! Delegated administration: what the caller of the admin API may do, by its certificate.
//!
//! - A node's certificate, the `ctl` certificate `halyard certs --nodes` issues, and any
//!   caller of a cluster without TLS are **cluster administrators**: everything.
//! - A certificate of the cluster CA that names domains in URI subjectAltNames
//!   `halyard:domain-admin:<domain>` (issued by `halyard certs --out DIR --admin NAME
//!   --domains a.example,b.example`) is a **domain administrator**: it manages the users,
//!   aliases and lists of those domains (the embedded directory) and reads them, and nothing
//!   else — no domains, groups, membership, failover, snapshots, queues, mail or audit trail.
//!
//! The node enforces this on every admin RPC ([`Role::require_cluster`], [`Role::allows`],
//! [`Role::covers`]); the client is never trusted to. Raft and the multiplexor's hop accept
//! node certificates only (see `crate::relay::require_node`).

use halyard_raft_store::Command;
use halyard_raft_store::directory::DirCommand;
use tonic::{Request, Status};

/// The URI subjectAltName prefix of a domain administrator's certificate.
pub const DOMAIN_ADMIN_URI: &str = "halyard:domain-admin:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Cluster,
    /// A domain administrator of these (lower-case) domains.
    Domains(Vec<String>),
}

/// The role of a request's caller.
pub fn role<T>(req: &Request<T>) -> Role {
    let certs = req.peer_certs();
    match certs.as_ref().and_then(|c| c.first()) {
        Some(leaf) => role_of(leaf.as_ref()),
        None => Role::Cluster,
    }
}

/// The role a (verified) client certificate gives.
pub fn role_of(der: &[u8]) -> Role {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        // Cannot happen for a certificate the TLS layer verified; give it nothing.
        return Role::Domains(vec![]);
    };
    let domains: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => u
                        .strip_prefix(DOMAIN_ADMIN_URI)
                        .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let admin_cert = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::URI(u) if u.starts_with(DOMAIN_ADMIN_URI)))
        });
    if admin_cert {
        Role::Domains(domains)
    } else {
        Role::Cluster
    }
}

fn domain_of(address_or_domain: &str) -> String {
    address_or_domain
        .rsplit_once('@')
        .map_or(address_or_domain, |x| x.1)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl Role {
    /// Refuses a domain administrator.
    pub fn require_cluster(&self, what: &str) -> Result<(), Status> {
        match self {
            Role::Cluster => Ok(()),
            Role::Domains(d) => Err(Status::permission_denied(format!(
                "{what}: a domain administrator (of {}) manages only the users, aliases and \
                 lists of its domains",
                d.join(", ")
            ))),
        }
    }

    /// Whether an address (or a domain) is within the caller's reach.
    pub fn covers(&self, address_or_domain: &str) -> bool {
        match self {
            Role::Cluster => true,
            Role::Domains(d) => d.contains(&domain_of(address_or_domain)),
        }
    }

    fn require(&self, address: &str) -> Result<(), Status> {
        if self.covers(address) {
            Ok(())
        } else {
            self.require_cluster(&format!("{address} is outside your domains"))
        }
    }

    /// Whether the caller may propose `cmd` to `group`.
    pub fn allows(&self, group: &str, cmd: &Command) -> Result<(), Status> {
        if *self == Role::Cluster {
            return Ok(());
        }
        if group != halyard_raft_store::META_GROUP {
            return self.require_cluster(&format!("changing group {group}"));
        }
        match cmd {
            Command::Atomic(cmds) | Command::Batch(cmds) => {
                cmds.iter().try_for_each(|c| self.allows(group, c))
            }
            Command::Directory(d) => self.allows_directory(d),
            other => self.require_cluster(&format!("a {} command", other.kind())),
        }
    }

    fn allows_directory(&self, d: &DirCommand) -> Result<(), Status> {
        match d {
            DirCommand::AddUser(u) => self.require(&u.address),
            DirCommand::UpdateUser { address, .. }
            | DirCommand::DeleteUser { address }
            | DirCommand::DeleteAlias { alias: address }
            | DirCommand::AddList { address, .. }
            | DirCommand::ChangeListMembers { address, .. }
            | DirCommand::DeleteList { address }
            | DirCommand::SetScram { address, .. }
            | DirCommand::SchedulePurge { address, .. } => self.require(address),
            // An alias is another name for one of the domains' own users or lists.
            DirCommand::AddAlias { alias, target } => {
                self.require(alias)?;
                self.require(target)
            }
            DirCommand::AddDomain(x) | DirCommand::UpdateDomain(x) => {
                self.require_cluster(&format!("changing domain {}", x.name))
            }
            DirCommand::DeleteDomain { name } => {
                self.require_cluster(&format!("deleting domain {name}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_raft_store::directory::DirUser;

    #[test]
    fn a_domain_administrator_stays_in_its_domains() {
        let r = Role::Domains(vec!["example.org".into()]);
        let add = |a: &str| Command::Directory(DirCommand::AddUser(DirUser::new(a, a, "h".into())));
        assert!(r.allows("meta", &add("ann@example.org")).is_ok());
        assert!(r.allows("meta", &add("ann@EXAMPLE.org")).is_ok());
        assert!(r.allows("meta", &add("eve@example.net")).is_err());
        assert!(r.allows("rg1", &add("ann@example.org")).is_err());
        let both = Command::Atomic(vec![add("ann@example.org"), add("eve@evil.test")]);
        assert!(r.allows("meta", &both).is_err());
        let alias = |a: &str, t: &str| {
            Command::Directory(DirCommand::AddAlias {
                alias: a.into(),
                target: t.into(),
            })
        };
        assert!(
            r.allows("meta", &alias("x@example.org", "ann@example.org"))
                .is_ok()
        );
        assert!(
            r.allows("meta", &alias("x@example.org", "boss@other.test"))
                .is_err()
        );
        let domain = Command::Directory(DirCommand::DeleteDomain {
            name: "example.org".into(),
        });
        assert!(r.allows("meta", &domain).is_err());
        assert!(r.require_cluster("snapshot").is_err());
        assert!(Role::Cluster.allows("meta", &domain).is_ok());
        assert!(!r.covers("ann@example.net") && r.covers("example.org"));
    }
}
