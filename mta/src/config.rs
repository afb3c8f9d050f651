//! `[mta]` in the node's TOML configuration.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MtaConfig {
    /// Name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// SMTP (MX) listener, e.g. `0.0.0.0:25`.
    pub smtp_listen: Option<String>,
    /// Submission listener (RFC 6409), e.g. `0.0.0.0:587`; AUTH is required before MAIL.
    pub submission_listen: Option<String>,
    /// LMTP (RFC 2033) for a front-end MTA tier, e.g. `10.0.0.5:24`; only clients in
    /// `trusted_networks`, only local recipients.
    pub lmtp_listen: Option<String>,
    /// Submission with implicit TLS (RFC 8314), e.g. `0.0.0.0:465`.
    pub submissions_listen: Option<String>,
    /// Certificate chain and key (PEM) for STARTTLS and port 465; re-read on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// CA certificates (PEM) whose client certificates authenticate with SASL EXTERNAL on
    /// submission. Asked for, never required.
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// `san-email` or `subject-cn`: how a client certificate names its user.
    pub external_identity: String,
    /// Refuse AUTH on a connection without TLS when TLS is configured (538 5.7.11).
    pub require_tls_for_auth: bool,
    /// Failed AUTH attempts allowed per connection before it is closed.
    pub max_auth_failures: u32,
    /// Error replies (4xx/5xx) allowed per connection before it is closed with 421
    /// (Postfix's smtpd_hard_error_limit).
    pub max_errors: u32,
    /// Largest message accepted (SIZE), in bytes.
    pub max_message_bytes: u64,
    /// Most recipients in one transaction (452 4.5.3 after that).
    pub max_recipients: usize,
    /// Longest command line, in bytes (RFC 5321 asks for at least 512).
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Clients in these networks (CIDR) may relay without authenticating.
    pub trusted_networks: Vec<String>,
    /// Which clients may connect at all (the seed's PORT_ACCESS): rules `"allow CIDR"` or
    /// `"deny CIDR"`, the first that matches the client's address decides, no match allows.
    /// A denied client gets `554 5.7.1` and is disconnected before anything else.
    pub client_access: Vec<String>,
    /// Rules for port 25 only, checked before `client_access`: first match decides, no match
    /// goes on to `client_access`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub smtp_client_access: Vec<String>,
    /// Same for submission (587 and 465).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub submission_client_access: Vec<String>,
    /// Same for LMTP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lmtp_client_access: Vec<String>,
    /// Delay before every 4xx/5xx reply to a command (the seed's tarpit), in milliseconds.
    pub reject_delay_ms: u64,
    /// Time allowed for a whole command line to arrive, and between commands (RFC 5321
    /// §4.5.3.2: at least 5 minutes); a client trickling a line byte by byte is cut off too.
    pub command_timeout_secs: u64,
    /// A client that does not read our replies for this long is dropped.
    pub write_timeout_secs: u64,
    /// Queue lifetime of a message before pending recipients are bounced.
    pub queue_lifetime_secs: u64,
    /// How long mail for a full mailbox is kept and retried (4.2.2) before it is bounced
    /// (5.2.2).
    pub quota_grace_secs: u64,
    /// A recipient still pending this long after the message was accepted gets one delay
    /// notification (RFC 3464 `Action: delayed`) sent to the sender, if NOTIFY asked for
    /// DELAY or gave no NOTIFY at all; 0 sends none.
    pub delay_notice_secs: u64,
    /// On shutdown, sessions get this long to finish the transaction in progress before
    /// they are closed with 421.
    pub drain_secs: u64,
    /// New connections per client address per minute (0: no limit); more get 421.
    pub max_connection_rate_per_ip: u32,
    /// Address rewriting, applied to each RCPT address before anything else (see
    /// [`crate::rewrite`]).
    pub rewrite: Vec<crate::rewrite::RewriteRule>,
    /// Channels for non-local domains (see [`crate::rewrite`]).
    pub channels: Vec<crate::rewrite::ChannelConfig>,
    /// DNS blocklists checked when an untrusted client connects to the SMTP (MX) listener
    /// (`zen.spamhaus.org`, ...): a listed address gets `554 5.7.1` and is disconnected.
    /// Lookup failures let it in. Submission is not checked: its clients authenticate.
    pub dnsbl_zones: Vec<String>,
    /// The domain of an unauthenticated client's MAIL FROM must exist in the DNS (MX or
    /// address records), else `550 5.1.8` (`451 4.4.3` while the DNS fails).
    pub mailfromdnsverify: bool,
    /// DNS servers for MX lookups (`ip` or `ip:port`); empty: the system's resolv.conf.
    pub dns_servers: Vec<String>,
    /// Port of remote mail exchangers (25; other values are for test setups).
    pub relay_port: u16,
    pub connect_timeout_secs: u64,
    /// Time allowed for each reply of a remote server.
    pub relay_timeout_secs: u64,
}

