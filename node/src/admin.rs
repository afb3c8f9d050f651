//! The admin API served on the cluster port: status, proposals, membership changes,
//! snapshots and read-only queries. `halyard ctl`, the bench and the cluster tests use it.
//! It is protected like the Raft RPCs: mutual TLS with the cluster CA (or plaintext demo).

use std::sync::Arc;

use halyard_raft_store::{Command, ProposeError, Reply};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use halyard_raft_store::directory::{DirAddress, DirDomain, DirUser};

use crate::config::META_GROUP;
use crate::pb;
use crate::runtime::NodeShared;

/// Read-only questions about a group's applied state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    /// Applied index and a digest of all mail data: equal on replicas at equal indexes.
    Digest { group: String },
    /// Messages of a mailbox: `[{uid, modseq, size, flags}]`.
    Messages {
        group: String,
        user: String,
        mailbox: String,
        linearizable: bool,
    },
    /// Mailboxes of a user.
    Mailboxes { group: String, user: String },
    /// The group's mail queue.
    Queue { group: String },
    /// What an address is, according to this node's directory (LDAP or embedded).
    Resolve { address: String },
    /// Checks a password against this node's directory: `{"principal": ...}` or null.
    Authenticate { login: String, password: String },
    /// The embedded directory's contents (read on the meta leader when asked there).
    Directory { what: DirQuery },
}

/// What `halyard ctl domain|user|alias|list` list and show.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DirQuery {
    Domains,
    /// Users (password hashes left out), optionally of one domain.
    Users {
        domain: Option<String>,
    },
    User {
        address: String,
    },
    /// Aliases and lists, optionally of one domain.
    Addresses {
        domain: Option<String>,
    },
}

/// A user as `ctl user show` prints it: stored settings and effective values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub address: String,
    pub login: String,
    pub status: String,
    pub aliases: Vec<String>,
    pub forwarding: Vec<String>,
    pub delivery_options: Vec<String>,
    /// Own override, if any.
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
    /// Override or the domain's default.
    pub effective_quota_bytes: Option<u64>,
    pub effective_quota_messages: Option<u64>,
    pub mail_host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageSummary {
    pub uid: u32,
    pub modseq: u64,
    pub size: u64,
    pub flags: Vec<String>,
}

pub struct AdminRpc {
    pub node: Arc<NodeShared>,
}

fn internal<E: std::fmt::Display>(e: E) -> Status {
    Status::internal(e.to_string())
}

impl AdminRpc {
    async fn query(&self, q: Query) -> Result<serde_json::Value, Status> {
        Ok(match q {
            Query::Digest { group } => {
                let g = self.node.group(&group)?;
                let r = g.reader();
                // Read the index before and after: equal values mean the digest matches it.
                let before = r.applied_index();
                let digest = r.digest().map_err(internal)?;
                let after = r.applied_index();
                serde_json::json!({ "applied_index": after, "stable": before == after, "digest": digest,
                    "bodies": r.body_count().map_err(internal)? })
            }
            Query::Messages {
                group,
                user,
                mailbox,
                linearizable,
            } => {
                let g = self.node.group(&group)?;
                let r = if linearizable {
                    g.linearizable_reader()
                        .await
                        .map_err(|e| Status::failed_precondition(e.to_string()))?
                } else {
                    g.reader()
                };
                let msgs = r.messages(&user, &mailbox).map_err(internal)?;
                match msgs {
                    None => serde_json::Value::Null,
                    Some(m) => serde_json::to_value(
                        m.into_iter()
                            .map(|m| MessageSummary {
                                uid: m.uid,
                                modseq: m.modseq,
                                size: m.size,
                                flags: m.flags,
                            })
                            .collect::<Vec<_>>(),
                    )
                    .map_err(internal)?,
                }
            }
            Query::Mailboxes { group, user } => {
                let g = self.node.group(&group)?;
                serde_json::to_value(g.reader().mailboxes(&user).map_err(internal)?)
                    .map_err(internal)?
            }
            Query::Queue { group } => {
                let g = self.node.group(&group)?;
                serde_json::to_value(g.reader().queue().map_err(internal)?).map_err(internal)?
            }
            Query::Resolve { address } => {
                let r = self
                    .node
                    .directory
                    .resolve(&address)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                serde_json::json!({ "directory": self.node.directory_kind, "resolution": r })
            }
            Query::Authenticate { login, password } => {
                let p = self
                    .node
                    .directory
                    .authenticate(&login, &password)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                serde_json::json!({ "directory": self.node.directory_kind, "principal": p })
            }
            Query::Directory { what } => self.directory_query(what).await?,
        })
    }

