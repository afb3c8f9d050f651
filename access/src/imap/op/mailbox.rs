//! Mailbox commands: NAMESPACE, CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB
//! (the user's own mailboxes and those shared with them under `Other Users/`, with CHILDREN
//! and SPECIAL-USE attributes) and STATUS (with RFC 8438's SIZE). The extended forms of
//! LIST, STATUS and CREATE are in `list_ext.rs`, on the pieces here.

use std::io;

use halyard_raft_store::{Command as StoreCommand, MailboxRecord, Reply};
use imap_codec::imap_types::core::{Atom, IString, QuotedChar, Tag};
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use crate::imap::listext::StatusItem;
use crate::imap::names::{text_of, wire_mailbox};
use crate::imap::session::{
    DELIMITER, OTHER_USERS, Session, Target, append_limit_value, display_name, noperm,
    now_uidvalidity, nz,
};
use crate::imap::{encode, objectid};
use crate::store::StoreFail;

/// One name LIST/LSUB may show.
pub(super) struct ListEntry {
    pub(super) name: String,
    /// A mailbox by this name exists (every mailbox here is selectable); false for the
    /// levels above mailboxes, and for subscriptions to mailboxes that are gone.
    pub(super) selectable: bool,
    pub(super) subscribed: bool,
    pub(super) special_use: Option<String>,
}

impl Session {
    /// NAMESPACE (RFC 2342): the personal namespace and `Other Users/`; nothing shared.
    pub(crate) async fn namespace(&mut self, tag: &Tag<'_>) -> io::Result<()> {
        let ns = |prefix: String| {
            Namespace::new(
                IString::try_from(prefix).unwrap(),
                Some(QuotedChar::try_from(DELIMITER).unwrap()),
            )
        };
        self.send_data(Data::Namespace {
            personal: vec![ns(String::new())],
            other: vec![ns(format!("{OTHER_USERS}{DELIMITER}"))],
            shared: vec![],
        })
        .await?;
        self.ok(tag, None, "NAMESPACE completed").await
    }

    pub(crate) async fn create(&mut self, tag: &Tag<'_>, mailbox: &Mailbox<'_>) -> io::Result<()> {
        self.create_with_use(tag, mailbox, None).await
    }

    /// CREATE, with the special use RFC 6154's `USE` parameter asked for (`Some(None)`: none
    /// at all); without it (`None`), well-known names get theirs (see `special_use_for`).
    pub(super) async fn create_with_use(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        special_use: Option<Option<String>>,
    ) -> io::Result<()> {
        let Some(n) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        if n.owner == self.acct().user && n.name == OTHER_USERS {
            return self
                .no(tag, None, "that name is the other users' namespace")
                .await;
        }
        let special = special_use.unwrap_or_else(|| special_use_for(&n.name));
        let r = self
            .propose_on(
                &n.owner,
                StoreCommand::CreateMailbox {
                    user: n.owner.clone(),
                    name: n.name.clone(),
                    uidvalidity: now_uidvalidity(),
                    partition: halyard_raft_store::PRIMARY_PARTITION.into(),
                    special_use: special,
                },
            )
            .await;
        let Ok(Reply::Created { uidvalidity }) = r else {
            return self.done(tag, r, "CREATE completed").await;
        };
        self.sync(true).await?;
        // RFC 8474 §4.1: the new mailbox's MAILBOXID in the tagged OK. The record is read
        // back (applied here before the reply came); the UIDVALIDITY check makes sure it is
        // the mailbox this CREATE made.
        let code = match self.acct().reader().mailbox(&n.owner, &n.name) {
            Ok(Some(mb)) if mb.uidvalidity == uidvalidity => {
                Some(objectid::mailbox_code(self.acct().group.name(), mb.id))
            }
            _ => None,
        };
        self.ok(tag, code, "CREATE completed").await
    }

    pub(crate) async fn delete(&mut self, tag: &Tag<'_>, mailbox: &Mailbox<'_>) -> io::Result<()> {
        let Some(n) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        if n.name == "INBOX" {
            return self.no(tag, None, "INBOX cannot be deleted").await;
        }
        let r = self
            .propose_on(
                &n.owner,
                StoreCommand::DeleteMailbox {
                    user: n.owner.clone(),
                    name: n.name,
                },
            )
            .await;
        self.done(tag, r, "DELETE completed").await
    }

