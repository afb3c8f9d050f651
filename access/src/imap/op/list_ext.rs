//! The command forms `listext.rs` frames:
//!
//! - the extended LIST of RFC 5258 (LIST-EXTENDED): selection options SUBSCRIBED, REMOTE,
//!   RECURSIVEMATCH and RFC 6154's SPECIAL-USE, several patterns, return options SUBSCRIBED,
//!   CHILDREN, SPECIAL-USE and RFC 5819's STATUS (LIST-STATUS). Names that are no mailbox
//!   are `\NonExistent` (the levels above mailboxes, and subscriptions to shared mailboxes
//!   that are gone); RECURSIVEMATCH adds `("CHILDINFO" ("SUBSCRIBED"))` to a listed name with
//!   a subscribed name below it;
//! - STATUS with RFC 7889's APPENDLIMIT item (the limit the capability announces);
//! - CREATE with RFC 6154's `USE (<attribute>)` (CREATE-SPECIAL-USE).
//!
//! The answers are written here ([`list_line`], [`status_line`]): imap-codec cannot write
//! CHILDINFO or APPENDLIMIT.

use std::collections::BTreeMap;
use std::io;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, CodeOther};

use super::mailbox::{ListEntry, add_levels_above};
use crate::imap::listext::{ExtCommand, Returns, Selection, StatusItem};
use crate::imap::names::{echo, text_of, wire_astring};
use crate::imap::objectid;
use crate::imap::session::{DELIMITER, Session, display_name, split_target};
use crate::store::StoreFail;

/// One line of an extended LIST answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub name: String,
    /// A mailbox by this name exists (then LIST-STATUS reports on it).
    pub exists: bool,
    /// Attributes, each with its backslash.
    pub attrs: Vec<String>,
    /// `("CHILDINFO" ("SUBSCRIBED"))`: a subscribed name is below this one (RECURSIVEMATCH).
    pub childinfo: bool,
}

/// What an extended LIST asks for, with the patterns already joined to the reference and
/// decoded from the session's convention (modified UTF-7, or UTF-8 after ENABLE
/// UTF8=ACCEPT).
pub(super) struct Criteria {
    pub patterns: Vec<String>,
    pub selection: Selection,
    /// Show `\Subscribed` (the SUBSCRIBED return option, or selection option).
    pub show_subscribed: bool,
}

/// Whether the canonical pattern matches `name`; INBOX matches case-insensitively.
fn matches(pattern: &str, name: &str) -> bool {
    if name == "INBOX" && super::mailbox::list_match(&pattern.to_uppercase(), "INBOX") {
        return true;
    }
    super::mailbox::list_match(pattern, name)
}

/// The names an extended LIST answers with, in `entries`' (sorted) order, each once.
///
/// Without selection options every name the patterns match is listed, as in a plain LIST
/// (the levels above mailboxes as `\NonExistent`). SUBSCRIBED keeps the subscribed names,
/// SPECIAL-USE those with a special use (both: both). RECURSIVEMATCH also lists a matched
/// name that fails the selection but has a name below it that passes — whether or not that
/// one matches the pattern — and marks every listed name with such a descendant with
/// CHILDINFO (RFC 5258 §3.1). `\HasChildren` counts mailboxes that exist.
pub(super) fn select(entries: &[ListEntry], c: &Criteria) -> Vec<Listed> {
    let sel = &c.selection;
    let passes = |e: &ListEntry| {
        (!sel.subscribed || e.subscribed) && (!sel.special_use || e.special_use.is_some())
    };
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !c.patterns.iter().any(|p| matches(p, &e.name)) {
            continue;
        }
        // Entries are sorted: the names below `e` are one run after those that sort
        // between `e` and `e/` (such as `e x`).
        let prefix = format!("{}{DELIMITER}", e.name);
        let rest = &entries[i + 1..];
        let from = rest.partition_point(|x| x.name < prefix);
        let below = rest[from..]
            .iter()
            .take_while(|x| x.name.starts_with(&prefix));
        let childinfo = sel.recursive_match && below.clone().any(passes);
        if !passes(e) && !childinfo {
            continue;
        }
        let mut attrs = Vec::new();
        if !e.selectable {
            attrs.push("\\NonExistent".to_string());
        }
        if c.show_subscribed && e.subscribed {
            attrs.push("\\Subscribed".to_string());
        }
        let children = below.clone().any(|x| x.selectable);
        attrs.push(
            if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }
            .to_string(),
        );
        attrs.extend(e.special_use.clone());
        out.push(Listed {
            name: e.name.clone(),
            exists: e.selectable,
            attrs,
            childinfo,
        });
    }
    out
}