    async fn directory_query(&self, what: DirQuery) -> Result<serde_json::Value, Status> {
        let g = self.node.group(META_GROUP)?;
        // Linearizable where this node leads the meta group (ctl asks the leader), else the
        // local replica.
        let sm = match g.linearizable_reader().await {
            Ok(sm) => sm,
            Err(_) => g.reader(),
        };
        let in_domain = |a: &str, d: &Option<String>| match d {
            Some(d) => a.rsplit_once('@').map(|x| x.1) == Some(d.as_str()),
            None => true,
        };
        let v = sm
            .directory(|r| {
                Ok(match what {
                    DirQuery::Domains => serde_json::to_value(r.domains()?),
                    DirQuery::Users { domain } => {
                        let mut out = Vec::new();
                        for u in r.users()? {
                            if in_domain(&u.address, &domain) {
                                let d = r.domain(u.address.rsplit_once('@').map_or("", |x| x.1))?;
                                out.push(user_view(&u, d.as_ref()));
                            }
                        }
                        serde_json::to_value(out)
                    }
                    DirQuery::User { address } => match r.user(&address.to_lowercase())? {
                        Some(u) => {
                            let d = r.domain(u.address.rsplit_once('@').map_or("", |x| x.1))?;
                            serde_json::to_value(user_view(&u, d.as_ref()))
                        }
                        None => Ok(serde_json::Value::Null),
                    },
                    DirQuery::Addresses { domain } => serde_json::to_value(
                        r.addresses()?
                            .into_iter()
                            .filter(|(a, w)| {
                                in_domain(a, &domain) && !matches!(w, DirAddress::User)
                            })
                            .collect::<Vec<_>>(),
                    ),
                })
            })
            .map_err(internal)?;
        v.map_err(internal)
    }
}

fn user_view(u: &DirUser, d: Option<&DirDomain>) -> UserView {
    let eff = halyard_directory::embedded::user_record(u, d);
    UserView {
        address: u.address.clone(),
        login: u.login.clone(),
        status: format!("{:?}", u.status).to_lowercase(),
        aliases: u.aliases.clone(),
        forwarding: u.forwarding.clone(),
        delivery_options: u.delivery_options.clone(),
        quota_bytes: u.quota_bytes,
        quota_messages: u.quota_messages,
        effective_quota_bytes: eff.quota_bytes,
        effective_quota_messages: eff.quota_messages,
        mail_host: eff.mail_host,
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminRpc {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let json = serde_json::to_string(&self.node.status()).map_err(internal)?;
        Ok(Response::new(pb::StatusReply { json }))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        let req = req.into_inner();
        let cmd: Command = bincode::deserialize(&req.command)
            .map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        let result: Result<Reply, ProposeError> = match self.node.groups.get(&req.group) {
            Some(g) => g.propose(cmd).await,
            None => Err(ProposeError::NoSuchGroup(req.group.clone())),
        };
        let reply = bincode::serialize(&result).map_err(internal)?;
        Ok(Response::new(pb::ProposeReply { reply }))
    }

    async fn membership(
        &self,
        req: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        let r = match req.action.as_str() {
            "add" => {
                if req.addr.is_empty() {
                    return Err(Status::invalid_argument(
                        "add needs the new member's address",
                    ));
                }
                g.add_learner(req.node_id, &req.addr).await
            }
            "promote" => g.promote(req.node_id).await,
            "remove" => g.remove(req.node_id).await,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?}"
                )));
            }
        };
        match r {
            Ok(()) => Ok(Response::new(pb::MembershipReply {
                message: format!(
                    "{} node {} in group {}: done",
                    req.action, req.node_id, req.group
                ),
            })),
            Err(e @ ProposeError::NotLeader { .. }) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn trigger_snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        g.trigger_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::SnapshotReply {
            message: format!("snapshot of group {} triggered", req.group),
        }))
    }

    async fn act(
        &self,
        req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryReply>, Status> {
        let a: crate::failover::Action = serde_json::from_str(&req.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("action: {e}")))?;
        let v = crate::failover::act(&self.node, a)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(pb::QueryReply {
            json: v.to_string(),
        }))
    }

    async fn query(
        &self,
        req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryReply>, Status> {
        let q: Query = serde_json::from_str(&req.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("query: {e}")))?;
        let v = self.query(q).await?;
        Ok(Response::new(pb::QueryReply {
            json: v.to_string(),
        }))
    }
}
