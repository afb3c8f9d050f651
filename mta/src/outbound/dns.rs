//! The relay's DNS lookups: the mail exchangers of a domain (RFC 5321 §5.1, null MX of
//! RFC 7505), a smarthost's addresses, and the checks the inbound session asks for (DNS
//! blocklists, whether a sender's domain exists).

use std::net::IpAddr;

use hickory_resolver::proto::rr::RData;

use super::relay::{Outcome, Relay};

impl Relay {
    /// Whether `ip` is listed in DNS blocklist `zone` (an A record in 127.0.0.0/8 for the
    /// reversed address); `None` when the lookup failed.
    pub async fn listed(&self, ip: IpAddr, zone: &str) -> Option<bool> {
        let name = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!(
                    "{}.{}.{}.{}.{}.",
                    o[3],
                    o[2],
                    o[1],
                    o[0],
                    zone.trim_end_matches('.')
                )
            }
            IpAddr::V6(v6) => {
                let mut n = String::new();
                for b in v6.octets().iter().rev() {
                    n.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
                }
                format!("{n}{}.", zone.trim_end_matches('.'))
            }
        };
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(l) => Some(l.iter().any(|a| match a {
                IpAddr::V4(v4) => v4.octets()[0] == 127,
                IpAddr::V6(_) => false,
            })),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Some(false),
            Err(_) => None,
        }
    }

    /// Whether `domain` exists as a mail domain (MX, or an address record): `Err` when the
    /// DNS cannot tell now.
    pub async fn domain_exists(&self, domain: &str) -> Result<bool, String> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) if !l.answers().is_empty() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.is_nx_domain() => return Ok(false),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(e.to_string()),
        }
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(l) => Ok(l.iter().next().is_some()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Mail exchangers of `domain`, most preferred first.
    pub(super) async fn exchangers(&self, domain: &str) -> Result<Vec<String>, Outcome> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => {
                let mut mx: Vec<(u16, String)> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
                    return Err(Outcome::Permanent(
                        556,
                        format!("5.1.10 {domain} accepts no mail (null MX)"),
                    ));
                }
                if mx.is_empty() {
                    return Ok(vec![domain.to_string()]);
                }
                mx.sort();
                Ok(mx.into_iter().map(|(_, h)| h).collect())
            }
            Err(e) if e.is_nx_domain() => Err(Outcome::Permanent(
                550,
                format!("5.1.2 domain {domain} does not exist"),
            )),
            Err(e) if e.is_no_records_found() => Ok(vec![domain.to_string()]),
            Err(e) => Err(Outcome::Temporary(format!(
                "4.4.3 DNS lookup of {domain} failed: {e}"
            ))),
        }
    }

    /// The host name, port and addresses of `host:port` (a name or an address).
    pub(super) async fn addresses(
        &self,
        hostport: &str,
    ) -> Result<(String, u16, Vec<IpAddr>), String> {
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| {
                p.parse::<u16>()
                    .ok()
                    .map(|p| (h.trim_matches(['[', ']']), p))
            })
            .ok_or_else(|| format!("{hostport:?} is not host:port"))?;
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup_ip(format!("{}.", host.trim_end_matches('.')).as_str())
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .collect(),
        };
        Ok((host.to_string(), port, ips))
    }
}
