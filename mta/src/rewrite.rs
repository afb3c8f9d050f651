//! Rewrite rules and channel selection — the seed's `imta.cnf`, in TOML.
//!
//! ```toml
//! [[mta.rewrite]]              # applied in order; the first match rewrites the address
//! pattern = "*@old.example"    # `*` matches any run of characters, case-insensitively
//! template = "$U@example.org"  # $U local part, $D domain, $1.. the texts `*` matched
//!
//! [[mta.channels]]             # where non-local recipients go
//! name = "partners"
//! kind = "lmtp"                # smtp (MX, or `host` as smarthost) | lmtp | pipe | discard
//! domains = ["*.partner.example"]
//! host = "10.0.0.5:24"
//! max_jobs = 4                 # deliveries in flight on this channel
//! retry_minutes = [5, 15, 60]  # then the last value repeats
//! max_message_bytes = 10485760
//!
//! [[mta.channels]]
//! name = "hub"
//! kind = "smtp"
//! domains = ["*"]
//! host = "smtp.hub.example:587"
//! tls = "verify"               # opportunistic (default) | verify
//! tls_ca = "/etc/halyard/hub-ca.pem"   # default: the system's roots
//! ```
//!
//! `tls = "verify"`: the peer must offer STARTTLS and present a certificate that chains to
//! `tls_ca` (else the system's roots, `/etc/ssl/certs/ca-certificates.crt`) and names the
//! channel's host; anything else defers the message (4.7.5, it stays queued and is retried)
//! instead of sending it in clear or to an unverified server. Opportunistic TLS (used when
//! offered, certificate not checked) stays the default, as for MX delivery.
//!
//! Addresses in a domain routed to a configured channel are accepted from any client (like
//! Postfix's relay_domains); other non-local domains need an authenticated or trusted
//! client and go to the built-in `smtp` channel (MX relay).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RewriteRule {
    pub pattern: String,
    pub template: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Smtp,
    Lmtp,
    Pipe,
    Discard,
}

/// Transport security of an SMTP channel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS when offered, certificate not verified (RFC 7435).
    #[default]
    Opportunistic,
    /// STARTTLS required, certificate verified against the CA and the host name.
    Verify,
}

