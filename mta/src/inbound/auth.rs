//! STARTTLS (RFC 3207) and AUTH (RFC 4954) in the inbound session, with the SASL mechanisms of
//! [`halyard_directory::sasl`] (SCRAM-SHA-256(-PLUS), EXTERNAL, PLAIN, LOGIN).

use std::time::Duration;

use base64::Engine;
use halyard_directory::sasl::{self, Mechanism, Outcome, TlsFacts};

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
                    return match base64::engine::general_purpose::STANDARD.decode(l.as_bytes()) {
                        Ok(d) => Ok(Some(Some(d))),
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not base64",
                        )),
                    };
                }
                Line::TooLong => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "too long",
                    ));
                }
                Line::NeedMore => {
                    if !self.read_more().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The SASL mechanisms to offer now (none where TLS is required and absent).
    pub(super) fn mechanisms(&self) -> Vec<Mechanism> {
        if !self.auth_offered() {
            return Vec::new();
        }
        sasl::offered(&*self.shared.backend.directory, &self.tls_facts())
    }

    fn tls_facts(&self) -> TlsFacts {
        let rule = self
            .shared
            .cfg
            .external_identity
            .parse::<halyard_net::ExternalIdentity>()
            .unwrap_or_default();
        TlsFacts {
            active: self.stream.tls_info().is_some(),
            exporter: self.stream.tls_exporter(),
            end_point: self.stream.tls_server_end_point(),
            client_identity: self.shared.cfg.tls_client_ca.as_ref().and_then(|_| {
                self.stream
                    .client_certificate()
                    .and_then(|der| halyard_net::certificate_identity(&der, rule))
            }),
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
        let offered = self.mechanisms();
        let mech = match mechanism {
            smtp_proto::AUTH_PLAIN => Some(Mechanism::Plain),
            smtp_proto::AUTH_LOGIN => Some(Mechanism::Login),
            smtp_proto::AUTH_SCRAM_SHA_256 => Some(Mechanism::ScramSha256),
            smtp_proto::AUTH_SCRAM_SHA_256_PLUS => Some(Mechanism::ScramSha256Plus),
            smtp_proto::AUTH_EXTERNAL => Some(Mechanism::External),
            _ => None,
        };
        let Some(mech) = mech.filter(|m| offered.contains(m)) else {
            let names: Vec<&str> = offered.iter().map(|m| m.name()).collect();
            self.refuse(
                504,
                &format!("5.5.4 mechanism not supported ({})", names.join(", ")),
            )
            .await?;
            return Ok(true);
        };
        // RFC 4954 §4: "=" is an empty initial response.
        let initial = match initial.as_str() {
            "" => None,
            "=" => Some(Vec::new()),
            i => match base64::engine::general_purpose::STANDARD.decode(i.as_bytes()) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.refuse(501, "5.5.2 initial response is not base64")
                        .await?;
                    return Ok(true);
                }
            },
        };
        let facts = self.tls_facts();
        let dir = self.shared.backend.directory.clone();
        let mut x = SmtpSasl(self, false);
        let outcome = sasl::run(&*dir, mech, initial, &mut x, &facts, &|_: &str| true).await?;
        if x.1 {
            return Ok(false); // the client went away mid-exchange
        }
        match outcome {
            Outcome::Success(p) => {
                tracing::info!(user = %p.mail, mechanism = mech.name(), peer = %self.peer, "SMTP AUTH");
                self.auth = Some(p.mail);
                self.reply(235, "2.7.0 authentication successful");
                Ok(true)
            }
            Outcome::Failed { login, why } => {
                tracing::info!(login = %login, peer = %self.peer, why, "SMTP AUTH failed");
                self.auth_failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.reply(535, "5.7.8 authentication credentials invalid");
                if self.auth_failures >= self.shared.cfg.max_auth_failures {
                    self.reply(421, "4.7.0 too many failed authentications, closing");
                    return Ok(false);
                }
                Ok(true)
            }
            Outcome::Throttled { .. } => {
                self.refuse(454, "4.7.0 too many failed logins; try again later")
                    .await?;
                Ok(true)
            }
            Outcome::Cancelled => {
                self.refuse(501, "5.0.0 authentication cancelled").await?;
                Ok(true)
            }
            Outcome::Malformed(m) => {
                self.refuse(501, &format!("5.5.2 {m}")).await?;
                Ok(true)
            }
            Outcome::Unavailable(_) => {
                self.refuse(454, "4.7.0 temporary authentication failure")
                    .await?;
                Ok(true)
            }
        }
    }
}

/// SMTP's `334 base64` continuations (RFC 4954) as a SASL exchange; `.1` is set when the
/// client closed the connection mid-exchange.
struct SmtpSasl<'a>(&'a mut Session, bool);

#[async_trait::async_trait]
impl sasl::Exchange for SmtpSasl<'_> {
    async fn challenge(&mut self, data: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.0.reply(334, &b64);
        self.0.flush().await?;
        match self.0.sasl_line().await? {
            None => {
                self.1 = true;
                Ok(None)
            }
            Some(d) => Ok(d),
        }
    }
}