impl Default for MtaConfig {
    fn default() -> Self {
        MtaConfig {
            hostname: "localhost".into(),
            smtp_listen: None,
            submission_listen: None,
            submissions_listen: None,
            lmtp_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            external_identity: "san-email".into(),
            require_tls_for_auth: true,
            max_auth_failures: 3,
            max_errors: 50,
            max_message_bytes: 50 << 20,
            max_recipients: 1000,
            max_line_bytes: 4096,
            max_connections: 2000,
            max_connections_per_ip: 50,
            trusted_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            client_access: vec![],
            smtp_client_access: vec![],
            submission_client_access: vec![],
            lmtp_client_access: vec![],
            reject_delay_ms: 0,
            command_timeout_secs: 300,
            write_timeout_secs: 60,
            queue_lifetime_secs: 5 * 86_400,
            quota_grace_secs: 86_400,
            delay_notice_secs: 4 * 3600,
            drain_secs: 10,
            max_connection_rate_per_ip: 0,
            rewrite: vec![],
            channels: vec![],
            dnsbl_zones: vec![],
            mailfromdnsverify: false,
            dns_servers: vec![],
            relay_port: 25,
            connect_timeout_secs: 30,
            relay_timeout_secs: 300,
        }
    }
}

/// IP networks and `client_access` rules are the network layer's.
pub use halyard_net::admission::{AccessRule, Network};

impl MtaConfig {
    /// `client_access` parsed, in order.
    pub fn access_rules(&self) -> Result<Vec<AccessRule>, (String, String)> {
        halyard_net::admission::parse_rules(&self.client_access)
            .map_err(|e| ("mta.client_access".to_string(), e))
    }

    /// Whether `ip` may connect under `rules` (first match decides; none: allowed).
    pub fn admits(rules: &[AccessRule], ip: IpAddr) -> bool {
        halyard_net::admission::rules_admit(rules, ip)
    }

    /// Checks the configuration; `(key, problem)` on the first error.
    pub fn validate(&self) -> Result<Vec<Network>, (String, String)> {
        self.access_rules()?;
        for (key, rules) in [
            ("mta.smtp_client_access", &self.smtp_client_access),
            (
                "mta.submission_client_access",
                &self.submission_client_access,
            ),
            ("mta.lmtp_client_access", &self.lmtp_client_access),
        ] {
            halyard_net::admission::parse_rules(rules).map_err(|e| (key.to_string(), e))?;
        }
        let nets = self
            .trusted_networks
            .iter()
            .map(|n| Network::parse(n).map_err(|e| ("mta.trusted_networks".to_string(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        if self.max_line_bytes < 512 {
            return Err((
                "mta.max_line_bytes".into(),
                "must be at least 512 (RFC 5321 §4.5.3.1.4)".into(),
            ));
        }
        for c in &self.channels {
            c.validate().map_err(|e| ("mta.channels".to_string(), e))?;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err((
                "mta.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        if let Err(e) = self
            .external_identity
            .parse::<halyard_net::ExternalIdentity>()
        {
            return Err(("mta.external_identity".into(), e));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err((
                "mta.tls_client_ca".into(),
                "needs tls_cert and tls_key".into(),
            ));
        }
        if self.submissions_listen.is_some() && self.tls_cert.is_none() {
            return Err((
                "mta.submissions_listen".into(),
                "implicit TLS needs tls_cert and tls_key".into(),
            ));
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(("mta.hostname".into(), "must be a host name".into()));
        }
        Ok(nets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Network::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nonsense").is_err());
    }

    #[test]
    fn client_access_first_match_decides() {
        let cfg = MtaConfig {
            client_access: vec![
                "allow 10.1.2.3".into(),
                "deny 10.0.0.0/8".into(),
                "DENY ::1".into(),
            ],
            ..Default::default()
        };
        let rules = cfg.access_rules().unwrap();
        let ok = |ip: &str| MtaConfig::admits(&rules, ip.parse().unwrap());
        assert!(ok("10.1.2.3") && !ok("10.9.9.9") && !ok("::1") && ok("192.0.2.1"));
        for bad in ["permit 10.0.0.0/8", "deny", "deny 10.0.0.0/40"] {
            let cfg = MtaConfig {
                client_access: vec![bad.into()],
                ..Default::default()
            };
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }
}
