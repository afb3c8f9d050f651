//! The server side of the Raft RPCs: AppendEntries (one call or a stream per peer), Vote and
//! InstallSnapshot, handed to the group the payload names. Payloads are openraft's own
//! types in bincode (see `halyard-api`'s proto). Only node certificates may call them: a
//! `ctl` certificate (or any other the cluster CA signed) is refused, since a raw
//! AppendEntries or Vote from outside the group could overwrite its log.

use std::sync::Arc;

use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::shared::NodeShared;

/// Server side of the Raft RPCs.
pub struct RaftRpc {
    pub node: Arc<NodeShared>,
}

impl RaftRpc {
    fn node_only<T>(&self, req: &Request<T>) -> Result<(), Status> {
        crate::relay::require_node(self.node.tls.is_some(), req, "speak Raft")
    }
}

fn decode<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, Status> {
    bincode::deserialize(p)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

/// An answer: the group, this node and its command level, the payload.
fn reply<T: Serialize>(
    node: &NodeShared,
    group: String,
    v: &T,
) -> Result<Response<pb::GroupPayload>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::GroupPayload {
        group,
        payload,
        from_node: node.node_id,
        command_level: halyard_raft_store::COMMAND_LEVEL,
    }))
}

/// The group a request names, after noting the sender's command level (see
/// [`halyard_raft_store::PeerLevels`]).
fn group_of<'n>(
    node: &'n NodeShared,
    req: &pb::GroupPayload,
) -> Result<&'n halyard_raft_store::Group, Status> {
    let g = node.group(&req.group)?;
    if req.from_node != 0 {
        g.peer_levels().record(req.from_node, req.command_level);
    }
    Ok(g)
}

/// One AppendEntries: hands it to the group's Raft and records when the leader was last
/// heard from (for forced failovers).
async fn append_one(
    node: &NodeShared,
    req: pb::GroupPayload,
) -> Result<Response<pb::GroupPayload>, Status> {
    let g = group_of(node, &req)?;
    let r = g.raft().append_entries(decode(&req.payload)?).await;
    if matches!(&r, Ok(x) if x.is_success()) {
        node.last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(req.group.clone(), std::time::Instant::now());
    }
    reply(node, req.group, &r)
}

type AnswerStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::GroupPayload, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftRpc {
    async fn append_entries(
        &self,
        req: Request<pb::GroupPayload>,
    ) -> Result<Response<pb::GroupPayload>, Status> {
        self.node_only(&req)?;
        append_one(&self.node, req.into_inner()).await
    }

    type AppendStreamStream = AnswerStream;

    /// AppendEntries requests of one stream, answered one by one in order; an error ends
    /// the stream (the leader then opens a new one).
    async fn append_stream(
        &self,
        req: Request<tonic::Streaming<pb::GroupPayload>>,
    ) -> Result<Response<AnswerStream>, Status> {
        self.node_only(&req)?;
        let mut inbound = req.into_inner();
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let answer = append_one(&node, req).await.map(Response::into_inner);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn vote(
        &self,
        req: Request<pb::GroupPayload>,
    ) -> Result<Response<pb::GroupPayload>, Status> {
        self.node_only(&req)?;
        let req = req.into_inner();
        let g = group_of(&self.node, &req)?;
        let vote: halyard_raft_store::openraft::raft::VoteRequest<u64> = decode(&req.payload)?;
        // A holder that could grant this vote gives its address up first (see
        // halyard-fencing: a leader's own vote is not protected by Raft's follower lease).
        if let Some(c) = self.node.fences.get(&req.group) {
            c.before_vote(vote.vote.leader_id().term);
        }
        let r = g.raft().vote(vote).await;
        reply(&self.node, req.group, &r)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::GroupPayload>,
    ) -> Result<Response<pb::GroupPayload>, Status> {
        self.node_only(&req)?;
        let req = req.into_inner();
        let g = group_of(&self.node, &req)?;
        let r = g.raft().install_snapshot(decode(&req.payload)?).await;
        reply(&self.node, req.group, &r)
    }
}
