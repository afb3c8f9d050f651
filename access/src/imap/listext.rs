//! Framing of the command forms imap-codec 2.0.0-alpha.10 does not parse, with the lexer of
//! [`super::acl`] (same literal rules: sizes checked before anything is allocated,
//! synchronising literals answered with a continuation request, `LITERAL+`):
//!
//! - the extended LIST of RFC 5258: a parenthesised selection-option list before the
//!   reference, a parenthesised list of patterns, or a `RETURN (...)` clause (with RFC 5819's
//!   `STATUS (...)` and RFC 6154's `SPECIAL-USE` options);
//! - STATUS asking for RFC 7889's `APPENDLIMIT` item;
//! - CREATE with a parameter list (RFC 4466), whose one known parameter is RFC 6154's
//!   `USE (<special-use attributes>)`.
//!
//! A plain `LIST reference pattern`, a STATUS without APPENDLIMIT and a plain `CREATE name`
//! are left to imap-codec ([`Peek::Other`]), and so is any of these commands this module
//! cannot read before it knows the command is one of its forms: imap-codec answers those as
//! it always did. The arguments are read as a small tree (atoms, strings, parenthesised
//! lists), then checked against the grammar of the form; the meaning is the session's.

use super::acl::{Head, Lexer, Peek, head, is_atom_char};

/// A STATUS data item this server reports (RFC 3501, RFC 7162 HIGHESTMODSEQ, RFC 8438
/// SIZE, RFC 7889 APPENDLIMIT, IMAP4rev2's DELETED, RFC 9208's DELETED-STORAGE, RFC 8474's
/// MAILBOXID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    HighestModSeq,
    Size,
    AppendLimit,
    Deleted,
    DeletedStorage,
    /// Its value is the mailbox's internal id, shown as the MAILBOXID derived from it.
    MailboxId,
}

impl StatusItem {
    pub const ALL: [StatusItem; 11] = [
        StatusItem::Messages,
        StatusItem::Recent,
        StatusItem::UidNext,
        StatusItem::UidValidity,
        StatusItem::Unseen,
        StatusItem::HighestModSeq,
        StatusItem::Size,
        StatusItem::AppendLimit,
        StatusItem::Deleted,
        StatusItem::DeletedStorage,
        StatusItem::MailboxId,
    ];

    /// The item's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::Size => "SIZE",
            StatusItem::AppendLimit => "APPENDLIMIT",
            StatusItem::Deleted => "DELETED",
            StatusItem::DeletedStorage => "DELETED-STORAGE",
            StatusItem::MailboxId => "MAILBOXID",
        }
    }

    /// The item an atom names (any case).
    pub fn parse(atom: &[u8]) -> Option<StatusItem> {
        StatusItem::ALL
            .into_iter()
            .find(|i| i.name().as_bytes().eq_ignore_ascii_case(atom))
    }
}

/// RFC 5258 selection options (and RFC 6154's SPECIAL-USE). `REMOTE` is accepted and has
/// no effect: this server has no remote mailboxes (RFC 2193).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub subscribed: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// RFC 5258 return options (RFC 5819's STATUS). `CHILDREN` and RFC 6154's `SPECIAL-USE`
/// are accepted and need no flag: this server always returns `\HasChildren` /
/// `\HasNoChildren` and the special-use attributes, as in a plain LIST (RFC 5258 §4 lets a
/// server give the child information unasked; clients ignore attributes they do not know).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Returns {
    /// Asked for, or implied by the SUBSCRIBED selection option.
    pub subscribed: bool,
    /// RFC 5819: a STATUS response after each selectable mailbox's LIST response.
    pub status: Vec<StatusItem>,
}

/// One command in one of the forms this module frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtCommand {
    /// An extended LIST: mailbox names as the client sent them (modified UTF-7).
    List {
        reference: Vec<u8>,
        patterns: Vec<Vec<u8>>,
        selection: Selection,
        returns: Returns,
    },
    /// A STATUS whose items include APPENDLIMIT.
    Status {
        mailbox: Vec<u8>,
        items: Vec<StatusItem>,
    },
    /// A CREATE with parameters; `special_use` is the `USE` list as written (each
    /// attribute a backslash and an atom), `None` without a `USE` parameter.
    Create {
        mailbox: Vec<u8>,
        special_use: Option<Vec<String>>,
    },
}

