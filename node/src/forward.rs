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

/// Forwards to leaders, keeping one admin connection per leader address.
pub struct LeaderForward {
    tls: Option<TlsMaterial>,
    clients: tokio::sync::Mutex<HashMap<String, Admin>>,
}

impl LeaderForward {
    pub fn new(tls: Option<TlsMaterial>) -> LeaderForward {
        LeaderForward {
            tls,
            clients: Default::default(),
        }
    }

    async fn client(&self, addr: &str) -> Result<Admin, ProposeError> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let c = Admin::connect(addr, self.tls.clone())
            .await
            .map_err(|e| ProposeError::Unavailable(format!("master at {addr}: {e:#}")))?;
        self.clients
            .lock()
            .await
            .insert(addr.to_string(), c.clone());
        Ok(c)
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
            let admin = self.client(&leader_addr).await?;
            match admin.propose(&group, &cmd).await {
                Ok(answer) => answer,
                Err(e) => {
                    // The request may or may not have reached the master: a new connection
                    // next time, and no claim either way now.
                    self.clients.lock().await.remove(&leader_addr);
                    Err(ProposeError::Unknown(format!(
                        "the master at {leader_addr} did not answer: {e:#}"
                    )))
                }
            }
        })
    }
}
