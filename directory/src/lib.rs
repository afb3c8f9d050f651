//! # halyard-directory — users, hosted domains, aliases and lists
//!
//! The MTA and the message store look users up here, as the seed's MTA and store look them up
//! in the LDAP directory. [`Directory`] is the trait they use; [`ldap::LdapDirectory`] is the
//! implementation over an existing OpenLDAP / 389-DS with the Sun/Oracle schema (see
//! [`schema::SchemaMap`]), pooled, with failover across servers, and cached ([`cache`]).
//!
//! **Failures are temporary.** When the directory cannot be reached, lookups return
//! [`DirectoryError::Unavailable`]: the MTA answers `451 4.4.3` at RCPT, IMAP says
//! `NO [UNAVAILABLE]`. Never "user unknown": an outage must not bounce mail.

pub mod cache;
pub mod embedded;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod ldap;
pub mod sasl;
pub mod schema;

use serde::{Deserialize, Serialize};

/// Account state from `mailUserStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    /// Mail is refused temporarily and logins fail.
    Inactive,
    /// Being removed: mail is refused permanently and logins fail.
    Deleted,
}

/// A mail user as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Entry DN (what authentication binds as).
    pub dn: String,
    /// Login name (`uid`).
    pub uid: String,
    /// Primary address (`mail`), lower-cased domain.
    pub mail: String,
    /// Other addresses delivering to this user (`mailAlternateAddress`, `mailEquivalentAddress`).
    pub aliases: Vec<String>,
    /// `mailForwardingAddress`.
    pub forwarding: Vec<String>,
    /// `mailDeliveryOption` values (`mailbox`, `forward`, `program`, ...), lower case.
    pub delivery_options: Vec<String>,
    pub status: UserStatus,
    /// `mailQuota` in bytes, if set.
    pub quota_bytes: Option<u64>,
    /// `mailMsgQuota`, if set.
    pub quota_messages: Option<u64>,
    /// `mailHost`: the resource group (logical host) holding the mailbox.
    pub mail_host: Option<String>,
}

impl UserRecord {
    /// Whether delivery goes to the user's own mailbox (the default when no option is set).
    pub fn delivers_to_mailbox(&self) -> bool {
        self.delivery_options.is_empty() || self.delivery_options.iter().any(|o| o == "mailbox")
    }
}

/// A hosted domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// The domain name looked up (lower case).
    pub name: String,
    /// Every name of the domain (`associatedDomain`), the looked-up one included.
    pub names: Vec<String>,
    /// Where its users and groups live (`inetDomainBaseDN`, else the domain entry itself).
    pub base_dn: String,
    /// Quota of users without one of their own (embedded directory; LDAP users carry
    /// `mailQuota` on their entry).
    pub default_quota_bytes: Option<u64>,
    pub default_quota_messages: Option<u64>,
}

/// What an address is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// A user's address, alternate or equivalent address. `via_alias` tells which.
    User { user: UserRecord, via_alias: bool },
    /// A user whose mail is only forwarded (delivery option `forward` without `mailbox`).
    Forward { user: UserRecord, to: Vec<String> },
    /// A distribution list and its member addresses.
    List {
        address: String,
        members: Vec<String>,
    },
    /// Not a hosted domain, or no such address in it.
    Unknown,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub dn: String,
    pub uid: String,
    pub mail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The directory could not answer now: a temporary failure for mail and logins.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// The lookups the MTA and the store need.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// What `address` is (user, alias, forward, list) or `Unknown`.
    async fn resolve(&self, address: &str) -> Result<Resolution, DirectoryError>;
    /// Checks a password by binding as the user (login is a uid or an address). `Ok(None)`
    /// means wrong credentials or an account that may not log in.
    async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<Principal>, DirectoryError>;
    /// The hosted domain `name` (or one of its aliases), if hosted.
    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, DirectoryError>;
    /// The user record of a login name (uid) or address, whatever its status.
    async fn user(&self, login: &str) -> Result<Option<UserRecord>, DirectoryError>;
    /// Whether this directory keeps SCRAM keys (so SCRAM-SHA-256 may be offered).
    fn has_scram(&self) -> bool {
        false
    }
    /// The SCRAM-SHA-256 keys of an active user (login is a uid or an address); `Ok(None)`
    /// for an unknown or inactive login, or one without keys.
    async fn scram_keys(
        &self,
        _login: &str,
    ) -> Result<Option<(Principal, sasl::ScramKeys)>, DirectoryError> {
        Ok(None)
    }
}

/// Splits and normalises an address: local part kept as is, domain lower-cased. `None` for
/// anything that is not `local@domain` with both parts non-empty.
pub fn normalize_address(address: &str) -> Option<(String, String)> {
    let address = address.trim();
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || address.chars().any(|c| c.is_control()) {
        return None;
    }
    Some((
        local.to_string(),
        domain.trim_end_matches('.').to_ascii_lowercase(),
    ))
}