const NAMES: [&str; 3] = ["LIST", "STATUS", "CREATE"];
/// How deep parenthesised lists may nest (`RETURN (STATUS (MESSAGES))` needs 2).
const MAX_DEPTH: usize = 3;
/// How many entries one parenthesised list may hold.
const MAX_ITEMS: usize = 100;

/// One argument: a bare token (atom, pattern, `\Flag`), a string (quoted or literal), or a
/// parenthesised list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Atom(Vec<u8>),
    Str(Vec<u8>),
    List(Vec<Item>),
}

fn is_token_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){\"".contains(&b)
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

/// Reads the item that starts at `lx.pos`.
fn item<C>(lx: &mut Lexer<'_>, depth: usize) -> Result<Item, Peek<C>> {
    match lx.buf.get(lx.pos) {
        None => Err(Peek::NeedMore),
        Some(b'"') => lx.quoted().map(Item::Str),
        Some(b'{') => lx.literal().map(Item::Str),
        Some(b'(') => {
            if depth >= MAX_DEPTH {
                return Err(lx.bad("parenthesised lists nested too deep"));
            }
            lx.pos += 1;
            let mut items = Vec::new();
            if lx.buf.get(lx.pos) == Some(&b')') {
                lx.pos += 1;
                return Ok(Item::List(items));
            }
            loop {
                if items.len() == MAX_ITEMS {
                    return Err(lx.bad("too many entries in a parenthesised list"));
                }
                items.push(item(lx, depth + 1)?);
                match lx.buf.get(lx.pos) {
                    None => return Err(Peek::NeedMore),
                    Some(b')') => {
                        lx.pos += 1;
                        return Ok(Item::List(items));
                    }
                    Some(b' ') => lx.pos += 1,
                    Some(_) => return Err(lx.bad("expected a space or `)` in a list")),
                }
            }
        }
        Some(_) => {
            let v = lx.run(is_token_char)?;
            if v.is_empty() {
                return Err(lx.bad("expected an argument"));
            }
            Ok(Item::Atom(v))
        }
    }
}

/// Why reading the arguments stopped: the lexer's answer, which argument it was reading (its
/// index), and whether a parenthesised list was seen (before, or opening that argument).
struct Stopped<C> {
    peek: Peek<C>,
    index: usize,
    saw_list: bool,
}

/// Reads `*(SP item) CRLF`: the items and the offset after the CRLF.
fn arguments<C>(lx: &mut Lexer<'_>) -> Result<(Vec<Item>, usize), Stopped<C>> {
    let mut items: Vec<Item> = Vec::new();
    let stop = |peek, lx: &Lexer<'_>, items: &[Item]| Stopped {
        peek,
        index: items.len(),
        saw_list: lx.buf.get(lx.pos) == Some(&b'(')
            || items.iter().any(|i| matches!(i, Item::List(_))),
    };
    loop {
        match lx.eol() {
            Ok(Some(end)) => return Ok((items, end)),
            Ok(None) => {}
            Err(p) => return Err(stop(p, lx, &items)),
        }
        if lx.buf.get(lx.pos) != Some(&b' ') {
            let p = lx.bad("expected a space between arguments");
            return Err(stop(p, lx, &items));
        }
        lx.pos += 1;
        if items.len() == MAX_ITEMS {
            let p = lx.bad("too many arguments");
            return Err(stop(p, lx, &items));
        }
        let start = lx.pos;
        match item(lx, 0) {
            Ok(i) => items.push(i),
            Err(p) => {
                lx.pos = start;
                return Err(stop(p, lx, &items));
            }
        }
    }
}

/// Looks at the start of `buf` for a command in one of this module's forms. `literal_end`
/// is where the literal the client was invited to send ends (0: none).
pub fn peek(buf: &[u8], literal_end: usize, max_literal: u64) -> Peek<ExtCommand> {
    let (which, tag, pos) = match head(buf, &NAMES) {
        Head::Other => return Peek::Other,
        Head::NeedMore => return Peek::NeedMore,
        Head::Found { which, tag, pos } => (which, tag, pos),
    };
    let mut lx = Lexer {
        buf,
        pos,
        tag,
        literal_end,
        max_literal,
    };
    let (items, end) = match arguments(&mut lx) {
        Ok(r) => r,
        Err(Stopped {
            peek: Peek::Bad(tag, why, used),
            index,
            saw_list,
        }) => {
            // Malformed: this module's only once it knows the command is in one of its
            // forms (a parenthesised list where the plain form has none, or more arguments
            // than the plain form has); otherwise imap-codec judges it, as it always did.
            let ours = match which {
                0 => saw_list || index >= 3,
                1 => false,
                _ => saw_list || index >= 2,
            };
            return if ours {
                Peek::Bad(tag, why, used)
            } else {
                Peek::Other
            };
        }
        Err(Stopped { peek, .. }) => return peek,
    };
    let form = match which {
        0 => list(items),
        1 => Ok(status(items)),
        _ => create(items),
    };
    match form {
        Ok(None) => Peek::Other,
        Ok(Some(cmd)) => Peek::Command(lx.tag, cmd, end),
        Err(why) => Peek::Bad(lx.tag, why, end),
    }
}

