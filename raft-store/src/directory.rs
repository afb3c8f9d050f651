//! The embedded directory: hosted domains, users, aliases and distribution lists kept in the
//! meta group's state machine, so they are replicated like the mail itself. It is what Halyard
//! uses when no LDAP server is configured (`halyard ctl domain|user|alias|list` manage it).
//!
//! Layout (column family `directory`), every name lower case:
//!
//! | key                 | value                                                        |
//! |---------------------|--------------------------------------------------------------|
//! | `d\0<domain>`       | [`DirDomain`]                                                |
//! | `n\0<name>`         | canonical domain of `<name>` (the domain itself or an alias) |
//! | `a\0<address>`      | [`DirAddress`]: what an address is (user, alias, list)       |
//! | `u\0<address>`      | [`DirUser`]                                                  |
//! | `i\0<login>`        | the address of the user whose login (uid) this is            |
//! | `s\0<address>`      | [`ScramKeys`] of the user (SCRAM-SHA-256, RFC 5802/7677)     |
//! | `x\0<address>`      | when the user was deleted (ms; its store data is purged later) |
//!
//! Addresses are compared case-insensitively, as the Sun schema's `mail` attribute is
//! (caseIgnoreIA5Match): the whole address is lower-cased. Passwords arrive already hashed
//! (Argon2id PHC strings, hashed by `halyard ctl` so no password crosses the network); apply
//! refuses anything else so a plaintext password can never be stored by mistake.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::kv::{Cf, KvRead, Txn, decode, encode};
use crate::model::{ApplyError, Event, Reply};

/// A user's quota override meaning "unlimited", whatever the domain's default (a user
/// without an override, `None`, gets the domain's).
pub const NO_LIMIT: u64 = u64::MAX;

/// The quota that applies to a user: its override (where [`NO_LIMIT`] is unlimited), else
/// the domain's default (`None`: unlimited).
pub fn effective_quota(own: Option<u64>, domain_default: Option<u64>) -> Option<u64> {
    match own {
        Some(NO_LIMIT) => None,
        Some(limit) => Some(limit),
        None => domain_default,
    }
}

/// A hosted domain of the embedded directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirDomain {
    pub name: String,
    /// Other names of the domain (domain aliases): `user@alias` is `user@name`.
    pub aliases: Vec<String>,
    /// Quota of users that have no override.
    pub default_quota_bytes: Option<u64>,
    pub default_quota_messages: Option<u64>,
    /// Resource group holding the mailboxes of new users (unless they name one).
    pub default_mail_host: Option<String>,
}

/// Account state, as `mailUserStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirStatus {
    Active,
    Inactive,
    Deleted,
}

/// A user of the embedded directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirUser {
    /// Primary address, lower case.
    pub address: String,
    /// Login name; unique across the cluster.
    pub login: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub status: DirStatus,
    /// Overrides of the domain's default quota: `None` takes the domain's, [`NO_LIMIT`]
    /// means unlimited whatever the domain's default.
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
    /// Where mail is forwarded (`mailForwardingAddress`).
    pub forwarding: Vec<String>,
    /// `mailbox`, `forward` (empty: mailbox).
    pub delivery_options: Vec<String>,
    /// Resource group of the mailbox (else the domain's default).
    pub mail_host: Option<String>,
    /// Alias addresses pointing at this user (maintained by apply).
    pub aliases: Vec<String>,
}

impl DirUser {
    /// An active user with no overrides, forwarding or aliases.
    pub fn new(address: &str, login: &str, password_hash: String) -> DirUser {
        DirUser {
            address: address.into(),
            login: login.into(),
            password_hash,
            status: DirStatus::Active,
            quota_bytes: None,
            quota_messages: None,
            forwarding: vec![],
            delivery_options: vec![],
            mail_host: None,
            aliases: vec![],
        }
    }
}

/// What an address of a hosted domain is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirAddress {
    User,
    /// Another name for a user or list of the directory.
    Alias {
        target: String,
    },
    List {
        members: Vec<String>,
    },
}

/// Changes to a user's settings; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPatch {
    pub password_hash: Option<String>,
    pub status: Option<DirStatus>,
    /// `Some(None)` removes the override (back to the domain default).
    pub quota_bytes: Option<Option<u64>>,
    pub quota_messages: Option<Option<u64>>,
    pub forwarding: Option<Vec<String>>,
    pub delivery_options: Option<Vec<String>>,
    pub mail_host: Option<Option<String>>,
}

