//! Connection limits (total and per client address) and failed-login throttling (per client
//! address and per login), shared by the IMAP and POP3 listeners.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AccessConfig;

/// How long failed logins are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// At most this many addresses and logins are tracked (oldest forgotten first).
const MAX_TRACKED: usize = 100_000;

pub struct Limits {
    max_total: usize,
    max_per_ip: usize,
    max_failures: u32,
    conns: Arc<Mutex<Conns>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

#[derive(Default)]
struct Conns {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Held for the life of a connection.
pub struct ConnGuard {
    conns: Arc<Mutex<Conns>>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(cfg: &AccessConfig) -> Limits {
        Limits {
            max_total: cfg.max_connections,
            max_per_ip: cfg.max_connections_per_ip,
            max_failures: cfg.max_login_failures,
            conns: Arc::new(Mutex::new(Conns::default())),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnGuard, &'static str> {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err("too many connections to this server");
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err("too many connections from your address");
        }
        *n += 1;
        c.total += 1;
        Ok(ConnGuard {
            conns: self.conns.clone(),
            ip,
        })
    }

    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn count(&self, key: &str) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.get(key) {
            Some((n, since)) if since.elapsed() < FAILURE_WINDOW => *n,
            Some(_) => {
                f.remove(key);
                0
            }
            None => 0,
        }
    }

    /// Whether a login attempt from `ip` for `login` may proceed now.
    pub fn login_allowed(&self, ip: IpAddr, login: &str) -> bool {
        self.count(&format!("ip:{ip}")) < self.max_failures
            && self.count(&format!("user:{}", login.to_lowercase())) < self.max_failures
    }

    /// Records a failure; returns how long to wait before answering it (grows with the
    /// number of recent failures: 0 for the first two, then 1, 2, 4 s, at most 8 s).
    pub fn login_failed(&self, ip: IpAddr, login: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= MAX_TRACKED {
            let now = Instant::now();
            f.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if f.len() >= MAX_TRACKED {
                f.clear();
            }
        }
        let mut worst = 0;
        for key in [format!("ip:{ip}"), format!("user:{}", login.to_lowercase())] {
            let e = f.entry(key).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAILURE_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
            worst = worst.max(e.0);
        }
        match worst {
            0..=2 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 3).min(3)),
        }
    }

    /// A successful login clears the login's failures (not the address's).
    pub fn login_succeeded(&self, login: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&format!("user:{}", login.to_lowercase()));
    }
}
