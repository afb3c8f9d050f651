//! The admin API served on the cluster port: status, proposals, membership changes,
//! snapshots and read-only queries. `halyard ctl`, the bench and the cluster tests use it.
//! It is protected like the Raft RPCs: mutual TLS with the cluster CA (or plaintext demo).

use std::sync::Arc;

use halyard_raft_store::{Command, ProposeError, Reply};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

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
        })
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