/// A change to the embedded directory (proposed to the meta group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirCommand {
    AddDomain(DirDomain),
    /// Replaces a domain's settings (aliases included).
    UpdateDomain(DirDomain),
    /// Refused while the domain still has addresses.
    DeleteDomain {
        name: String,
    },
    AddUser(DirUser),
    UpdateUser {
        address: String,
        patch: UserPatch,
    },
    /// Removes the user and every alias pointing at it.
    DeleteUser {
        address: String,
    },
    AddAlias {
        alias: String,
        target: String,
    },
    DeleteAlias {
        alias: String,
    },
    AddList {
        address: String,
        members: Vec<String>,
    },
    ChangeListMembers {
        address: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    DeleteList {
        address: String,
    },
    /// Sets (or with `None` removes) a user's SCRAM-SHA-256 keys. Command level 3. The keys
    /// only count while the user's Argon2id hash is the one they were derived beside
    /// ([`ScramKeys::for_hash`]), so a password changed without them, or a user deleted and
    /// created again, never leaves the old password usable through SCRAM.
    SetScram {
        address: String,
        keys: Option<ScramKeys>,
    },
    /// Records (or with `None` forgets) that a user was deleted at `deleted_at_ms`: the
    /// meta group's leader purges the user's store data once the grace period has passed,
    /// then removes the entry (`halyard ctl user del`). Command level 3.
    SchedulePurge {
        address: String,
        deleted_at_ms: Option<u64>,
    },
}

/// A user's SCRAM-SHA-256 verifier (RFC 5802 §3): what the server needs to check a proof
/// without knowing the password. Derived by `halyard ctl` from the password, so neither the
/// password nor the salted password crosses the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramKeys {
    /// PBKDF2 iterations (at least 4096, RFC 7677 §4).
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    /// The first 16 bytes of SHA-256 of the Argon2id PHC string set with these keys.
    pub for_hash: Vec<u8>,
}

impl ScramKeys {
    /// What [`ScramKeys::for_hash`] holds for a PHC string.
    pub fn hash_binding(password_hash: &str) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(password_hash.as_bytes())[..16].to_vec()
    }
}

pub mod dkeys {
    //! Key layouts of the `directory` column family.
    fn k(tag: u8, s: &str) -> Vec<u8> {
        let mut k = vec![tag, 0];
        k.extend_from_slice(s.as_bytes());
        k
    }
    pub fn domain(name: &str) -> Vec<u8> {
        k(b'd', name)
    }
    pub fn name(name: &str) -> Vec<u8> {
        k(b'n', name)
    }
    pub fn address(a: &str) -> Vec<u8> {
        k(b'a', a)
    }
    pub fn user(a: &str) -> Vec<u8> {
        k(b'u', a)
    }
    pub fn login(l: &str) -> Vec<u8> {
        k(b'i', l)
    }
    pub fn scram(a: &str) -> Vec<u8> {
        k(b's', a)
    }
    pub fn purge(a: &str) -> Vec<u8> {
        k(b'x', a)
    }
    pub const PURGES: &[u8] = b"x\0";
    pub const DOMAINS: &[u8] = b"d\0";
    pub const USERS: &[u8] = b"u\0";
    pub const ADDRESSES: &[u8] = b"a\0";
}

/// Lower-cases and checks an address: `local@domain`, both parts non-empty, no spaces,
/// controls or angle brackets, at most 320 bytes (RFC 5321 limits).
pub fn canonical_address(a: &str) -> Option<String> {
    let a = a.trim().trim_end_matches('.').to_lowercase();
    let (local, domain) = a.rsplit_once('@')?;
    if local.is_empty()
        || local.len() > 64
        || a.len() > 320
        || canonical_domain(domain).as_deref() != Some(domain)
        || local
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '@'))
    {
        return None;
    }
    Some(a)
}

/// Lower-cases and checks a domain name: dot-separated labels of letters, digits and hyphens
/// (internationalised names in their A-label form), at most 253 bytes.
pub fn canonical_domain(d: &str) -> Option<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(d)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

type Outcome = Result<Result<Reply, ApplyError>, StoreError>;

