//! Which LDAP attributes and object classes mean what. Defaults follow the Sun/Oracle
//! Communications Messaging Server schema, so an existing directory works as it is; every
//! name can be changed in the configuration for other schemas.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaMap {
    pub mail: String,
    pub alternate_address: String,
    pub equivalent_address: String,
    pub forwarding_address: String,
    pub delivery_option: String,
    pub user_status: String,
    pub quota_bytes: String,
    pub quota_messages: String,
    pub mail_host: String,
    pub uid: String,
    /// Attribute of a domain entry listing the domain's names.
    pub domain_name: String,
    /// Attribute of a domain entry pointing at the subtree of its users and groups.
    pub domain_base_dn: String,
    /// Member addresses of a list.
    pub list_member_address: String,
    /// Member DNs of a list.
    pub list_member_dn: String,
    /// Object classes that make an entry a list rather than a user.
    pub list_classes: Vec<String>,
}

impl Default for SchemaMap {
    fn default() -> Self {
        SchemaMap {
            mail: "mail".into(),
            alternate_address: "mailAlternateAddress".into(),
            equivalent_address: "mailEquivalentAddress".into(),
            forwarding_address: "mailForwardingAddress".into(),
            delivery_option: "mailDeliveryOption".into(),
            user_status: "mailUserStatus".into(),
            quota_bytes: "mailQuota".into(),
            quota_messages: "mailMsgQuota".into(),
            mail_host: "mailHost".into(),
            uid: "uid".into(),
            domain_name: "associatedDomain".into(),
            domain_base_dn: "inetDomainBaseDN".into(),
            list_member_address: "mgrpRFC822MailMember".into(),
            list_member_dn: "uniqueMember".into(),
            list_classes: vec![
                "inetMailGroup".into(),
                "groupOfUniqueNames".into(),
                "groupOfNames".into(),
            ],
        }
    }
}

impl SchemaMap {
    /// Attributes fetched for an address lookup.
    pub fn entry_attrs(&self) -> Vec<String> {
        vec![
            "objectClass".into(),
            self.mail.clone(),
            self.alternate_address.clone(),
            self.equivalent_address.clone(),
            self.forwarding_address.clone(),
            self.delivery_option.clone(),
            self.user_status.clone(),
            self.quota_bytes.clone(),
            self.quota_messages.clone(),
            self.mail_host.clone(),
            self.uid.clone(),
            self.list_member_address.clone(),
            self.list_member_dn.clone(),
        ]
    }
}
