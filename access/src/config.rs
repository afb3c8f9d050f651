//! `[access]`: where IMAP and POP3 listen, TLS, and the limits that keep one client from
//! hurting the others.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn d_max_connections() -> usize {
    200_000
}
fn d_max_per_ip() -> usize {
    2_000
}
fn d_max_line() -> usize {
    64 * 1024
}
fn d_max_literal() -> u64 {
    64 << 20
}
fn d_autologout() -> u64 {
    30 * 60
}
fn d_write_timeout() -> u64 {
    120
}
fn d_login_failures() -> u32 {
    10
}

/// `[access]` configuration. Listeners that are not set are not started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// IMAP with STARTTLS, e.g. `0.0.0.0:143`.
    #[serde(default)]
    pub imap_listen: Option<String>,
    /// IMAP over implicit TLS, e.g. `0.0.0.0:993`.
    #[serde(default)]
    pub imaps_listen: Option<String>,
    /// POP3 with STLS, e.g. `0.0.0.0:110`.
    #[serde(default)]
    pub pop3_listen: Option<String>,
    /// POP3 over implicit TLS, e.g. `0.0.0.0:995`.
    #[serde(default)]
    pub pop3s_listen: Option<String>,
    /// PEM certificate chain and key for STARTTLS/STLS and the implicit-TLS ports; re-read on
    /// SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates log in with SASL EXTERNAL. Clients
    /// are asked for a certificate, never required to present one.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// How a client certificate names its user: `san-email` (the subjectAltName's email,
    /// else the subject's emailAddress) or `subject-cn`.
    #[serde(default = "d_external_identity")]
    pub external_identity: String,
    /// Refuse LOGIN/AUTHENTICATE/USER before TLS (advertises LOGINDISABLED).
    #[serde(default)]
    pub require_tls_for_login: bool,
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    #[serde(default = "d_max_per_ip")]
    pub max_connections_per_ip: usize,
    /// New IMAP/POP3 connections from one address per minute at most (0: no limit).
    #[serde(default)]
    pub max_connection_rate_per_ip: u32,
    /// Which client addresses may connect, as `"allow CIDR"` / `"deny CIDR"` rules; the first
    /// rule that matches decides, no match allows. Refused clients get `* BYE` / `-ERR`.
    #[serde(default)]
    pub client_access: Vec<String>,
    /// Rules for IMAP (ports 143 and 993) only, checked before `client_access`: first match
    /// decides, no match goes on to `client_access`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imap_client_access: Vec<String>,
    /// Same for POP3 (ports 110 and 995).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pop3_client_access: Vec<String>,
    /// Longest command line (without literals).
    #[serde(default = "d_max_line")]
    pub max_line_bytes: usize,
    /// Largest literal (APPEND message); larger ones are refused before any allocation.
    #[serde(default = "d_max_literal")]
    pub max_literal_bytes: u64,
    /// An IMAP session with no command for this long is logged out (RFC 3501: at least 30 min).
    #[serde(default = "d_autologout")]
    pub autologout_secs: u64,
    /// A client that does not read what it is sent for this long is disconnected.
    #[serde(default = "d_write_timeout")]
    pub write_timeout_secs: u64,
    /// Failed logins per client address or per login within 10 minutes before further
    /// attempts are refused (each failure is also answered after a growing delay).
    #[serde(default = "d_login_failures")]
    pub max_login_failures: u32,
}

fn d_external_identity() -> String {
    "san-email".into()
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            imap_listen: None,
            imaps_listen: None,
            pop3_listen: None,
            pop3s_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            external_identity: d_external_identity(),
            require_tls_for_login: false,
            max_connections: d_max_connections(),
            max_connections_per_ip: d_max_per_ip(),
            max_connection_rate_per_ip: 0,
            client_access: vec![],
            imap_client_access: vec![],
            pop3_client_access: vec![],
            max_line_bytes: d_max_line(),
            max_literal_bytes: d_max_literal(),
            autologout_secs: d_autologout(),
            write_timeout_secs: d_write_timeout(),
            max_login_failures: d_login_failures(),
        }
    }
}

impl AccessConfig {
    /// Checks what can be checked without side effects. Returns (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (k, v) in [
            ("access.imap_listen", &self.imap_listen),
            ("access.imaps_listen", &self.imaps_listen),
            ("access.pop3_listen", &self.pop3_listen),
            ("access.pop3s_listen", &self.pop3s_listen),
        ] {
            if let Some(a) = v
                && a.parse::<std::net::SocketAddr>().is_err()
            {
                return Err((k.into(), format!("{a:?} is not an IP:port socket address")));
            }
        }
        let tls = self.tls_cert.is_some() && self.tls_key.is_some();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err((
                "access.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        if !tls && (self.imaps_listen.is_some() || self.pop3s_listen.is_some()) {
            return Err((
                "access.tls_cert".into(),
                "implicit-TLS listeners need tls_cert and tls_key".into(),
            ));
        }
        if let Err(e) = self
            .external_identity
            .parse::<halyard_net::ExternalIdentity>()
        {
            return Err(("access.external_identity".into(), e));
        }
        if !tls && self.tls_client_ca.is_some() {
            return Err((
                "access.tls_client_ca".into(),
                "needs tls_cert and tls_key".into(),
            ));
        }
        if !tls && self.require_tls_for_login {
            return Err((
                "access.require_tls_for_login".into(),
                "needs tls_cert and tls_key".into(),
            ));
        }
        for (key, rules) in [
            ("access.client_access", &self.client_access),
            ("access.imap_client_access", &self.imap_client_access),
            ("access.pop3_client_access", &self.pop3_client_access),
        ] {
            if let Err(e) = halyard_net::admission::parse_rules(rules) {
                return Err((key.into(), e));
            }
        }
        if self.max_line_bytes < 1024 {
            return Err((
                "access.max_line_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.autologout_secs < 60 {
            return Err((
                "access.autologout_secs".into(),
                "must be at least 60".into(),
            ));
        }
        Ok(())
    }
}
