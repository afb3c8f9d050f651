//! The LDAP directory: an existing OpenLDAP or 389-DS holding users, hosted domains and lists.
//!
//! - **Connections**: a pool of at most `max_connections` connections, bound as `bind_dn` (or
//!   anonymous). A connection that fails is dropped and the operation retried once on a new
//!   connection, trying `urls` in order (failover). Every operation has `timeout_ms`.
//! - **TLS**: `ldaps://` URLs or `starttls = true`, with rustls; `ca_file` adds the site CA.
//! - **Authentication** binds as the user's DN on a connection of its own; passwords are never
//!   read from the directory. An empty password is refused before any bind (an LDAP "unauth
//!   bind" would otherwise succeed).
//! - **Filters**: every outside value is escaped per RFC 4515 ([`crate::filter::escape`]).
//! - **Cache**: answers (including "unknown") are cached per address for `cache_ttl_secs`
//!   (`negative_ttl_secs` for unknown), at most `cache_size` of them; failures are not cached.
//!   While the servers are down, cached answers keep resolving until they expire; uncached
//!   lookups fail with [`DirectoryError::Unavailable`] and recover once a server is back.
//!
//! Hosted domains are entries under `domain_root` carrying the domain's names in
//! `associatedDomain` and, in `inetDomainBaseDN`, the subtree of its users and groups (the
//! entry itself when absent).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use crate::cache::TtlCache;
use crate::filter::escape;
use crate::schema::SchemaMap;
use crate::{
    Directory, DirectoryError, DomainRecord, Principal, Resolution, UserRecord, UserStatus,
    normalize_address,
};

fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_connections() -> usize {
    8
}
fn default_cache_size() -> usize {
    100_000
}
fn default_cache_ttl() -> u64 {
    300
}
fn default_negative_ttl() -> u64 {
    60
}

/// `[directory.ldap]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Servers in order of preference, e.g. `ldap://ldap1.example.org:389`.
    pub urls: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA that signed the servers' certificates (else the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Service account for searches; anonymous when absent.
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<String>,
    /// Where hosted-domain entries are searched.
    pub domain_root: String,
    /// Where users are searched by login name (uid); defaults to `domain_root`.
    #[serde(default)]
    pub user_base: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    #[serde(default)]
    pub schema: SchemaMap,
}

pub struct LdapDirectory {
    cfg: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    resolutions: TtlCache<String, Resolution>,
    domains: TtlCache<String, Option<DomainRecord>>,
}

fn unavailable(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable(e.to_string())
}

/// LDAP result code for invalid credentials.
const RC_INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code for a search base that does not exist.
const RC_NO_SUCH_OBJECT: u32 = 32;

