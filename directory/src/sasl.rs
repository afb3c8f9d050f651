//! SASL (RFC 4422) as IMAP, POP3 and SMTP submission offer it, one implementation for all
//! three: PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677;
//! channel bindings `tls-exporter`, RFC 9266, and `tls-server-end-point`, RFC 5929) and
//! EXTERNAL (RFC 4422 appendix A) over a TLS client certificate.
//!
//! A protocol supplies an [`Exchange`] (how a challenge is sent and a response read: `+ ` in
//! IMAP and POP3, `334 ` in SMTP) and the facts of its TLS layer ([`TlsFacts`]); [`run`]
//! drives the mechanism and the directory and returns an [`Outcome`]. Every mechanism goes
//! through the same throttle gate (`gate`, asked once the login is known and before any
//! verification) and reports failures the same way, so failed-login throttling treats them
//! alike.
//!
//! SCRAM keys (StoredKey, ServerKey, salt, iterations) are derived by `halyard ctl` next to
//! the Argon2id hash ([`scram_keys`]) and kept in the embedded directory; the server never
//! sees the password. Directories without SCRAM keys (LDAP binds) do not offer SCRAM. A login
//! the directory does not know gets a salt and iteration count that look like a real user's
//! (derived from the login under a per-process secret), so SCRAM does not reveal which
//! logins exist; it fails at the proof like a wrong password.

use std::io;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{Directory, DirectoryError, Principal, UserStatus};
pub use halyard_raft_store::directory::ScramKeys;

/// PBKDF2 iterations of new SCRAM keys. RFC 7677 asks for at least 4096; the cost is paid by
/// the client at each login (and by an attacker per guess against a stolen StoredKey).
pub const SCRAM_ITERATIONS: u32 = 10_000;

/// Longest SASL message accepted (a SCRAM client-final with a long nonce is ~200 bytes).
pub const MAX_MESSAGE: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

pub(crate) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Derives a user's SCRAM-SHA-256 keys from the password (SASLprep'd, RFC 4013, as clients
/// do; a password SASLprep refuses is used as it is), with a fresh random salt, bound to the
/// Argon2id hash stored beside them.
pub fn scram_keys(password: &str, password_hash: &str) -> Result<ScramKeys, String> {
    let mut salt = vec![0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for the salt: {e}"))?;
    Ok(scram_keys_with(
        password,
        password_hash,
        salt,
        SCRAM_ITERATIONS,
    ))
}

pub(crate) fn scram_keys_with(
    password: &str,
    password_hash: &str,
    salt: Vec<u8>,
    i: u32,
) -> ScramKeys {
    let prepped = stringprep::saslprep(password)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepped.as_bytes(), &salt, i, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    ScramKeys {
        iterations: i,
        salt,
        stored_key: Sha256::digest(client_key).to_vec(),
        server_key: hmac(&salted, b"Server Key").to_vec(),
        for_hash: ScramKeys::hash_binding(password_hash),
    }
}

/// The mechanisms Halyard implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    ScramSha256,
    ScramSha256Plus,
    External,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        Some(match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "SCRAM-SHA-256-PLUS" => Mechanism::ScramSha256Plus,
            "EXTERNAL" => Mechanism::External,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::External => "EXTERNAL",
        }
    }
}

