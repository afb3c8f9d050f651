//! What the fuzz targets (crate `halyard-fuzz`, `scripts/fuzz.sh`) run inside this crate:
//! the SASL message parsers, with the checks each run must pass. Not an API.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::sasl::{ClientFirst, TlsFacts, b64, hmac, parse_plain, scram_keys_with};

/// Target `sasl`. The input is PLAIN's response, and also (split at its first NUL) a SCRAM
/// client-first and client-final message; the first byte says whether the session is
/// -PLUS and which channel bindings its TLS layer has.
///
/// Checks: PLAIN takes apart exactly what it is given; a random client-final never
/// authenticates; and every client-first the server accepts can be completed by an honest
/// client that knows the password (computed here, RFC 5802 §3), channel binding included.
pub fn sasl(data: &[u8]) {
    if let Ok((authz, login, password)) = parse_plain(data) {
        assert_eq!(format!("{authz}\0{login}\0{password}").as_bytes(), data);
    }
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let tls = TlsFacts {
        active: true,
        exporter: (flags & 2 != 0).then(|| vec![0xe5; 32]),
        end_point: (flags & 4 != 0).then(|| vec![0x5e; 32]),
        client_identity: None,
    };
    let plus = flags & 1 != 0;
    let (first, last) = match rest.iter().position(|b| *b == 0) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(cf) = ClientFirst::parse(first, plus, &tls) else {
        return;
    };
    let password = "pencil";
    let salt = b"NaCl-fuzz".to_vec();
    let keys = scram_keys_with(password, "$argon2id$fuzz", salt.clone(), 1);
    let (server_first, snonce) = cf.server_first(&keys);
    // The fuzzer's own client-final: its proof cannot be right.
    if !last.is_empty() {
        assert!(
            cf.verify_final(last, &server_first, &snonce, &keys, &tls)
                .is_err()
        );
    }
    // An honest client's.
    let mut cbind = cf.gs2_header.as_bytes().to_vec();
    match cf.cb_name.as_deref() {
        Some("tls-exporter") => cbind.extend_from_slice(tls.exporter.as_deref().expect("bound")),
        Some("tls-server-end-point") => {
            cbind.extend_from_slice(tls.end_point.as_deref().expect("bound"))
        }
        Some(other) => panic!("accepted channel binding {other:?}"),
        None => {}
    }
    let without_proof = format!("c={},r={}{snonce}", b64().encode(&cbind), cf.nonce);
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, 1, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let auth_message = format!("{},{server_first},{without_proof}", cf.bare);
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let client_final = format!("{without_proof},p={}", b64().encode(proof));
    let v = cf
        .verify_final(client_final.as_bytes(), &server_first, &snonce, &keys, &tls)
        .expect("an honest client-final");
    let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
    assert_eq!(v, format!("v={}", b64().encode(server_signature)));
}
