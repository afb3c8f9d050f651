//! The listeners of a resource group on its floating address: open while this node holds the
//! group's lease (the fencing controller says so through `Group::serving`), closed — new
//! connections refused at once, SMTP transactions in progress given the drain time, the
//! rest ended — when it stops holding it.

use std::net::IpAddr;
use std::time::Duration;

use halyard_fencing::Controller;
use halyard_net::ListenerSet;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Floating {
    pub controller: Controller,
    pub ip: IpAddr,
    pub mta: Option<halyard_net::Service>,
    pub access: Option<halyard_net::Service>,
    pub drain: Duration,
}

impl Floating {
    /// Runs until `stop` (closing the listeners first).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let group = self.controller.group().clone();
        let name = group.name().to_string();
        let mut serving = group.serving();
        let mut open: Option<(Option<ListenerSet>, Option<ListenerSet>)> = None;
        let mut failures = 0u32;
        loop {
            let token = *serving.borrow_and_update();
            let want = token.is_some() && !*stop.borrow();
            if want && open.is_none() {
                match self.open().await {
                    Ok(sets) => {
                        failures = 0;
                        let bound: Vec<String> = sets
                            .0
                            .iter()
                            .flat_map(|s| s.bound.iter())
                            .chain(sets.1.iter().flat_map(|s| s.bound.iter()))
                            .map(|a| a.to_string())
                            .collect();
                        tracing::info!(group = %name, term = token.map_or(0, |t| t.term), listeners = ?bound, "serving on the floating address");
                        open = Some(sets);
                        self.controller.set_listening(true);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::error!(group = %name, error = %e, "cannot listen on the floating address; retrying");
                        // Retried while the lease lasts; bounded by the lease itself.
                        tokio::time::sleep(Duration::from_millis(100 * failures.min(10) as u64))
                            .await;
                        continue;
                    }
                }
            } else if !want && let Some((mta, access)) = open.take() {
                let (ended_smtp, ended_access) = tokio::join!(
                    async {
                        match mta {
                            Some(m) => m.stop(self.drain).await,
                            None => 0,
                        }
                    },
                    async {
                        match access {
                            Some(a) => a.stop(Duration::from_secs(1)).await,
                            None => 0,
                        }
                    }
                );
                self.controller.set_listening(false);
                tracing::info!(group = %name, ended_smtp, ended_access, "floating-address listeners closed");
            }
            if *stop.borrow() && open.is_none() {
                return;
            }
            tokio::select! {
                r = serving.changed() => if r.is_err() { return },
                _ = stop.changed() => {}
            }
        }
    }

    async fn open(&self) -> Result<(Option<ListenerSet>, Option<ListenerSet>), String> {
        let mta = match &self.mta {
            Some(b) => Some(b.bind_on(self.ip).await?),
            None => None,
        };
        let access = match &self.access {
            Some(b) => match b.bind_on(self.ip).await {
                Ok(s) => Some(s),
                Err(e) => {
                    if let Some(m) = mta {
                        m.stop(Duration::ZERO).await;
                    }
                    return Err(format!("{e:#}"));
                }
            },
            None => None,
        };
        Ok((mta, access))
    }
}
