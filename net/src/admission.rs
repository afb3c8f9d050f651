//! Connection admission, the one gate every listener's connections pass before a protocol
//! sees them: allow/deny networks (first matching rule decides), a per-address connection
//! rate, a total and a per-address cap on open connections. Each service (the MTA's
//! listeners, IMAP+POP3, later HTTP) has its own [`Admission`], so a flood of one protocol
//! does not lock clients out of another. Refusals are counted per [`Refused`] reason and
//! written by the protocol in its own words (`421 4.7.0 ...`, `* BYE ...`, `-ERR ...`).
//!
//! Memory is bounded under a flood of distinct addresses: at most [`MAX_TRACKED`] addresses
//! have a rate history. Past that, histories older than the rate window go first, then the
//! half of the addresses seen least recently ([`evict`]); an address that keeps connecting
//! is the most recent and keeps its history, so a flood of new addresses cannot reset the
//! limit of the one hammering the server (it used to clear the whole table).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses whose recent connection times are kept for the rate limit.
pub const MAX_TRACKED: usize = 100_000;
/// The window of the per-address connection rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An `allow CIDR` or `deny CIDR` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    pub network: Network,
}

/// Parses `client_access` rules (`"allow 10.0.0.0/8"`, `"deny 0.0.0.0/0"`); the error names
/// the bad rule.
pub fn parse_rules(rules: &[String]) -> Result<Vec<AccessRule>, String> {
    rules
        .iter()
        .map(|rule| {
            let (verb, net) = rule
                .trim()
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("{rule:?}: expected \"allow CIDR\" or \"deny CIDR\""))?;
            let allow = match verb.to_ascii_lowercase().as_str() {
                "allow" => true,
                "deny" => false,
                _ => return Err(format!("{rule:?}: the action is allow or deny")),
            };
            Ok(AccessRule {
                allow,
                network: Network::parse(net.trim())?,
            })
        })
        .collect()
}

/// Whether `ip` may connect under `rules`: the first rule whose network contains it decides;
/// no match allows.
pub fn rules_admit(rules: &[AccessRule], ip: IpAddr) -> bool {
    rules
        .iter()
        .find(|r| r.network.contains(ip))
        .is_none_or(|r| r.allow)
}

/// The limits of one service.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Open connections of the service at most.
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_connections_per_ip: usize,
    /// New connections from one address per minute at most; 0: no limit.
    pub max_connection_rate_per_ip: u32,
    /// Allow/deny rules, first match decides.
    pub rules: Vec<AccessRule>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A `deny` rule matched the client's address.
    Denied,
    /// The address opened more connections in the last minute than allowed.
    Rate,
    /// The service has as many connections as allowed.
    Total,
    /// The address has as many connections as allowed.
    PerIp,
}

impl Refused {
    /// Plain words for protocols that have no reply code of their own for it.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Denied => "your address is not allowed to connect",
            Refused::Rate => "too many connections from your address, slow down",
            Refused::Total => "too many connections to this server",
            Refused::PerIp => "too many connections from your address",
        }
    }
}

