//! Connection reuse of the relay: idle connections per server address, taken for the next
//! transaction after an `RSET`, closed with `QUIT` when they have idled, served or lived
//! long enough (see the rules in `relay.rs`'s module documentation).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Conn, Io};
use super::relay::Relay;

/// How long a connection waits, idle, for another transaction to the same server.
pub const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// Transactions one connection carries at most.
pub const MAX_USES: u32 = 100;
/// Age after which a connection is not reused.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Idle connections kept per server address.
pub const MAX_IDLE_PER_DESTINATION: usize = 4;

/// An open SMTP connection after EHLO (and STARTTLS), between transactions.
pub(super) struct Open {
    pub(super) conn: Conn<Box<dyn Io>>,
    pub(super) host: String,
    pub(super) ip: IpAddr,
    /// Extensions of the last EHLO reply (upper case).
    pub(super) exts: Vec<String>,
    pub(super) opened: Instant,
    pub(super) uses: u32,
    /// The host name whose certificate was verified on this connection, if one was.
    pub(super) verified_for: Option<String>,
}

/// Idle connections by server address, each with the id its closing timer knows it by.
pub(super) type Pool = Arc<std::sync::Mutex<HashMap<SocketAddr, Vec<(u64, Open)>>>>;

impl Relay {
    pub(super) fn take_idle(&self, sa: SocketAddr) -> Option<Open> {
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.get_mut(&sa)?;
        let open = list.pop().map(|(_, o)| o);
        if list.is_empty() {
            pool.remove(&sa);
        }
        open
    }

    /// Keeps `open` for the next transaction to `sa`, or closes it (server said 421, used
    /// or aged out, enough idle already); an idle connection is closed after [`IDLE_LIMIT`].
    pub(super) fn put_idle(&self, sa: SocketAddr, open: Open) {
        let keep = !open.conn.closing && open.uses < MAX_USES && open.opened.elapsed() < MAX_AGE;
        let id = self
            .next_idle_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refused = {
            let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(sa).or_default();
            if keep && list.len() < MAX_IDLE_PER_DESTINATION {
                list.push((id, open));
                None
            } else {
                Some(open)
            }
        };
        if let Some(open) = refused {
            tokio::spawn(quit(open));
            return;
        }
        let pool = self.idle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_LIMIT).await;
            let expired = {
                let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                let list = pool.get_mut(&sa);
                let found = list.and_then(|l| {
                    let i = l.iter().position(|(i, _)| *i == id)?;
                    Some(l.remove(i).1)
                });
                if pool.get(&sa).is_some_and(|l| l.is_empty()) {
                    pool.remove(&sa);
                }
                found
            };
            if let Some(open) = expired {
                quit(open).await;
            }
        });
    }
}

/// Says goodbye on a connection no longer wanted (briefly: it is closed either way).
async fn quit(mut open: Open) {
    let _ = tokio::time::timeout(Duration::from_secs(2), open.conn.cmd("QUIT")).await;
}
