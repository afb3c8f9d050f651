//! RFC 4515 escaping of values placed in LDAP search filters.
//!
//! Every value that comes from outside (an address from RCPT TO, a login name) goes through
//! [`escape`] before it is put in a filter, so `*`, `(`, `)`, `\` and NUL can never change the
//! filter's structure: `a*` matches the literal `a*`, never every entry starting with `a`.

/// Escapes a value for use inside an RFC 4515 filter assertion.
///
/// `*`, `(`, `)`, `\` and NUL are replaced by `\2a`, `\28`, `\29`, `\5c` and `\00`; every other
/// byte is kept (UTF-8 is valid in filter values).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Inverse of [`escape`] for values it produced (used by tests and diagnostics).
pub fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specials_are_escaped() {
        assert_eq!(
            escape("a*)(uid=*)\\\0"),
            "a\\2a\\29\\28uid=\\2a\\29\\5c\\00"
        );
        assert_eq!(escape("jöhn.doe@example.org"), "jöhn.doe@example.org");
    }

    proptest! {
        /// Escaped values never contain a filter metacharacter, and round-trip.
        #[test]
        fn escaping_is_safe_and_reversible(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(!e.contains('*') && !e.contains('(') && !e.contains(')') && !e.contains('\0'));
            // Every backslash starts a two-digit hex escape.
            let b = e.as_bytes();
            for (i, c) in b.iter().enumerate() {
                if *c == b'\\' {
                    prop_assert!(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit));
                    prop_assert!(b.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
                }
            }
            prop_assert_eq!(unescape(&e), Some(s));
        }
    }
}