#[derive(Default)]
struct Conns {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Makes room in a full rate table: drops histories with nothing in the window, then, if
/// that freed less than a tenth, the half of the addresses whose last connection is oldest.
/// O(n) once per MAX_TRACKED / 2 new addresses at worst.
fn evict(r: &mut HashMap<IpAddr, VecDeque<Instant>>, now: Instant) {
    r.retain(|_, t| {
        t.back()
            .is_some_and(|l| now.duration_since(*l) <= RATE_WINDOW)
    });
    if r.len() < MAX_TRACKED - MAX_TRACKED / 10 {
        return;
    }
    let mut last: Vec<Instant> = r.values().filter_map(|t| t.back().copied()).collect();
    let mid = last.len() / 2;
    let (_, cut, _) = last.select_nth_unstable(mid);
    let cut = *cut;
    r.retain(|_, t| t.back().is_some_and(|l| *l > cut));
}

/// The admission gate of one service.
pub struct Admission {
    limits: Limits,
    conns: Arc<Mutex<Conns>>,
    rates: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Held for the life of an admitted connection; releases its place on drop.
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

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            conns: Arc::new(Mutex::new(Conns::default())),
            rates: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a connection from `ip`, or says why not. Checked in this order: rules, rate,
    /// total, per address; a refused connection does not count against the caps.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnGuard, Refused> {
        if !rules_admit(&self.limits.rules, ip) {
            return Err(Refused::Denied);
        }
        let rate = self.limits.max_connection_rate_per_ip;
        if rate > 0 {
            let now = Instant::now();
            let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            if r.len() >= MAX_TRACKED && !r.contains_key(&ip) {
                evict(&mut r, now);
            }
            let times = r.entry(ip).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
            {
                times.pop_front();
            }
            if times.len() >= rate as usize {
                // Still trying: the address stays recent for eviction (the count is kept).
                if let Some(last) = times.back_mut() {
                    *last = now;
                }
                return Err(Refused::Rate);
            }
            times.push_back(now);
        }
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnGuard {
            conns: self.conns.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nonsense").is_err());
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = parse_rules(&[
            "allow 192.0.2.7".to_string(),
            "deny 192.0.2.0/24".to_string(),
        ])
        .unwrap();
        assert!(rules_admit(&rules, ip("192.0.2.7")));
        assert!(!rules_admit(&rules, ip("192.0.2.8")));
        assert!(rules_admit(&rules, ip("198.51.100.1")), "no match: allowed");
        assert!(parse_rules(&["permit 10.0.0.0/8".to_string()]).is_err());
        assert!(parse_rules(&["deny".to_string()]).is_err());
    }

    #[test]
    fn caps_count_open_connections_and_release_on_drop() {
        let a = Admission::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let g1 = a.admit(ip("192.0.2.1")).unwrap();
        let _g2 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1")).err(),
            Some(Refused::PerIp),
            "third from one address"
        );
        let _g3 = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.3")).err(), Some(Refused::Total));
        drop(g1);
        assert_eq!(a.connections(), 2);
        assert!(a.admit(ip("192.0.2.1")).is_ok(), "a place was released");
    }

    #[test]
    fn rate_limit_counts_refusals_per_address_only() {
        let a = Admission::new(Limits {
            max_connections: 100,
            max_connections_per_ip: 100,
            max_connection_rate_per_ip: 2,
            rules: vec![],
        });
        drop(a.admit(ip("192.0.2.1")).unwrap());
        drop(a.admit(ip("192.0.2.1")).unwrap());
        assert_eq!(a.admit(ip("192.0.2.1")).err(), Some(Refused::Rate));
        assert!(
            a.admit(ip("192.0.2.2")).is_ok(),
            "another address is not limited"
        );
    }

    #[test]
    fn denied_before_anything_is_counted() {
        let a = Admission::new(Limits {
            max_connections: 1,
            max_connections_per_ip: 1,
            max_connection_rate_per_ip: 1,
            rules: parse_rules(&["deny 192.0.2.0/24".to_string()]).unwrap(),
        });
        assert_eq!(a.admit(ip("192.0.2.9")).err(), Some(Refused::Denied));
        assert!(a.admit(ip("198.51.100.1")).is_ok());
    }

    /// Issue 22 §7: a flood of new addresses filling the rate table must not reset the limit
    /// of the address that keeps connecting (the table used to be cleared when full).
    #[test]
    fn a_flood_of_new_addresses_does_not_reset_a_busy_address() {
        let a = Admission::new(Limits {
            max_connections: usize::MAX,
            max_connections_per_ip: usize::MAX,
            max_connection_rate_per_ip: 3,
            rules: vec![],
        });
        let busy = ip("192.0.2.1");
        for _ in 0..3 {
            drop(a.admit(busy).unwrap());
        }
        assert_eq!(a.admit(busy).err(), Some(Refused::Rate));
        for i in 0..(MAX_TRACKED as u32 + 1_000) {
            let other = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(a.admit(other).unwrap());
            if i % 20_000 == 0 {
                // The busy address keeps trying: it stays the most recent one.
                assert_eq!(a.admit(busy).err(), Some(Refused::Rate), "after {i}");
            }
        }
        assert_eq!(a.admit(busy).err(), Some(Refused::Rate));
        let tracked = a.rates.lock().unwrap().len();
        assert!(tracked <= MAX_TRACKED, "{tracked} addresses tracked");
    }
}