macro_rules! refuse {
    ($($arg:tt)*) => {
        return Ok(Err(ApplyError::Invalid(format!($($arg)*))))
    };
}

fn get<T: serde::de::DeserializeOwned, R: KvRead>(
    t: &Txn<'_, R>,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    t.get(Cf::Directory, key)?.map(|v| decode(&v)).transpose()
}

fn put<T: Serialize, R: KvRead>(t: &mut Txn<'_, R>, key: Vec<u8>, v: &T) -> Result<(), StoreError> {
    t.put(Cf::Directory, key, encode(v)?);
    Ok(())
}

fn check_address<R: KvRead>(
    t: &Txn<'_, R>,
    what: &str,
    a: &str,
) -> Result<Result<(), ApplyError>, StoreError> {
    if canonical_address(a).as_deref() != Some(a) {
        return Ok(Err(ApplyError::Invalid(format!(
            "{what} {a:?} is not a valid lower-case address"
        ))));
    }
    let d = domain_of(a);
    if get::<DirDomain, R>(t, &dkeys::domain(d))?.is_none() {
        let msg = match get::<String, R>(t, &dkeys::name(d))? {
            Some(canon) => format!("{d} is an alias of {canon}: use an address @{canon}"),
            None => format!("{d} is not a hosted domain"),
        };
        return Ok(Err(ApplyError::Invalid(msg)));
    }
    Ok(Ok(()))
}

fn check_hash(h: &str) -> Result<(), ApplyError> {
    if !h.starts_with("$argon2id$") || h.len() > 512 {
        return Err(ApplyError::Invalid(
            "password must be an Argon2id hash (PHC string)".into(),
        ));
    }
    Ok(())
}

fn check_external_addresses(what: &str, list: &[String]) -> Result<(), ApplyError> {
    for a in list {
        if canonical_address(a).as_deref() != Some(a.as_str()) {
            return Err(ApplyError::Invalid(format!(
                "{what} {a:?} is not a valid lower-case address"
            )));
        }
    }
    Ok(())
}

