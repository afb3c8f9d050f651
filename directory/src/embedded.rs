//! The embedded directory: the default when no LDAP server is configured.
//!
//! Domains, users, aliases and lists live in the meta group's state machine
//! ([`halyard_raft_store::directory`]), so every node has a replica and they survive the loss
//! of any minority of nodes. Lookups read the local replica (no network round trip, no cache
//! needed); a change made through any node is visible on the others once they have applied it,
//! normally within one heartbeat.
//!
//! Passwords are stored as Argon2id PHC strings ([`hash_password`], RFC 9106 parameters as
//! recommended by OWASP: 19 MiB, 2 passes, 1 lane). `halyard ctl` hashes before proposing, so
//! passwords never travel between nodes. Verification runs on the blocking pool, at most
//! [`MAX_CONCURRENT_VERIFY`] at a time, and an unknown login is verified against a dummy hash
//! so that timing does not reveal which logins exist.
//!
//! A successful verification is remembered for [`AUTH_CACHE_TTL`] (as Dovecot's auth cache
//! does): the key is a SHA-256 of the login and password under a random per-process secret,
//! and the entry only counts while the stored hash is unchanged, so a password change or a
//! disabled account takes effect at once. Failures are never cached. Repeat logins (mail
//! clients polling every minute) then cost microseconds instead of an Argon2 run.
//!
//! Addresses are case-insensitive (the Sun schema's `mail` is caseIgnoreIA5Match); a domain
//! alias resolves to its domain; a user's quota is its own override or else its domain's
//! default; its mailbox group is its own `mail_host` or else the domain's default.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use halyard_raft_store::SmShared;
use halyard_raft_store::directory::{
    DirAddress, DirDomain, DirReader, DirStatus, DirUser, canonical_address, canonical_domain,
    effective_quota,
};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::cache::TtlCache;

use crate::{
    Directory, DirectoryError, DomainRecord, Principal, Resolution, UserRecord, UserStatus,
};

/// How long a successful password verification is remembered.
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Password verifications running at once (each takes ~19 MiB and tens of milliseconds).
pub const MAX_CONCURRENT_VERIFY: usize = 4;

/// Hashes a password with Argon2id and a random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A fixed hash of a random password, verified for unknown logins.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$3Xq9cJYhqS3wR8ELjDPmWQ$mB4HdOQ8ccx3bAKqsq1M9mSh3Qz2l4XhDfmu1pS4Ojg";

pub struct EmbeddedDirectory {
    sm: Arc<SmShared>,
    verify: Arc<Semaphore>,
    /// keyed hash of (login, password) -> the stored hash it was verified against.
    verified: TtlCache<[u8; 32], String>,
    secret: [u8; 32],
}

fn unavailable(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable(format!("embedded directory: {e}"))
}

fn status(s: DirStatus) -> UserStatus {
    match s {
        DirStatus::Active => UserStatus::Active,
        DirStatus::Inactive => UserStatus::Inactive,
        DirStatus::Deleted => UserStatus::Deleted,
    }
}

/// The user as the MTA and the store see it, with the domain's defaults filled in.
pub fn user_record(u: &DirUser, d: Option<&DirDomain>) -> UserRecord {
    UserRecord {
        dn: format!("embedded:{}", u.address),
        uid: u.login.clone(),
        mail: u.address.clone(),
        aliases: u.aliases.clone(),
        forwarding: u.forwarding.clone(),
        delivery_options: u.delivery_options.clone(),
        status: status(u.status),
        quota_bytes: effective_quota(u.quota_bytes, d.and_then(|d| d.default_quota_bytes)),
        quota_messages: effective_quota(u.quota_messages, d.and_then(|d| d.default_quota_messages)),
        mail_host: u
            .mail_host
            .clone()
            .or(d.and_then(|d| d.default_mail_host.clone())),
    }
}

fn domain_record(d: &DirDomain, looked_up: &str) -> DomainRecord {
    DomainRecord {
        name: looked_up.to_string(),
        names: std::iter::once(&d.name)
            .chain(&d.aliases)
            .cloned()
            .collect(),
        base_dn: format!("embedded:{}", d.name),
        default_quota_bytes: d.default_quota_bytes,
        default_quota_messages: d.default_quota_messages,
    }
}

