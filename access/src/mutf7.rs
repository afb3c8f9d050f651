//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3): what IMAP clients send and expect in LIST.
//! The store keeps names as UTF-8; sessions decode what clients send (strictly: a malformed
//! name is refused, never guessed at) and encode what they list.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// Decodes a modified UTF-7 name into UTF-8. Refuses: a raw `&` not followed by `-` or a
/// valid base64 run, printable ASCII or `&` encoded in base64, non-ASCII bytes, bad padding,
/// unpaired surrogates, and empty shifts (`&-` is the only allowed empty one).
pub fn decode(name: &str) -> Result<String, String> {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !(0x20..=0x7e).contains(&c) {
            return Err(format!(
                "mailbox name {name:?}: not modified UTF-7 (byte 0x{c:02x})"
            ));
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = bytes[i + 1..]
            .iter()
            .position(|&b| b == b'-')
            .map(|p| i + 1 + p)
            .ok_or_else(|| format!("mailbox name {name:?}: unterminated '&' shift"))?;
        let run = &bytes[i + 1..end];
        if run.is_empty() {
            out.push('&');
            i = end + 1;
            continue;
        }
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut units: Vec<u16> = Vec::new();
        for &b in run {
            let v = b64_value(b)
                .ok_or_else(|| format!("mailbox name {name:?}: bad character in '&' shift"))?;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 16 {
                nbits -= 16;
                units.push(((bits >> nbits) & 0xffff) as u16);
            }
        }
        // Leftover bits must be padding zeros, fewer than 6.
        if nbits >= 6 || (bits & ((1 << nbits) - 1)) != 0 || units.is_empty() {
            return Err(format!("mailbox name {name:?}: bad padding in '&' shift"));
        }
        let s = String::from_utf16(&units)
            .map_err(|_| format!("mailbox name {name:?}: invalid UTF-16 in '&' shift"))?;
        if s.chars().any(|ch| (' '..='~').contains(&ch)) {
            return Err(format!(
                "mailbox name {name:?}: printable ASCII must not be encoded"
            ));
        }
        out.push_str(&s);
        i = end + 1;
    }
    Ok(out)
}

/// Encodes a UTF-8 name as modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let mut bits: u32 = 0;
        let mut nbits = 0;
        for u in pending.drain(..) {
            bits = (bits << 16) | u as u32;
            nbits += 16;
            while nbits >= 6 {
                nbits -= 6;
                out.push(B64[((bits >> nbits) & 0x3f) as usize] as char);
            }
        }
        if nbits > 0 {
            out.push(B64[((bits << (6 - nbits)) & 0x3f) as usize] as char);
        }
        out.push('-');
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_examples() {
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Entw&APw-rfe").unwrap(), "Entwürfe");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "&",
            "a&b",
            "&Jjo",       // unterminated
            "&Jjo!-",     // bad char
            "&AGEAYgBj-", // "abc" encoded: printable ASCII must not be encoded
            "&2D0-",      // unpaired surrogate
            "&U,BTFw",    // unterminated
            "&U,BTF-",    // bad padding
            "caf\u{e9}",  // raw 8-bit
        ] {
            assert!(decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,40}") {
            let e = encode(&s);
            prop_assert!(e.is_ascii());
            prop_assert_eq!(decode(&e).unwrap(), s);
        }

        #[test]
        fn decode_never_panics(s in "[ -~]{0,40}") {
            let _ = decode(&s);
        }
    }
}
