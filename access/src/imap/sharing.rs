//! RFC 4314 ACL commands: SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS.
//!
//! Identifiers are resolved through the directory to the user's primary address (the key
//! of their mailboxes), so `bob`, `Bob@Example.org` and an alias all name the same entry;
//! `anyone` stands for every authenticated user, and a leading `-` makes rights negative.
//! Sharing works within one resource group: a user whose mailboxes live in another group
//! is refused with a clear NO (their sessions are served by another master, so they could
//! never open the mailbox here).

use std::io;

use halyard_directory::DirectoryError;
use halyard_raft_store::Command as StoreCommand;
use halyard_raft_store::acl::{ANYONE, Change, LETTERS, Rights, split_identifier};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox;

use super::acl::{AclCommand, astring};
use super::session::{Session, Target, mailbox_name, noperm, split_target};
use crate::store::StoreFail;

impl Session {
    /// Handles one ACL command (the session is authenticated); false when it is over.
    pub(crate) async fn acl_command(
        &mut self,
        tag: Tag<'static>,
        cmd: AclCommand,
    ) -> io::Result<bool> {
        if self.account.is_none() {
            self.bad(&tag, "log in first (LOGIN or AUTHENTICATE)")
                .await?;
            return Ok(true);
        }
        let raw_mailbox = match &cmd {
            AclCommand::SetAcl { mailbox, .. }
            | AclCommand::DeleteAcl { mailbox, .. }
            | AclCommand::GetAcl { mailbox }
            | AclCommand::ListRights { mailbox, .. }
            | AclCommand::MyRights { mailbox } => mailbox.clone(),
        };
        let me = self.acct().user.clone();
        let target = Mailbox::try_from(raw_mailbox.clone())
            .map_err(|_| "invalid mailbox name".to_string())
            .and_then(|m| mailbox_name(&m, self.utf8))
            .and_then(|n| split_target(&me, n));
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                self.bad(&tag, &e).await?;
                return Ok(true);
            }
        };
        // The mailbox as the client named it, for the untagged response.
        let wire = super::names::echo(&raw_mailbox, self.utf8);
        let mb = match self.acct().reader().mailbox(&target.owner, &target.name) {
            Ok(Some(mb)) => mb,
            Ok(None) => {
                self.no(&tag, None, &format!("no mailbox {}", target.name))
                    .await?;
                return Ok(true);
            }
            Err(e) => {
                self.fail(&tag, StoreFail::Unavailable(e.to_string()))
                    .await?;
                return Ok(true);
            }
        };
        let Some(rights) = self.rights_on(&target.owner, &mb) else {
            // Without "l" the mailbox does not exist for this user.
            let mine = halyard_raft_store::acl::effective(&target.owner, &me, &mb.acl);
            if !["i", "k", "x", "a"]
                .iter()
                .any(|l| mine.contains(Rights::of(l)))
            {
                self.no(&tag, None, &format!("no mailbox {}", target.name))
                    .await?;
                return Ok(true);
            }
            return self.acl_with_rights(tag, cmd, target, wire, mb, mine).await;
        };
        self.acl_with_rights(tag, cmd, target, wire, mb, rights)
            .await
    }

    async fn acl_with_rights(
        &mut self,
        tag: Tag<'static>,
        cmd: AclCommand,
        target: Target,
        wire: Vec<u8>,
        mb: halyard_raft_store::MailboxRecord,
        rights: Rights,
    ) -> io::Result<bool> {
        let admin = rights.has('a');
        match cmd {
            AclCommand::MyRights { .. } => {
                let mut out = b"* MYRIGHTS ".to_vec();
                out.extend(wire);
                out.push(b' ');
                out.extend(astring(rights.to_string().as_bytes()));
                out.extend_from_slice(b"\r\n");
                self.send(&out).await?;
                self.ok(&tag, None, "MYRIGHTS completed").await?;
            }
            AclCommand::GetAcl { .. } if !admin => {
                self.no(&tag, Some(noperm()), "GETACL needs the \"a\" right")
                    .await?;
            }
            AclCommand::GetAcl { .. } => {
                let mut out = b"* ACL ".to_vec();
                out.extend(wire);
                // The owner's implicit rights first, then the stored entries.
                let owner_entry = (target.owner.clone(), Rights::ALL);
                let entries = std::iter::once(owner_entry).chain(
                    mb.acl
                        .iter()
                        .map(|(id, r)| (id.clone(), Rights::parse(r).unwrap_or_default())),
                );
                for (id, r) in entries {
                    out.push(b' ');
                    out.extend(astring(id.as_bytes()));
                    out.push(b' ');
                    out.extend(astring(r.to_string().as_bytes()));
                }
                out.extend_from_slice(b"\r\n");
                self.send(&out).await?;
                self.ok(&tag, None, "GETACL completed").await?;
            }
            AclCommand::ListRights { identifier, .. } => {
                if !admin {
                    self.no(&tag, Some(noperm()), "LISTRIGHTS needs the \"a\" right")
                        .await?;
                    return Ok(true);
                }
                let id = match self.identifier(&identifier).await {
                    Ok(id) => id,
                    Err(e) => {
                        self.no(&tag, None, &e).await?;
                        return Ok(true);
                    }
                };
                let mut out = b"* LISTRIGHTS ".to_vec();
                out.extend(wire);
                out.push(b' ');
                out.extend(astring(identifier.as_bytes()));
                if split_identifier(&id).0 == target.owner {
                    // The owner's rights are fixed: all required, nothing optional.
                    out.push(b' ');
                    out.extend(astring(Rights::ALL.to_string().as_bytes()));
                } else {
                    out.extend_from_slice(b" \"\"");
                    for l in LETTERS.chars() {
                        out.push(b' ');
                        out.push(l as u8);
                    }
                }
                out.extend_from_slice(b"\r\n");
                self.send(&out).await?;
                self.ok(&tag, None, "LISTRIGHTS completed").await?;
            }
            AclCommand::SetAcl {
                identifier, rights, ..
            } => {
                if let Err(e) = Change::parse(&rights) {
                    self.bad(&tag, &e).await?;
                    return Ok(true);
                }
                self.change_acl(&tag, target, &identifier, Some(rights), "SETACL")
                    .await?;
            }
            AclCommand::DeleteAcl { identifier, .. } => {
                self.change_acl(&tag, target, &identifier, None, "DELETEACL")
                    .await?;
            }
        }
        Ok(true)
    }

    async fn change_acl(
        &mut self,
        tag: &Tag<'_>,
        target: Target,
        identifier: &str,
        rights: Option<String>,
        what: &str,
    ) -> io::Result<()> {
        let id = match self.identifier(identifier).await {
            Ok(id) => id,
            Err(e) => return self.no(tag, None, &e).await,
        };
        let cmd = StoreCommand::SetAcl {
            user: target.owner.clone(),
            mailbox: target.name,
            identifier: id,
            rights,
        };
        match self.propose_on(&target.owner, cmd).await {
            Ok(_) => self.ok(tag, None, &format!("{what} completed")).await,
            Err(f) => self.fail(tag, f).await,
        }
    }

    /// An ACL identifier as stored: `anyone`, or a user's primary address (either with a
    /// leading `-`). Users must be known to the directory and live in this session's group.
    async fn identifier(&self, raw: &str) -> Result<String, String> {
        let (who, negative) = split_identifier(raw);
        let sign = if negative { "-" } else { "" };
        if who.eq_ignore_ascii_case(ANYONE) {
            return Ok(format!("{sign}{ANYONE}"));
        }
        if who.is_empty() {
            return Err("empty identifier".into());
        }
        let record = match self.shared.backend.directory.user(who).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(format!("no such user: {who}")),
            Err(DirectoryError::Unavailable(e)) => {
                return Err(format!("directory unavailable: {e}"));
            }
        };
        let mine = self.acct().group.name().to_string();
        if let Some(theirs) = crate::store::group_of(&self.shared, &record)
            && theirs != mine
        {
            return Err(format!(
                "{}'s mailboxes are in resource group {theirs}, this mailbox in {mine}: \
                 mailboxes are shared within one resource group",
                record.mail
            ));
        }
        Ok(format!("{sign}{}", record.mail))
    }
}
