//! The server side of the admin API on the cluster port: status, proposals, membership
//! changes, snapshots, mastership moves and read-only inspection. The schema, the Rust types
//! and the client are in `halyard-api`; this module answers from the node's state. It is
//! protected like the Raft RPCs: mutual TLS with the cluster CA (or plaintext demo).

use std::sync::Arc;

use halyard_api::types::records_to_pb;
use halyard_api::{Digest, MessageSummary, UserView, pb};
use halyard_raft_store::directory::{DirAddress, DirDomain, DirUser};
use halyard_raft_store::{Command, ProposeError, Reply};
use tonic::{Request, Response, Status};

use crate::config::META_GROUP;
use crate::shared::NodeShared;

pub struct AdminRpc {
    pub node: Arc<NodeShared>,
}

fn internal<E: std::fmt::Display>(e: E) -> Status {
    Status::internal(e.to_string())
}

fn records<T: serde::Serialize>(items: &[T]) -> Result<Response<pb::Records>, Status> {
    Ok(Response::new(records_to_pb(items).map_err(internal)?))
}

fn in_domain(address: &str, domain: &Option<String>) -> bool {
    match domain {
        Some(d) => address.rsplit_once('@').map(|x| x.1) == Some(d.as_str()),
        None => true,
    }
}

impl AdminRpc {
    /// The meta group's state machine for a directory read: linearizable where this node
    /// leads the meta group (`ctl` asks the leader), else the local replica.
    async fn directory_reader(&self) -> Result<Arc<halyard_raft_store::SmShared>, Status> {
        let g = self.node.group(META_GROUP)?;
        Ok(match g.linearizable_reader().await {
            Ok(sm) => sm,
            Err(_) => g.reader(),
        })
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

impl AdminRpc {
    /// Records an administrative action (see [`crate::audit`]).
    fn audit(&self, who: &str, what: String, refused: Option<String>) {
        let mut record = crate::audit::record(&self.node, who, what);
        record.refused = refused.unwrap_or_default();
        crate::audit::record_later(self.node.clone(), record);
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |x| x.1)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminRpc {
    type RelayStream = tokio_stream::wrappers::ReceiverStream<Result<pb::RelayChunk, Status>>;

    /// The multiplexor's hop: a session another node authenticated (see [`crate::relay`]).
    async fn relay(
        &self,
        req: Request<tonic::Streaming<pb::RelayChunk>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let access = self.node.access.get().cloned();
        let rx = crate::relay::serve(access, self.node.tls.is_some(), req).await?;
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.node.status().into()))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        let who = crate::audit::caller(&req);
        let role = crate::scope::role(&req);
        let req = req.into_inner();
        let cmd: Command = bincode::deserialize(&req.command)
            .map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        role.allows(&req.group, &cmd)?;
        // With LDAP configured nothing reads the embedded directory: a change there would be
        // silently lost, so `ctl domain|user|alias|list` is refused instead.
        if writes_directory(&cmd) && self.node.directory_kind == "ldap" {
            return Err(Status::failed_precondition(
                "this cluster's directory is LDAP ([directory.ldap]): manage domains, users, \
                 aliases and lists in the LDAP server; the embedded directory is not used",
            ));
        }
        let result: Result<Reply, ProposeError> = match self.node.groups.get(&req.group) {
            // A command some member could not decode would stop that member's apply.
            Some(g) if cmd.level() > g.command_level() => {
                return Err(Status::failed_precondition(format!(
                    "a member of group {} runs an older build (command level {} < {}): \
                     upgrade every node first",
                    req.group,
                    g.command_level(),
                    cmd.level()
                )));
            }
            // A directory change commits with its audit record (see crate::audit).
            Some(g)
                if writes_directory(&cmd) && req.group == META_GROUP && g.command_level() >= 3 =>
            {
                let record =
                    crate::audit::record(&self.node, &who, crate::audit::summary(&req.group, &cmd));
                let was_atomic = matches!(cmd, Command::Atomic(_));
                let r = g.propose(crate::audit::with_record(cmd, record)).await;
                r.map(|reply| crate::audit::without_record(was_atomic, reply))
            }
            Some(g) => {
                let what = crate::audit::administrative(&cmd)
                    .then(|| crate::audit::summary(&req.group, &cmd));
                let r = g.propose(cmd).await;
                if let Some(what) = what {
                    let mut record = crate::audit::record(&self.node, &who, what);
                    match &r {
                        Ok(Reply::Error(e)) => record.refused = e.to_string(),
                        Err(e) => record.refused = e.to_string(),
                        Ok(_) => {}
                    }
                    crate::audit::record_later(self.node.clone(), record);
                }
                r
            }
            None => Err(ProposeError::NoSuchGroup(req.group.clone())),
        };
        let reply = bincode::serialize(&result).map_err(internal)?;
        Ok(Response::new(pb::ProposeReply { reply }))
    }

    async fn membership(
        &self,
        req: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        use pb::MembershipAction as A;
        let who = crate::audit::caller(&req);
        crate::scope::role(&req).require_cluster("this administrative change")?;
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        let (verb, r) = match A::try_from(req.action) {
            Ok(A::Add) => {
                if req.addr.is_empty() {
                    return Err(Status::invalid_argument(
                        "add needs the new member's address",
                    ));
                }
                ("add", g.add_learner(req.node_id, &req.addr).await)
            }
            Ok(A::Promote) => ("promote", g.promote(req.node_id).await),
            Ok(A::Remove) => ("remove", g.remove(req.node_id).await),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown membership action {}",
                    req.action
                )));
            }
        };
        self.audit(
            &who,
            format!("{}: membership {verb} node {}", req.group, req.node_id),
            r.as_ref().err().map(|e| e.to_string()),
        );
        match r {
            Ok(()) => Ok(Response::new(pb::MembershipReply {
                message: format!("{verb} node {} in group {}: done", req.node_id, req.group),
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
        let who = crate::audit::caller(&req);
        crate::scope::role(&req).require_cluster("this administrative change")?;
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        let r = g.trigger_snapshot().await;
        self.audit(
            &who,
            format!("{}: snapshot", req.group),
            r.as_ref().err().map(|e| e.to_string()),
        );
        r.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::SnapshotReply {
            message: format!("snapshot of group {} triggered", req.group),
        }))
    }

    async fn failover(
        &self,
        req: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverReport>, Status> {
        let who = crate::audit::caller(&req);
        crate::scope::role(&req).require_cluster("this administrative change")?;
        let req = req.into_inner();
        let r = crate::failover::switchover(&self.node, &req.group, req.to, req.drain_ms).await;
        let to = req
            .to
            .map_or("the best candidate".to_string(), |n| format!("node {n}"));
        self.audit(
            &who,
            format!("{}: switchover to {to}", req.group),
            r.as_ref().err().map(|e| format!("{e:#}")),
        );
        let r = r.map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(r.into()))
    }

    async fn elect(
        &self,
        req: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectReport>, Status> {
        let who = crate::audit::caller(&req);
        crate::scope::role(&req).require_cluster("this administrative change")?;
        let req = req.into_inner();
        let r = crate::failover::elect_report(&self.node, &req.group, req.wait_lease).await;
        self.audit(
            &who,
            format!(
                "{}: forced election of node {}",
                req.group, self.node.node_id
            ),
            r.as_ref().err().map(|e| format!("{e:#}")),
        );
        let r = r.map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(r.into()))
    }

    async fn digest(
        &self,
        req: Request<pb::GroupRequest>,
    ) -> Result<Response<pb::DigestReply>, Status> {
        crate::scope::role(&req).require_cluster("reading digest")?;
        let g = self.node.group(&req.into_inner().group)?;
        let r = g.reader();
        // Read the index before and after: equal values mean the digest matches it.
        let before = r.applied_index();
        let digest = r.digest().map_err(internal)?;
        let after = r.applied_index();
        let d = Digest {
            applied_index: after,
            stable: before == after,
            digest,
            bodies: r.body_count().map_err(internal)? as u64,
        };
        Ok(Response::new(d.into()))
    }

    async fn messages(
        &self,
        req: Request<pb::MessagesRequest>,
    ) -> Result<Response<pb::MessagesReply>, Status> {
        crate::scope::role(&req).require_cluster("reading messages")?;
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        let r = if req.linearizable {
            g.linearizable_reader()
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?
        } else {
            g.reader()
        };
        let msgs = r.messages(&req.user, &req.mailbox).map_err(internal)?;
        Ok(Response::new(pb::MessagesReply {
            exists: msgs.is_some(),
            messages: msgs
                .unwrap_or_default()
                .into_iter()
                .map(|m| {
                    MessageSummary {
                        uid: m.uid,
                        modseq: m.modseq,
                        size: m.size,
                        flags: m.flags,
                    }
                    .into()
                })
                .collect(),
        }))
    }

    async fn mailboxes(
        &self,
        req: Request<pb::MailboxesRequest>,
    ) -> Result<Response<pb::Records>, Status> {
        crate::scope::role(&req).require_cluster("reading mailboxes")?;
        let req = req.into_inner();
        let g = self.node.group(&req.group)?;
        records(&g.reader().mailboxes(&req.user).map_err(internal)?)
    }

    async fn audit(&self, req: Request<pb::AuditRequest>) -> Result<Response<pb::Records>, Status> {
        crate::scope::role(&req).require_cluster("reading the audit trail")?;
        let limit = req.into_inner().limit as usize;
        let g = self.node.group(META_GROUP)?;
        let mut all = g.reader().audit().map_err(internal)?;
        if limit > 0 && all.len() > limit {
            all.drain(..all.len() - limit);
        }
        records(&all)
    }

    async fn queue(&self, req: Request<pb::GroupRequest>) -> Result<Response<pb::Records>, Status> {
        crate::scope::role(&req).require_cluster("reading queue")?;
        let g = self.node.group(&req.into_inner().group)?;
        records(&g.reader().queue().map_err(internal)?)
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveReply>, Status> {
        let role = crate::scope::role(&req);
        let address = req.into_inner().address;
        if !role.covers(&address) {
            role.require_cluster(&format!("{address} is outside your domains"))?;
        }
        let r = self
            .node
            .directory
            .resolve(&address)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ResolveReply {
            directory: self.node.directory_kind.to_string(),
            resolution: bincode::serialize(&r).map_err(internal)?,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateReply>, Status> {
        // A password oracle for other domains' users is not a domain administrator's.
        crate::scope::role(&req).require_cluster("testing a password")?;
        let req = req.into_inner();
        let p = self
            .node
            .directory
            .authenticate(&req.login, &req.password)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::AuthenticateReply {
            directory: self.node.directory_kind.to_string(),
            principal: p
                .map(|p| bincode::serialize(&p))
                .transpose()
                .map_err(internal)?,
        }))
    }

    async fn domains(
        &self,
        req: Request<pb::DomainsRequest>,
    ) -> Result<Response<pb::Records>, Status> {
        let role = crate::scope::role(&req);
        let sm = self.directory_reader().await?;
        let mut v = sm.directory(|r| r.domains()).map_err(internal)?;
        v.retain(|d| role.covers(&d.name));
        records(&v)
    }

    async fn users(
        &self,
        req: Request<pb::DomainFilter>,
    ) -> Result<Response<pb::UsersReply>, Status> {
        let role = crate::scope::role(&req);
        let domain = req.into_inner().domain;
        let sm = self.directory_reader().await?;
        let users = sm
            .directory(|r| {
                let mut out = Vec::new();
                for u in r.users()? {
                    if in_domain(&u.address, &domain) && role.covers(&u.address) {
                        let d = r.domain(domain_of(&u.address))?;
                        out.push(user_view(&u, d.as_ref()));
                    }
                }
                Ok(out)
            })
            .map_err(internal)?;
        Ok(Response::new(pb::UsersReply {
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn user(&self, req: Request<pb::UserRequest>) -> Result<Response<pb::UserReply>, Status> {
        let role = crate::scope::role(&req);
        let address = req.into_inner().address;
        if !role.covers(&address) {
            role.require_cluster(&format!("{address} is outside your domains"))?;
        }
        let sm = self.directory_reader().await?;
        let user = sm
            .directory(|r| match r.user(&address.to_lowercase())? {
                Some(u) => {
                    let d = r.domain(domain_of(&u.address))?;
                    Ok(Some(user_view(&u, d.as_ref())))
                }
                None => Ok(None),
            })
            .map_err(internal)?;
        Ok(Response::new(pb::UserReply {
            user: user.map(Into::into),
        }))
    }

    async fn addresses(
        &self,
        req: Request<pb::DomainFilter>,
    ) -> Result<Response<pb::Records>, Status> {
        let role = crate::scope::role(&req);
        let domain = req.into_inner().domain;
        let sm = self.directory_reader().await?;
        let v: Vec<(String, DirAddress)> = sm
            .directory(|r| {
                Ok(r.addresses()?
                    .into_iter()
                    .filter(|(a, w)| {
                        in_domain(a, &domain) && role.covers(a) && !matches!(w, DirAddress::User)
                    })
                    .collect())
            })
            .map_err(internal)?;
        records(&v)
    }
}

/// Whether `cmd` changes the embedded directory (itself or inside a batch).
fn writes_directory(cmd: &Command) -> bool {
    match cmd {
        Command::Directory(_) => true,
        Command::Batch(cmds) | Command::Atomic(cmds) => cmds.iter().any(writes_directory),
        Command::Tracked(c) => writes_directory(c),
        _ => false,
    }
}