impl LdapDirectory {
    pub fn new(cfg: LdapConfig) -> Result<LdapDirectory, String> {
        if cfg.urls.is_empty() {
            return Err("directory.ldap.urls: at least one server URL is needed".into());
        }
        for u in &cfg.urls {
            if !(u.starts_with("ldap://") || u.starts_with("ldaps://")) {
                return Err(format!(
                    "directory.ldap.urls: {u:?} is not an ldap:// or ldaps:// URL"
                ));
            }
        }
        let tls = match &cfg.ca_file {
            Some(path) => Some(Arc::new(tls_config(path)?)),
            None => None,
        };
        Ok(LdapDirectory {
            permits: Semaphore::new(cfg.max_connections.max(1)),
            resolutions: TtlCache::new(cfg.cache_size),
            domains: TtlCache::new(cfg.cache_size.clamp(1, 10_000)),
            idle: Mutex::new(Vec::new()),
            tls,
            cfg,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms.max(1))
    }

    /// A new connection to the first server that answers, bound as the service account.
    async fn connect(&self, service_bind: bool) -> Result<Ldap, DirectoryError> {
        let mut last = String::from("no server tried");
        for url in &self.cfg.urls {
            let mut settings = LdapConnSettings::new()
                .set_conn_timeout(self.timeout())
                .set_starttls(self.cfg.starttls);
            if let Some(tls) = &self.tls {
                settings = settings.set_config(tls.clone());
            }
            match LdapConnAsync::with_settings(settings, url).await {
                Ok((conn, mut ldap)) => {
                    tokio::spawn(async move {
                        if let Err(e) = conn.drive().await {
                            tracing::debug!(error = %e, "ldap connection ended");
                        }
                    });
                    if service_bind
                        && let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.cfg.bind_password)
                    {
                        match ldap
                            .with_timeout(self.timeout())
                            .simple_bind(dn, pw)
                            .await
                            .and_then(|r| r.success())
                        {
                            Ok(_) => {}
                            Err(e) => {
                                last = format!("{url}: service bind: {e}");
                                continue;
                            }
                        }
                    }
                    return Ok(ldap);
                }
                Err(e) => {
                    tracing::warn!(url, error = %e, "ldap server unreachable, trying the next");
                    last = format!("{url}: {e}");
                }
            }
        }
        Err(DirectoryError::Unavailable(last))
    }

    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let _permit = self.permits.acquire().await.map_err(unavailable)?;
        let mut last = None;
        for _ in 0..2 {
            let pooled = self.idle.lock().await.pop();
            let mut ldap = match pooled {
                Some(l) => l,
                None => self.connect(true).await?,
            };
            match ldap
                .with_timeout(self.timeout())
                .search(base, scope, filter, attrs)
                .await
            {
                Ok(result) => {
                    let outcome = match result.success() {
                        Ok((entries, _)) => {
                            Ok(entries.into_iter().map(SearchEntry::construct).collect())
                        }
                        Err(LdapError::LdapResult { result }) if result.rc == RC_NO_SUCH_OBJECT => {
                            Ok(Vec::new())
                        }
                        Err(e) => Err(unavailable(format!("search {filter} under {base}: {e}"))),
                    };
                    self.idle.lock().await.push(ldap);
                    return outcome;
                }
                // Transport trouble: drop this connection, retry on a new one (maybe another
                // server).
                Err(e) => last = Some(e),
            }
        }
        Err(unavailable(last.map(|e| e.to_string()).unwrap_or_default()))
    }

    async fn lookup_domain(&self, name: &str) -> Result<Option<DomainRecord>, DirectoryError> {
        let s = &self.cfg.schema;
        let filter = format!("({}={})", s.domain_name, escape(name));
        let attrs = vec![s.domain_name.clone(), s.domain_base_dn.clone()];
        let mut entries = self
            .search(&self.cfg.domain_root, Scope::Subtree, &filter, &attrs)
            .await?;
        entries.sort_by(|a, b| a.dn.cmp(&b.dn));
        Ok(entries.into_iter().next().map(|e| DomainRecord {
            name: name.to_string(),
            names: values(&e, &s.domain_name)
                .into_iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            base_dn: first(&e, &s.domain_base_dn).unwrap_or_else(|| e.dn.clone()),
            default_quota_bytes: None,
            default_quota_messages: None,
        }))
    }

    fn user_from(&self, e: &SearchEntry) -> UserRecord {
        let s = &self.cfg.schema;
        let status = match first(e, &s.user_status)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("active") => UserStatus::Active,
            Some("deleted") | Some("removed") => UserStatus::Deleted,
            Some(_) => UserStatus::Inactive,
        };
        let mut aliases = values(e, &s.alternate_address);
        aliases.extend(values(e, &s.equivalent_address));
        UserRecord {
            dn: e.dn.clone(),
            uid: first(e, &s.uid).unwrap_or_default(),
            mail: first(e, &s.mail)
                .map(|m| lower_domain(&m))
                .unwrap_or_default(),
            aliases: aliases.iter().map(|a| lower_domain(a)).collect(),
            forwarding: values(e, &s.forwarding_address),
            delivery_options: values(e, &s.delivery_option)
                .iter()
                .map(|v| v.to_ascii_lowercase())
                .collect(),
            status,
            quota_bytes: first(e, &s.quota_bytes).and_then(|v| v.trim().parse().ok()),
            quota_messages: first(e, &s.quota_messages).and_then(|v| v.trim().parse().ok()),
            mail_host: first(e, &s.mail_host),
        }
    }

    fn is_list(&self, e: &SearchEntry) -> bool {
        values(e, "objectClass").iter().any(|c| {
            self.cfg
                .schema
                .list_classes
                .iter()
                .any(|l| l.eq_ignore_ascii_case(c))
        })
    }

    async fn lookup_address(&self, address: &str) -> Result<Resolution, DirectoryError> {
        let Some((local, domain)) = normalize_address(address) else {
            return Ok(Resolution::Unknown);
        };
        let Some(dom) = self.domain(&domain).await? else {
            return Ok(Resolution::Unknown);
        };
        let s = &self.cfg.schema;
        let addr = format!("{local}@{domain}");
        let a = escape(&addr);
        let filter = format!(
            "(|({}={a})({}={a})({}={a}))",
            s.mail, s.alternate_address, s.equivalent_address
        );
        let mut entries = self
            .search(&dom.base_dn, Scope::Subtree, &filter, &s.entry_attrs())
            .await?;
        entries.sort_by(|x, y| x.dn.cmp(&y.dn));
        if entries.len() > 1 {
            tracing::warn!(address = %addr, entries = entries.len(), "address held by several entries; using the first by DN");
        }
        let Some(e) = entries.into_iter().next() else {
            return Ok(Resolution::Unknown);
        };
        if self.is_list(&e) {
            let mut members = values(&e, &s.list_member_address);
            for dn in values(&e, &s.list_member_dn) {
                let found = self
                    .search(
                        &dn,
                        Scope::Base,
                        "(objectClass=*)",
                        std::slice::from_ref(&s.mail),
                    )
                    .await?;
                members.extend(found.iter().filter_map(|m| first(m, &s.mail)));
            }
            let members = members.iter().map(|m| lower_domain(m)).collect();
            return Ok(Resolution::List {
                address: addr,
                members,
            });
        }
        let user = self.user_from(&e);
        let via_alias = !user.mail.eq_ignore_ascii_case(&addr);
        if user.delivery_options.iter().any(|o| o == "forward") && !user.delivers_to_mailbox() {
            let to = user.forwarding.clone();
            return Ok(Resolution::Forward { user, to });
        }
        Ok(Resolution::User { user, via_alias })
    }

    async fn find_login(&self, login: &str) -> Result<Option<UserRecord>, DirectoryError> {
        if login.contains('@') {
            return Ok(match self.resolve(login).await? {
                Resolution::User { user, .. } | Resolution::Forward { user, .. } => Some(user),
                _ => None,
            });
        }
        let s = &self.cfg.schema;
        let base = self
            .cfg
            .user_base
            .as_deref()
            .unwrap_or(&self.cfg.domain_root);
        let filter = format!("({}={})", s.uid, escape(login));
        let entries = self
            .search(base, Scope::Subtree, &filter, &s.entry_attrs())
            .await?;
        if entries.len() != 1 {
            // Unknown, or ambiguous across domains: log in with the address instead.
            return Ok(None);
        }
        Ok(Some(self.user_from(&entries[0])))
    }
}

