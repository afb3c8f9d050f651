//! Access control lists on mailboxes (RFC 4314) and the rules the state machine enforces
//! for a user acting on another user's mailbox.
//!
//! - Rights are the RFC 4314 letters `l r s w i p k x t e a`; the obsolete `c` and `d` are
//!   accepted on input (`c` = `k`, `d` = `x t e`, the `RIGHTS=texk` reading) and reported on
//!   output whenever one of their members is present, as §2.1.1 asks.
//! - Identifiers are a user's primary address (the key of their mailboxes), `anyone`, or
//!   either with a leading `-` for negative rights. Effective rights of user U on a mailbox
//!   are (rights[U] ∪ rights[anyone]) − (rights[-U] ∪ rights[-anyone]).
//! - The owner always has every right on their own mailboxes; the owner's entry cannot be
//!   changed (so nobody can lock themselves out of their own mail).
//! - Authorisation is part of apply ([`crate::model::Command::As`]): a command acting on
//!   someone else's mailbox is checked against the ACL as it stands when the entry is
//!   applied, so a right revoked a moment earlier can never be used, whatever a session
//!   checked before proposing.

use std::collections::BTreeMap;
use std::fmt;

/// The identifier that stands for every authenticated user.
pub const ANYONE: &str = "anyone";

/// Every right letter this server knows, in the order they are reported.
pub const LETTERS: &str = "lrswipkxtea";

/// A set of RFC 4314 rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u16);

impl Rights {
    pub const NONE: Rights = Rights(0);
    pub const ALL: Rights = Rights((1 << LETTERS.len()) - 1);

    fn bit(c: char) -> Option<u16> {
        LETTERS.find(c).map(|i| 1 << i)
    }

    /// The right named by one letter (`c` and `d` expand to their members).
    pub fn letter(c: char) -> Option<Rights> {
        match c {
            'c' => Some(Rights::of("k")),
            'd' => Some(Rights::of("xte")),
            c => Self::bit(c).map(Rights),
        }
    }

    /// Rights from letters known to be valid (for constants and tests).
    pub fn of(letters: &str) -> Rights {
        Rights::parse(letters).expect("valid rights letters")
    }

    /// Parses a rights string; unknown letters are an error (RFC 4314 §3.1: BAD).
    pub fn parse(s: &str) -> Result<Rights, String> {
        let mut r = Rights::NONE;
        for c in s.chars() {
            match Rights::letter(c) {
                Some(x) => r = r.union(x),
                None => return Err(format!("unknown right {c:?} (rights are {LETTERS})")),
            }
        }
        Ok(r)
    }

    pub fn has(self, letter: char) -> bool {
        Self::bit(letter).is_some_and(|b| self.0 & b != 0)
    }

    /// True when every right in `other` is in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub fn minus(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The stored form: the letters present, in [`LETTERS`] order, without `c`/`d`.
    pub fn letters(self) -> String {
        LETTERS.chars().filter(|c| self.has(*c)).collect()
    }
}

/// The wire form: [`Rights::letters`] plus `c` when `k` is present and `d` when any of
/// `x t e` is (RFC 4314 §2.1.1).
impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.letters();
        if self.has('k') {
            s.push('c');
        }
        if self.has('x') || self.has('t') || self.has('e') {
            s.push('d');
        }
        f.write_str(&s)
    }
}

/// A SETACL rights argument: replace, add (`+`) or remove (`-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Replace(Rights),
    Add(Rights),
    Remove(Rights),
}

impl Change {
    pub fn parse(s: &str) -> Result<Change, String> {
        if let Some(r) = s.strip_prefix('+') {
            Ok(Change::Add(Rights::parse(r)?))
        } else if let Some(r) = s.strip_prefix('-') {
            Ok(Change::Remove(Rights::parse(r)?))
        } else {
            Ok(Change::Replace(Rights::parse(s)?))
        }
    }

    pub fn apply(self, current: Rights) -> Rights {
        match self {
            Change::Replace(r) => r,
            Change::Add(r) => current.union(r),
            Change::Remove(r) => current.minus(r),
        }
    }
}

/// The rights an ACL entry grants, read leniently (a stored entry was validated on write).
fn entry(acl: &BTreeMap<String, String>, id: &str) -> Rights {
    acl.get(id)
        .map(|s| Rights::parse(s).unwrap_or_default())
        .unwrap_or_default()
}

