//! STARTTLS (RFC 3207) and AUTH (RFC 4954, SASL PLAIN and LOGIN) in the inbound session.

use std::time::Duration;

use base64::Engine;
use halyard_directory::DirectoryError;

use super::{Line, Session, Transaction};

impl Session {
    /// AUTH is offered when TLS is active, or when it is not required (or not configured).
    pub(super) fn auth_offered(&self) -> bool {
        self.stream.tls_info().is_some()
            || self.shared.tls.is_none()
            || !self.shared.cfg.require_tls_for_auth
    }

    pub(super) async fn starttls(&mut self) -> std::io::Result<bool> {
        let Some(tls) = self.shared.tls.clone() else {
            self.refuse(502, "5.5.1 STARTTLS not offered here").await?;
            return Ok(true);
        };
        if self.stream.tls_info().is_some() {
            self.refuse(503, "5.5.1 TLS already active").await?;
            return Ok(true);
        }
        self.reply(220, "2.0.0 ready to start TLS");
        self.flush().await?;
        // RFC 3207 §4.2: nothing the client sent before the handshake may be used after it
        // (it would be a command injected in the clear).
        self.buf.clear();
        let t = Duration::from_secs(self.shared.cfg.command_timeout_secs);
        match tokio::time::timeout(t, self.stream.start_tls(tls.acceptor())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return Ok(false);
            }
            Err(_) => return Ok(false),
        }
        // A fresh start: the client must say EHLO again.
        self.helo = None;
        self.esmtp = false;
        self.tx = Transaction::default();
        Ok(true)
    }

    /// Reads one SASL response line (base64); `None` when the client cancelled with `*`.
    async fn sasl_line(&mut self) -> std::io::Result<Option<Option<Vec<u8>>>> {
        let mut skipping = false;
        loop {
            match self.take_line(&mut skipping) {
                Line::Complete(l) => {
                    let l = String::from_utf8_lossy(&l).trim_end().to_string();
                    if l == "*" {
                        return Ok(Some(None));
                    }
                    return Ok(Some(Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(l.as_bytes())
                            .unwrap_or_default(),
                    )));
                }
                Line::TooLong => return Ok(Some(Some(Vec::new()))),
                Line::NeedMore => {
                    if !self.read_more().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub(super) async fn authenticate(
        &mut self,
        mechanism: u64,
        initial: String,
    ) -> std::io::Result<bool> {
        if self.helo.is_none() || !self.esmtp {
            self.refuse(503, "5.5.1 say EHLO first").await?;
            return Ok(true);
        }
        if self.auth.is_some() {
            self.refuse(503, "5.5.1 already authenticated").await?;
            return Ok(true);
        }
        if self.tx.from.is_some() {
            self.refuse(503, "5.5.1 AUTH not allowed during a transaction")
                .await?;
            return Ok(true);
        }
        if !self.auth_offered() {
            self.refuse(538, "5.7.11 encryption required: use STARTTLS first")
                .await?;
            return Ok(true);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| b64.decode(s.as_bytes()).ok();
        // One SASL round: challenge, then the client's answer (or the end of the session).
        macro_rules! step {
            ($challenge:expr) => {{
                self.reply(334, $challenge);
                match self.sasl_line().await? {
                    None => return Ok(false),
                    Some(None) => {
                        self.refuse(501, "5.0.0 authentication cancelled").await?;
                        return Ok(true);
                    }
                    Some(Some(d)) => d,
                }
            }};
        }
        let (login, password) = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let data = if initial.is_empty() {
                    Some(step!(""))
                } else if initial == "=" {
                    Some(Vec::new())
                } else {
                    decode(&initial)
                };
                let parts: Vec<Vec<u8>> = data
                    .unwrap_or_default()
                    .split(|b| *b == 0)
                    .map(<[u8]>::to_vec)
                    .collect();
                if parts.len() != 3 || (!parts[0].is_empty() && parts[0] != parts[1]) {
                    self.refuse(501, "5.5.2 malformed PLAIN response").await?;
                    return Ok(true);
                }
                (
                    String::from_utf8_lossy(&parts[1]).into_owned(),
                    String::from_utf8_lossy(&parts[2]).into_owned(),
                )
            }
            smtp_proto::AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    step!("VXNlcm5hbWU6")
                } else {
                    decode(&initial).unwrap_or_default()
                };
                let pw = step!("UGFzc3dvcmQ6");
                (
                    String::from_utf8_lossy(&user).into_owned(),
                    String::from_utf8_lossy(&pw).into_owned(),
                )
            }
            _ => {
                self.refuse(504, "5.5.4 mechanism not supported (PLAIN, LOGIN)")
                    .await?;
                return Ok(true);
            }
        };
        match self
            .shared
            .backend
            .directory
            .authenticate(&login, &password)
            .await
        {
            Ok(Some(p)) => {
                tracing::info!(user = %p.mail, peer = %self.peer, "SMTP AUTH");
                self.auth = Some(p.mail);
                self.reply(235, "2.7.0 authentication successful");
                Ok(true)
            }
            Ok(None) => {
                self.auth_failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.reply(535, "5.7.8 authentication credentials invalid");
                if self.auth_failures >= self.shared.cfg.max_auth_failures {
                    self.reply(421, "4.7.0 too many failed authentications, closing");
                    return Ok(false);
                }
                Ok(true)
            }
            Err(DirectoryError::Unavailable(_)) => {
                self.refuse(454, "4.7.0 temporary authentication failure")
                    .await?;
                Ok(true)
            }
        }
    }
}