/// Where verified channels find their trust anchors unless `tls_ca` says otherwise.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Recipient domains routed here (globs with `*`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// `host:port`: the LMTP server, or a smarthost for `smtp` (instead of MX lookup).
    #[serde(default)]
    pub host: Option<String>,
    /// `pipe`: the program, run without a shell with `$SENDER`, `$RECIPIENT`, `$QUEUE_ID` in
    /// its environment and the message on standard input. Exit 0 delivered, 75
    /// (EX_TEMPFAIL) retry later, anything else failed.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub max_jobs: Option<usize>,
    #[serde(default)]
    pub retry_minutes: Vec<u64>,
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// `smtp` channels: `opportunistic` (default) or `verify`.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM trust anchors for `tls = "verify"` (default: [`SYSTEM_ROOTS`]).
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ChannelConfig {
    /// A channel of `kind` with nothing else set (no domains, default TLS and limits).
    pub fn new(name: &str, kind: ChannelKind) -> ChannelConfig {
        ChannelConfig {
            name: name.into(),
            kind,
            domains: vec![],
            host: None,
            command: vec![],
            max_jobs: None,
            retry_minutes: vec![],
            max_message_bytes: None,
            tls: TlsMode::Opportunistic,
            tls_ca: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || ["store", "smtp"].contains(&self.name.as_str()) {
            return Err(format!(
                "channel name {:?} is empty or reserved (store, smtp)",
                self.name
            ));
        }
        match self.kind {
            ChannelKind::Lmtp if self.host.is_none() => {
                Err(format!("channel {}: lmtp needs host", self.name))
            }
            ChannelKind::Pipe if self.command.is_empty() => {
                Err(format!("channel {}: pipe needs command", self.name))
            }
            k if k != ChannelKind::Smtp
                && (self.tls != TlsMode::Opportunistic || self.tls_ca.is_some()) =>
            {
                Err(format!(
                    "channel {}: tls and tls_ca apply to smtp channels",
                    self.name
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Case-insensitive glob match; the texts matched by each `*`, in order.
pub fn glob(pattern: &str, text: &str) -> Option<Vec<String>> {
    fn m(p: &[char], t: &[char], caps: &mut Vec<String>) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => {
                for i in 0..=t.len() {
                    caps.push(t[..i].iter().collect());
                    if m(&p[1..], &t[i..], caps) {
                        return true;
                    }
                    caps.pop();
                }
                false
            }
            Some(c) => {
                t.first()
                    .is_some_and(|x| x.to_lowercase().eq(c.to_lowercase()))
                    && m(&p[1..], &t[1..], caps)
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Patterns are short (configuration); bound the work on long hostile addresses anyway.
    if p.iter().filter(|c| **c == '*').count() > 8 || t.len() > 512 {
        return None;
    }
    let mut caps = Vec::new();
    m(&p, &t, &mut caps).then_some(caps)
}

/// The address after the first matching rule (unchanged when none matches).
pub fn rewrite(rules: &[RewriteRule], address: &str) -> String {
    let (user, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    for r in rules {
        if let Some(caps) = glob(&r.pattern, address) {
            let mut out = String::new();
            let mut chars = r.template.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '$' {
                    out.push(c);
                    continue;
                }
                match chars.peek().copied() {
                    Some('U') => {
                        chars.next();
                        out.push_str(user);
                    }
                    Some('D') => {
                        chars.next();
                        out.push_str(domain);
                    }
                    Some(d) if d.is_ascii_digit() => {
                        chars.next();
                        let i = d.to_digit(10).unwrap_or(0) as usize;
                        if let Some(cap) = i.checked_sub(1).and_then(|i| caps.get(i)) {
                            out.push_str(cap);
                        }
                    }
                    _ => out.push('$'),
                }
            }
            return out;
        }
    }
    address.to_string()
}

/// The configured channel routing `domain`, if any.
pub fn channel_for<'a>(channels: &'a [ChannelConfig], domain: &str) -> Option<&'a ChannelConfig> {
    channels
        .iter()
        .find(|c| c.domains.iter().any(|d| glob(d, domain).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(p: &str, t: &str) -> RewriteRule {
        RewriteRule {
            pattern: p.into(),
            template: t.into(),
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let rules = vec![
            rule("postmaster@*", "admin@example.org"),
            rule("*@old.example", "$U@example.org"),
            rule("*@*.dept.example", "$1.$2@example.org"),
        ];
        assert_eq!(rewrite(&rules, "Joe@OLD.example"), "Joe@example.org");
        assert_eq!(rewrite(&rules, "postmaster@x"), "admin@example.org");
        assert_eq!(
            rewrite(&rules, "ann@chem.dept.example"),
            "ann.chem@example.org"
        );
        assert_eq!(rewrite(&rules, "ann@else.example"), "ann@else.example");
        assert_eq!(rewrite(&[rule("*", "$D-$U-$9-$x")], "a@b"), "b-a--$x");
    }

    #[test]
    fn globs() {
        assert_eq!(
            glob("*.partner.example", "mx.Partner.example"),
            Some(vec!["mx".into()])
        );
        assert!(glob("*.partner.example", "partner.example").is_none());
        assert!(glob("a*b*c", "abc").is_some());
        assert!(
            glob("**********", "x").is_none(),
            "too many wildcards refused"
        );
    }

    proptest! {
        /// A rule without wildcards or variables maps exactly its own address; glob never
        /// panics and its captures rebuild the text for a single-`*` pattern.
        #[test]
        fn glob_properties(prefix in "[a-z.@]{0,8}", mid in "[a-z.@]{0,12}", suffix in "[a-z.@]{0,8}", other in "[ -~]{0,30}") {
            let text = format!("{prefix}{mid}{suffix}");
            let caps = glob(&format!("{prefix}*{suffix}"), &text).expect("matches");
            prop_assert_eq!(format!("{prefix}{}{suffix}", caps[0]), text.clone());
            let _ = glob(&other, &text);
            let o = other.replace('*', "");
            let expect = if text.eq_ignore_ascii_case(&o) { "fixed@x".to_string() } else { o.clone() };
            prop_assert_eq!(rewrite(&[rule(&text, "fixed@x")], &o), expect);
        }
    }
}
