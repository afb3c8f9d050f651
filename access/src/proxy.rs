//! The multiplexor's relay: log in to the master's IMAP or POP3 listener with the client's
//! credentials, then copy bytes both ways until either side closes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::imap::conn::Conn;

const STEP: Duration = Duration::from_secs(15);

async fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    loop {
        if let Some(p) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=p).collect();
            return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        if buf.len() > 64 * 1024 {
            return Err("master sent an over-long line".into());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(STEP, s.read(&mut chunk))
            .await
            .map_err(|_| "master did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("master closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("master at {addr} did not accept in time"))?
        .map_err(|e| format!("master at {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A logged-in IMAP connection to the master.
pub async fn imap_upstream(addr: &str, login: &str, password: &str) -> Result<TcpStream, String> {
    let mut s = connect(addr).await?;
    let mut buf = Vec::new();
    let greeting = read_line(&mut s, &mut buf).await?;
    if !greeting.starts_with("* OK") {
        return Err(format!("master greeted with {greeting:?}"));
    }
    // Literals (LITERAL+) carry any byte of the login and password without quoting rules.
    let mut cmd = format!("mmp1 LOGIN {{{}+}}\r\n", login.len()).into_bytes();
    cmd.extend_from_slice(login.as_bytes());
    cmd.extend_from_slice(format!(" {{{}+}}\r\n", password.len()).as_bytes());
    cmd.extend_from_slice(password.as_bytes());
    cmd.extend_from_slice(b"\r\n");
    s.write_all(&cmd).await.map_err(|e| e.to_string())?;
    loop {
        let line = read_line(&mut s, &mut buf).await?;
        if let Some(rest) = line.strip_prefix("mmp1 ") {
            return if rest.starts_with("OK") {
                Ok(s)
            } else {
                Err(format!("master refused the login: {rest}"))
            };
        }
    }
}

/// A logged-in POP3 connection to the master.
pub async fn pop3_upstream(addr: &str, login: &str, password: &str) -> Result<TcpStream, String> {
    let mut s = connect(addr).await?;
    let mut buf = Vec::new();
    let greeting = read_line(&mut s, &mut buf).await?;
    if !greeting.starts_with("+OK") {
        return Err(format!("master greeted with {greeting:?}"));
    }
    for (what, value) in [("USER", login), ("PASS", password)] {
        if value.contains(['\r', '\n']) || value.len() > 4096 {
            return Err(format!("{what} cannot be relayed"));
        }
        let line = format!("{what} {value}\r\n");
        s.write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_line(&mut s, &mut buf).await?;
        if !answer.starts_with("+OK") {
            return Err(answer.trim_start_matches("-ERR ").to_string());
        }
    }
    Ok(s)
}

/// Copies bytes both ways (first whatever the client already sent) until one side closes.
pub async fn relay(client: &mut Conn, mut upstream: TcpStream) -> io::Result<()> {
    if !client.buf.is_empty() {
        upstream.write_all(&client.buf).await?;
        client.buf.clear();
    }
    client.release_idle_buffer();
    let _ = tokio::io::copy_bidirectional(&mut client.stream, &mut upstream).await;
    let _ = client.stream.shutdown().await;
    Ok(())
}
