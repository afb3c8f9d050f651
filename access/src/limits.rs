//! Failed-login throttling (per client address and per login), shared by the IMAP and POP3
//! listeners. Connection admission (caps, rates, allow/deny) is the network layer's
//! (`halyard_net::admission`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AccessConfig;

/// How long failed logins are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// At most this many addresses and logins are tracked (stale ones, then the oldest of those
/// not blocking, are forgotten first).
const MAX_TRACKED: usize = 100_000;

pub struct Limits {
    max_failures: u32,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Limits {
    pub fn new(cfg: &AccessConfig) -> Limits {
        Limits {
            max_failures: cfg.max_login_failures,
            failures: Mutex::new(HashMap::new()),
        }
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
                // Still full: forget the oldest half of what is not blocking now. Clearing
                // everything would let a flood of fresh logins reset a guesser's count.
                let max = self.max_failures;
                let mut open: Vec<(Instant, String)> = f
                    .iter()
                    .filter(|(_, (n, _))| *n < max)
                    .map(|(k, (_, since))| (*since, k.clone()))
                    .collect();
                open.sort_unstable();
                let drop = open.len() / 2 + 1;
                for (_, k) in open.into_iter().take(drop) {
                    f.remove(&k);
                }
                if f.len() >= MAX_TRACKED {
                    // Everything tracked is blocking: the oldest block goes first.
                    if let Some(k) = f
                        .iter()
                        .min_by_key(|(_, (_, s))| *s)
                        .map(|(k, _)| k.clone())
                    {
                        f.remove(&k);
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 §7's flood, for logins: fresh addresses and logins filling the table must
    /// not reset the count of a guesser who is blocked.
    #[test]
    fn a_flood_of_fresh_logins_does_not_unblock_a_guesser() {
        let l = Limits {
            max_failures: 3,
            failures: Mutex::new(HashMap::new()),
        };
        let guesser: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            l.login_failed(guesser, "root");
        }
        assert!(!l.login_allowed(guesser, "someone"));
        for i in 0..(MAX_TRACKED as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.login_failed(ip, &format!("user{i}"));
        }
        assert!(l.failures.lock().unwrap().len() <= MAX_TRACKED + 2);
        assert!(
            !l.login_allowed(guesser, "someone"),
            "the flood unblocked the guesser"
        );
        assert!(!l.login_allowed("192.0.2.8".parse().unwrap(), "root"));
    }
}
