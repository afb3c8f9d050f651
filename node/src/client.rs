//! A client of a node's admin API, used by `halyard ctl`, `halyard-lab bench` and the cluster
//! tests.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use halyard_raft_store::{Command, ProposeError, Reply};
use tonic::transport::{Channel, Endpoint};

use crate::admin::Query;
use crate::network::MAX_MESSAGE_BYTES;
use crate::pb;
use crate::pb::admin_client::AdminClient;
use crate::runtime::NodeStatus;
use crate::tls::{CLUSTER_DOMAIN, TlsMaterial};

#[derive(Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    pub addr: String,
    tls: Option<TlsMaterial>,
}

impl Admin {
    /// Connects to the admin API at `addr` (with mutual TLS when `tls` is given).
    pub async fn connect(addr: &str, tls: Option<TlsMaterial>) -> Result<Admin> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .with_context(|| format!("bad node address {addr:?}"))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(150))
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::network::STREAM_WINDOW)
            .initial_connection_window_size(crate::network::CONNECTION_WINDOW);
        if let Some(t) = &tls {
            ep = ep.tls_config(t.client(CLUSTER_DOMAIN))?;
        }
        let ch = ep
            .connect()
            .await
            .with_context(|| format!("cannot reach node at {addr}"))?;
        let client = AdminClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Admin {
            client,
            addr: addr.to_string(),
            tls,
        })
    }

    /// Another admin client with the same TLS settings.
    pub async fn reconnect(&self, addr: &str) -> Result<Admin> {
        Admin::connect(addr, self.tls.clone()).await
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        let r = self
            .client
            .clone()
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| anyhow!("{}: {}", self.addr, s.message()))?;
        Ok(serde_json::from_str(&r.into_inner().json)?)
    }

    pub async fn propose(&self, group: &str, cmd: &Command) -> Result<Result<Reply, ProposeError>> {
        let command = bincode::serialize(cmd)?;
        let r = self
            .client
            .clone()
            .propose(pb::ProposeRequest {
                group: group.to_string(),
                command,
            })
            .await
            .map_err(|s| anyhow!("{}: {}", self.addr, s.message()))?;
        Ok(bincode::deserialize(&r.into_inner().reply)?)
    }

    pub async fn membership(
        &self,
        group: &str,
        action: &str,
        node_id: u64,
        addr: &str,
    ) -> Result<String> {
        let r = self
            .client
            .clone()
            .membership(pb::MembershipRequest {
                group: group.to_string(),
                node_id,
                addr: addr.to_string(),
                action: action.to_string(),
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
        Ok(r.into_inner().message)
    }

    pub async fn trigger_snapshot(&self, group: &str) -> Result<String> {
        let r = self
            .client
            .clone()
            .trigger_snapshot(pb::SnapshotRequest {
                group: group.to_string(),
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
        Ok(r.into_inner().message)
    }

    pub async fn query(&self, q: &Query) -> Result<serde_json::Value> {
        let json = serde_json::to_string(q)?;
        let r = self
            .client
            .clone()
            .query(pb::QueryRequest { json })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
        Ok(serde_json::from_str(&r.into_inner().json)?)
    }

    /// Runs an action that moves a group's mastership (see [`crate::failover`]).
    pub async fn act(&self, a: &crate::failover::Action) -> Result<serde_json::Value> {
        let json = serde_json::to_string(a)?;
        let r = self
            .client
            .clone()
            .act(pb::QueryRequest { json })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
        Ok(serde_json::from_str(&r.into_inner().json)?)
    }

    /// The admin client of the current leader of `group`, as seen from this node.
    pub async fn leader_of(&self, group: &str) -> Result<Admin> {
        let st = self.status().await?;
        let g = st
            .groups
            .iter()
            .find(|g| g.name == group)
            .ok_or_else(|| anyhow!("no group {group:?} on {}", self.addr))?;
        let leader = g
            .leader
            .ok_or_else(|| anyhow!("group {group} has no leader right now"))?;
        if leader == st.node_id {
            return Ok(self.clone());
        }
        let addr = g
            .members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.addr.clone())
            .ok_or_else(|| anyhow!("leader {leader} of {group} has no known address"))?;
        self.reconnect(&addr).await
    }

    /// Like [`Admin::leader_of`], waiting (polling every 200 ms, at most `wait`) while the
    /// group has no leader, e.g. during an election.
    pub async fn leader_of_wait(&self, group: &str, wait: Duration) -> Result<Admin> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.leader_of(group).await {
                Ok(a) => return Ok(a),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Proposes `cmd` to the leader of `group`, following leader changes and riding out an
    /// election: at most 40 attempts over about 20 seconds. Returns the state machine's reply.
    /// A proposal is retried only when it was certainly not committed (no leader, not the
    /// leader); an unknown outcome is reported, never retried blindly.
    pub async fn propose_to_leader(&self, group: &str, cmd: &Command) -> Result<Reply> {
        let mut last = String::new();
        for _ in 0..40 {
            match self.leader_of(group).await {
                Ok(leader) => match leader.propose(group, cmd).await {
                    Ok(Ok(reply)) => return Ok(reply),
                    Ok(Err(e @ ProposeError::NotLeader { .. })) => last = e.to_string(),
                    Ok(Err(e)) => return Err(anyhow!("{e}")),
                    Err(e) => return Err(anyhow!("outcome unknown, check before retrying: {e:#}")),
                },
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(anyhow!(
            "group {group}: no leader accepted the change: {last}"
        ))
    }
}
