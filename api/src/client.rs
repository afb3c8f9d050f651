//! [`Admin`], the typed client of a node's admin API, used by `halyard ctl`, the daemon's
//! switchover and proposal forwarding, `halyard-lab` and the cluster tests.
//!
//! Errors carry the gRPC status message as the server wrote it (prefixed with the node's
//! address where the caller may have asked several nodes), so `ctl` prints what went wrong
//! on the node, not a transport code.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use halyard_directory::Principal;
use halyard_raft_store::directory::{DirAddress, DirDomain};
use halyard_raft_store::{Command, MailboxRecord, ProposeError, QueueEntry, Reply};
use tonic::transport::{Channel, Endpoint};

use crate::pb::admin_client::AdminClient;
use crate::tls::{CLUSTER_DOMAIN, TlsMaterial};
use crate::types::{
    Digest, ElectReport, FailoverReport, MessageSummary, NodeStatus, Resolved, UserView,
    records_from_pb,
};
use crate::{CONNECTION_WINDOW, MAX_MESSAGE_BYTES, STREAM_WINDOW, pb};

#[derive(Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    pub addr: String,
    tls: Option<TlsMaterial>,
}

/// The server's message, not tonic's "status: ..., message: ..." rendering.
fn plain(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
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
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
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

    fn rpc(&self) -> AdminClient<Channel> {
        self.client.clone()
    }

    /// Opens a relayed IMAP/POP3 session on this node (the multiplexor's hop): `outbound`
    /// starts with the header chunk, then carries the client's bytes; the answer stream
    /// carries the session's.
    pub async fn relay<S>(&self, outbound: S) -> Result<tonic::Streaming<pb::RelayChunk>>
    where
        S: tonic::IntoStreamingRequest<Message = pb::RelayChunk>,
    {
        let r = self.rpc().relay(outbound).await.map_err(plain)?;
        Ok(r.into_inner())
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        let r = self
            .rpc()
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| anyhow!("{}: {}", self.addr, s.message()))?;
        NodeStatus::try_from(r.into_inner())
    }

    pub async fn propose(&self, group: &str, cmd: &Command) -> Result<Result<Reply, ProposeError>> {
        let command = bincode::serialize(cmd)?;
        let r = self
            .rpc()
            .propose(pb::ProposeRequest {
                group: group.to_string(),
                command,
            })
            .await
            .map_err(|s| anyhow!("{}: {}", self.addr, s.message()))?;
        Ok(bincode::deserialize(&r.into_inner().reply)?)
    }

    /// Adds (as a learner), promotes or removes `node_id` in `group`; run on the leader.
    pub async fn membership(
        &self,
        group: &str,
        action: pb::MembershipAction,
        node_id: u64,
        addr: &str,
    ) -> Result<String> {
        let r = self
            .rpc()
            .membership(pb::MembershipRequest {
                group: group.to_string(),
                node_id,
                addr: addr.to_string(),
                action: action as i32,
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().message)
    }

    pub async fn trigger_snapshot(&self, group: &str) -> Result<String> {
        let r = self
            .rpc()
            .trigger_snapshot(pb::SnapshotRequest {
                group: group.to_string(),
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().message)
    }

    /// Run on the group's master: switch over to `to` (or the best candidate); see
    /// `halyard_node::failover`.
    pub async fn failover(
        &self,
        group: &str,
        to: Option<u64>,
        drain_ms: Option<u64>,
    ) -> Result<FailoverReport> {
        let r = self
            .rpc()
            .failover(pb::FailoverRequest {
                group: group.to_string(),
                to,
                drain_ms,
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().into())
    }

    /// Run on the node that should lead `group`: stand for election, after waiting out the
    /// followers' lease when `wait_lease` (a forced failover).
    pub async fn elect(&self, group: &str, wait_lease: bool) -> Result<ElectReport> {
        let r = self
            .rpc()
            .elect(pb::ElectRequest {
                group: group.to_string(),
                wait_lease,
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().into())
    }

    /// Applied index and a digest of all mail data of `group` on this node.
    pub async fn digest(&self, group: &str) -> Result<Digest> {
        let r = self
            .rpc()
            .digest(pb::GroupRequest {
                group: group.to_string(),
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().into())
    }

    /// Messages of a mailbox (`None`: no such mailbox). `linearizable` reads through the
    /// leader's read index and fails on a node that does not lead the group.
    pub async fn messages(
        &self,
        group: &str,
        user: &str,
        mailbox: &str,
        linearizable: bool,
    ) -> Result<Option<Vec<MessageSummary>>> {
        let r = self
            .rpc()
            .messages(pb::MessagesRequest {
                group: group.to_string(),
                user: user.to_string(),
                mailbox: mailbox.to_string(),
                linearizable,
            })
            .await
            .map_err(plain)?
            .into_inner();
        Ok(r.exists
            .then(|| r.messages.into_iter().map(Into::into).collect()))
    }

    /// Mailboxes of a user in `group`.
    pub async fn mailboxes(&self, group: &str, user: &str) -> Result<Vec<MailboxRecord>> {
        let r = self
            .rpc()
            .mailboxes(pb::MailboxesRequest {
                group: group.to_string(),
                user: user.to_string(),
            })
            .await
            .map_err(plain)?;
        records_from_pb(r.into_inner(), "mailbox")
    }

    /// The mail queue of `group`.
    pub async fn queue(&self, group: &str) -> Result<Vec<QueueEntry>> {
        let r = self
            .rpc()
            .queue(pb::GroupRequest {
                group: group.to_string(),
            })
            .await
            .map_err(plain)?;
        records_from_pb(r.into_inner(), "queue entry")
    }

    /// The audit trail as this node's replica of the meta group has it, oldest first
    /// (`limit` 0: every record kept).
    pub async fn audit(&self, limit: u32) -> Result<Vec<halyard_raft_store::AuditRecord>> {
        let r = self
            .rpc()
            .audit(pb::AuditRequest { limit })
            .await
            .map_err(plain)?;
        records_from_pb(r.into_inner(), "audit record")
    }

    /// What `address` is, according to this node's directory (LDAP or embedded).
    pub async fn resolve(&self, address: &str) -> Result<Resolved> {
        let r = self
            .rpc()
            .resolve(pb::ResolveRequest {
                address: address.to_string(),
            })
            .await
            .map_err(plain)?
            .into_inner();
        Ok(Resolved {
            directory: r.directory,
            resolution: bincode::deserialize(&r.resolution)
                .map_err(|e| anyhow!("decoding a resolution: {e}"))?,
        })
    }

    /// Checks a password against this node's directory: which directory answered, and the
    /// principal (`None`: refused).
    pub async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<(String, Option<Principal>)> {
        let r = self
            .rpc()
            .authenticate(pb::AuthenticateRequest {
                login: login.to_string(),
                password: password.to_string(),
            })
            .await
            .map_err(plain)?
            .into_inner();
        let p = r
            .principal
            .map(|b| bincode::deserialize(&b).map_err(|e| anyhow!("decoding a principal: {e}")))
            .transpose()?;
        Ok((r.directory, p))
    }

    /// The embedded directory's hosted domains.
    pub async fn domains(&self) -> Result<Vec<DirDomain>> {
        let r = self
            .rpc()
            .domains(pb::DomainsRequest {})
            .await
            .map_err(plain)?;
        records_from_pb(r.into_inner(), "domain")
    }

    /// Users (without password hashes), optionally of one domain.
    pub async fn users(&self, domain: Option<&str>) -> Result<Vec<UserView>> {
        let r = self
            .rpc()
            .users(pb::DomainFilter {
                domain: domain.map(str::to_string),
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().users.into_iter().map(Into::into).collect())
    }

    pub async fn user(&self, address: &str) -> Result<Option<UserView>> {
        let r = self
            .rpc()
            .user(pb::UserRequest {
                address: address.to_string(),
            })
            .await
            .map_err(plain)?;
        Ok(r.into_inner().user.map(Into::into))
    }

    /// Aliases and lists (not users' own addresses), optionally of one domain.
    pub async fn addresses(&self, domain: Option<&str>) -> Result<Vec<(String, DirAddress)>> {
        let r = self
            .rpc()
            .addresses(pb::DomainFilter {
                domain: domain.map(str::to_string),
            })
            .await
            .map_err(plain)?;
        records_from_pb(r.into_inner(), "address")
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