    pub(crate) async fn rename(
        &mut self,
        tag: &Tag<'_>,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
    ) -> io::Result<()> {
        let Some(f) = self.target(tag, from).await? else {
            return Ok(());
        };
        let Some(t) = self.target(tag, to).await? else {
            return Ok(());
        };
        if f.owner != t.owner {
            return self
                .no(tag, None, "RENAME cannot move a mailbox to another user")
                .await;
        }
        let r = self
            .propose_on(
                &f.owner,
                StoreCommand::RenameMailbox {
                    user: f.owner.clone(),
                    from: f.name,
                    to: t.name,
                },
            )
            .await;
        self.done(tag, r, "RENAME completed").await
    }

    /// SUBSCRIBE (`subscribing`) and UNSUBSCRIBE.
    pub(crate) async fn subscribe(
        &mut self,
        tag: &Tag<'_>,
        mailbox: &Mailbox<'_>,
        subscribing: bool,
    ) -> io::Result<()> {
        let Some(n) = self.target(tag, mailbox).await? else {
            return Ok(());
        };
        let r = self
            .propose_on(
                &n.owner,
                StoreCommand::Subscribe {
                    user: n.owner.clone(),
                    name: n.name,
                    subscribed: subscribing,
                },
            )
            .await;
        let text = if subscribing {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        };
        self.done(tag, r, text).await
    }

