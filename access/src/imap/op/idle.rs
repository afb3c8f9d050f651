//! IDLE (RFC 2177): changes to the selected mailbox are pushed as the group's change feed
//! reports them, until the client says DONE, autologout, shutdown or a change of master.

use std::io;
use std::time::Duration;

use imap_codec::IdleDoneCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{CommandContinuationRequest, Response};
use tokio::sync::broadcast;

use super::select::note_event;
use crate::imap::session::{Res, Session};
use crate::imap::{bye, encode};

impl Session {
    /// IDLE: pushes changes as they are applied until the client says DONE.
    pub(crate) async fn idle(&mut self, tag: &Tag<'_>) -> Res {
        if self.feed.is_none() {
            self.feed = Some(self.acct().group.subscribe());
        }
        let cont = encode(&Response::CommandContinuationRequest(
            CommandContinuationRequest::basic(None, "idling")
                .map_err(|_| io::Error::other("cont"))?,
        ));
        self.send(&cont).await?;
        self.sync(true).await?;
        let autologout = Duration::from_secs(self.shared.cfg.autologout_secs);
        let deadline = tokio::time::Instant::now() + autologout;
        let group = self.acct().group.clone();
        let node = self.shared.backend.node_id;
        loop {
            match IdleDoneCodec::default().decode(&self.conn.buf[..]) {
                Ok((rest, _)) => {
                    let used = self.conn.buf.len() - rest.len();
                    let _ = self.conn.buf.split_to(used);
                    self.ok(tag, None, "IDLE terminated").await?;
                    return Ok(true);
                }
                Err(imap_codec::decode::IdleDoneDecodeError::Incomplete) => {}
                Err(_) => {
                    self.conn.buf.clear();
                    self.bad(tag, "expected DONE").await?;
                    return Ok(true);
                }
            }
            if self.conn.buf.len() > 64 {
                self.bad(tag, "expected DONE").await?;
                return Ok(false);
            }
            self.conn.release_idle_buffer();
            let feed = self.feed.as_mut().expect("feed");
            tokio::select! {
                r = self.conn.read_more() => {
                    if r? == 0 {
                        return Ok(false);
                    }
                }
                ev = feed.recv() => {
                    match ev {
                        Ok(c) => {
                            if let Some(sel) = &mut self.sel {
                                note_event(sel, &c.event);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            if let Some(sel) = &mut self.sel { sel.dirty = true; }
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.send(&bye("this server is shutting down")).await?;
                            return Ok(false);
                        }
                    }
                    self.sync(true).await?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.send(&bye("autologout: idle for too long")).await?;
                    return Ok(false);
                }
                _ = crate::store::lost_mastership(&group, node) => {
                    self.send(&bye("the master of your mailboxes moved; please reconnect")).await?;
                    return Ok(false);
                }
            }
        }
    }
}