fn check_options(opts: &[String]) -> Result<(), ApplyError> {
    for o in opts {
        if !matches!(o.as_str(), "mailbox" | "forward") {
            return Err(ApplyError::Invalid(format!(
                "delivery option {o:?}: expected mailbox or forward"
            )));
        }
    }
    Ok(())
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

fn put_domain_names<R: KvRead>(
    t: &mut Txn<'_, R>,
    d: &DirDomain,
    old: Option<&DirDomain>,
) -> Result<Result<(), ApplyError>, StoreError> {
    if let Some(old) = old {
        for a in &old.aliases {
            t.delete(Cf::Directory, dkeys::name(a));
        }
    }
    for n in std::iter::once(&d.name).chain(&d.aliases) {
        if canonical_domain(n).as_deref() != Some(n.as_str()) {
            refuse!("{n:?} is not a valid lower-case domain name");
        }
        if let Some(owner) = get::<String, R>(t, &dkeys::name(n))?
            && owner != d.name
        {
            refuse!("{n} is already a name of domain {owner}");
        }
        t.put(Cf::Directory, dkeys::name(n), encode(&d.name)?);
    }
    Ok(Ok(()))
}

/// Applies one directory command to the meta group's state.
pub fn apply_dir<R: KvRead>(t: &mut Txn<'_, R>, cmd: &DirCommand) -> Outcome {
    match cmd {
        DirCommand::AddDomain(d) => {
            if get::<DirDomain, R>(t, &dkeys::domain(&d.name))?.is_some() {
                refuse!("domain {} already exists", d.name);
            }
            tri!(put_domain_names(t, d, None)?);
            put(t, dkeys::domain(&d.name), d)?;
        }
        DirCommand::UpdateDomain(d) => {
            let Some(old) = get::<DirDomain, R>(t, &dkeys::domain(&d.name))? else {
                refuse!("no domain {}", d.name);
            };
            tri!(put_domain_names(t, d, Some(&old))?);
            put(t, dkeys::domain(&d.name), d)?;
        }
        DirCommand::DeleteDomain { name } => {
            let Some(d) = get::<DirDomain, R>(t, &dkeys::domain(name))? else {
                refuse!("no domain {name}");
            };
            let suffix = format!("@{name}");
            let left = t
                .scan(Cf::Directory, dkeys::ADDRESSES)?
                .into_iter()
                .filter(|(k, _)| k.ends_with(suffix.as_bytes()))
                .count();
            if left > 0 {
                refuse!("domain {name} still has {left} address(es): delete them first");
            }
            for n in std::iter::once(&d.name).chain(&d.aliases) {
                t.delete(Cf::Directory, dkeys::name(n));
            }
            t.delete(Cf::Directory, dkeys::domain(name));
        }
        DirCommand::AddUser(u) => {
            tri!(check_address(t, "address", &u.address)?);
            tri!(check_hash(&u.password_hash));
            tri!(check_external_addresses(
                "forwarding address",
                &u.forwarding
            ));
            tri!(check_options(&u.delivery_options));
            if !u.aliases.is_empty() {
                refuse!("aliases are added with AddAlias");
            }
            if u.login.is_empty()
                || u.login.len() > 320
                || u.login.chars().any(|c| c.is_control() || c.is_whitespace())
                || u.login != u.login.to_lowercase()
            {
                refuse!("login {:?} must be lower case without spaces", u.login);
            }
            if t.get(Cf::Directory, &dkeys::address(&u.address))?.is_some() {
                refuse!("address {} is already in use", u.address);
            }
            if let Some(other) = get::<String, R>(t, &dkeys::login(&u.login))? {
                refuse!("login {} is already used by {other}", u.login);
            }
            put(t, dkeys::address(&u.address), &DirAddress::User)?;
            put(t, dkeys::user(&u.address), u)?;
            put(t, dkeys::login(&u.login), &u.address)?;
        }
        DirCommand::UpdateUser { address, patch } => {
            let Some(mut u) = get::<DirUser, R>(t, &dkeys::user(address))? else {
                refuse!("no user {address}");
            };
            if let Some(h) = &patch.password_hash {
                tri!(check_hash(h));
                u.password_hash = h.clone();
            }
            if let Some(s) = patch.status {
                u.status = s;
            }
            if let Some(q) = patch.quota_bytes {
                u.quota_bytes = q;
            }
            if let Some(q) = patch.quota_messages {
                u.quota_messages = q;
            }
            if let Some(f) = &patch.forwarding {
                tri!(check_external_addresses("forwarding address", f));
                u.forwarding = f.clone();
            }
            if let Some(o) = &patch.delivery_options {
                tri!(check_options(o));
                u.delivery_options = o.clone();
            }
            if let Some(h) = &patch.mail_host {
                u.mail_host = h.clone();
            }
            put(t, dkeys::user(address), &u)?;
        }
        DirCommand::DeleteUser { address } => {
            let Some(u) = get::<DirUser, R>(t, &dkeys::user(address))? else {
                refuse!("no user {address}");
            };
            for a in &u.aliases {
                t.delete(Cf::Directory, dkeys::address(a));
            }
            t.delete(Cf::Directory, dkeys::address(address));
            t.delete(Cf::Directory, dkeys::user(address));
            t.delete(Cf::Directory, dkeys::login(&u.login));
        }
        DirCommand::AddAlias { alias, target } => {
            tri!(check_address(t, "alias", alias)?);
            if t.get(Cf::Directory, &dkeys::address(alias))?.is_some() {
                refuse!("address {alias} is already in use");
            }
            match get::<DirAddress, R>(t, &dkeys::address(target))? {
                Some(DirAddress::User) => {
                    let mut u: DirUser = get(t, &dkeys::user(target))?
                        .ok_or_else(|| StoreError::Codec(format!("user {target} missing")))?;
                    u.aliases.push(alias.clone());
                    u.aliases.sort();
                    put(t, dkeys::user(target), &u)?;
                }
                Some(DirAddress::List { .. }) => {}
                Some(DirAddress::Alias { .. }) => {
                    refuse!("{target} is itself an alias: point {alias} at a user or list")
                }
                None => refuse!("no user or list {target}"),
            }
            put(
                t,
                dkeys::address(alias),
                &DirAddress::Alias {
                    target: target.clone(),
                },
            )?;
        }
        DirCommand::DeleteAlias { alias } => {
            let Some(DirAddress::Alias { target }) =
                get::<DirAddress, R>(t, &dkeys::address(alias))?
            else {
                refuse!("no alias {alias}");
            };
            if let Some(mut u) = get::<DirUser, R>(t, &dkeys::user(&target))? {
                u.aliases.retain(|a| a != alias);
                put(t, dkeys::user(&target), &u)?;
            }
            t.delete(Cf::Directory, dkeys::address(alias));
        }
        DirCommand::AddList { address, members } => {
            tri!(check_address(t, "list", address)?);
            tri!(check_external_addresses("member", members));
            if t.get(Cf::Directory, &dkeys::address(address))?.is_some() {
                refuse!("address {address} is already in use");
            }
            let mut members = members.clone();
            members.sort();
            members.dedup();
            put(t, dkeys::address(address), &DirAddress::List { members })?;
        }
        DirCommand::ChangeListMembers {
            address,
            add,
            remove,
        } => {
            let Some(DirAddress::List { mut members }) =
                get::<DirAddress, R>(t, &dkeys::address(address))?
            else {
                refuse!("no list {address}");
            };
            tri!(check_external_addresses("member", add));
            members.retain(|m| !remove.contains(m));
            members.extend(add.iter().cloned());
            members.sort();
            members.dedup();
            put(t, dkeys::address(address), &DirAddress::List { members })?;
        }
        DirCommand::DeleteList { address } => tri!(delete_list(t, address)?),
        DirCommand::SetScram { address, keys } => tri!(set_scram(t, address, keys.as_ref())?),
        DirCommand::SchedulePurge {
            address,
            deleted_at_ms,
        } => tri!(schedule_purge(t, address, *deleted_at_ms)?),
    }
    t.events.push(Event::DirectoryChanged);
    Ok(Ok(Reply::Done))
}

/// A list and the aliases pointing at it.
fn delete_list<R: KvRead>(
    t: &mut Txn<'_, R>,
    address: &str,
) -> Result<Result<(), ApplyError>, StoreError> {
    let Some(DirAddress::List { .. }) = get::<DirAddress, R>(t, &dkeys::address(address))? else {
        return Ok(Err(ApplyError::Invalid(format!("no list {address}"))));
    };
    // Aliases of the list go with it.
    let aliases: Vec<Vec<u8>> = t
        .scan(Cf::Directory, dkeys::ADDRESSES)?
        .into_iter()
        .filter(|(_, v)| {
            matches!(decode::<DirAddress>(v), Ok(DirAddress::Alias { target }) if target == address)
        })
        .map(|(k, _)| k)
        .collect();
    for k in aliases {
        t.delete(Cf::Directory, k);
    }
    t.delete(Cf::Directory, dkeys::address(address));
    Ok(Ok(()))
}

fn schedule_purge<R: KvRead>(
    t: &mut Txn<'_, R>,
    address: &str,
    deleted_at_ms: Option<u64>,
) -> Result<Result<(), ApplyError>, StoreError> {
    match deleted_at_ms {
        Some(at) => {
            if get::<DirUser, R>(t, &dkeys::user(address))?.is_none() {
                return Ok(Err(ApplyError::Invalid(format!("no user {address}"))));
            }
            put(t, dkeys::purge(address), &at)?;
        }
        None => t.delete(Cf::Directory, dkeys::purge(address)),
    }
    Ok(Ok(()))
}

fn set_scram<R: KvRead>(
    t: &mut Txn<'_, R>,
    address: &str,
    keys: Option<&ScramKeys>,
) -> Result<Result<(), ApplyError>, StoreError> {
    if get::<DirUser, R>(t, &dkeys::user(address))?.is_none() {
        return Ok(Err(ApplyError::Invalid(format!("no user {address}"))));
    }
    match keys {
        Some(k) => {
            if k.iterations < 4096
                || k.salt.len() < 16
                || k.stored_key.len() != 32
                || k.server_key.len() != 32
                || k.for_hash.len() != 16
            {
                return Ok(Err(ApplyError::Invalid(
                    "malformed SCRAM-SHA-256 keys".into(),
                )));
            }
            put(t, dkeys::scram(address), k)?;
        }
        None => t.delete(Cf::Directory, dkeys::scram(address)),
    }
    Ok(Ok(()))
}

/// Read access to the embedded directory (a replica of the meta group).
pub struct DirReader<'a, R: KvRead>(pub &'a R);

