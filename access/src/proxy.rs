//! The multiplexor's relay. A node that is not the master of a user's group authenticates
//! the user itself (directory, Argon2id or LDAP bind, whatever mechanism the client used),
//! then hands the session to the master **as that already-authenticated user**: through the
//! node's [`RelayHop`] (the cluster's mutual-TLS admin API, where only a node certificate may
//! open a relayed session), with a header naming the user's principal, the client's address
//! and whether the client used TLS. No password, and no mail, crosses the cluster network in
//! clear; the master answers with one line (`+OK`, or `-ERR why`; for POP3 its answer to the
//! login), then the two nodes copy the session's bytes both ways until either side closes.
//!
//! The master records the client's real address (the header's), for its limits and logs.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::imap::conn::Conn;
use crate::store::Account;
use crate::{RelayOpen, Shared};

/// How long the master may take to answer a relayed session's opening.
const STEP: Duration = Duration::from_secs(15);

/// The longest first line a master may answer with.
const MAX_ANSWER: usize = 1024;

/// Opens a relayed session on the master of `acct`'s group: the master's node id, its
/// first line (without CRLF) and the stream to it.
pub async fn upstream(
    shared: &Shared,
    acct: &Account,
    open: RelayOpen,
) -> Result<(u64, String, tokio::io::DuplexStream), String> {
    let Some(master) = acct.master() else {
        return Err("the master of your mailboxes is being elected; try again".into());
    };
    let Some(addr) = acct.group.leader_elsewhere() else {
        return Err("the master of your mailboxes is not known yet; try again".into());
    };
    let Some(hop) = shared.backend.relay.as_ref() else {
        return Err("this node cannot reach the master of your mailboxes".into());
    };
    let mut io = tokio::time::timeout(STEP, hop.open(addr.clone(), open))
        .await
        .map_err(|_| format!("node {master} did not accept the session in time"))??;
    let answer = tokio::time::timeout(STEP, first_line(&mut io))
        .await
        .map_err(|_| format!("node {master} did not answer in time"))?
        .map_err(|e| format!("node {master}: {e}"))?;
    Ok((master, answer, io))
}

/// The master's first line, read a byte at a time so that nothing after it is taken from
/// the session.
async fn first_line<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = io.read_u8().await?;
        if b == b'\n' {
            let text = String::from_utf8_lossy(&line);
            return Ok(text.trim_end_matches('\r').to_string());
        }
        if line.len() >= MAX_ANSWER {
            return Err(io::Error::other("the master's answer is too long"));
        }
        line.push(b);
    }
}

/// Copies bytes both ways (first whatever the client already sent) until one side closes.
pub async fn relay<U>(client: &mut Conn, mut upstream: U) -> io::Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !client.buf.is_empty() {
        upstream.write_all(&client.buf).await?;
        client.buf.clear();
    }
    client.release_idle_buffer();
    let _ = tokio::io::copy_bidirectional(&mut client.stream, &mut upstream).await;
    let _ = client.stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_line_leaves_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"+OK\r\n* 1 EXISTS\r\n").await.unwrap();
        assert_eq!(first_line(&mut a).await.unwrap(), "+OK");
        let mut rest = [0u8; 12];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"* 1 EXISTS\r\n");
    }
}
