//! The multiplexor's hop between nodes: an IMAP or POP3 session that one node authenticated,
//! carried to the master of the user's group over the admin API's `Relay` stream, which runs
//! on the cluster's mutual TLS (see `halyard_access::proxy` for the session side).
//!
//! - [`GrpcRelay`] is the accepting node's side: it opens the stream with a [`pb::RelayOpen`]
//!   header (the principal it authenticated, the client's address, whether the client used
//!   TLS) and pumps a local byte stream into it and back.
//! - [`serve`] is the master's side, called by the `Relay` RPC: it admits only callers that
//!   present a *node* certificate of the cluster (the `halyard.cluster` SAN that every node
//!   certificate carries and `ctl` certificates do not), then runs the session on this node's
//!   access server, pre-authenticated as the header's principal.
//!
//! With `plaintext = true` (demos on loopback only) there is no certificate to check and the
//! hop is as open as the rest of the cluster RPC.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use halyard_access::{RelayHop, RelayOpen, RelayProtocol};
use halyard_api::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::forward::AdminPool;
use crate::tls::{CLUSTER_DOMAIN, TlsMaterial};

/// Bytes per chunk and buffered in each direction of a relayed session.
const CHUNK: usize = 32 * 1024;

/// Chunks in flight per direction before the sender waits.
const DEPTH: usize = 8;

/// The accepting node's side, keeping one admin connection per master address.
pub struct GrpcRelay {
    pool: AdminPool,
}

impl GrpcRelay {
    pub fn new(tls: Option<TlsMaterial>) -> GrpcRelay {
        GrpcRelay {
            pool: AdminPool::new(tls),
        }
    }
}

impl RelayHop for GrpcRelay {
    fn open(
        &self,
        addr: String,
        open: RelayOpen,
    ) -> Pin<Box<dyn Future<Output = Result<DuplexStream, String>> + Send + '_>> {
        Box::pin(async move {
            let principal = bincode::serialize(&open.principal).map_err(|e| e.to_string())?;
            let header = pb::RelayChunk {
                open: Some(pb::RelayOpen {
                    protocol: open.protocol.name().to_string(),
                    principal,
                    client: open.client.to_string(),
                    client_tls: open.client_tls,
                    via_node: open.via_node,
                }),
                data: Vec::new(),
            };
            let (tx, rx) = mpsc::channel(DEPTH);
            let _ = tx.send(header).await;
            let admin = self.pool.get(&addr).await?;
            let inbound = match admin
                .relay(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    // A broken connection is not kept for the next session.
                    self.pool.forget(&addr).await;
                    return Err(format!("master at {addr}: {e:#}"));
                }
            };
            let (local, remote) = tokio::io::duplex(CHUNK);
            tokio::spawn(pump(remote, inbound, tx, |data| pb::RelayChunk {
                open: None,
                data,
            }));
            Ok(local)
        })
    }
}

/// Copies `io` into chunks sent on `tx` (until `io` ends or the other side is gone) and
/// `inbound`'s chunks into `io` (until the stream ends or fails), both at once. `tx` is
/// dropped as soon as `io` ends, which ends this side's stream: the other side's copy then
/// ends too, and neither waits for the other forever (a relay that held its sender until
/// both directions were done kept every finished session's stream open, and a node's
/// shutdown waited for them).
async fn pump<T>(
    io: DuplexStream,
    mut inbound: Streaming<pb::RelayChunk>,
    tx: mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let up = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(wrap(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(tx);
    };
    let down = async {
        while let Ok(Some(c)) = inbound.message().await {
            if wr.write_all(&c.data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Whether the caller's certificate is a node certificate of the cluster: a node's carries
/// the `halyard.cluster` DNS name, a `ctl` certificate only `ctl.halyard.cluster`. The chain
/// itself was verified against the cluster CA by the TLS layer.
pub(crate) fn node_certificate(der: &[u8]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(d) if *d == CLUSTER_DOMAIN))
}

/// Refuses a request whose client certificate is not a node's, when the cluster runs TLS:
/// Raft and the multiplexor's hop are for nodes, never for `ctl` or other certificates the
/// cluster CA issued.
pub(crate) fn require_node<T>(
    tls: bool,
    req: &tonic::Request<T>,
    what: &str,
) -> Result<(), Status> {
    if !tls {
        return Ok(());
    }
    let certs = req.peer_certs();
    let first = certs.as_ref().and_then(|c| c.first());
    if first.is_some_and(|c| node_certificate(c.as_ref())) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "only a node of the cluster may {what}"
        )))
    }
}

/// The master's side of the `Relay` RPC: checks the caller, reads the header, and serves the
/// session on `access`; the answer stream carries the session's output.
pub async fn serve(
    access: Option<Arc<halyard_access::Shared>>,
    tls: bool,
    req: tonic::Request<Streaming<pb::RelayChunk>>,
) -> Result<mpsc::Receiver<Result<pb::RelayChunk, Status>>, Status> {
    require_node(tls, &req, "relay a session")?;
    let access =
        access.ok_or_else(|| Status::unavailable("this node's IMAP/POP3 is not running"))?;
    let mut inbound = req.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("no header"))?;
    let head = first
        .open
        .ok_or_else(|| Status::invalid_argument("the first chunk must be the header"))?;
    let open = RelayOpen {
        protocol: RelayProtocol::parse(&head.protocol)
            .ok_or_else(|| Status::invalid_argument("unknown protocol"))?,
        principal: bincode::deserialize(&head.principal)
            .map_err(|e| Status::invalid_argument(format!("principal: {e}")))?,
        client: head
            .client
            .parse::<SocketAddr>()
            .map_err(|e| Status::invalid_argument(format!("client address: {e}")))?,
        client_tls: head.client_tls,
        via_node: head.via_node,
    };
    let (local, mut remote) = tokio::io::duplex(CHUNK);
    if !first.data.is_empty() {
        let _ = remote.write_all(&first.data).await;
    }
    crate::runtimes::service().spawn(halyard_access::serve_relayed(access, local, open));
    let (tx, rx) = mpsc::channel(DEPTH);
    // The session's bytes are service work: copied on the service runtime.
    crate::runtimes::service().spawn(pump(remote, inbound, tx, |data| {
        Ok(pb::RelayChunk { open: None, data })
    }));
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_are_told_from_ctl_ones() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::generate(dir.path(), &[1, 2]).unwrap();
        let der = |name: &str| {
            let pem = std::fs::read(dir.path().join(name)).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            pem.contents
        };
        assert!(node_certificate(&der("node-1.pem")));
        assert!(node_certificate(&der("node-2.pem")));
        assert!(!node_certificate(&der("ctl.pem")));
        assert!(!node_certificate(b"not a certificate"));
    }
}