impl<R: KvRead> DirReader<'_, R> {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.0
            .get(Cf::Directory, key)?
            .map(|v| decode(&v))
            .transpose()
    }
    fn scan<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.0
            .scan(Cf::Directory, prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }
    pub fn domain(&self, name: &str) -> Result<Option<DirDomain>, StoreError> {
        self.get(&dkeys::domain(name))
    }
    /// The domain that `name` (a domain or one of its aliases) belongs to.
    pub fn domain_by_name(&self, name: &str) -> Result<Option<DirDomain>, StoreError> {
        match self.get::<String>(&dkeys::name(name))? {
            Some(canon) => self.domain(&canon),
            None => Ok(None),
        }
    }
    pub fn domains(&self) -> Result<Vec<DirDomain>, StoreError> {
        self.scan(dkeys::DOMAINS)
    }
    pub fn address(&self, address: &str) -> Result<Option<DirAddress>, StoreError> {
        self.get(&dkeys::address(address))
    }
    pub fn user(&self, address: &str) -> Result<Option<DirUser>, StoreError> {
        self.get(&dkeys::user(address))
    }
    /// Deleted users whose store data waits to be purged: (address, deleted at, ms).
    pub fn scheduled_purges(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.0
            .scan(Cf::Directory, dkeys::PURGES)?
            .iter()
            .map(|(k, v)| {
                let a = String::from_utf8_lossy(&k[dkeys::PURGES.len()..]).into_owned();
                Ok((a, decode::<u64>(v)?))
            })
            .collect()
    }
    /// The user's SCRAM keys, when set beside its current password hash.
    pub fn scram(&self, address: &str) -> Result<Option<ScramKeys>, StoreError> {
        let Some(u) = self.user(address)? else {
            return Ok(None);
        };
        Ok(self
            .get::<ScramKeys>(&dkeys::scram(address))?
            .filter(|k| k.for_hash == ScramKeys::hash_binding(&u.password_hash)))
    }
    pub fn user_by_login(&self, login: &str) -> Result<Option<DirUser>, StoreError> {
        match self.get::<String>(&dkeys::login(login))? {
            Some(a) => self.user(&a),
            None => Ok(None),
        }
    }
    pub fn users(&self) -> Result<Vec<DirUser>, StoreError> {
        self.scan(dkeys::USERS)
    }
    /// Every address with what it is, in address order.
    pub fn addresses(&self) -> Result<Vec<(String, DirAddress)>, StoreError> {
        self.0
            .scan(Cf::Directory, dkeys::ADDRESSES)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    String::from_utf8_lossy(&k[dkeys::ADDRESSES.len()..]).into_owned(),
                    decode(&v)?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::apply::apply_command;
    use crate::kv::KvPairs;
    use crate::model::Command;

    /// An in-memory committed state for apply tests.
    #[derive(Default)]
    struct Mem(BTreeMap<(Cf, Vec<u8>), Vec<u8>>);

    impl KvRead for Mem {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(&(cf, key.to_vec())).cloned())
        }
        fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<KvPairs, StoreError> {
            Ok(self
                .0
                .range((cf, prefix.to_vec())..)
                .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    impl Mem {
        fn apply(&mut self, cmd: DirCommand) -> Reply {
            let mut t = Txn::new(&*self);
            let r = apply_command(&mut t, &Command::Directory(cmd)).unwrap();
            let (writes, _) = t.into_parts();
            for (cf, k, v) in writes {
                match v {
                    Some(v) => self.0.insert((cf, k), v),
                    None => self.0.remove(&(cf, k)),
                };
            }
            r
        }
        fn ok(&mut self, cmd: DirCommand) {
            let r = self.apply(cmd.clone());
            assert_eq!(r, Reply::Done, "{cmd:?}");
        }
        fn refused(&mut self, cmd: DirCommand) -> String {
            match self.apply(cmd.clone()) {
                Reply::Error(e) => e.to_string(),
                r => panic!("{cmd:?} was not refused: {r:?}"),
            }
        }
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn user(address: &str) -> DirUser {
        DirUser::new(address, address, HASH.into())
    }

    fn domain(name: &str, aliases: &[&str]) -> DirDomain {
        DirDomain {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// SCRAM keys only count beside the password hash they were set with: a password changed
    /// without them (or a user deleted and created again) leaves no old password usable.
    #[test]
    fn scram_keys_follow_the_password_hash() {
        let mut m = Mem(BTreeMap::new());
        m.ok(DirCommand::AddDomain(domain("example.org", &[])));
        let keys = |h: &str| ScramKeys {
            iterations: 4096,
            salt: vec![1; 16],
            stored_key: vec![2; 32],
            server_key: vec![3; 32],
            for_hash: ScramKeys::hash_binding(h),
        };
        let set = |k| DirCommand::SetScram {
            address: "joe@example.org".into(),
            keys: k,
        };
        assert!(m.refused(set(Some(keys(HASH)))).contains("no user"));
        m.ok(DirCommand::AddUser(user("joe@example.org")));
        let mut weak = keys(HASH);
        weak.iterations = 1000;
        assert!(m.refused(set(Some(weak))).contains("malformed"));
        m.ok(set(Some(keys(HASH))));
        let read = |m: &Mem| DirReader(m).scram("joe@example.org").unwrap();
        assert_eq!(read(&m), Some(keys(HASH)));
        let other = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNo";
        m.ok(DirCommand::UpdateUser {
            address: "joe@example.org".into(),
            patch: UserPatch {
                password_hash: Some(other.into()),
                ..Default::default()
            },
        });
        assert_eq!(read(&m), None, "keys of the old password still count");
        m.ok(set(Some(keys(other))));
        assert_eq!(read(&m), Some(keys(other)));
        m.ok(set(None));
        assert_eq!(read(&m), None);
    }

    #[test]
    fn domains_users_aliases_lists() {
        let mut m = Mem::default();
        m.ok(DirCommand::AddDomain(domain(
            "example.org",
            &["example.net"],
        )));
        assert!(
            m.refused(DirCommand::AddDomain(domain("example.net", &[])))
                .contains("already")
        );
        assert!(
            m.refused(DirCommand::AddUser(user("joe@example.net")))
                .contains("alias of example.org")
        );
        assert!(
            m.refused(DirCommand::AddUser(user("joe@other.org")))
                .contains("not a hosted")
        );
        assert!(
            m.refused(DirCommand::AddUser(user("Joe@example.org")))
                .contains("lower-case")
        );
        let mut plain = user("joe@example.org");
        plain.password_hash = "secret".into();
        assert!(m.refused(DirCommand::AddUser(plain)).contains("Argon2id"));
        m.ok(DirCommand::AddUser(user("joe@example.org")));
        assert!(
            m.refused(DirCommand::AddUser(user("joe@example.org")))
                .contains("in use")
        );
        m.ok(DirCommand::AddAlias {
            alias: "postmaster@example.org".into(),
            target: "joe@example.org".into(),
        });
        m.ok(DirCommand::AddList {
            address: "staff@example.org".into(),
            members: vec!["joe@example.org".into(), "ann@elsewhere.test".into()],
        });
        m.ok(DirCommand::AddAlias {
            alias: "team@example.org".into(),
            target: "staff@example.org".into(),
        });
        assert!(
            m.refused(DirCommand::AddAlias {
                alias: "x@example.org".into(),
                target: "team@example.org".into()
            })
            .contains("itself an alias")
        );
        assert!(
            m.refused(DirCommand::DeleteDomain {
                name: "example.org".into()
            })
            .contains("4 address")
        );
        let r = DirReader(&m);
        assert_eq!(
            r.user("joe@example.org").unwrap().unwrap().aliases,
            vec!["postmaster@example.org"]
        );
        assert_eq!(
            r.domain_by_name("example.net").unwrap().unwrap().name,
            "example.org"
        );
        m.ok(DirCommand::DeleteUser {
            address: "joe@example.org".into(),
        });
        m.ok(DirCommand::DeleteList {
            address: "staff@example.org".into(),
        });
        // The user's and the list's aliases went with them; the login is free again.
        assert!(DirReader(&m).addresses().unwrap().is_empty());
        assert!(
            DirReader(&m)
                .user_by_login("joe@example.org")
                .unwrap()
                .is_none()
        );
        m.ok(DirCommand::DeleteDomain {
            name: "example.org".into(),
        });
        assert!(m.0.is_empty(), "nothing left behind: {:?}", m.0);
    }

    #[test]
    fn update_domain_moves_alias_names() {
        let mut m = Mem::default();
        m.ok(DirCommand::AddDomain(domain("a.test", &["b.test"])));
        m.ok(DirCommand::UpdateDomain(domain("a.test", &["c.test"])));
        let r = DirReader(&m);
        assert!(r.domain_by_name("b.test").unwrap().is_none());
        assert_eq!(r.domain_by_name("c.test").unwrap().unwrap().name, "a.test");
        m.ok(DirCommand::AddDomain(domain("b.test", &[])));
    }

    #[test]
    fn address_and_domain_syntax() {
        assert_eq!(
            canonical_address(" Joe.Smith@Example.ORG. ").as_deref(),
            Some("joe.smith@example.org")
        );
        for bad in [
            "joe",
            "@x.org",
            "joe@",
            "a b@x.org",
            "joe@x..org",
            "joe@-x.org",
            "<j>@x.org",
        ] {
            assert_eq!(canonical_address(bad), None, "{bad}");
        }
        assert_eq!(
            canonical_domain("xn--bcher-kva.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
    }

    fn arb_dir_command() -> impl Strategy<Value = DirCommand> {
        let local = prop::sample::select(vec!["a", "b", "c", "d"]);
        let dom = prop::sample::select(vec!["x.test", "y.test", "z.test"]);
        let addr = (local, dom.clone()).prop_map(|(l, d)| format!("{l}@{d}"));
        prop_oneof![
            (dom.clone(), proptest::option::of(dom.clone())).prop_map(|(d, a)| {
                DirCommand::AddDomain(DirDomain {
                    name: d.into(),
                    aliases: a.into_iter().map(String::from).collect(),
                    ..Default::default()
                })
            }),
            dom.clone()
                .prop_map(|d| DirCommand::DeleteDomain { name: d.into() }),
            addr.clone().prop_map(|a| DirCommand::AddUser(user(&a))),
            addr.clone()
                .prop_map(|a| DirCommand::DeleteUser { address: a }),
            (addr.clone(), addr.clone())
                .prop_map(|(alias, target)| DirCommand::AddAlias { alias, target }),
            addr.clone()
                .prop_map(|alias| DirCommand::DeleteAlias { alias }),
            (addr.clone(), proptest::collection::vec(addr.clone(), 0..3))
                .prop_map(|(address, members)| DirCommand::AddList { address, members }),
            addr.prop_map(|address| DirCommand::DeleteList { address }),
        ]
    }

    proptest! {
        /// Whatever sequence of commands is applied, the directory stays consistent: every
        /// address's domain exists, users have their record and login, aliases point at a
        /// user or list and are listed on their user, every domain name maps to a domain.
        #[test]
        fn directory_stays_consistent(cmds in proptest::collection::vec(arb_dir_command(), 1..60)) {
            let mut m = Mem::default();
            for c in cmds {
                m.apply(c);
            }
            let r = DirReader(&m);
            let domains = r.domains().unwrap();
            for d in &domains {
                for n in std::iter::once(&d.name).chain(&d.aliases) {
                    prop_assert_eq!(r.domain_by_name(n).unwrap().map(|x| x.name), Some(d.name.clone()));
                }
            }
            for (a, what) in r.addresses().unwrap() {
                prop_assert!(r.domain(domain_of(&a)).unwrap().is_some(), "orphan {}", a);
                match what {
                    DirAddress::User => {
                        let u = r.user(&a).unwrap().expect("user record");
                        prop_assert_eq!(r.user_by_login(&u.login).unwrap().map(|u| u.address), Some(a.clone()));
                    }
                    DirAddress::Alias { target } => match r.address(&target).unwrap() {
                        Some(DirAddress::User) => prop_assert!(r.user(&target).unwrap().unwrap().aliases.contains(&a)),
                        Some(DirAddress::List { .. }) => {}
                        other => prop_assert!(false, "alias {} -> {} is {:?}", a, target, other),
                    },
                    DirAddress::List { .. } => {}
                }
            }
            for u in r.users().unwrap() {
                prop_assert_eq!(r.address(&u.address).unwrap(), Some(DirAddress::User));
                for al in &u.aliases {
                    prop_assert_eq!(r.address(al).unwrap(), Some(DirAddress::Alias { target: u.address.clone() }));
                }
            }
        }
    }
}