fn astring_arg(i: &Item) -> Option<Vec<u8>> {
    match i {
        Item::Atom(a) if a.iter().all(|b| is_astring_char(*b)) => Some(a.clone()),
        Item::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn list_mailbox_arg(i: &Item) -> Option<Vec<u8>> {
    match i {
        Item::Atom(a) if a.iter().all(|b| is_list_char(*b)) => Some(a.clone()),
        Item::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn atom_text(i: &Item) -> Option<String> {
    match i {
        Item::Atom(a) => Some(String::from_utf8_lossy(a).to_ascii_uppercase()),
        _ => None,
    }
}

/// `LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]`; `None` for
/// the plain form.
fn list(mut items: Vec<Item>) -> Result<Option<ExtCommand>, String> {
    let select = match items.first() {
        Some(Item::List(_)) => Some(items.remove(0)),
        _ => None,
    };
    let has_pattern_list = matches!(items.get(1), Some(Item::List(_)));
    if select.is_none() && items.len() == 2 && !has_pattern_list {
        return Ok(None);
    }
    let syntax = || "LIST takes [(selection options)] reference pattern(s) [RETURN (options)]";
    if items.len() != 2 && items.len() != 4 {
        return Err(syntax().into());
    }
    let reference = astring_arg(&items[0]).ok_or_else(syntax)?;
    let patterns = match &items[1] {
        Item::List(l) if !l.is_empty() => l
            .iter()
            .map(list_mailbox_arg)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(syntax)?,
        Item::List(_) => return Err("the pattern list is empty".into()),
        other => vec![list_mailbox_arg(other).ok_or_else(syntax)?],
    };
    let mut selection = Selection::default();
    if let Some(Item::List(opts)) = &select {
        for o in opts {
            match atom_text(o).as_deref() {
                Some("SUBSCRIBED") => selection.subscribed = true,
                Some("REMOTE") => {}
                Some("RECURSIVEMATCH") => selection.recursive_match = true,
                Some("SPECIAL-USE") => selection.special_use = true,
                _ => return Err(format!("unknown selection option {}", shown(o))),
            }
        }
    }
    if selection.recursive_match && !selection.subscribed {
        // RFC 5258 §3.1: never alone or with REMOTE only (RFC 6154's SPECIAL-USE is an
        // independent option too).
        return Err("RECURSIVEMATCH needs the SUBSCRIBED selection option".into());
    }
    let mut returns = Returns {
        subscribed: selection.subscribed,
        ..Returns::default()
    };
    if items.len() == 4 {
        let (Some("RETURN"), Item::List(opts)) = (atom_text(&items[2]).as_deref(), &items[3])
        else {
            return Err(syntax().into());
        };
        return_options(opts, &mut returns)?;
    }
    Ok(Some(ExtCommand::List {
        reference,
        patterns,
        selection,
        returns,
    }))
}

fn return_options(opts: &[Item], returns: &mut Returns) -> Result<(), String> {
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match atom_text(o).as_deref() {
            Some("SUBSCRIBED") => returns.subscribed = true,
            Some("CHILDREN" | "SPECIAL-USE") => {}
            Some("STATUS") => {
                let Some(Item::List(names)) = it.next() else {
                    return Err("the STATUS return option takes a list of items".into());
                };
                if names.is_empty() || !returns.status.is_empty() {
                    return Err("the STATUS return option takes one non-empty list".into());
                }
                returns.status = status_items(names)?;
            }
            _ => return Err(format!("unknown return option {}", shown(o))),
        }
    }
    Ok(())
}

fn status_items(names: &[Item]) -> Result<Vec<StatusItem>, String> {
    let mut out = Vec::new();
    for n in names {
        let item = match n {
            Item::Atom(a) => StatusItem::parse(a),
            _ => None,
        };
        match item {
            Some(i) if !out.contains(&i) => out.push(i),
            Some(_) => {}
            None => return Err(format!("unknown STATUS item {}", shown(n))),
        }
    }
    Ok(out)
}

/// `STATUS mailbox (items)` when the items include APPENDLIMIT or MAILBOXID; `None`
/// otherwise (for imap-codec, which also judges every malformed STATUS).
fn status(items: Vec<Item>) -> Option<ExtCommand> {
    let [mailbox, Item::List(names)] = &items[..] else {
        return None;
    };
    let ours = names.iter().any(|n| {
        matches!(n, Item::Atom(a)
            if a.eq_ignore_ascii_case(b"APPENDLIMIT") || a.eq_ignore_ascii_case(b"MAILBOXID"))
    });
    if !ours {
        return None;
    }
    Some(ExtCommand::Status {
        mailbox: astring_arg(mailbox)?,
        items: status_items(names).ok()?,
    })
}

/// `CREATE mailbox [SP "(" create-param *(SP create-param) ")"]`; `None` for the plain form.
fn create(items: Vec<Item>) -> Result<Option<ExtCommand>, String> {
    let syntax = || "CREATE takes a mailbox and an optional parameter list";
    let [mailbox, params] = &items[..] else {
        return if items.len() == 1 {
            Ok(None)
        } else {
            Err(syntax().into())
        };
    };
    let mailbox = astring_arg(mailbox).ok_or_else(syntax)?;
    let Item::List(params) = params else {
        return Err(syntax().into());
    };
    let mut special_use = None;
    let mut it = params.iter();
    while let Some(p) = it.next() {
        match atom_text(p).as_deref() {
            Some("USE") if special_use.is_none() => {
                let Some(Item::List(attrs)) = it.next() else {
                    return Err("USE takes a list of special-use attributes".into());
                };
                let mut uses = Vec::new();
                for a in attrs {
                    match a {
                        Item::Atom(a)
                            if a.len() > 1
                                && a[0] == b'\\'
                                && a[1..].iter().all(|b| is_atom_char(*b)) =>
                        {
                            uses.push(String::from_utf8_lossy(a).into_owned());
                        }
                        other => {
                            return Err(format!("{} is not a special-use attribute", shown(other)));
                        }
                    }
                }
                special_use = Some(uses);
            }
            Some("USE") => return Err("USE given twice".into()),
            _ => return Err(format!("unknown CREATE parameter {}", shown(p))),
        }
    }
    Ok(Some(ExtCommand::Create {
        mailbox,
        special_use,
    }))
}

/// An item as a short text for error messages.
fn shown(i: &Item) -> String {
    match i {
        Item::Atom(a) | Item::Str(a) => {
            let t = String::from_utf8_lossy(a);
            t.chars().take(40).collect()
        }
        Item::List(_) => "(...)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmd(input: &[u8]) -> Peek<ExtCommand> {
        peek(input, 0, 1 << 20)
    }

    fn list_of(input: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>, Selection, Returns) {
        match cmd(input) {
            Peek::Command(
                _,
                ExtCommand::List {
                    reference,
                    patterns,
                    selection,
                    returns,
                },
                used,
            ) => {
                assert_eq!(used, input.len());
                (reference, patterns, selection, returns)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extended_list_forms() {
        let (r, p, s, ret) = list_of(b"a LIST (SUBSCRIBED) \"\" \"*\"\r\n");
        assert_eq!((r, p), (vec![], vec![b"*".to_vec()]));
        assert!(s.subscribed && ret.subscribed && !s.recursive_match);
        let (_, p, s, ret) = list_of(b"a list () \"\" (\"a\" b* %/c {2+}\r\nd%) RETURN ()\r\n");
        assert_eq!(
            p,
            vec![
                b"a".to_vec(),
                b"b*".to_vec(),
                b"%/c".to_vec(),
                b"d%".to_vec()
            ]
        );
        assert_eq!((s, ret), (Selection::default(), Returns::default()));
        let (_, _, s, ret) = list_of(
            b"a LIST (remote subscribed RecursiveMatch SPECIAL-USE) ref % \
              RETURN (CHILDREN STATUS (MESSAGES unseen SIZE) SPECIAL-USE)\r\n",
        );
        assert!(s.subscribed && s.recursive_match && s.special_use);
        assert!(ret.subscribed);
        assert_eq!(
            ret.status,
            vec![StatusItem::Messages, StatusItem::Unseen, StatusItem::Size]
        );
        let (_, _, _, ret) = list_of(b"a LIST \"\" * RETURN (SUBSCRIBED)\r\n");
        assert!(ret.subscribed);
    }

    #[test]
    fn plain_forms_are_imap_codecs() {
        for plain in [
            &b"a LIST \"\" *\r\n"[..],
            b"a LIST \"\" \"%\"\r\n",
            b"a LIST {0}\r\n \"*\"\r\n",
            b"a LSUB () \"\" *\r\n",
            b"a CREATE foo\r\n",
            b"a STATUS INBOX (MESSAGES SIZE)\r\n",
            b"a NOOP\r\n",
            // Malformed before this module knows the form: imap-codec's BAD.
            b"a LIST  \"\" *\r\n",
            b"a STATUS INBOX (APPENDLIMIT\r\n",
        ] {
            assert_eq!(
                cmd(plain),
                Peek::Other,
                "{}",
                String::from_utf8_lossy(plain)
            );
        }
        assert_eq!(cmd(b"a LIST \"\" *"), Peek::NeedMore);
        assert_eq!(cmd(b"a LIST"), Peek::NeedMore);
        assert_eq!(cmd(b"a LIST {3}\r\n"), Peek::Continue(15));
    }

    #[test]
    fn bad_extended_lists() {
        for (input, why) in [
            (&b"a LIST (RECURSIVEMATCH) \"\" *\r\n"[..], "RECURSIVEMATCH"),
            (
                b"a LIST (REMOTE RECURSIVEMATCH) \"\" *\r\n",
                "RECURSIVEMATCH",
            ),
            // RFC 6154 §6: SPECIAL-USE is an independent option, as REMOTE is.
            (
                b"a LIST (SPECIAL-USE RECURSIVEMATCH) \"\" *\r\n",
                "RECURSIVEMATCH",
            ),
            (b"a LIST (FOO) \"\" *\r\n", "unknown selection option FOO"),
            (
                b"a LIST \"\" * RETURN (FOO)\r\n",
                "unknown return option FOO",
            ),
            (b"a LIST \"\" * RETURN (STATUS ())\r\n", "STATUS"),
            (b"a LIST \"\" * RETURN (STATUS (BOGUS))\r\n", "BOGUS"),
            (b"a LIST \"\" () \r\n", "expected"),
            (b"a LIST \"\" ()\r\n", "empty"),
            (b"a LIST \"\" * EXTRA (X)\r\n", "LIST takes"),
            (b"a LIST () \"\"\r\n", "LIST takes"),
            (b"a LIST (((( \"\" *\r\n", "nested"),
        ] {
            match cmd(input) {
                Peek::Bad(tag, w, used) => {
                    assert_eq!(tag, "a");
                    assert!(
                        w.contains(why),
                        "{w} for {}",
                        String::from_utf8_lossy(input)
                    );
                    assert_eq!(used, input.len());
                }
                other => panic!("{other:?} for {}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn status_with_appendlimit() {
        let input = b"s STATUS \"a b\" (MESSAGES appendlimit SIZE)\r\n";
        assert_eq!(
            cmd(input),
            Peek::Command(
                "s".into(),
                ExtCommand::Status {
                    mailbox: b"a b".to_vec(),
                    items: vec![
                        StatusItem::Messages,
                        StatusItem::AppendLimit,
                        StatusItem::Size
                    ]
                },
                input.len()
            )
        );
        // An unknown item next to APPENDLIMIT: imap-codec's BAD.
        assert_eq!(cmd(b"s STATUS a (APPENDLIMIT X)\r\n"), Peek::Other);
    }

    #[test]
    fn create_with_use() {
        let input = b"c CREATE Sent (USE (\\Sent))\r\n";
        assert_eq!(
            cmd(input),
            Peek::Command(
                "c".into(),
                ExtCommand::Create {
                    mailbox: b"Sent".to_vec(),
                    special_use: Some(vec!["\\Sent".into()])
                },
                input.len()
            )
        );
        assert!(matches!(
            cmd(b"c CREATE x (use (\\Sent \\Drafts))\r\n"),
            Peek::Command(_, ExtCommand::Create { special_use: Some(u), .. }, _) if u.len() == 2
        ));
        assert!(matches!(
            cmd(b"c CREATE x (USE ())\r\n"),
            Peek::Command(_, ExtCommand::Create { special_use: Some(u), .. }, _) if u.is_empty()
        ));
        for bad in [
            &b"c CREATE x (USE (Sent))\r\n"[..],
            b"c CREATE x (USE)\r\n",
            b"c CREATE x (FOO)\r\n",
            b"c CREATE x (USE (\\Sent) USE (\\Trash))\r\n",
            b"c CREATE x y\r\n",
            b"c CREATE x (USE (\\Sent)) z\r\n",
        ] {
            assert!(
                matches!(cmd(bad), Peek::Bad(_, _, n) if n == bad.len()),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Feeds `line` as a client would (answering continuation requests); the framed result.
    fn complete(line: &[u8]) -> Peek<ExtCommand> {
        let mut literal_end = 0;
        for _ in 0..100 {
            match peek(line, literal_end, 1000) {
                Peek::Continue(end) => literal_end = end,
                other => return other,
            }
        }
        panic!("no progress")
    }

    fn astring_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z0-9/._-]{1,12}".prop_map(|s| s.into_bytes()),
            "[ -~]{0,12}".prop_map(|s| super::super::acl::astring(s.as_bytes())),
            proptest::collection::vec(1u8..=255, 0..12).prop_map(|v| {
                let mut out = format!("{{{}}}\r\n", v.len()).into_bytes();
                out.extend(v);
                out
            }),
        ]
    }

    fn pattern_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z0-9/%*._-]{1,12}".prop_map(|s| s.into_bytes()),
            astring_strategy(),
        ]
    }

    proptest! {
        /// Any plain LIST (reference and pattern, however written) is imap-codec's.
        #[test]
        fn plain_list_is_left_to_imap_codec(
            reference in astring_strategy(),
            pattern in pattern_strategy(),
            name in prop_oneof![Just("LIST"), Just("list"), Just("List")],
        ) {
            let mut line = format!("t {name} ").into_bytes();
            line.extend(&reference);
            line.push(b' ');
            line.extend(&pattern);
            line.extend_from_slice(b"\r\n");
            prop_assert_eq!(complete(&line), Peek::Other);
        }

        /// Plain CREATE and STATUS without APPENDLIMIT are imap-codec's too.
        #[test]
        fn plain_create_and_status_are_left_to_imap_codec(
            mailbox in astring_strategy(),
            items in proptest::collection::vec(
                prop_oneof![Just("MESSAGES"), Just("UNSEEN"), Just("SIZE"), Just("UIDNEXT")], 1..4),
        ) {
            let mut create = b"t CREATE ".to_vec();
            create.extend(&mailbox);
            create.extend_from_slice(b"\r\n");
            prop_assert_eq!(complete(&create), Peek::Other);
            let mut status = b"t STATUS ".to_vec();
            status.extend(&mailbox);
            status.extend(format!(" ({})\r\n", items.join(" ")).into_bytes());
            prop_assert_eq!(complete(&status), Peek::Other);
        }

        /// An extended LIST built from any reference and patterns reads back the same.
        #[test]
        fn extended_list_round_trip(
            reference in astring_strategy(),
            patterns in proptest::collection::vec(pattern_strategy(), 1..4),
        ) {
            let mut line = b"t LIST (SUBSCRIBED) ".to_vec();
            line.extend(&reference);
            line.extend_from_slice(b" (");
            for (i, p) in patterns.iter().enumerate() {
                if i > 0 {
                    line.push(b' ');
                }
                line.extend(p);
            }
            line.extend_from_slice(b") RETURN (CHILDREN)\r\n");
            match complete(&line) {
                Peek::Command(tag, ExtCommand::List { patterns: got, .. }, used) => {
                    prop_assert_eq!(tag, "t");
                    prop_assert_eq!(used, line.len());
                    prop_assert_eq!(got.len(), patterns.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Whatever arrives, in whatever pieces: no panic, and nothing is used beyond what was
        /// given.
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
            let cut = cut.min(input.len());
            for prefix in [&b"a LIST "[..], b"a CREATE x ", b"a STATUS x ", b""] {
                let whole = [prefix, &input[..]].concat();
                for part in [&whole[..prefix.len() + cut], &whole[..]] {
                    match peek(part, 0, 1000) {
                        Peek::Command(_, _, used) | Peek::Bad(_, _, used) => prop_assert!(used <= part.len()),
                        Peek::Continue(end) => prop_assert!(end > part.len()),
                        _ => {}
                    }
                }
            }
        }
    }
}