    /// LIST, and LSUB (`lsub`).
    pub(crate) async fn list(
        &mut self,
        tag: &Tag<'_>,
        reference: Mailbox<'_>,
        pattern: ListMailbox<'_>,
        lsub: bool,
    ) -> io::Result<()> {
        let reference = match &reference {
            Mailbox::Inbox => b"INBOX".as_slice(),
            Mailbox::Other(o) => o.as_ref(),
        };
        let pattern = match &pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let delim = QuotedChar::try_from(DELIMITER).ok();
        if pattern.is_empty() && !lsub {
            // The hierarchy delimiter and root (RFC 3501 §6.3.8).
            self.send_data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter: delim,
                mailbox: Mailbox::try_from("").unwrap_or(Mailbox::Inbox),
            })
            .await?;
            return self.ok(tag, None, "LIST completed").await;
        }
        let full = match (text_of(reference, self.utf8), text_of(pattern, self.utf8)) {
            (Ok(r), Ok(p)) => format!("{r}{p}"),
            _ if self.utf8 => return self.bad(tag, "pattern is not UTF-8").await,
            _ => return self.bad(tag, "pattern is not modified UTF-7").await,
        };
        let entries = match self.visible_mailboxes(lsub) {
            Ok(e) => e,
            Err(e) => return self.fail(tag, StoreFail::Unavailable(e.to_string())).await,
        };
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let shown = if e.name == "INBOX" && list_match(&full.to_uppercase(), "INBOX") {
                true
            } else {
                list_match(&full, &e.name)
            };
            if !shown {
                continue;
            }
            // LSUB shows subscribed names; a name that is not subscribed but has subscribed
            // names below it, none of which the pattern matches (`%` stops at the level), is
            // shown as `\Noselect` (RFC 3501 §6.3.9: LSUB "" % with only foo/bar subscribed
            // returns foo).
            let mut lsub_placeholder = false;
            if lsub && !e.subscribed {
                let prefix = format!("{}{DELIMITER}", e.name);
                // Entries are sorted by name, so the names below follow right after.
                let below: Vec<&ListEntry> = entries[i + 1..]
                    .iter()
                    .take_while(|c| c.name.starts_with(&prefix) || c.name < prefix)
                    .filter(|c| c.subscribed && c.name.starts_with(&prefix))
                    .collect();
                if below.is_empty() || below.iter().any(|c| list_match(&full, &c.name)) {
                    continue;
                }
                lsub_placeholder = true;
            }
            // Entries are sorted by name, so inferiors follow right after.
            let prefix = format!("{}{DELIMITER}", e.name);
            let children = entries[i + 1..]
                .iter()
                .take_while(|c| c.name.starts_with(&prefix) || c.name < prefix)
                .any(|c| c.name.starts_with(&prefix));
            let items = attributes(e.selectable && !lsub_placeholder, children, e);
            let d = if lsub {
                Data::Lsub {
                    items,
                    delimiter: delim,
                    mailbox: wire_mailbox(&e.name, self.utf8),
                }
            } else {
                Data::List {
                    items,
                    delimiter: delim,
                    mailbox: wire_mailbox(&e.name, self.utf8),
                }
            };
            out.extend(encode(&Response::Data(d)));
        }
        self.send(&out).await?;
        self.ok(
            tag,
            None,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
        )
        .await
    }

    /// The `* LIST` line of `owner`'s mailbox `name` as LIST shows it: IMAP4rev2's SELECT
    /// sends it (RFC 9051 §6.3.2).
    pub(crate) fn list_line(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Vec<u8>, halyard_raft_store::StoreError> {
        let shown = display_name(&self.acct().user, owner, name);
        let entries = self.visible_mailboxes(false)?;
        let prefix = format!("{shown}{DELIMITER}");
        let children = entries.iter().any(|e| e.name.starts_with(&prefix));
        let items = match entries.iter().find(|e| e.name == shown) {
            Some(e) => attributes(e.selectable, children, e),
            None => Vec::new(),
        };
        Ok(encode(&Response::Data(Data::List {
            items,
            delimiter: QuotedChar::try_from(DELIMITER).ok(),
            mailbox: wire_mailbox(&shown, self.utf8),
        })))
    }

    /// Every name LIST can show this user, sorted: their own mailboxes, the mailboxes other
    /// users shared with them (`l` right) under `Other Users/<owner>/`, and the levels above
    /// those as `\Noselect` so that `%` browsing reaches them.
    pub(super) fn visible_mailboxes(
        &self,
        lsub: bool,
    ) -> Result<Vec<ListEntry>, halyard_raft_store::StoreError> {
        let me = self.acct().user.clone();
        let reader = self.acct().reader();
        let mut entries: std::collections::BTreeMap<String, ListEntry> = reader
            .mailboxes(&me)?
            .into_iter()
            .map(|b| {
                (
                    b.name.clone(),
                    ListEntry {
                        name: b.name,
                        selectable: true,
                        subscribed: b.subscribed,
                        special_use: b.special_use,
                    },
                )
            })
            .collect();
        // Levels above a mailbox that are not mailboxes themselves (`a/b` of `a/b/c`): LIST
        // shows them as `\Noselect` so that `%` browsing reaches the mailboxes below
        // (RFC 3501 §6.3.8).
        let own: Vec<String> = entries.keys().cloned().collect();
        for name in own {
            add_levels_above(&mut entries, &name);
        }
        let subs: std::collections::HashSet<(String, String)> = if lsub {
            reader.shared_subscriptions(&me)?.into_iter().collect()
        } else {
            Default::default()
        };
        for (owner, mb, _) in reader.shared_with(&me)? {
            let subscribed = subs.contains(&(owner.clone(), mb.name.clone()));
            let name = display_name(&me, &owner, &mb.name);
            // Levels above: "Other Users", "Other Users/<owner>", unshared parents.
            add_levels_above(&mut entries, &name);
            entries.insert(
                name.clone(),
                ListEntry {
                    name,
                    selectable: true,
                    subscribed,
                    special_use: mb.special_use,
                },
            );
        }
        Ok(entries.into_values().collect())
    }

    /// STATUS RECENT: the messages no session has claimed as recent yet, and those recent
    /// in this session if it has the mailbox selected.
    fn recent_in(
        &self,
        owner: &str,
        mb: &halyard_raft_store::MailboxRecord,
        msgs: &[halyard_raft_store::MessageRecord],
    ) -> u32 {
        let acct = self.acct();
        if acct.group.command_level() < 2 {
            return 0;
        }
        let mark = acct.reader().recent_mark(mb.id).unwrap_or(u32::MAX);
        let mine = self
            .sel
            .as_ref()
            .filter(|s| s.owner == owner && s.name == mb.name && s.recent.claims)
            .map(|s| &s.recent);
        msgs.iter()
            .filter(|m| m.uid >= mark || mine.is_some_and(|r| r.contains(m.uid)))
            .count() as u32
    }

    /// STATUS as imap-codec parses it (every item but RFC 7889's APPENDLIMIT, which
    /// `list_ext.rs` answers).
    pub(crate) async fn status_cmd(
        &mut self,
        tag: &Tag<'_>,
        wire: &Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> io::Result<()> {
        let Some(target) = self.target(tag, wire).await? else {
            return Ok(());
        };
        let Some(mb) = self.status_mailbox(tag, &target).await? else {
            return Ok(());
        };
        let wanted: Vec<StatusItem> = items.iter().filter_map(item_of).collect();
        let values = match self.status_values(&target.owner, &mb, &wanted) {
            Ok(v) => v,
            Err(e) => return self.fail(tag, StoreFail::Unavailable(e.to_string())).await,
        };
        self.send_data(Data::Status {
            mailbox: wire.clone(),
            items: values
                .into_iter()
                .filter_map(data_item)
                .collect::<Vec<_>>()
                .into(),
        })
        .await?;
        self.ok(tag, None, "STATUS completed").await
    }

    /// The mailbox STATUS reports on, once it is known to exist for this user and the user
    /// may read it (`r`); `None` when the answer (NO) has been sent.
    pub(super) async fn status_mailbox(
        &mut self,
        tag: &Tag<'_>,
        target: &Target,
    ) -> io::Result<Option<MailboxRecord>> {
        let name = &target.name;
        let mb = match self.acct().reader().mailbox(&target.owner, name) {
            Ok(Some(mb)) => mb,
            Ok(None) => {
                self.no(tag, None, &format!("no mailbox {name}")).await?;
                return Ok(None);
            }
            Err(e) => {
                self.fail(tag, StoreFail::Unavailable(e.to_string()))
                    .await?;
                return Ok(None);
            }
        };
        match self.rights_on(&target.owner, &mb) {
            None => self.no(tag, None, &format!("no mailbox {name}")).await?,
            Some(r) if !r.has('r') => {
                self.no(tag, Some(noperm()), "STATUS needs the \"r\" right")
                    .await?
            }
            Some(_) => return Ok(Some(mb)),
        }
        Ok(None)
    }

    /// The values of `items` for `owner`'s mailbox `mb`, in their order. The messages are
    /// read only for the items that count them (RECENT, UNSEEN); SIZE (RFC 8438) is the
    /// mailbox's kept total of message sizes.
    pub(super) fn status_values(
        &self,
        owner: &str,
        mb: &MailboxRecord,
        items: &[StatusItem],
    ) -> Result<Vec<(StatusItem, u64)>, halyard_raft_store::StoreError> {
        let msgs = if items.iter().any(|i| {
            matches!(
                i,
                StatusItem::Recent
                    | StatusItem::Unseen
                    | StatusItem::Deleted
                    | StatusItem::DeletedStorage
            )
        }) {
            self.acct()
                .reader()
                .messages(owner, &mb.name)?
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let deleted = msgs
            .iter()
            .filter(|m| m.flags.iter().any(|f| f == "\\Deleted"));
        Ok(items
            .iter()
            .map(|i| {
                let v = match i {
                    StatusItem::Messages => u64::from(mb.exists),
                    StatusItem::Recent => u64::from(self.recent_in(owner, mb, &msgs)),
                    StatusItem::UidNext => u64::from(nz(mb.uidnext).get()),
                    StatusItem::UidValidity => u64::from(nz(mb.uidvalidity).get()),
                    StatusItem::Unseen => msgs
                        .iter()
                        .filter(|m| !m.flags.iter().any(|f| f == "\\Seen"))
                        .count() as u64,
                    StatusItem::HighestModSeq => mb.highestmodseq,
                    StatusItem::Size => mb.bytes,
                    StatusItem::AppendLimit => append_limit_value(&self.shared),
                    StatusItem::Deleted => deleted.clone().count() as u64,
                    StatusItem::DeletedStorage => deleted.clone().map(|m| m.size).sum(),
                    StatusItem::MailboxId => mb.id,
                };
                (*i, v)
            })
            .collect())
    }
}

/// The item a STATUS imap-codec parsed asks for; `None` for those this server does not
/// report (IMAP4rev2's DELETED and DELETED-STORAGE).
fn item_of(name: &StatusDataItemName) -> Option<StatusItem> {
    Some(match name {
        StatusDataItemName::Messages => StatusItem::Messages,
        StatusDataItemName::Recent => StatusItem::Recent,
        StatusDataItemName::UidNext => StatusItem::UidNext,
        StatusDataItemName::UidValidity => StatusItem::UidValidity,
        StatusDataItemName::Unseen => StatusItem::Unseen,
        StatusDataItemName::HighestModSeq => StatusItem::HighestModSeq,
        StatusDataItemName::Size => StatusItem::Size,
        StatusDataItemName::Deleted => StatusItem::Deleted,
        StatusDataItemName::DeletedStorage => StatusItem::DeletedStorage,
    })
}

/// A value as imap-types writes it (APPENDLIMIT has no imap-types item).
fn data_item((item, v): (StatusItem, u64)) -> Option<StatusDataItem> {
    let n32 = || u32::try_from(v).unwrap_or(u32::MAX);
    Some(match item {
        StatusItem::Messages => StatusDataItem::Messages(n32()),
        StatusItem::Recent => StatusDataItem::Recent(n32()),
        StatusItem::UidNext => StatusDataItem::UidNext(nz(n32())),
        StatusItem::UidValidity => StatusDataItem::UidValidity(nz(n32())),
        StatusItem::Unseen => StatusDataItem::Unseen(n32()),
        StatusItem::HighestModSeq => StatusDataItem::HighestModSeq(v),
        StatusItem::Size => StatusDataItem::Size(v),
        StatusItem::Deleted => StatusDataItem::Deleted(n32()),
        StatusItem::DeletedStorage => StatusDataItem::DeletedStorage(v),
        StatusItem::AppendLimit | StatusItem::MailboxId => return None,
    })
}

/// Adds every level above `name` (`a` and `a/b` of `a/b/c`) that is not an entry yet, as a
/// non-selectable one.
pub(super) fn add_levels_above(
    entries: &mut std::collections::BTreeMap<String, ListEntry>,
    name: &str,
) {
    let mut cut = name.len();
    while let Some(i) = name[..cut].rfind(DELIMITER) {
        cut = i;
        entries
            .entry(name[..cut].to_string())
            .or_insert_with(|| ListEntry {
                name: name[..cut].to_string(),
                selectable: false,
                subscribed: false,
                special_use: None,
            });
    }
}

/// Wildcard match of LIST patterns: `*` matches anything, `%` anything but the delimiter.
pub(crate) fn list_match(pattern: &str, name: &str) -> bool {
    // Dynamic programming over (pattern position, name position), so a pattern of many
    // wildcards costs O(pattern × name), never the exponential time of backtracking (a
    // hostile `LIST "" "*a*a*a*a*a*a*b"` would otherwise hold a core).
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // next[j]: pattern from i + 1 matches name from j; row i is built from it backwards.
    let mut next = vec![false; n.len() + 1];
    next[n.len()] = true;
    for i in (0..p.len()).rev() {
        let mut cur = vec![false; n.len() + 1];
        for j in (0..=n.len()).rev() {
            cur[j] = match p[i] {
                '*' => next[j] || (j < n.len() && cur[j + 1]),
                '%' => next[j] || (j < n.len() && n[j] != DELIMITER && cur[j + 1]),
                c => j < n.len() && n[j] == c && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

/// RFC 6154 attribute for well-known names, so clients find Sent, Drafts, Trash...
fn special_use_for(name: &str) -> Option<String> {
    let last = name.rsplit(DELIMITER).next().unwrap_or(name).to_lowercase();
    Some(
        match last.as_str() {
            "sent" | "sent items" | "sent messages" => "\\Sent",
            "drafts" => "\\Drafts",
            "trash" | "deleted items" | "deleted messages" => "\\Trash",
            "junk" | "spam" => "\\Junk",
            "archive" => "\\Archive",
            _ => return None,
        }
        .to_string(),
    )
}

/// The attributes LIST shows for an entry: `\Noselect` unless it is `selectable`,
/// `\HasChildren` or `\HasNoChildren`, its special use.
fn attributes(selectable: bool, children: bool, e: &ListEntry) -> Vec<FlagNameAttribute<'static>> {
    let attr = |s: &str| FlagNameAttribute::from(Atom::try_from(s.to_string()).unwrap());
    let mut items = Vec::new();
    if !selectable {
        items.push(FlagNameAttribute::Noselect);
    }
    items.push(attr(if children {
        "HasChildren"
    } else {
        "HasNoChildren"
    }));
    if let Some(su) = &e.special_use {
        items.push(attr(su.trim_start_matches('\\')));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::list_match;

    #[test]
    fn wildcards_match_as_rfc_3501_says() {
        // `*` crosses levels, `%` stops at the delimiter.
        assert!(list_match("foo/%", "foo/bar"));
        assert!(!list_match("foo/%", "foo/bar/baz"));
        assert!(list_match("foo/%/%", "foo/bar/baz"));
        assert!(list_match("foo/*", "foo/bar/baz"));
        assert!(list_match("foo/*test4", "foo/a/b/test4"));
        assert!(list_match("foo/*test*", "foo/x/test/y"));
        assert!(!list_match("foo/*test*", "foo/x/tes"));
        assert!(list_match("%", "INBOX"));
        assert!(!list_match("%", "a/b"));
        assert!(list_match("*", ""));
        assert!(list_match("%", ""));
        assert!(!list_match("", "a"));
        assert!(list_match("a%b", "axxb"));
        assert!(!list_match("a%b", "ax/xb"));
    }

    #[test]
    fn many_wildcards_cost_no_more_than_the_table() {
        // Backtracking takes exponential time on this; the table is 42 × 2001 cells.
        let pattern = "*a".repeat(20) + "b";
        let name = "a".repeat(2000);
        assert!(!list_match(&pattern, &name));
        assert!(list_match(&pattern, &(name.clone() + "b")));
    }
}