impl EmbeddedDirectory {
    /// A directory over `sm`, the local replica of the meta group.
    pub fn new(sm: Arc<SmShared>) -> EmbeddedDirectory {
        let mut secret = [0u8; 32];
        // Without randomness the cache key is still a hash of the password; it only ever lives
        // in this process's memory.
        let _ = getrandom::fill(&mut secret);
        EmbeddedDirectory {
            sm,
            verify: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFY)),
            verified: TtlCache::new(100_000),
            secret,
        }
    }

    fn cache_key(&self, address: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update((address.len() as u64).to_be_bytes());
        h.update(address.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn user_of(
        r: &DirReader<'_, impl halyard_raft_store::apply::KvRead>,
        u: DirUser,
    ) -> Result<UserRecord, halyard_raft_store::StoreError> {
        let d = r.domain(u.address.rsplit_once('@').map(|x| x.1).unwrap_or(""))?;
        Ok(user_record(&u, d.as_ref()))
    }

    fn resolve_sync(&self, address: &str) -> Result<Resolution, halyard_raft_store::StoreError> {
        let Some(addr) = canonical_address(address) else {
            return Ok(Resolution::Unknown);
        };
        let (local, dom) = addr.rsplit_once('@').unwrap_or(("", ""));
        self.sm.directory(|r| {
            let Some(d) = r.domain_by_name(dom)? else {
                return Ok(Resolution::Unknown);
            };
            let addr = format!("{local}@{}", d.name);
            let (target, via_alias) = match r.address(&addr)? {
                None => return Ok(Resolution::Unknown),
                Some(DirAddress::Alias { target }) => (target, true),
                Some(_) => (addr.clone(), false),
            };
            match r.address(&target)? {
                Some(DirAddress::User) => {
                    let Some(u) = r.user(&target)? else {
                        return Ok(Resolution::Unknown);
                    };
                    let user = Self::user_of(r, u)?;
                    if user.delivery_options.iter().any(|o| o == "forward")
                        && !user.delivers_to_mailbox()
                    {
                        let to = user.forwarding.clone();
                        return Ok(Resolution::Forward { user, to });
                    }
                    Ok(Resolution::User { user, via_alias })
                }
                Some(DirAddress::List { members }) => Ok(Resolution::List {
                    address: target,
                    members,
                }),
                _ => Ok(Resolution::Unknown),
            }
        })
    }

    fn find_login(
        &self,
        login: &str,
    ) -> Result<Option<UserRecord>, halyard_raft_store::StoreError> {
        let login = login.trim().to_lowercase();
        if let Some(u) = self.sm.directory(|r| match r.user_by_login(&login)? {
            Some(u) => Ok(Some(Self::user_of(r, u)?)),
            None => Ok(None),
        })? {
            return Ok(Some(u));
        }
        if login.contains('@') {
            return Ok(match self.resolve_sync(&login)? {
                Resolution::User { user, .. } | Resolution::Forward { user, .. } => Some(user),
                _ => None,
            });
        }
        Ok(None)
    }

    fn password_hash(
        &self,
        address: &str,
    ) -> Result<Option<String>, halyard_raft_store::StoreError> {
        self.sm
            .directory(|r| Ok(r.user(address)?.map(|u| u.password_hash)))
    }
}

#[async_trait::async_trait]
impl Directory for EmbeddedDirectory {
    async fn resolve(&self, address: &str) -> Result<Resolution, DirectoryError> {
        self.resolve_sync(address).map_err(unavailable)
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<Principal>, DirectoryError> {
        if password.is_empty() || login.is_empty() || login.contains('\0') {
            return Ok(None);
        }
        let user = self.find_login(login).map_err(unavailable)?;
        let hash = match &user {
            Some(u) => self.password_hash(&u.mail).map_err(unavailable)?,
            None => None,
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let key = user.as_ref().map(|u| self.cache_key(&u.mail, password));
        if let (Some(u), Some(k)) = (&user, key)
            && known
            && self.verified.get(&k).as_deref() == Some(hash.as_str())
        {
            return Ok((u.status == UserStatus::Active).then(|| Principal {
                dn: u.dn.clone(),
                uid: u.uid.clone(),
                mail: u.mail.clone(),
            }));
        }
        let permit = self
            .verify
            .clone()
            .acquire_owned()
            .await
            .map_err(unavailable)?;
        let password = password.to_string();
        let stored = hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        })
        .await
        .map_err(unavailable)?;
        if ok
            && known
            && let Some(k) = key
        {
            self.verified.insert(k, stored, AUTH_CACHE_TTL);
        }
        match user {
            Some(u) if ok && known && u.status == UserStatus::Active => Ok(Some(Principal {
                dn: u.dn,
                uid: u.uid,
                mail: u.mail,
            })),
            _ => Ok(None),
        }
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, DirectoryError> {
        let Some(name) = canonical_domain(name) else {
            return Ok(None);
        };
        self.sm
            .directory(|r| Ok(r.domain_by_name(&name)?.map(|d| domain_record(&d, &name))))
            .map_err(unavailable)
    }

    async fn user(&self, login: &str) -> Result<Option<UserRecord>, DirectoryError> {
        self.find_login(login).map_err(unavailable)
    }

    fn has_scram(&self) -> bool {
        true
    }

    async fn scram_keys(
        &self,
        login: &str,
    ) -> Result<Option<(Principal, crate::sasl::ScramKeys)>, DirectoryError> {
        let Some(u) = self.find_login(login).map_err(unavailable)? else {
            return Ok(None);
        };
        if u.status != UserStatus::Active {
            return Ok(None);
        }
        let keys = self
            .sm
            .directory(|r| r.scram(&u.mail))
            .map_err(unavailable)?;
        Ok(keys.map(|k| {
            (
                Principal {
                    dn: u.dn,
                    uid: u.uid,
                    mail: u.mail,
                },
                k,
            )
        }))
    }
}
