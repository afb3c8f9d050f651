//! A small blocking IMAP client for the workloads: one command at a time, responses split
//! into untagged lines with their literals inlined, and the tagged status. Enough for LOGIN,
//! CREATE, SELECT, APPEND, FETCH and STORE against Halyard; every read has a timeout, so a
//! paused or partitioned server turns into an error, never a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u64,
}

/// The tagged completion of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok(String),
    No(String),
    Bad(String),
}

/// What a command got back.
#[derive(Debug, Clone)]
pub struct Response {
    /// Untagged responses (`* …`), each with its literals' bytes inlined (lossy UTF-8).
    pub untagged: Vec<String>,
    pub status: Status,
}

impl Imap {
    /// Connects, reads the greeting and logs in.
    pub fn login(addr: SocketAddr, login: &str, password: &str) -> Result<Imap, String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(1000))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = Imap {
            r: BufReader::new(s),
            w,
            tag: 0,
        };
        let greeting = c.line()?;
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting: {}", greeting.trim_end()));
        }
        match c.command(&format!("LOGIN {} {}", quote(login), quote(password)))? {
            Response {
                status: Status::Ok(_),
                ..
            } => Ok(c),
            r => Err(format!("LOGIN: {:?}", r.status)),
        }
    }

    /// Sets the read timeout for the following commands.
    pub fn timeout(&mut self, t: Duration) {
        let _ = self.r.get_ref().set_read_timeout(Some(t));
    }

    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) if l.len() > 1_000_000 => Err("response line too long".into()),
            Ok(_) => Ok(l),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One response line with its literals inlined.
    fn response_line(&mut self) -> Result<String, String> {
        let mut out = String::new();
        for _ in 0..10_000 {
            let l = self.line()?;
            let trimmed = l.trim_end_matches(['\r', '\n']);
            match literal_len(trimmed) {
                Some(n) if n <= 50_000_000 => {
                    out.push_str(trimmed);
                    let mut buf = vec![0u8; n];
                    self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                    out.push_str(&String::from_utf8_lossy(&buf));
                }
                Some(_) => return Err("literal too large".into()),
                None => {
                    out.push_str(trimmed);
                    return Ok(out);
                }
            }
        }
        Err("too many literals in one response".into())
    }

    /// Sends a command (no literals) and collects its response.
    pub fn command(&mut self, cmd: &str) -> Result<Response, String> {
        self.tag += 1;
        let tag = format!("j{}", self.tag);
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.collect(&tag)
    }

    fn collect(&mut self, tag: &str) -> Result<Response, String> {
        let mut untagged = Vec::new();
        for _ in 0..10_000_000 {
            let l = self.response_line()?;
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                let status = if let Some(t) = rest.strip_prefix("OK") {
                    Status::Ok(t.trim().to_string())
                } else if let Some(t) = rest.strip_prefix("NO") {
                    Status::No(t.trim().to_string())
                } else {
                    Status::Bad(rest.trim().to_string())
                };
                return Ok(Response { untagged, status });
            }
            if l.starts_with("* ") {
                untagged.push(l);
            }
        }
        Err("response too long".into())
    }

    /// APPEND with a synchronising literal. `Err` only when the outcome is unknown (the
    /// connection failed after the message was sent); a refusal is `Ok` with `No`/`Bad`.
    pub fn append(&mut self, mailbox: &str, message: &[u8]) -> Result<Response, AppendError> {
        self.tag += 1;
        let tag = format!("j{}", self.tag);
        self.w
            .write_all(
                format!("{tag} APPEND {} {{{}}}\r\n", quote(mailbox), message.len()).as_bytes(),
            )
            .map_err(|e| AppendError::NotSent(e.to_string()))?;
        let cont = self.line().map_err(AppendError::NotSent)?;
        if !cont.starts_with('+') {
            return Err(AppendError::NotSent(format!(
                "no continuation: {}",
                cont.trim_end()
            )));
        }
        // One write: the message and its CRLF as two small segments would wait for the
        // server's delayed ACK (Nagle), ~40 ms an APPEND.
        let mut buf = Vec::with_capacity(message.len() + 2);
        buf.extend_from_slice(message);
        buf.extend_from_slice(b"\r\n");
        self.w
            .write_all(&buf)
            .map_err(|e| AppendError::Unknown(e.to_string()))?;
        self.collect(&tag).map_err(AppendError::Unknown)
    }
}

/// One connection per client process, kept between operations; a connection that failed is
/// not put back, so the next operation logs in again.
#[derive(Default)]
pub struct Pool(std::sync::Mutex<std::collections::HashMap<u64, Imap>>);

impl Pool {
    /// Process `p`'s connection, or a new one logged in to the testbed's address (`fresh`
    /// prepares it, e.g. with a SELECT).
    pub fn take(
        &self,
        p: u64,
        bed: &crate::runner::Testbed,
        fresh: impl FnOnce(&mut Imap) -> Result<(), String>,
    ) -> Result<Imap, String> {
        if let Some(c) = self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&p) {
            return Ok(c);
        }
        let mut c = Imap::login(
            SocketAddr::from((bed.address, 143)),
            &bed.login,
            &bed.password,
        )?;
        fresh(&mut c)?;
        Ok(c)
    }

    pub fn put(&self, p: u64, c: Imap) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, c);
    }
}

#[derive(Debug)]
pub enum AppendError {
    /// Nothing was sent: the message cannot have been stored.
    NotSent(String),
    /// Sent, but no answer: it may or may not have been stored.
    Unknown(String),
}

fn literal_len(line: &str) -> Option<usize> {
    let (_, n) = line.strip_suffix('}')?.rsplit_once('{')?;
    n.trim_end_matches('+').parse().ok()
}

/// A quoted string (the values here are plain ASCII).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The number after `KEY ` in `text` (e.g. `UIDNEXT 7`, `APPENDUID 3 12` → the first).
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let i = text.find(key)? + key.len();
    text[i..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The parenthesised list after `KEY (` in `text`, split on spaces.
pub fn list_after(text: &str, key: &str) -> Option<Vec<String>> {
    let i = text.find(&format!("{key} ("))? + key.len() + 2;
    let end = text[i..].find(')')?;
    Some(
        text[i..i + end]
            .split_whitespace()
            .map(String::from)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_pieces() {
        assert_eq!(literal_len("* 1 FETCH (BODY[] {12}"), Some(12));
        assert_eq!(literal_len("* 1 FETCH (FLAGS ())"), None);
        assert_eq!(
            number_after("[APPENDUID 38505 3955] APPEND completed", "APPENDUID"),
            Some(38505)
        );
        assert_eq!(
            number_after("* OK [UIDNEXT 4392] Predicted", "UIDNEXT"),
            Some(4392)
        );
        assert_eq!(
            list_after("* 3 FETCH (UID 7 FLAGS (\\Seen $j1))", "FLAGS"),
            Some(vec!["\\Seen".to_string(), "$j1".to_string()])
        );
        assert_eq!(
            list_after("* 3 FETCH (UID 7 FLAGS ())", "FLAGS"),
            Some(vec![])
        );
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
