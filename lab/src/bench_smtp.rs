//! `halyard-lab bench-smtp` — SMTP acceptance throughput and time-to-250, for any server.
//!
//! Opens `--sessions` connections to each `--target` and sends `--messages` messages of
//! `--size` bytes in all (MAIL/RCPT/DATA per message on a kept-alive connection), timing each
//! message from its final `.` to the `250`. Targets are measured one after the other in the
//! same run and printed as one table, so a Halyard cluster and a Postfix on the same machine
//! are compared side by side. (`scripts/bench-smtp.sh` starts both and also runs Postfix's
//! own `smtp-source` against each.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Args)]
pub struct BenchSmtpArgs {
    /// `name=host:port`, repeatable (e.g. `halyard=127.0.0.1:2525 postfix=127.0.0.1:2625`).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    #[arg(long, default_value_t = 20000)]
    pub messages: usize,
    #[arg(long, default_value_t = 10240)]
    pub size: usize,
    #[arg(long, default_value = "sender@bench.example")]
    pub from: String,
    /// Recipient per target, `name=address` (default: bench@bench.test).
    #[arg(long = "rcpt")]
    pub rcpts: Vec<String>,
}

async fn reply(r: &mut BufReader<TcpStream>) -> Result<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad reply {line:?}"))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

async fn expect(r: &mut BufReader<TcpStream>, want: u16, what: &str) -> Result<()> {
    let code = reply(r).await?;
    if code != want {
        bail!("{what}: got {code}, wanted {want}");
    }
    Ok(())
}

/// One session: messages until the shared counter runs out; returns each message's
/// time from end of data to 250.
async fn session(
    addr: String,
    from: String,
    rcpt: String,
    body: Arc<Vec<u8>>,
    left: Arc<AtomicUsize>,
) -> Result<Vec<Duration>> {
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let mut r = BufReader::new(tcp);
    expect(&mut r, 220, "greeting").await?;
    r.get_mut().write_all(b"EHLO bench.example\r\n").await?;
    expect(&mut r, 250, "EHLO").await?;
    let mut times = Vec::new();
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        r.get_mut()
            .write_all(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
            .await?;
        expect(&mut r, 250, "MAIL").await?;
        expect(&mut r, 250, "RCPT").await?;
        expect(&mut r, 354, "DATA").await?;
        r.get_mut().write_all(&body).await?;
        let t = Instant::now();
        r.get_mut().write_all(b".\r\n").await?;
        expect(&mut r, 250, "end of data").await?;
        times.push(t.elapsed());
    }
    r.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(times)
}

fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: sender@bench.example\r\nTo: bench@bench.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01234567\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

pub async fn run(args: BenchSmtpArgs) -> Result<()> {
    let body = Arc::new(message(args.size));
    let mut rows = Vec::new();
    for t in &args.targets {
        let (name, addr) = t
            .split_once('=')
            .ok_or_else(|| anyhow!("--target {t:?}: use name=host:port"))?;
        let rcpt = args
            .rcpts
            .iter()
            .find_map(|r| r.strip_prefix(&format!("{name}=")))
            .unwrap_or("bench@bench.test")
            .to_string();
        let left = Arc::new(AtomicUsize::new(args.messages));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.sessions {
            tasks.push(tokio::spawn(session(
                addr.to_string(),
                args.from.clone(),
                rcpt.clone(),
                body.clone(),
                left.clone(),
            )));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.extend(task.await??);
        }
        let secs = start.elapsed().as_secs_f64();
        times.sort();
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        };
        rows.push((
            name.to_string(),
            times.len(),
            times.len() as f64 / secs,
            pct(0.5),
            pct(0.99),
        ));
    }
    println!(
        "{} sessions, {} messages of {} bytes per target",
        args.sessions, args.messages, args.size
    );
    println!(
        "{:<12} {:>9} {:>10} {:>12} {:>12}",
        "target", "messages", "msg/s", "p50 250 ms", "p99 250 ms"
    );
    for (n, count, rate, p50, p99) in &rows {
        println!("{n:<12} {count:>9} {rate:>10.0} {p50:>12.2} {p99:>12.2}");
    }
    if rows.len() == 2 && rows[1].2 > 0.0 {
        println!(
            "ratio {}/{}: {:.2}x",
            rows[0].0,
            rows[1].0,
            rows[0].2 / rows[1].2
        );
    }
    Ok(())
}