#[async_trait::async_trait]
impl Directory for LdapDirectory {
    async fn resolve(&self, address: &str) -> Result<Resolution, DirectoryError> {
        let key = address.trim().to_lowercase();
        if let Some(r) = self.resolutions.get(&key) {
            return Ok(r);
        }
        let r = self.lookup_address(address).await?;
        let ttl = match r {
            Resolution::Unknown => self.cfg.negative_ttl_secs,
            _ => self.cfg.cache_ttl_secs,
        };
        self.resolutions
            .insert(key, r.clone(), Duration::from_secs(ttl));
        Ok(r)
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<Principal>, DirectoryError> {
        if password.is_empty() || login.is_empty() || login.contains('\0') {
            return Ok(None);
        }
        let Some(user) = self.find_login(login).await? else {
            return Ok(None);
        };
        if user.status != UserStatus::Active {
            return Ok(None);
        }
        let mut ldap = self.connect(false).await?;
        let result = ldap
            .with_timeout(self.timeout())
            .simple_bind(&user.dn, password)
            .await;
        let _ = ldap.unbind().await;
        match result {
            Ok(r) if r.rc == 0 => Ok(Some(Principal {
                dn: user.dn,
                uid: user.uid,
                mail: user.mail,
            })),
            Ok(r) if r.rc == RC_INVALID_CREDENTIALS => Ok(None),
            Ok(r) => Err(unavailable(format!(
                "bind: result code {} {}",
                r.rc, r.text
            ))),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, DirectoryError> {
        let key = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(d) = self.domains.get(&key) {
            return Ok(d);
        }
        let d = self.lookup_domain(&key).await?;
        let ttl = if d.is_some() {
            self.cfg.cache_ttl_secs
        } else {
            self.cfg.negative_ttl_secs
        };
        self.domains
            .insert(key, d.clone(), Duration::from_secs(ttl));
        Ok(d)
    }

    async fn user(&self, login: &str) -> Result<Option<UserRecord>, DirectoryError> {
        if login.is_empty() || login.contains('\0') {
            return Ok(None);
        }
        self.find_login(login).await
    }
}

fn values(e: &SearchEntry, attr: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn first(e: &SearchEntry, attr: &str) -> Option<String> {
    values(e, attr).into_iter().next()
}

fn lower_domain(addr: &str) -> String {
    match normalize_address(addr) {
        Some((l, d)) => format!("{l}@{d}"),
        None => addr.to_string(),
    }
}

fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("directory.ldap.ca_file {}: {e}", ca_file.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("directory.ldap.ca_file {}: {e}", ca_file.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("directory.ldap.ca_file {}: {e}", ca_file.display()))?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
