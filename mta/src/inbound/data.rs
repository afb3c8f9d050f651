//! The message itself in the inbound session: DATA (read by [`DataReader`](super::dataread))
//! and BDAT chunks (RFC 3030), both bounded by `max_message_bytes`, and the end of a message
//! (`finish`): the `Enqueue` proposals whose commit precedes the `250`.

use bytes::Buf;
use halyard_raft_store::{Command, ProposeError, RecipientSpec, Reply};

use super::dataread::DataReader;
use super::{Session, Transaction};
use crate::Kind;

impl Session {
    pub(super) async fn data(&mut self) -> std::io::Result<bool> {
        if self.tx.from.is_none() || self.tx.rcpts.is_empty() {
            self.refuse(503, "5.5.1 no valid recipients").await?;
            return Ok(true);
        }
        if !self.tx.chunks.is_empty() {
            self.refuse(503, "5.5.1 DATA after BDAT").await?;
            return Ok(true);
        }
        self.reply(354, "end data with <CR><LF>.<CR><LF>");
        let max = self.shared.cfg.max_message_bytes as usize;
        let mut rx = DataReader::new();
        let mut body = Vec::new();
        let mut too_big = false;
        loop {
            let (used, done) = if too_big {
                // Over the limit: read on to the end, keeping nothing.
                rx.ingest(&self.buf, &mut Vec::new())
            } else {
                rx.ingest(&self.buf, &mut body)
            };
            self.buf.advance(used);
            if body.len() > max {
                too_big = true;
                body = Vec::new();
            }
            if done {
                break;
            }
            if !self.read_more().await? {
                return Ok(false);
            }
        }
        if too_big {
            self.tx = Transaction::default();
            self.refuse(552, "5.3.4 message exceeds the size limit")
                .await?;
            return Ok(true);
        }
        self.finish(body).await?;
        Ok(true)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> std::io::Result<bool> {
        let max = self.shared.cfg.max_message_bytes as usize;
        if size > max {
            // Reading (and dropping) gigabytes to stay in step is what the client wants us
            // to do; refuse and hang up instead.
            self.reply(552, "5.3.4 chunk exceeds the message size limit, closing");
            return Ok(false);
        }
        // The chunk is read whatever the state, so that the stream stays in step.
        let over = self.tx.too_big || self.tx.chunks.len().saturating_add(size) > max;
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() && !self.read_more().await? {
                return Ok(false);
            }
            let n = left.min(self.buf.len());
            let part = self.buf.split_to(n);
            if !over {
                self.tx.chunks.extend_from_slice(&part);
            }
            left -= n;
        }
        if self.tx.from.is_none() || self.tx.rcpts.is_empty() {
            self.tx.chunks.clear();
            self.refuse(503, "5.5.1 no valid recipients").await?;
            return Ok(true);
        }
        if over {
            self.tx.too_big = true;
            self.tx.chunks = Vec::new();
            if last {
                self.tx = Transaction::default();
            }
            self.refuse(552, "5.3.4 message exceeds the size limit")
                .await?;
            return Ok(true);
        }
        if !last {
            self.reply(250, &format!("2.0.0 {size} bytes received"));
            return Ok(true);
        }
        let body = std::mem::take(&mut self.tx.chunks);
        self.finish(body).await?;
        Ok(true)
    }