/// What the session's TLS layer knows, for channel binding and EXTERNAL.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    /// TLS is active on the client's connection (to this node, or to the node that relays).
    pub active: bool,
    /// `tls-exporter` channel binding data (TLS 1.3 only, RFC 9266).
    pub exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` channel binding data: the hash of this server's certificate.
    pub end_point: Option<Vec<u8>>,
    /// The identity a verified client certificate maps to (see `external_identity`).
    pub client_identity: Option<String>,
}

impl TlsFacts {
    fn binding(&self, name: &str) -> Option<&[u8]> {
        match name {
            "tls-exporter" => self.exporter.as_deref(),
            "tls-server-end-point" => self.end_point.as_deref(),
            _ => None,
        }
    }

    fn can_bind(&self) -> bool {
        self.exporter.is_some() || self.end_point.is_some()
    }
}

/// The mechanisms to advertise, in order of preference.
pub fn offered(dir: &dyn Directory, tls: &TlsFacts) -> Vec<Mechanism> {
    let mut m = Vec::new();
    if dir.has_scram() {
        if tls.can_bind() {
            m.push(Mechanism::ScramSha256Plus);
        }
        m.push(Mechanism::ScramSha256);
    }
    if tls.client_identity.is_some() {
        m.push(Mechanism::External);
    }
    m.push(Mechanism::Plain);
    m.push(Mechanism::Login);
    m
}

/// How a protocol carries one SASL round.
#[async_trait::async_trait]
pub trait Exchange: Send {
    /// Sends `data` as a challenge (the protocol base64-encodes it) and returns the client's
    /// decoded response, `None` when the client cancelled (`*`). A response that is not
    /// base64 is an error of kind `InvalidData`.
    async fn challenge(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>>;
}

/// How an authentication ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(Principal),
    /// Wrong credentials, an account that may not log in, or a proof that does not verify:
    /// counts as a failed login of `login`. `why` is for the log, never for the client.
    Failed {
        login: String,
        why: String,
    },
    /// The gate refused `login` before anything was verified.
    Throttled {
        login: String,
    },
    Cancelled,
    /// A protocol error in the client's messages (told to the client).
    Malformed(String),
    Unavailable(String),
}

fn failed(login: &str, why: impl Into<String>) -> Outcome {
    Outcome::Failed {
        login: login.to_string(),
        why: why.into(),
    }
}

macro_rules! respond {
    ($x:expr, $data:expr) => {
        match $x.challenge($data).await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Outcome::Cancelled),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Ok(Outcome::Malformed("response is not base64".into()));
            }
            Err(e) => return Err(e),
        }
    };
}

/// Runs `mech` to its end. `initial` is the initial response (SASL-IR, `AUTH X resp`);
/// `gate(login)` false refuses the login before verification (throttling).
pub async fn run(
    dir: &dyn Directory,
    mech: Mechanism,
    initial: Option<Vec<u8>>,
    x: &mut dyn Exchange,
    tls: &TlsFacts,
    gate: &(dyn Fn(&str) -> bool + Send + Sync),
) -> io::Result<Outcome> {
    let first = match initial {
        Some(d) => d,
        None => match mech {
            Mechanism::Login => respond!(x, b"Username:"),
            _ => respond!(x, b""),
        },
    };
    if first.len() > MAX_MESSAGE {
        return Ok(Outcome::Malformed("SASL message too long".into()));
    }
    match mech {
        Mechanism::Plain => match parse_plain(&first) {
            Ok((authz, authc, pw)) => {
                if !authz.is_empty() && authz != authc {
                    return Ok(failed(&authc, "PLAIN with another authorisation identity"));
                }
                password(dir, &authc, &pw, gate).await
            }
            Err(e) => Ok(Outcome::Malformed(e.into())),
        },
        Mechanism::Login => {
            let user = String::from_utf8_lossy(&first).into_owned();
            let pw = respond!(x, b"Password:");
            password(dir, &user, &String::from_utf8_lossy(&pw), gate).await
        }
        Mechanism::External => external(dir, &first, tls, gate).await,
        Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => {
            let plus = mech == Mechanism::ScramSha256Plus;
            let cf = match ClientFirst::parse(&first, plus, tls) {
                Ok(cf) => cf,
                Err(e) => return Ok(Outcome::Malformed(format!("SCRAM: {e}"))),
            };
            if !gate(&cf.user) {
                return Ok(Outcome::Throttled { login: cf.user });
            }
            let (principal, keys) = match dir.scram_keys(&cf.user).await {
                Ok(Some((p, k))) => (Some(p), k),
                Ok(None) => (None, decoy_keys(&cf.user)),
                Err(DirectoryError::Unavailable(e)) => return Ok(Outcome::Unavailable(e)),
            };
            let (server_first, snonce) = cf.server_first(&keys);
            let cfinal = respond!(x, server_first.as_bytes());
            let verified = cf.verify_final(&cfinal, &server_first, &snonce, &keys, tls);
            let server_final = match verified {
                Ok(v) => v,
                Err(ScramError::Proof) => return Ok(failed(&cf.user, "SCRAM proof")),
                Err(e) => return Ok(Outcome::Malformed(format!("SCRAM: {e}"))),
            };
            let Some(principal) = principal else {
                return Ok(failed(&cf.user, "unknown login"));
            };
            if let Some(a) = &cf.authzid
                && !same_user(a, &principal)
            {
                return Ok(failed(
                    &cf.user,
                    "SCRAM with another authorisation identity",
                ));
            }
            // RFC 5802 §5: the server's signature proves to the client that the server
            // knew its key; IMAP, POP3 and SMTP carry it as a last challenge.
            let last = respond!(x, server_final.as_bytes());
            if !last.is_empty() {
                return Ok(Outcome::Malformed(
                    "SCRAM: expected an empty response".into(),
                ));
            }
            Ok(Outcome::Success(principal))
        }
    }
}

fn same_user(authzid: &str, p: &Principal) -> bool {
    authzid.eq_ignore_ascii_case(&p.uid) || authzid.eq_ignore_ascii_case(&p.mail)
}

/// A login and password (the LOGIN and USER/PASS commands, PLAIN, LOGIN), through the gate.
pub async fn password(
    dir: &dyn Directory,
    login: &str,
    pw: &str,
    gate: &(dyn Fn(&str) -> bool + Send + Sync),
) -> io::Result<Outcome> {
    if !gate(login) {
        return Ok(Outcome::Throttled {
            login: login.into(),
        });
    }
    Ok(match dir.authenticate(login, pw).await {
        Ok(Some(p)) => Outcome::Success(p),
        Ok(None) => failed(login, "wrong login or password"),
        Err(DirectoryError::Unavailable(e)) => Outcome::Unavailable(e),
    })
}

/// EXTERNAL: the identity is the client certificate's (mapped by the configured rule); the
/// message is an authorisation identity, empty or the same user.
async fn external(
    dir: &dyn Directory,
    authzid: &[u8],
    tls: &TlsFacts,
    gate: &(dyn Fn(&str) -> bool + Send + Sync),
) -> io::Result<Outcome> {
    let Ok(authzid) = std::str::from_utf8(authzid) else {
        return Ok(Outcome::Malformed(
            "authorisation identity is not UTF-8".into(),
        ));
    };
    let Some(id) = &tls.client_identity else {
        return Ok(failed(
            authzid,
            "EXTERNAL without a verified client certificate",
        ));
    };
    if !gate(id) {
        return Ok(Outcome::Throttled { login: id.clone() });
    }
    match dir.user(id).await {
        Ok(Some(u)) if u.status == UserStatus::Active => {
            let p = Principal {
                dn: u.dn,
                uid: u.uid,
                mail: u.mail,
            };
            if !authzid.is_empty() && !same_user(authzid, &p) {
                return Ok(failed(id, "EXTERNAL with another authorisation identity"));
            }
            Ok(Outcome::Success(p))
        }
        Ok(_) => Ok(failed(id, "certificate identity is not an active user")),
        Err(DirectoryError::Unavailable(e)) => Ok(Outcome::Unavailable(e)),
    }
}

/// PLAIN's `authzid NUL authcid NUL password` (RFC 4616 §2).
pub fn parse_plain(data: &[u8]) -> Result<(String, String, String), &'static str> {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    if parts.len() != 3 || parts[1].is_empty() {
        return Err("malformed PLAIN response");
    }
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "PLAIN response is not UTF-8");
    Ok((s(parts[0])?, s(parts[1])?, s(parts[2])?))
}

/// A per-process secret for the decoy salts of unknown logins.
fn decoy_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        let _ = getrandom::fill(&mut s);
        s
    })
}

/// Keys for a login the directory does not know: a stable salt (so two tries look like the
/// same user) and keys that no proof matches.
fn decoy_keys(login: &str) -> ScramKeys {
    let salt = hmac(decoy_secret(), login.to_lowercase().as_bytes())[..16].to_vec();
    let mut stored = [0u8; 32];
    let _ = getrandom::fill(&mut stored);
    ScramKeys {
        iterations: SCRAM_ITERATIONS,
        salt,
        stored_key: stored.to_vec(),
        server_key: stored.to_vec(),
        for_hash: vec![0; 16],
    }
}

/// SCRAM failures (the names are RFC 5802's `server-error-value`s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("invalid-encoding")]
    Encoding,
    #[error("extensions-not-supported")]
    Extensions,
    #[error("invalid-username-encoding")]
    Username,
    #[error("channel-binding-not-supported (use SCRAM-SHA-256-PLUS)")]
    BindingNotSupported,
    #[error("unsupported-channel-binding-type")]
    BindingType,
    #[error("server-does-support-channel-binding")]
    ServerDoesBind,
    #[error("channel-bindings-dont-match")]
    BindingMismatch,
    #[error("nonce does not match")]
    Nonce,
    #[error("invalid-proof")]
    Proof,
}

/// A parsed client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub gs2_header: String,
    /// The channel binding type the client asked for (`p=`).
    pub cb_name: Option<String>,
    pub authzid: Option<String>,
    /// The authentication identity (`n=`, decoded).
    pub user: String,
    pub bare: String,
    pub nonce: String,
}

/// `saslname` with `=2C` and `=3D` decoded (RFC 5802 §5.1); any other `=` or a `,` is an
/// error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") | Some("=2c") => out.push(','),
            Some("=3D") | Some("=3d") => out.push('='),
            _ => return Err(ScramError::Username),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() || out.chars().any(char::is_control) {
        return Err(ScramError::Username);
    }
    Ok(out)
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ClientFirst {
    /// Parses a client-first-message for SCRAM-SHA-256 (`plus`: -PLUS) on a session whose
    /// TLS layer is `tls`.
    pub fn parse(data: &[u8], plus: bool, tls: &TlsFacts) -> Result<ClientFirst, ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Encoding)?;
        let mut it = s.splitn(3, ',');
        let (Some(cbind), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Err(ScramError::Encoding);
        };
        let cb_name = match (cbind, plus) {
            ("n", false) => None,
            // The client could bind but believes the server cannot: a downgrade if this
            // server offered -PLUS on this session (RFC 5802 §6).
            ("y", false) if tls.can_bind() => return Err(ScramError::ServerDoesBind),
            ("y", false) => None,
            (p, true) if p.starts_with("p=") => {
                let name = &p[2..];
                if tls.binding(name).is_none() {
                    return Err(ScramError::BindingType);
                }
                Some(name.to_string())
            }
            (p, false) if p.starts_with("p=") => return Err(ScramError::BindingNotSupported),
            (_, true) => return Err(ScramError::BindingNotSupported),
            _ => return Err(ScramError::Encoding),
        };
        let authzid = match authz {
            "" => None,
            a if a.starts_with("a=") => Some(decode_saslname(&a[2..])?),
            _ => return Err(ScramError::Encoding),
        };
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(m) if m.starts_with("m=") => return Err(ScramError::Extensions),
            Some(n) if n.starts_with("n=") => decode_saslname(&n[2..])?,
            _ => return Err(ScramError::Encoding),
        };
        let nonce = match fields.next() {
            Some(r) if r.starts_with("r=") && printable_nonce(&r[2..]) => r[2..].to_string(),
            _ => return Err(ScramError::Encoding),
        };
        Ok(ClientFirst {
            gs2_header: format!("{cbind},{authz},"),
            cb_name,
            authzid,
            user,
            bare: bare.to_string(),
            nonce,
        })
    }

    /// The server-first-message and the server's part of the nonce.
    pub fn server_first(&self, keys: &ScramKeys) -> (String, String) {
        let mut r = [0u8; 18];
        let _ = getrandom::fill(&mut r);
        let snonce = b64().encode(r);
        (
            format!(
                "r={}{snonce},s={},i={}",
                self.nonce,
                b64().encode(&keys.salt),
                keys.iterations
            ),
            snonce,
        )
    }

    /// Checks a client-final-message; returns the server-final-message (`v=...`).
    pub fn verify_final(
        &self,
        data: &[u8],
        server_first: &str,
        snonce: &str,
        keys: &ScramKeys,
        tls: &TlsFacts,
    ) -> Result<String, ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Encoding)?;
        let (without_proof, proof) = s.rsplit_once(",p=").ok_or(ScramError::Encoding)?;
        let proof = b64()
            .decode(proof.as_bytes())
            .map_err(|_| ScramError::Encoding)?;
        let mut fields = without_proof.split(',');
        let c = match fields.next() {
            Some(c) if c.starts_with("c=") => b64()
                .decode(&c.as_bytes()[2..])
                .map_err(|_| ScramError::Encoding)?,
            _ => return Err(ScramError::Encoding),
        };
        let mut expected = self.gs2_header.as_bytes().to_vec();
        if let Some(name) = &self.cb_name {
            expected.extend_from_slice(tls.binding(name).ok_or(ScramError::BindingType)?);
        }
        if c != expected {
            return Err(ScramError::BindingMismatch);
        }
        match fields.next() {
            Some(r) if r.strip_prefix("r=") == Some(&format!("{}{snonce}", self.nonce)) => {}
            _ => return Err(ScramError::Nonce),
        }
        if proof.len() != 32 {
            return Err(ScramError::Proof);
        }
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored = Sha256::digest(&client_key);
        // Constant time: the comparison must not tell how much of a forged proof was right.
        let diff = stored
            .iter()
            .zip(&keys.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || keys.stored_key.len() != 32 {
            return Err(ScramError::Proof);
        }
        Ok(format!(
            "v={}",
            b64().encode(hmac(&keys.server_key, auth_message.as_bytes()))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example: user "user", password "pencil".
    #[test]
    fn rfc_7677_example_verifies() {
        let salt = b64().decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = scram_keys_with("pencil", "$argon2id$x", salt, 4096);
        let tls = TlsFacts::default();
        let cf = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", false, &tls).unwrap();
        assert_eq!(cf.user, "user");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let v = cf
            .verify_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                server_first,
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                &keys,
                &tls,
            )
            .unwrap();
        assert_eq!(v, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // One flipped bit of the proof fails.
        assert_eq!(
            cf.verify_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=",
                server_first,
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                &keys,
                &tls,
            ),
            Err(ScramError::Proof)
        );
    }

    #[test]
    fn channel_binding_rules() {
        let none = TlsFacts::default();
        let bound = TlsFacts {
            active: true,
            exporter: Some(vec![7; 32]),
            end_point: Some(vec![8; 32]),
            client_identity: None,
        };
        let m = b"y,,n=u,r=abc";
        assert_eq!(
            ClientFirst::parse(m, false, &bound),
            Err(ScramError::ServerDoesBind)
        );
        assert!(ClientFirst::parse(m, false, &none).is_ok());
        assert_eq!(
            ClientFirst::parse(b"p=tls-exporter,,n=u,r=abc", false, &bound),
            Err(ScramError::BindingNotSupported)
        );
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=u,r=abc", true, &bound),
            Err(ScramError::BindingType)
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=u,r=abc", true, &bound),
            Err(ScramError::BindingNotSupported)
        );
        let cf = ClientFirst::parse(b"p=tls-exporter,a=u,n=u,r=abc", true, &bound).unwrap();
        assert_eq!(cf.cb_name.as_deref(), Some("tls-exporter"));
        assert_eq!(cf.authzid.as_deref(), Some("u"));
        assert_eq!(cf.gs2_header, "p=tls-exporter,a=u,");
    }

    #[test]
    fn malformed_first_messages_are_refused() {
        let t = TlsFacts::default();
        for m in [
            &b""[..],
            b"n",
            b"n,,",
            b"n,,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=a=2Xb,r=abc",
            b"n,,n=u,r=",
            b"x,,n=u,r=abc",
            b"n,b=u,n=u,r=abc",
            b"n,,m=x,n=u,r=abc",
            b"\xff,,n=u,r=abc",
        ] {
            assert!(
                ClientFirst::parse(m, false, &t).is_err(),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        assert_eq!(
            ClientFirst::parse(b"n,,n=a=2Cb=3D,r=x", false, &t)
                .unwrap()
                .user,
            "a,b="
        );
    }

    #[test]
    fn plain_is_split_in_three() {
        assert_eq!(
            parse_plain(b"\0ann\0pw").unwrap(),
            ("".into(), "ann".into(), "pw".into())
        );
        assert!(parse_plain(b"ann\0pw").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        assert!(parse_plain(b"a\0b\0c\0d").is_err());
    }

    proptest::proptest! {
        #[test]
        fn scram_parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let keys = scram_keys_with("pw", "h", vec![1; 16], 4096);
            let t = TlsFacts { active: true, exporter: Some(vec![1; 32]), end_point: None, client_identity: None };
            let _ = ClientFirst::parse(&data, true, &t);
            if let Ok(cf) = ClientFirst::parse(b"n,,n=u,r=abc", false, &TlsFacts::default()) {
                let _ = cf.verify_final(&data, "r=abcX,s=AAAA,i=4096", "X", &keys, &t);
            }
            let _ = parse_plain(&data);
        }
    }
}
