//! The envelope of the inbound session: MAIL FROM (sender checks, ESMTP parameters) and
//! RCPT TO (rewrite rules, directory lookup, quota, list and forwarding expansion, and the
//! channel each recipient will go out through).

use std::collections::BTreeMap;

use halyard_directory::{DirectoryError, Resolution};
use halyard_raft_store::{Command, RecipientSpec};

use super::{Rcpt, Session, Transaction};
use crate::Kind;

impl Session {
    pub(super) async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> std::io::Result<()> {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1 say EHLO first").await;
        }
        if self.tx.from.is_some() {
            return self.refuse(503, "5.5.1 nested MAIL command").await;
        }
        if self.kind == Kind::Submission && self.auth.is_none() {
            return self
                .refuse(530, "5.7.0 authentication required on submission")
                .await;
        }
        if let Some(user) = self.auth.clone()
            && !self.owns(&user, &from.address).await
        {
            return self
                .refuse(
                    553,
                    &format!("5.7.1 <{}> is not an address of {user}", from.address),
                )
                .await;
        }
        if self.shared.cfg.mailfromdnsverify
            && self.auth.is_none()
            && let Some((_, domain)) = from.address.rsplit_once('@')
            && !matches!(
                self.shared.backend.directory.domain(domain).await,
                Ok(Some(_))
            )
        {
            match self.shared.relay.domain_exists(domain).await {
                Ok(true) => {}
                Ok(false) => {
                    return self
                        .refuse(
                            550,
                            &format!("5.1.8 <{}>: sender domain does not exist", from.address),
                        )
                        .await;
                }
                Err(_) => {
                    return self
                        .refuse(451, "4.4.3 cannot verify the sender domain now")
                        .await;
                }
            }
        }
        let max = self.shared.cfg.max_message_bytes;
        if from.size as u64 > max {
            return self
                .refuse(
                    552,
                    &format!("5.3.4 message size exceeds the limit of {max} bytes"),
                )
                .await;
        }
        let mut params = BTreeMap::new();
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            params.insert("BODY".into(), "8BITMIME".into());
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            params.insert("SMTPUTF8".into(), String::new());
        }
        if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            params.insert("RET".into(), "FULL".into());
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            params.insert("RET".into(), "HDRS".into());
        }
        if let Some(envid) = &from.env_id {
            params.insert("ENVID".into(), envid.clone());
        }
        self.tx = Transaction {
            from: Some(from.address),
            params,
            ..Default::default()
        };
        self.reply(250, "2.1.0 sender OK");
        Ok(())
    }

    /// Whether `address` is one of `user`'s addresses (submission sender check).
    async fn owns(&self, user: &str, address: &str) -> bool {
        if address.eq_ignore_ascii_case(user) {
            return true;
        }
        matches!(
            self.shared.backend.directory.resolve(address).await,
            Ok(Resolution::User { user: u, .. }) if u.mail == user
        )
    }

    /// RCPT: the address after the rewrite rules, then what the directory says it is.
    pub(super) async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> std::io::Result<()> {
        if self.tx.from.is_none() {
            return self.refuse(503, "5.5.1 MAIL first").await;
        }
        if self.tx.rcpts.len() >= self.shared.cfg.max_recipients {
            return self.refuse(452, "4.5.3 too many recipients").await;
        }
        // Rewrite rules first; the address as given is kept as ORCPT for reports.
        let mut to = to;
        let address = crate::rewrite::rewrite(&self.shared.cfg.rewrite, &to.address);
        if address != to.address {
            tracing::debug!(from = %to.address, to = %address, "recipient rewritten");
            to.orcpt = to.orcpt.or_else(|| Some(format!("rfc822;{}", to.address)));
            to.address = address.clone();
        }
        let dir = self.shared.backend.directory.clone();
        match dir.resolve(&address).await {
            Ok(Resolution::User { user, .. }) => self.mailbox_rcpt(&to, address, user).await,
            Ok(Resolution::Unknown) => self.unknown_rcpt(&to, address).await,
            Ok(Resolution::Forward { to: targets, .. })
            | Ok(Resolution::List {
                members: targets, ..
            }) => self.list_rcpt(targets, address).await,
            Err(DirectoryError::Unavailable(_)) => {
                self.refuse(451, "4.4.3 directory unavailable, try again later")
                    .await
            }
        }
    }

    /// RCPT for a local user's address: the account must be active, its mailbox group
    /// served here and its mailbox not full; forwarding the user asked for comes along.
    async fn mailbox_rcpt(
        &mut self,
        to: &smtp_proto::RcptTo<String>,
        address: String,
        user: halyard_directory::UserRecord,
    ) -> std::io::Result<()> {
        match user.status {
            halyard_directory::UserStatus::Active => {}
            halyard_directory::UserStatus::Inactive => {
                return self
                    .refuse(450, &format!("4.2.1 <{address}>: mailbox disabled for now"))
                    .await;
            }
            halyard_directory::UserStatus::Deleted => {
                return self
                    .refuse(550, &format!("5.1.1 <{address}>: no such user here"))
                    .await;
            }
        }
        let Some(group) = crate::group_of(&self.shared, &user) else {
            return self
                .refuse(451, "4.3.0 no mailbox group configured for this recipient")
                .await;
        };
        if !self.shared.backend.groups.contains_key(&group) {
            return self
                .refuse(
                    451,
                    &format!("4.3.0 mailbox group {group} is not served here"),
                )
                .await;
        }
        // The directory's quota is what the store enforces: bring it over if it changed, and
        // refuse new mail for a mailbox that is already full (RFC 5321 452 4.2.2).
        if let Some(g) = self.shared.backend.groups.get(&group) {
            let q = g.reader().quota(&user.mail).unwrap_or_default();
            if q.limit_bytes != user.quota_bytes || q.limit_messages != user.quota_messages {
                let _ = g
                    .propose(Command::SetQuota {
                        user: user.mail.clone(),
                        limit_bytes: user.quota_bytes,
                        limit_messages: user.quota_messages,
                    })
                    .await;
            }
            let full = user.quota_bytes.is_some_and(|l| q.used_bytes >= l)
                || user.quota_messages.is_some_and(|l| q.used_messages >= l);
            if full {
                return self
                    .refuse(452, &format!("4.2.2 <{address}>: mailbox full"))
                    .await;
            }
        }
        let notify = notify_of(to.flags);
        let orcpt = to
            .orcpt
            .clone()
            .or_else(|| (user.mail != address).then(|| format!("rfc822;{address}")));
        let forwards = if user.delivery_options.iter().any(|o| o == "forward") {
            user.forwarding.clone()
        } else {
            Vec::new()
        };
        self.tx.rcpts.push(Rcpt {
            spec: RecipientSpec {
                address: user.mail.clone(),
                orcpt,
                notify,
                channel: "store".into(),
            },
            group,
        });
        // Forwarding in addition to the mailbox (delivery options `mailbox` + `forward`).
        if !forwards.is_empty() {
            match self.expand(forwards, &address).await {
                Ok(list) => self.tx.rcpts.extend(list),
                Err(_) => {
                    self.tx.rcpts.pop();
                    return self
                        .refuse(451, "4.4.3 directory unavailable, try again later")
                        .await;
                }
            }
        }
        self.tx.accepted.push(address.clone());
        self.reply(250, "2.1.5 recipient OK");
        Ok(())
    }

    /// RCPT for an address the directory does not know: no such user in a hosted domain,
    /// else another domain, reached through its configured channel or, for clients allowed
    /// to relay, the MX relay.
    async fn unknown_rcpt(
        &mut self,
        to: &smtp_proto::RcptTo<String>,
        address: String,
    ) -> std::io::Result<()> {
        let dir = self.shared.backend.directory.clone();
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        match dir.domain(domain).await {
            Ok(Some(_)) => {
                self.refuse(550, &format!("5.1.1 <{address}>: no such user here"))
                    .await
            }
            Ok(None)
                if let Some(ch) =
                    crate::rewrite::channel_for(&self.shared.cfg.channels, domain) =>
            {
                let name = ch.name.clone();
                self.channel_rcpt(to, &name).await
            }
            Ok(None) if self.kind == Kind::Lmtp => {
                self.refuse(550, &format!("5.1.1 <{address}>: not a local recipient"))
                    .await
            }
            Ok(None) if self.trusted || self.auth.is_some() => self.channel_rcpt(to, "smtp").await,
            Ok(None) => {
                self.refuse(554, &format!("5.7.1 <{address}>: relay access denied"))
                    .await
            }
            Err(DirectoryError::Unavailable(_)) => {
                self.refuse(451, "4.4.3 directory unavailable, try again later")
                    .await
            }
        }
    }

    /// RCPT for a distribution list or a forwarding-only user: accepted when it expands to
    /// somebody.
    async fn list_rcpt(&mut self, targets: Vec<String>, address: String) -> std::io::Result<()> {
        match self.expand(targets, &address).await {
            Ok(list) if list.is_empty() => {
                self.refuse(550, &format!("5.1.1 <{address}>: nobody to deliver to"))
                    .await
            }
            Ok(list) => {
                self.tx.rcpts.extend(list);
                self.tx.accepted.push(address.clone());
                self.reply(250, "2.1.5 recipient OK (expanded)");
                Ok(())
            }
            Err(_) => {
                self.refuse(451, "4.4.3 directory unavailable, try again later")
                    .await
            }
        }
    }

    /// The recipients a distribution list or a forwarding entry stands for: local users'
    /// mailboxes (store channel) and addresses elsewhere (relay), expanded through nested
    /// lists and forwarding up to 8 levels and 1,000 addresses, each at most once. The
    /// original address goes into ORCPT for DSNs. Mail keeps its envelope sender (no SRS).
    async fn expand(&self, targets: Vec<String>, original: &str) -> Result<Vec<Rcpt>, ()> {
        use std::collections::{HashSet, VecDeque};
        let dir = self.shared.backend.directory.clone();
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(original.to_ascii_lowercase());
        let mut queue: VecDeque<(String, u32)> = targets.into_iter().map(|t| (t, 1)).collect();
        let mut out = Vec::new();
        let orcpt = Some(format!("rfc822;{original}"));
        while let Some((a, depth)) = queue.pop_front() {
            if out.len() >= 1000 || !seen.insert(a.to_ascii_lowercase()) {
                continue;
            }
            match dir.resolve(&a).await {
                Ok(Resolution::User { user, .. }) => {
                    if user.status != halyard_directory::UserStatus::Active {
                        continue;
                    }
                    if user.delivery_options.iter().any(|o| o == "forward") && depth < 8 {
                        queue.extend(user.forwarding.iter().map(|f| (f.clone(), depth + 1)));
                    }
                    if !user.delivers_to_mailbox() {
                        continue;
                    }
                    let Some(group) = crate::group_of(&self.shared, &user) else {
                        continue;
                    };
                    if !seen.insert(format!("\0{}", user.mail)) {
                        continue;
                    }
                    out.push(Rcpt {
                        spec: RecipientSpec {
                            address: user.mail.clone(),
                            orcpt: orcpt.clone(),
                            notify: vec![],
                            channel: "store".into(),
                        },
                        group,
                    });
                }
                Ok(Resolution::Forward { to, .. }) | Ok(Resolution::List { members: to, .. }) => {
                    if depth < 8 {
                        queue.extend(to.into_iter().map(|t| (t, depth + 1)));
                    }
                }
                Ok(Resolution::Unknown) => {
                    let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                    match dir.domain(domain).await {
                        // An address of a hosted domain that does not exist: skipped.
                        Ok(Some(_)) => {
                            tracing::info!(member = %a, list = %original, "expansion skips an unknown local address")
                        }
                        Ok(None) => {
                            if let Some(group) = crate::relay_group(&self.shared) {
                                out.push(Rcpt {
                                    spec: RecipientSpec {
                                        address: a.clone(),
                                        orcpt: orcpt.clone(),
                                        notify: vec![],
                                        channel: "smtp".into(),
                                    },
                                    group,
                                });
                            }
                        }
                        Err(_) => return Err(()),
                    }
                }
                Err(_) => return Err(()),
            }
        }
        Ok(out)
    }

    /// A recipient in another domain going out through `channel`: a configured channel
    /// routing its domain (accepted from anyone), or `smtp`, the MX relay (for clients
    /// allowed to relay).
    async fn channel_rcpt(
        &mut self,
        to: &smtp_proto::RcptTo<String>,
        channel: &str,
    ) -> std::io::Result<()> {
        let Some(group) = crate::relay_group(&self.shared) else {
            return self
                .refuse(451, "4.3.0 no resource group configured for outgoing mail")
                .await;
        };
        self.tx.rcpts.push(Rcpt {
            spec: RecipientSpec {
                address: to.address.clone(),
                orcpt: to.orcpt.clone(),
                notify: notify_of(to.flags),
                channel: channel.into(),
            },
            group,
        });
        self.tx.accepted.push(to.address.clone());
        self.reply(250, &format!("2.1.5 recipient OK ({channel})"));
        Ok(())
    }
}

/// RFC 3461 NOTIFY values from smtp-proto's flags.
fn notify_of(flags: u64) -> Vec<String> {
    [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
        (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, n)| n.to_string())
    .collect()
}