    /// End of a message: `Received:` trace header, one `Enqueue` holding every recipient,
    /// `250` only when it is committed.
    async fn finish(&mut self, body: Vec<u8>) -> std::io::Result<()> {
        let tx = std::mem::take(&mut self.tx);
        let queue_id = self.shared.next_queue_id();
        let tls = self.stream.tls_info();
        let proto = match (self.esmtp, tls.is_some(), self.auth.is_some()) {
            _ if self.kind == Kind::Lmtp => "LMTP",
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let tls_clause = tls
            .map(|t| format!("\r\n\t(using {t})"))
            .unwrap_or_default();
        let now = chrono::Utc::now();
        let for_clause = match tx.rcpts.as_slice() {
            [one] => format!("\r\n\tfor <{}>", one.spec.address),
            _ => String::new(),
        };
        let received = format!(
            "Received: from {} ([{}]){tls_clause}\r\n\tby {} (Halyard) with {proto} id {queue_id}{for_clause};\r\n\t{}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            self.peer.ip(),
            self.shared.cfg.hostname,
            now.to_rfc2822(),
        );
        let mut message = Vec::with_capacity(received.len() + body.len());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(&body);
        let message = bytes::Bytes::from(message);
        let meta = halyard_raft_store::mime::message_meta(&message);
        // One entry, in the first recipient's group, for every recipient: the 250 covers them
        // all or none. Recipients of other groups are handed over by that group's job
        // controller (`group:<name>` channel, see `outbound::handover`).
        let mut recipients: Vec<RecipientSpec> = Vec::new();
        let mut home: Option<String> = None;
        for r in tx.rcpts {
            let home = home.get_or_insert_with(|| r.group.clone());
            let mut spec = r.spec;
            if r.group != *home && spec.channel == "store" {
                spec.channel = format!("{}{}", crate::outbound::handover::PREFIX, r.group);
            }
            // The same mailbox reached twice (an alias and a list, say) gets one copy.
            if !recipients
                .iter()
                .any(|x| x.address == spec.address && x.channel == spec.channel)
            {
                recipients.push(spec);
            }
        }
        let received_ms = now.timestamp_millis();
        let expires = received_ms + (self.shared.cfg.queue_lifetime_secs as i64) * 1000;
        let failed = match home {
            None => Some("no recipient".to_string()),
            Some(group_name) => {
                let size = message.len();
                let cmd = Command::Enqueue {
                    queue_id: queue_id.clone(),
                    mail_from: tx.from.clone().unwrap_or_default(),
                    params: tx.params.clone(),
                    recipients,
                    partition: halyard_raft_store::PRIMARY_PARTITION.into(),
                    body: message,
                    received_at_ms: received_ms,
                    expires_at_ms: expires,
                    priority: halyard_raft_store::PRIORITY_MAIL,
                    meta: Some(meta),
                };
                self.enqueue(&group_name, &queue_id, cmd, size).await
            }
        };
        // LMTP: one reply per accepted recipient (RFC 2033 §4.2); all share the commit.
        let replies = if self.kind == Kind::Lmtp {
            tx.accepted.clone()
        } else {
            vec![String::new()]
        };
        for rcpt in replies {
            let who = if rcpt.is_empty() {
                String::new()
            } else {
                format!("<{rcpt}> ")
            };
            match &failed {
                None => self.reply(250, &format!("2.0.0 {who}OK queued as {queue_id}")),
                Some(why) => {
                    tracing::warn!(queue_id = %queue_id, error = %why, "message not queued");
                    self.refuse(451, &format!("4.3.0 {who}not queued, try again: {why}"))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

impl Session {
    /// Proposes the message's `Enqueue` to `group_name` (through its master when that is
    /// another node); `None` once committed, else why not.
    async fn enqueue(
        &mut self,
        group_name: &str,
        id: &str,
        cmd: Command,
        size: usize,
    ) -> Option<String> {
        let Some(group) = self.shared.backend.groups.get(group_name).cloned() else {
            return Some(format!("group {group_name} is not served here"));
        };
        // Not the master: the master proposes it for us, and says when it is committed.
        let proposed = match (group.leader_elsewhere(), &self.shared.backend.forward) {
            (Some(addr), Some(forward)) => forward.propose(addr, group_name.to_string(), cmd).await,
            #[cfg(not(feature = "jepsen-broken-ack"))]
            _ => group.propose(cmd).await,
            // The deliberately broken build the Jepsen harness must catch: the 250 goes
            // out before the entry is committed (never enable this feature elsewhere).
            #[cfg(feature = "jepsen-broken-ack")]
            _ => {
                let g = group.clone();
                tokio::spawn(async move {
                    let _ = g.propose(cmd).await;
                });
                Ok(Reply::Enqueued {
                    queue_id: id.to_string(),
                })
            }
        };
        match proposed {
            Ok(Reply::Enqueued { .. }) => {
                tracing::info!(queue_id = %id, group = %group_name, size, peer = %self.peer, "message accepted");
                None
            }
            Ok(other) => Some(format!("not queued: {other:?}")),
            Err(ProposeError::NotLeader { leader_id, .. }) => Some(format!(
                "this node is not the master of {group_name} now (master: {})",
                leader_id.map_or("being elected".into(), |l| format!("node {l}"))
            )),
            Err(e) => Some(e.to_string()),
        }
    }
}