/// What `actor` may do on a mailbox owned by `owner` with this ACL.
pub fn effective(owner: &str, actor: &str, acl: &BTreeMap<String, String>) -> Rights {
    if owner == actor {
        return Rights::ALL;
    }
    let granted = entry(acl, actor).union(entry(acl, ANYONE));
    let denied = entry(acl, &format!("-{actor}")).union(entry(acl, &format!("-{ANYONE}")));
    granted.minus(denied)
}

/// The user an identifier names (without a leading `-`), and whether it is negative.
pub fn split_identifier(id: &str) -> (&str, bool) {
    match id.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (id, false),
    }
}

/// The flags a user with `rights` may set or clear: `\Seen` needs `s`, `\Deleted` needs `t`,
/// every other flag `w` (RFC 4314 §4).
pub fn flag_allowed(rights: Rights, flag: &str) -> bool {
    if flag.eq_ignore_ascii_case("\\Seen") {
        rights.has('s')
    } else if flag.eq_ignore_ascii_case("\\Deleted") {
        rights.has('t')
    } else {
        rights.has('w')
    }
}

/// Removes the flags `rights` does not allow to be set.
pub fn filter_flags(rights: Rights, flags: &[String]) -> Vec<String> {
    flags
        .iter()
        .filter(|f| flag_allowed(rights, f))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn obsolete_letters_expand_and_are_reported() {
        assert_eq!(Rights::of("c"), Rights::of("k"));
        assert_eq!(Rights::of("d"), Rights::of("xte"));
        assert_eq!(Rights::of("lrk").to_string(), "lrkc");
        assert_eq!(Rights::of("lrt").to_string(), "lrtd");
        assert_eq!(Rights::ALL.to_string(), "lrswipkxteacd");
        assert!(Rights::parse("lrz").is_err());
        assert!(Rights::parse("").unwrap().is_empty());
    }

    #[test]
    fn negative_rights_win() {
        let mut acl = BTreeMap::new();
        acl.insert("anyone".to_string(), "lr".to_string());
        acl.insert("bob@x".to_string(), "lrsi".to_string());
        acl.insert("-bob@x".to_string(), "r".to_string());
        assert_eq!(effective("alice@x", "bob@x", &acl), Rights::of("lsi"));
        assert_eq!(effective("alice@x", "carol@x", &acl), Rights::of("lr"));
        assert_eq!(effective("alice@x", "alice@x", &acl), Rights::ALL);
        acl.insert("-anyone".to_string(), "l".to_string());
        assert_eq!(effective("alice@x", "carol@x", &acl), Rights::of("r"));
    }

    #[test]
    fn flags_need_their_right() {
        let r = Rights::of("ls");
        let f = vec!["\\Seen".to_string(), "\\Deleted".into(), "$Label".into()];
        assert_eq!(filter_flags(r, &f), vec!["\\Seen".to_string()]);
        assert_eq!(filter_flags(Rights::of("tw"), &f).len(), 2);
    }

    proptest! {
        #[test]
        fn letters_round_trip(bits in 0u16..(1 << 11)) {
            let r = Rights(bits);
            prop_assert_eq!(Rights::parse(&r.letters()).unwrap(), r);
            // The wire form adds c/d, which read back as all their members (§2.1.1).
            prop_assert!(Rights::parse(&r.to_string()).unwrap().contains(r));
        }

        #[test]
        fn changes_behave_like_sets(a in 0u16..(1 << 11), b in 0u16..(1 << 11)) {
            let (a, b) = (Rights(a), Rights(b));
            let add = Change::parse(&format!("+{}", b.letters())).unwrap().apply(a);
            let rem = Change::parse(&format!("-{}", b.letters())).unwrap().apply(a);
            let rep = Change::parse(&b.letters()).unwrap().apply(a);
            prop_assert!(add.contains(a) && add.contains(b));
            prop_assert!(a.contains(rem) && rem.minus(b) == rem);
            prop_assert_eq!(rep, b);
        }

        #[test]
        fn parse_never_panics(s in ".{0,20}") {
            let _ = Change::parse(&s);
        }
    }
}
