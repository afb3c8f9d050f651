//! The Raft network: openraft's RPCs to other nodes over tonic gRPC.
//!
//! One HTTP/2 channel per peer address is shared by every group (a multiplexed connection,
//! not one per group or per RPC). Requests carry the group name and an opaque bincode payload
//! of openraft's own types. Snapshots use openraft's chunked transfer: each chunk is one
//! `InstallSnapshot` RPC with its offset, so a broken transfer resumes from the start of a
//! chunk, not of the snapshot.
//!
//! AppendEntries, the RPC on the path of every write, goes over one long-lived bidirectional
//! stream per (group, peer) (`AppendStream`) rather than one HTTP/2 request each: openraft
//! sends a peer one AppendEntries at a time and waits for its answer, so answers come back in
//! order on the stream, and each RPC costs two DATA frames instead of a new HTTP/2 stream with
//! its headers, trailers and dispatch. A stream that errs, ends or misses the RPC's deadline
//! is dropped (reset) and the next RPC opens a new one, so a late answer is never taken for
//! the next RPC's; a peer that does not know `AppendStream` (an older build, during a rolling
//! upgrade) is sent unary `AppendEntries` from then on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halyard_raft_store::openraft::BasicNode;
use halyard_raft_store::openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable,
};
use halyard_raft_store::openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use halyard_raft_store::openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use halyard_raft_store::{NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::pb::GroupPayload;
use crate::pb::raft_client::RaftClient;
use crate::tls::{TlsMaterial, node_domain};

pub use halyard_api::{CONNECTION_WINDOW, MAX_MESSAGE_BYTES, STREAM_WINDOW};

/// Connections to peers, shared by all groups of a node.
#[derive(Clone)]
pub struct ChannelPool {
    tls: Option<TlsMaterial>,
    channels: Arc<Mutex<HashMap<(u64, String), Channel>>>,
}

impl ChannelPool {
    pub fn new(tls: Option<TlsMaterial>) -> ChannelPool {
        ChannelPool {
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A (lazily connecting) channel to node `id` at `addr`.
    pub fn channel(&self, id: u64, addr: &str) -> Result<Channel, String> {
        let mut map = self
            .channels
            .lock()
            .map_err(|_| "channel pool poisoned".to_string())?;
        if let Some(c) = map.get(&(id, addr.to_string())) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::network::STREAM_WINDOW)
            .initial_connection_window_size(crate::network::CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.client(&node_domain(id)))
                .map_err(|e| format!("tls config: {e}"))?;
        }
        let ch = ep.connect_lazy();
        map.insert((id, addr.to_string()), ch.clone());
        Ok(ch)
    }
}

/// Builds per-peer clients for one group.
#[derive(Clone)]
pub struct Network {
    pub group: String,
    pub pool: ChannelPool,
    /// This node, named in every request with this build's command level.
    pub node_id: NodeId,
    /// Where the levels peers report in their answers go (the group's).
    pub levels: halyard_raft_store::PeerLevels,
}

impl Network {
    /// The network of one group, with a fresh record of its peers' command levels.
    pub fn for_group(group: &str, pool: &ChannelPool, node_id: NodeId) -> Network {
        Network {
            group: group.to_string(),
            pool: pool.clone(),
            node_id,
            levels: halyard_raft_store::PeerLevels::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            group: self.group.clone(),
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
            stream: None,
            unary_only: false,
            node_id: self.node_id,
            levels: self.levels.clone(),
        }
    }
}

/// RPCs of one group to one peer.
pub struct PeerClient {
    group: String,
    target: NodeId,
    addr: String,
    pool: ChannelPool,
    /// The open AppendEntries stream to this peer, if any.
    stream: Option<AppendStream>,
    /// The peer answered `AppendStream` with Unimplemented: use unary AppendEntries.
    unary_only: bool,
    node_id: NodeId,
    levels: halyard_raft_store::PeerLevels,
}

/// One AppendEntries stream: requests go in through `tx`, answers come out of `rx` in order.
struct AppendStream {
    tx: tokio::sync::mpsc::Sender<GroupPayload>,
    rx: tonic::Streaming<GroupPayload>,
}

fn status_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerClient {
    /// A request to the peer: the group, this node and its command level, the payload.
    fn payload(&self, payload: Vec<u8>) -> GroupPayload {
        GroupPayload {
            group: self.group.clone(),
            payload,
            from_node: self.node_id,
            command_level: halyard_raft_store::COMMAND_LEVEL,
        }
    }

    fn client(&self) -> Result<RaftClient<Channel>, String> {
        Ok(RaftClient::new(self.pool.channel(self.target, &self.addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    async fn call<Req, Resp, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        kind: Kind,
    ) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .client()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let mut request = tonic::Request::new(self.payload(payload));
        request.set_timeout(option.hard_ttl());
        let resp = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let resp = resp.map_err(status_error)?.into_inner();
        self.levels.record(self.target, resp.command_level);
        self.answer(&resp.payload)
    }

    /// Decodes a peer's bincode answer: its result, or its Raft error as a remote error.
    #[allow(clippy::result_large_err)] // openraft's error type, as RaftNetwork returns it
    fn answer<Resp, E>(&self, payload: &[u8]) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(halyard_raft_store::openraft::error::RemoteError::new(
                self.target,
                e,
            ))
        })
    }

    /// AppendEntries over this peer's stream (opened if need be). `None` if the peer does not
    /// know streams (then the caller goes unary, and so does every later call).
    async fn append_streamed(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Option<RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
        let deadline = tokio::time::Instant::now() + option.hard_ttl();
        let payload = match bincode::serialize(rpc) {
            Ok(p) => p,
            Err(e) => return Some(Err(RPCError::Network(NetworkError::new(&e)))),
        };
        if self.stream.is_none() {
            let mut client = match self.client() {
                Ok(c) => c,
                Err(e) => {
                    return Some(Err(RPCError::Unreachable(Unreachable::new(
                        &std::io::Error::other(e),
                    ))));
                }
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let open = client.append_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            match tokio::time::timeout_at(deadline, open).await {
                Ok(Ok(resp)) => {
                    self.stream = Some(AppendStream {
                        tx,
                        rx: resp.into_inner(),
                    })
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    tracing::info!(group = %self.group, peer = self.target, "peer has no AppendEntries stream; using unary RPCs");
                    self.unary_only = true;
                    return None;
                }
                Ok(Err(status)) => return Some(Err(status_error(status))),
                Err(_) => {
                    return Some(Err(RPCError::Network(NetworkError::new(
                        &std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "opening the AppendEntries stream timed out",
                        ),
                    ))));
                }
            }
        }
        let request = self.payload(payload);
        let stream = self.stream.as_mut()?;
        let exchange = async {
            stream.tx.send(request).await.map_err(|_| {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "AppendEntries stream closed",
                )))
            })?;
            match stream.rx.message().await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "AppendEntries stream ended",
                    ),
                ))),
                Err(status) => Err(status_error(status)),
            }
        };
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.stream = None;
                return Some(Err(e));
            }
            Err(_) => {
                // The answer may still come; it must not be read as the next RPC's.
                self.stream = None;
                return Some(Err(RPCError::Network(NetworkError::new(
                    &std::io::Error::new(std::io::ErrorKind::TimedOut, "AppendEntries timed out"),
                ))));
            }
        };
        self.levels.record(self.target, answer.command_level);
        let r = self.answer(&answer.payload);
        if r.is_err() {
            self.stream = None;
        }
        Some(r)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        if !self.unary_only
            && let Some(r) = self.append_streamed(&rpc, &option).await
        {
            return r;
        }
        self.call::<_, _, halyard_raft_store::openraft::error::Infallible>(
            &rpc,
            &option,
            Kind::Append,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(&rpc, &option, Kind::Snapshot).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call::<_, _, halyard_raft_store::openraft::error::Infallible>(
            &rpc,
            &option,
            Kind::Vote,
        )
        .await
    }
}