/// `* LIST (<attributes>) "/" <name>[ ("CHILDINFO" ("SUBSCRIBED"))]`, the name in modified
/// UTF-7, or in UTF-8 (`utf8`) after ENABLE UTF8=ACCEPT.
pub(super) fn list_line(l: &Listed, utf8: bool) -> Vec<u8> {
    let mut out = format!("* LIST ({}) \"{DELIMITER}\" ", l.attrs.join(" ")).into_bytes();
    out.extend(wire_astring(&l.name, utf8));
    if l.childinfo {
        out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `* STATUS <mailbox> (<item> <value> ...)`, the mailbox already written as an astring;
/// `group` names the group, of which MAILBOXID is derived.
pub(super) fn status_line(mailbox: &[u8], values: &[(StatusItem, u64)], group: &str) -> Vec<u8> {
    let mut out = b"* STATUS ".to_vec();
    out.extend_from_slice(mailbox);
    let items: Vec<String> = values
        .iter()
        .map(|(i, v)| match i {
            StatusItem::MailboxId => format!("MAILBOXID ({})", objectid::mailbox_id(group, *v)),
            _ => format!("{} {v}", i.name()),
        })
        .collect();
    out.extend(format!(" ({})\r\n", items.join(" ")).into_bytes());
    out
}

/// RFC 6154 `USEATTR`: the special use asked for cannot be given.
fn useattr() -> Code<'static> {
    Code::Other(CodeOther::unvalidated(b"USEATTR".as_slice()))
}

/// The one special use a CREATE may ask for, in its stored spelling: `Ok(None)` for an
/// empty `USE ()`, `Err(why)` for what this server cannot give (answered `NO [USEATTR]`).
/// `\All` and `\Flagged` name virtual mailboxes (every message, the flagged ones) that this
/// server does not keep; a mailbox here has one special use at most.
pub(super) fn special_use_of(asked: &[String]) -> Result<Option<String>, String> {
    const KEPT: [&str; 5] = ["\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"];
    let mut uses: Vec<String> = Vec::new();
    for a in asked {
        if !uses.iter().any(|u| u.eq_ignore_ascii_case(a)) {
            uses.push(a.clone());
        }
    }
    let [one] = &uses[..] else {
        return match uses.len() {
            0 => Ok(None),
            _ => Err("a mailbox here has one special use at most".into()),
        };
    };
    if let Some(kept) = KEPT.iter().find(|k| k.eq_ignore_ascii_case(one)) {
        return Ok(Some(kept.to_string()));
    }
    if one.eq_ignore_ascii_case("\\All") || one.eq_ignore_ascii_case("\\Flagged") {
        return Err(format!(
            "{one} would be a virtual mailbox, which this server does not keep"
        ));
    }
    Err(format!("{one} is not a special use this server knows"))
}

impl Session {
    /// Handles one command `listext.rs` framed; false when the session is over.
    pub(crate) async fn ext_command(
        &mut self,
        tag: Tag<'static>,
        cmd: ExtCommand,
    ) -> io::Result<bool> {
        if self.account.is_none() {
            self.bad(&tag, "log in first (LOGIN or AUTHENTICATE)")
                .await?;
            return Ok(true);
        }
        match cmd {
            ExtCommand::List {
                reference,
                patterns,
                selection,
                returns,
            } => {
                self.list_extended(&tag, &reference, &patterns, selection, returns)
                    .await?
            }
            ExtCommand::Status { mailbox, items } => {
                self.status_with_limit(&tag, mailbox, &items).await?
            }
            ExtCommand::Create {
                mailbox,
                special_use,
            } => self.create_special_use(&tag, mailbox, special_use).await?,
        }
        Ok(true)
    }

    /// The names an extended LIST chooses from: every name a plain LIST shows (with the
    /// subscription state of each), and, for the SUBSCRIBED selection option, the
    /// subscriptions to shared mailboxes that are gone or no longer visible (with the levels
    /// above them, for RECURSIVEMATCH). A user's own subscriptions go with their mailboxes.
    fn list_candidates(
        &self,
        subscriptions: bool,
    ) -> Result<Vec<ListEntry>, halyard_raft_store::StoreError> {
        let entries = self.visible_mailboxes(true)?;
        if !subscriptions {
            return Ok(entries);
        }
        let mut all: BTreeMap<String, ListEntry> =
            entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        let me = self.acct().user.clone();
        for (owner, name) in self.acct().reader().shared_subscriptions(&me)? {
            let shown = display_name(&me, &owner, &name);
            add_levels_above(&mut all, &shown);
            all.entry(shown.clone())
                .and_modify(|e| e.subscribed = true)
                .or_insert(ListEntry {
                    name: shown,
                    selectable: false,
                    subscribed: true,
                    special_use: None,
                });
        }
        Ok(all.into_values().collect())
    }

    /// An extended LIST (RFC 5258), with RFC 5819's STATUS return option.
    async fn list_extended(
        &mut self,
        tag: &Tag<'_>,
        reference: &[u8],
        patterns: &[Vec<u8>],
        selection: Selection,
        returns: Returns,
    ) -> io::Result<()> {
        if selection == Selection::default() && patterns.iter().all(|p| p.is_empty()) {
            // The hierarchy delimiter and root (RFC 3501 §6.3.8), as a plain LIST answers.
            let root = format!("* LIST (\\Noselect) \"{DELIMITER}\" \"\"\r\n");
            self.send(root.as_bytes()).await?;
            return self.ok(tag, None, "LIST completed").await;
        }
        let utf8 = self.utf8;
        let convention = if utf8 { "UTF-8" } else { "modified UTF-7" };
        let Ok(reference) = text_of(reference, utf8) else {
            let text = format!("reference is not {convention}");
            return self.bad(tag, &text).await;
        };
        let Ok(patterns) = patterns
            .iter()
            .map(|p| text_of(p, utf8).map(|p| format!("{reference}{p}")))
            .collect::<Result<Vec<_>, _>>()
        else {
            let text = format!("pattern is not {convention}");
            return self.bad(tag, &text).await;
        };
        let entries = match self.list_candidates(selection.subscribed) {
            Ok(e) => e,
            Err(e) => return self.fail(tag, StoreFail::Unavailable(e.to_string())).await,
        };
        let criteria = Criteria {
            patterns,
            selection,
            show_subscribed: returns.subscribed,
        };
        let mut out = Vec::new();
        for l in select(&entries, &criteria) {
            out.extend(list_line(&l, utf8));
            if l.exists && !returns.status.is_empty() {
                match self.list_status(&l.name, &returns.status) {
                    Ok(line) => out.extend(line.unwrap_or_default()),
                    Err(e) => return self.fail(tag, StoreFail::Unavailable(e.to_string())).await,
                }
            }
        }
        self.send(&out).await?;
        self.ok(tag, None, "LIST completed").await
    }

    /// RFC 5819: the STATUS line for a listed mailbox, or `None` when the user may not read
    /// it (`r`: what STATUS needs) or it went away meanwhile.
    fn list_status(
        &self,
        shown: &str,
        items: &[StatusItem],
    ) -> Result<Option<Vec<u8>>, halyard_raft_store::StoreError> {
        let Ok(t) = split_target(&self.acct().user, shown.to_string()) else {
            return Ok(None);
        };
        let Some(mb) = self.acct().reader().mailbox(&t.owner, &t.name)? else {
            return Ok(None);
        };
        if !self.rights_on(&t.owner, &mb).is_some_and(|r| r.has('r')) {
            return Ok(None);
        }
        let values = self.status_values(&t.owner, &mb, items)?;
        let name = wire_astring(shown, self.utf8);
        Ok(Some(status_line(&name, &values, self.acct().group.name())))
    }

    /// STATUS with APPENDLIMIT (RFC 7889), which imap-codec does not parse; the other items
    /// as in a plain STATUS.
    async fn status_with_limit(
        &mut self,
        tag: &Tag<'_>,
        raw: Vec<u8>,
        items: &[StatusItem],
    ) -> io::Result<()> {
        let Ok(mailbox) = Mailbox::try_from(raw) else {
            return self.bad(tag, "invalid mailbox name").await;
        };
        let Some(target) = self.target(tag, &mailbox).await? else {
            return Ok(());
        };
        let Some(mb) = self.status_mailbox(tag, &target).await? else {
            return Ok(());
        };
        let values = match self.status_values(&target.owner, &mb, items) {
            Ok(v) => v,
            Err(e) => return self.fail(tag, StoreFail::Unavailable(e.to_string())).await,
        };
        // The mailbox as the client named it (INBOX in its canonical spelling).
        let wire = match &mailbox {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => echo(o.as_ref(), self.utf8),
        };
        let line = status_line(&wire, &values, self.acct().group.name());
        self.send(&line).await?;
        self.ok(tag, None, "STATUS completed").await
    }

    /// CREATE with parameters: RFC 6154's `USE`.
    async fn create_special_use(
        &mut self,
        tag: &Tag<'_>,
        raw: Vec<u8>,
        asked: Option<Vec<String>>,
    ) -> io::Result<()> {
        let Ok(mailbox) = Mailbox::try_from(raw) else {
            return self.bad(tag, "invalid mailbox name").await;
        };
        let special_use = match asked.as_deref().map(special_use_of) {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(why)) => return self.no(tag, Some(useattr()), &why).await,
        };
        self.create_with_use(tag, &mailbox, special_use).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, selectable: bool, subscribed: bool, su: Option<&str>) -> ListEntry {
        ListEntry {
            name: name.into(),
            selectable,
            subscribed,
            special_use: su.map(str::to_string),
        }
    }

    /// RFC 5258's example tree (§5): Fruit, Fruit/Apple, Fruit/Banana (subscribed),
    /// Fruit/Peach subscribed but gone, Tofu, Vegetable and Vegetable/Broccoli (subscribed),
    /// Vegetable/Corn; plus `Fruit x`, which sorts between Fruit and Fruit/.
    fn tree() -> Vec<ListEntry> {
        vec![
            entry("Fruit", true, false, None),
            entry("Fruit x", true, false, None),
            entry("Fruit/Apple", true, false, None),
            entry("Fruit/Banana", true, true, None),
            entry("Fruit/Peach", false, true, None),
            entry("Tofu", true, false, Some("\\Archive")),
            entry("Vegetable", true, true, None),
            entry("Vegetable/Broccoli", true, true, Some("\\Sent")),
            entry("Vegetable/Corn", true, false, None),
        ]
    }

    fn lines(pattern: &[&str], selection: Selection, show_subscribed: bool) -> Vec<String> {
        lines_of(&tree(), pattern, selection, show_subscribed)
    }

    fn lines_of(
        entries: &[ListEntry],
        pattern: &[&str],
        selection: Selection,
        show_subscribed: bool,
    ) -> Vec<String> {
        let c = Criteria {
            patterns: pattern.iter().map(|p| p.to_string()).collect(),
            selection,
            show_subscribed,
        };
        select(entries, &c)
            .iter()
            .map(|l| String::from_utf8(list_line(l, false)).unwrap())
            .collect()
    }

    fn subscribed(recursive_match: bool) -> Selection {
        Selection {
            subscribed: true,
            recursive_match,
            special_use: false,
        }
    }

    #[test]
    fn subscribed_selection_lists_subscriptions_with_accurate_attributes() {
        assert_eq!(
            lines(&["*"], subscribed(false), true),
            [
                "* LIST (\\Subscribed \\HasNoChildren) \"/\" Fruit/Banana\r\n",
                "* LIST (\\NonExistent \\Subscribed \\HasNoChildren) \"/\" Fruit/Peach\r\n",
                "* LIST (\\Subscribed \\HasChildren) \"/\" Vegetable\r\n",
                "* LIST (\\Subscribed \\HasNoChildren \\Sent) \"/\" Vegetable/Broccoli\r\n",
            ]
        );
    }

    #[test]
    fn recursivematch_reports_subscribed_descendants() {
        assert_eq!(
            lines(&["%"], subscribed(true), true),
            [
                "* LIST (\\HasChildren) \"/\" Fruit (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
                "* LIST (\\Subscribed \\HasChildren) \"/\" Vegetable (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
            ]
        );
        // The descendant need not match the pattern; a parent that fails the pattern is
        // not listed.
        assert_eq!(
            lines(&["Fruit"], subscribed(true), true),
            ["* LIST (\\HasChildren) \"/\" Fruit (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"]
        );
        assert!(lines(&["Fruit x", "Tofu"], subscribed(true), true).is_empty());
    }

    #[test]
    fn no_selection_lists_every_match_once() {
        // As a plain LIST sees it: no subscription to a mailbox that is gone, and a level
        // above mailboxes (`Fruit/Deep`) that is no mailbox itself.
        let mut entries: Vec<ListEntry> = tree()
            .into_iter()
            .filter(|e| e.name != "Fruit/Peach")
            .collect();
        entries.insert(4, entry("Fruit/Deep", false, false, None));
        entries.insert(5, entry("Fruit/Deep/Er", true, false, None));
        assert_eq!(
            lines_of(
                &entries,
                &["Fruit*", "*Apple", "Tofu"],
                Selection::default(),
                true
            ),
            [
                "* LIST (\\HasChildren) \"/\" Fruit\r\n",
                "* LIST (\\HasNoChildren) \"/\" \"Fruit x\"\r\n",
                "* LIST (\\HasNoChildren) \"/\" Fruit/Apple\r\n",
                "* LIST (\\Subscribed \\HasNoChildren) \"/\" Fruit/Banana\r\n",
                "* LIST (\\NonExistent \\HasChildren) \"/\" Fruit/Deep\r\n",
                "* LIST (\\HasNoChildren) \"/\" Fruit/Deep/Er\r\n",
                "* LIST (\\HasNoChildren \\Archive) \"/\" Tofu\r\n",
            ]
        );
    }

    #[test]
    fn special_use_selection() {
        let s = Selection {
            special_use: true,
            ..Selection::default()
        };
        assert_eq!(
            lines(&["*"], s, false),
            [
                "* LIST (\\HasNoChildren \\Archive) \"/\" Tofu\r\n",
                "* LIST (\\HasNoChildren \\Sent) \"/\" Vegetable/Broccoli\r\n",
            ]
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(
                b"INBOX",
                &[
                    (StatusItem::Messages, 3),
                    (StatusItem::Size, 1234),
                    (StatusItem::AppendLimit, 9)
                ],
                "g1"
            ),
            b"* STATUS INBOX (MESSAGES 3 SIZE 1234 APPENDLIMIT 9)\r\n"
        );
        assert_eq!(wire_astring("Entwürfe", false), b"Entw&APw-rfe");
        assert_eq!(wire_astring("a b", false), b"\"a b\"");
        assert_eq!(wire_astring("Entwürfe", true), "\"Entwürfe\"".as_bytes());
    }

    #[test]
    fn create_special_uses() {
        let s = |v: &[&str]| special_use_of(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["\\sent"]), Ok(Some("\\Sent".into())));
        assert_eq!(s(&["\\Trash", "\\TRASH"]), Ok(Some("\\Trash".into())));
        assert_eq!(s(&[]), Ok(None));
        assert!(s(&["\\Sent", "\\Drafts"]).is_err());
        assert!(s(&["\\All"]).is_err());
        assert!(s(&["\\Flagged"]).is_err());
        assert!(s(&["\\Important"]).is_err());
    }
}
