//! Proposal forwarding for the MTA: a node that is not the master of a group hands an
//! accepted message's `Enqueue` to the master over the cluster's mutual-TLS admin API and
//! relays the master's answer, which comes after the entry is committed on a majority.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use halyard_mta::{Forward, Forwarded};
use halyard_raft_store::{Command, ProposeError};

use crate::tls::TlsMaterial;
use halyard_api::Admin;

/// One admin connection per node address, opened on first use and kept (the MTA's
/// forwarding and the multiplexor's relay both use one).
pub struct AdminPool {
    tls: Option<TlsMaterial>,
    clients: tokio::sync::Mutex<HashMap<String, Admin>>,
}

impl AdminPool {
    pub fn new(tls: Option<TlsMaterial>) -> AdminPool {
        AdminPool {
            tls,
            clients: Default::default(),
        }
    }

    /// The connection to `addr`; the error names the master there.
    pub async fn get(&self, addr: &str) -> Result<Admin, String> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let c = Admin::connect(addr, self.tls.clone())
            .await
            .map_err(|e| format!("master at {addr}: {e:#}"))?;
        self.clients
            .lock()
            .await
            .insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Forgets the connection to `addr` (it failed): the next use opens a new one.
    pub async fn forget(&self, addr: &str) {
        self.clients.lock().await.remove(addr);
    }
}

/// Forwards to leaders, keeping one admin connection per leader address.
pub struct LeaderForward {
    pool: AdminPool,
}

impl LeaderForward {
    pub fn new(tls: Option<TlsMaterial>) -> LeaderForward {
        LeaderForward {
            pool: AdminPool::new(tls),
        }
    }
}

impl Forward for LeaderForward {
    fn propose(
        &self,
        leader_addr: String,
        group: String,
        cmd: Command,
    ) -> Pin<Box<dyn Future<Output = Forwarded> + Send + '_>> {
        Box::pin(async move {
            let admin = self
                .pool
                .get(&leader_addr)
                .await
                .map_err(ProposeError::Unavailable)?;
            match admin.propose(&group, &cmd).await {
                Ok(answer) => answer,
                Err(e) => {
                    // The request may or may not have reached the master: a new connection
                    // next time, and no claim either way now.
                    self.pool.forget(&leader_addr).await;
                    Err(ProposeError::Unknown(format!(
                        "the master at {leader_addr} did not answer: {e:#}"
                    )))
                }
            }
        })
    }
}
