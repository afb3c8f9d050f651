//! The delay / reorder nemesis: packets between one node and the other cluster nodes wait
//! `ms ± jitter_ms` (drawn per packet, so a jitter larger than the gap between two packets
//! reorders them) before they go on, in both directions.
//!
//! This kernel has no `tc netem`, so the delay is done in userspace: in the node's namespace,
//! iptables rules (iptables-nft, table `ip filter`) in a chain of our own, [`CHAIN`], send the
//! node's cluster traffic — INPUT from and OUTPUT to the other nodes' addresses — to NFQUEUE
//! [`QUEUE`] with `--queue-bypass`, and a delayer process (`halyard-lab chaos-delayd`, started by
//! [`start`] inside the namespace) holds each packet in a timer heap and accepts it when its
//! time comes ([`run`]). Clients and the host leg are not delayed.
//!
//! Limits: at most `max_queue` packets wait at once (the kernel's queue length; beyond it, and
//! if the delayer falls behind, packets pass undelayed — fail-open, never dropped); a delayer
//! gives up after `max_secs` (an hour by default) if nobody heals it. Without the delayer the
//! bypass flag lets packets through, so a killed delayer leaves no partition behind.
//!
//! [`stop`] (part of [`crate::heal`]) removes exactly our rules — the jumps from INPUT and
//! OUTPUT, then the chain — and ends the delayer, which accepts what it still holds.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Target;
use crate::helper;
use crate::nfqueue::Queue;

/// The iptables chain (table `filter`) that holds the delay rules in a node's namespace.
pub const CHAIN: &str = "HALYARD_DELAY";

/// The NFQUEUE number the rules and the delayer use (queues are per network namespace).
pub const QUEUE: u16 = 7700;

/// Packets the kernel holds for the delayer at most, by default.
pub const DEFAULT_MAX_QUEUE: u32 = 8192;

/// A delayer gives up after this long without being healed, by default.
pub const DEFAULT_MAX_SECS: u64 = 3600;

/// The helper kind (pid and log file names).
const KIND: &str = "delay";

/// The hidden subcommand that runs the delayer.
pub const SUBCOMMAND: &str = "chaos-delayd";

/// How long each packet waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelaySpec {
    pub ms: u64,
    /// Each packet waits `ms` plus a uniform draw from `-jitter_ms..=jitter_ms` (at least 0).
    pub jitter_ms: u64,
}

/// What a delayer did, for its log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DelayStats {
    pub packets: u64,
    /// Most packets held at once.
    pub max_held: usize,
    /// Packets accepted at once because `max_held` packets were already waiting.
    pub overflow: u64,
    /// Packets accepted while one that arrived before them was still held (reordered).
    pub reordered: u64,
    pub verdict_errors: u64,
    pub overruns: u64,
}

/// A small xorshift generator: the delays need spread, not cryptographic quality.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl DelaySpec {
    fn draw(&self, rng: &mut Rng) -> Duration {
        let base = self.ms as i64 * 1000;
        let j = self.jitter_ms as i64 * 1000;
        let off = if j > 0 {
            (rng.next() % (2 * j as u64 + 1)) as i64 - j
        } else {
            0
        };
        Duration::from_micros((base + off).max(0) as u64)
    }
}

/// Holds every packet of `q` for its drawn delay and accepts it, until `stop` is set or
/// `until`; then accepts whatever is still held. At most `max_held` packets wait at once
/// (more are accepted at once).
pub fn run(
    q: &mut Queue,
    spec: DelaySpec,
    max_held: usize,
    stop: &AtomicBool,
    until: Instant,
) -> io::Result<DelayStats> {
    let mut rng = Rng::new();
    let mut st = DelayStats::default();
    // (due, arrival number, packet id): ties keep arrival order.
    let mut heap: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut arrived = Vec::new();
    let mut due = Vec::new();
    // Arrival numbers of the packets held, to count reordering.
    let mut held: BTreeSet<u64> = BTreeSet::new();
    let mut next_arrival = 0u64;
    let result = (|| -> io::Result<()> {
        // Bounded by `until`; each round waits in poll at most 100 ms.
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let now = Instant::now();
            due.clear();
            while let Some(Reverse((t, n, id))) = heap.peek().copied() {
                if t > now {
                    break;
                }
                heap.pop();
                held.remove(&n);
                if held.first().is_some_and(|first| *first < n) {
                    st.reordered += 1;
                }
                due.push(id);
            }
            q.accept(&due)?;
            let wait = heap
                .peek()
                .map_or(Duration::from_millis(100), |Reverse((t, _, _))| {
                    t.saturating_duration_since(now)
                })
                .min(Duration::from_millis(100));
            if !wait.is_zero() && !q.wait(wait)? {
                continue;
            }
            q.recv(&mut arrived, 1024)?;
            let now = Instant::now();
            for id in arrived.drain(..) {
                st.packets += 1;
                if heap.len() >= max_held {
                    st.overflow += 1;
                    q.accept(&[id])?;
                    next_arrival += 1;
                    continue;
                }
                heap.push(Reverse((now + spec.draw(&mut rng), next_arrival, id)));
                held.insert(next_arrival);
                next_arrival += 1;
            }
            st.max_held = st.max_held.max(heap.len());
        }
        Ok(())
    })();
    // Whatever happened, nothing stays held (the kernel would drop it with the socket).
    let rest: Vec<u32> = heap.drain().map(|Reverse((_, _, id))| id).collect();
    let released = q.accept(&rest);
    st.verdict_errors = q.verdict_errors;
    st.overruns = q.overruns;
    result?;
    released?;
    Ok(st)
}

/// The body of `halyard-lab chaos-delayd`: binds `queue` in the current namespace, says `ready`,
/// delays until SIGTERM / SIGINT or `max_secs`.
pub fn daemon(
    queue: u16,
    spec: DelaySpec,
    max_queue: u32,
    max_secs: u64,
) -> Result<DelayStats, String> {
    helper::catch_stop_signals();
    let mut q =
        Queue::bind(queue, max_queue).map_err(|e| format!("binding NFQUEUE {queue}: {e}"))?;
    helper::say_ready();
    run(
        &mut q,
        spec,
        max_queue as usize,
        &helper::STOP,
        Instant::now() + Duration::from_secs(max_secs),
    )
    .map_err(|e| format!("NFQUEUE {queue}: {e}"))
}

fn iptables(ns: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables in {ns}: {e}"))
}

/// Whether an `iptables` command is installed (without it no delay rules can exist).
fn have_iptables() -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| std::path::Path::new(d).join("iptables").exists())
}

/// The `iptables-restore --noflush` input that creates [`CHAIN`] (emptied if it exists) with
/// rules queueing traffic from and to `peers`, and jumps to it first thing in INPUT and OUTPUT.
pub fn rules_script(queue: u16, peers: &[Ipv4Addr]) -> String {
    let mut s = format!("*filter\n:{CHAIN} - [0:0]\n");
    for p in peers {
        for dir in ["-s", "-d"] {
            s.push_str(&format!(
                "-A {CHAIN} {dir} {p}/32 -j NFQUEUE --queue-num {queue} --queue-bypass\n"
            ));
        }
    }
    s.push_str(&format!(
        "-I INPUT 1 -j {CHAIN}\n-I OUTPUT 1 -j {CHAIN}\nCOMMIT\n"
    ));
    s
}

/// Installs the delay rules for traffic with `peers` in namespace `ns` (after removing ours,
/// so the jumps are not doubled).
pub fn install_rules(ns: &str, queue: u16, peers: &[Ipv4Addr]) -> Result<(), String> {
    use std::io::Write;
    remove_rules(ns)?;
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "iptables-restore",
            "-w",
            "5",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("stdin")?
        .write_all(rules_script(queue, peers).as_bytes())
        .map_err(|e| format!("iptables-restore in {ns}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore in {ns}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-restore in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether namespace `ns` has our chain.
pub fn has_rules(ns: &str) -> Result<bool, String> {
    if !have_iptables() {
        return Ok(false);
    }
    Ok(iptables(ns, &["-n", "-L", CHAIN])?.status.success())
}

/// Removes the jumps to [`CHAIN`] and the chain from namespace `ns`; nothing else. Idempotent.
pub fn remove_rules(ns: &str) -> Result<(), String> {
    if !has_rules(ns)? {
        return Ok(());
    }
    for base in ["INPUT", "OUTPUT"] {
        // One jump is what we insert; a few more rounds clear doubles left by a crash.
        for _ in 0..8 {
            if !iptables(ns, &["-D", base, "-j", CHAIN])?.status.success() {
                break;
            }
        }
    }
    for op in ["-F", "-X"] {
        let out = iptables(ns, &[op, CHAIN])?;
        if !out.status.success() {
            return Err(format!(
                "iptables {op} {CHAIN} in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The inode of a network namespace, to tell which namespace a process is in.
pub(crate) fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Starts delaying `t`'s traffic with `peers` (replacing a delay already on `t`): the delayer
/// first, then the rules that feed it.
pub fn start(t: &Target, peers: &[Ipv4Addr], spec: DelaySpec) -> Result<(), String> {
    stop(t)?;
    if !have_iptables() {
        return Err("delay: iptables is not installed (scripts/deps.sh --test)".into());
    }
    let args: Vec<String> = vec![
        SUBCOMMAND.into(),
        "--queue".into(),
        QUEUE.to_string(),
        "--ms".into(),
        spec.ms.to_string(),
        "--jitter".into(),
        spec.jitter_ms.to_string(),
    ];
    helper::spawn(t, KIND, Some(&t.ns), &args)?;
    if let Err(e) = install_rules(&t.ns, QUEUE, peers) {
        let _ = stop(t);
        return Err(e);
    }
    Ok(())
}

/// Stops delaying `t`'s traffic: rules first (nothing new is queued), then the delayer, which
/// accepts what it holds. Idempotent.
pub fn stop(t: &Target) -> Result<(), String> {
    let rules = remove_rules(&t.ns);
    let ns = netns_inode(&format!("/run/netns/{}", t.ns));
    let helper = helper::stop(t, KIND, |pid, cmd| {
        cmd.iter().any(|a| a == SUBCOMMAND)
            && ns.is_some()
            && netns_inode(&format!("/proc/{pid}/ns/net")) == ns
    });
    rules.and(helper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_queues_both_directions_of_each_peer_and_jumps_once() {
        let s = rules_script(
            7,
            &[Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)],
        );
        assert!(s.starts_with("*filter\n:HALYARD_DELAY - [0:0]\n"), "{s}");
        for p in ["198.18.0.2", "198.18.0.3"] {
            for d in ["-s", "-d"] {
                assert!(
                    s.contains(&format!(
                        "-A HALYARD_DELAY {d} {p}/32 -j NFQUEUE --queue-num 7 --queue-bypass\n"
                    )),
                    "{s}"
                );
            }
        }
        assert_eq!(s.matches("-I INPUT 1 -j HALYARD_DELAY").count(), 1);
        assert_eq!(s.matches("-I OUTPUT 1 -j HALYARD_DELAY").count(), 1);
        assert!(s.ends_with("COMMIT\n"));
    }

    #[test]
    fn draws_stay_within_the_jitter_and_spread() {
        let mut rng = Rng::new();
        let spec = DelaySpec {
            ms: 10,
            jitter_ms: 4,
        };
        let d: Vec<Duration> = (0..2000).map(|_| spec.draw(&mut rng)).collect();
        assert!(
            d.iter()
                .all(|x| *x >= Duration::from_millis(6) && *x <= Duration::from_millis(14))
        );
        assert!(d.iter().any(|x| *x < Duration::from_millis(7)));
        assert!(d.iter().any(|x| *x > Duration::from_millis(13)));
        // A jitter larger than the delay never goes below zero.
        let spec = DelaySpec {
            ms: 1,
            jitter_ms: 5,
        };
        assert!((0..1000).all(|_| spec.draw(&mut rng) <= Duration::from_millis(6)));
        let exact = DelaySpec {
            ms: 3,
            jitter_ms: 0,
        };
        assert_eq!(exact.draw(&mut rng), Duration::from_millis(3));
    }

    /// Two private namespaces joined by a veth pair (10.250.0.1 in `a`, 10.250.0.2 in `b`),
    /// removed when dropped, also when the test fails.
    struct Pair {
        a: String,
        b: String,
    }

    fn sh(args: &[&str]) {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    impl Pair {
        fn new() -> Pair {
            let tag = format!("hcd{}", std::process::id());
            let p = Pair {
                a: format!("{tag}-a"),
                b: format!("{tag}-b"),
            };
            p.remove();
            sh(&["ip", "netns", "add", &p.a]);
            sh(&["ip", "netns", "add", &p.b]);
            let (va, vb) = (format!("{tag}a"), format!("{tag}b"));
            sh(&[
                "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
            ]);
            for (v, ns, ip) in [(&va, &p.a, "10.250.0.1/24"), (&vb, &p.b, "10.250.0.2/24")] {
                sh(&["ip", "link", "set", v, "netns", ns]);
                sh(&["ip", "-n", ns, "addr", "add", ip, "dev", v]);
                sh(&["ip", "-n", ns, "link", "set", v, "up"]);
                sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            }
            p
        }
        fn remove(&self) {
            for ns in [&self.a, &self.b] {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            self.remove();
        }
    }

    /// Runs `f` on a thread inside namespace `ns` (a namespace is a per-thread property, and
    /// sockets keep the namespace they were made in).
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file we opened.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }

    /// A delayer bound in namespace `ns` on its own thread; stopped when dropped.
    struct Delayer {
        stop: std::sync::Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<DelayStats>>,
    }

    impl Delayer {
        fn start(ns: &str, spec: DelaySpec) -> Delayer {
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            let path = format!("/run/netns/{ns}");
            let s = stop.clone();
            let thread = std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                let file = std::fs::File::open(&path).unwrap();
                // SAFETY: as in `in_ns`.
                assert_eq!(
                    unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                let mut q = Queue::bind(QUEUE, 1024).unwrap();
                tx.send(()).unwrap();
                run(
                    &mut q,
                    spec,
                    1024,
                    &s,
                    Instant::now() + Duration::from_secs(60),
                )
                .unwrap()
            });
            rx.recv_timeout(Duration::from_secs(5))
                .expect("delayer bound");
            Delayer {
                stop,
                thread: Some(thread),
            }
        }
        fn finish(mut self) -> DelayStats {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    impl Drop for Delayer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Median round trip of one byte over `s`, from `n` rounds.
    fn rtt(s: &mut std::net::TcpStream, n: usize) -> Duration {
        use std::io::{Read, Write};
        let mut v: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                s.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                t.elapsed()
            })
            .collect();
        v.sort();
        v[n / 2]
    }

    /// In private namespaces: a delay of 50 ms on `a` turns a sub-millisecond TCP round trip
    /// into >= 100 ms (both directions wait), a jitter above the packet gap reorders datagrams
    /// without losing any, the bypass lets traffic through while no delayer is bound, and
    /// removing the rules restores the round trip.
    #[test]
    fn delays_reorders_and_heals_in_private_namespaces() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: network namespaces and NFQUEUE need root");
            return;
        }
        assert!(
            have_iptables(),
            "iptables is not installed: scripts/deps.sh --test"
        );
        let pair = Pair::new();
        let b_ip = Ipv4Addr::new(10, 250, 0, 2);
        let listener = in_ns(&pair.b, || {
            std::net::TcpListener::bind("10.250.0.2:7007").unwrap()
        });
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = listener.accept().unwrap();
            c.set_nodelay(true).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut b = [0u8; 1];
            // Bounded: the client sends fewer than 10 000 bytes, then closes.
            for _ in 0..10_000 {
                if c.read_exact(&mut b).is_err() || c.write_all(&b).is_err() {
                    break;
                }
            }
        });
        let mut s = in_ns(&pair.a, || {
            std::net::TcpStream::connect("10.250.0.2:7007").unwrap()
        });
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

        let before = rtt(&mut s, 21);
        eprintln!("round trip before: {before:?}");
        assert!(before < Duration::from_millis(5), "{before:?}");

        install_rules(&pair.a, QUEUE, &[b_ip]).unwrap();
        assert!(has_rules(&pair.a).unwrap());
        let bypass = rtt(&mut s, 21);
        eprintln!("round trip with the rules but no delayer (bypass): {bypass:?}");
        assert!(bypass < Duration::from_millis(5), "{bypass:?}");

        let d = Delayer::start(
            &pair.a,
            DelaySpec {
                ms: 50,
                jitter_ms: 0,
            },
        );
        let delayed = rtt(&mut s, 11);
        let st = d.finish();
        eprintln!("round trip with 50 ms delay: {delayed:?} ({st:?})");
        assert!(delayed >= Duration::from_millis(100), "{delayed:?}");
        assert!(delayed < Duration::from_millis(300), "{delayed:?}");
        assert!(st.packets >= 22, "{st:?}");

        // Reordering: 200 datagrams 1 ms apart, each delayed 20 ± 15 ms.
        let rx = in_ns(&pair.b, || {
            std::net::UdpSocket::bind("10.250.0.2:7008").unwrap()
        });
        let tx = in_ns(&pair.a, || {
            std::net::UdpSocket::bind("10.250.0.1:0").unwrap()
        });
        let d = Delayer::start(
            &pair.a,
            DelaySpec {
                ms: 20,
                jitter_ms: 15,
            },
        );
        for i in 0..200u32 {
            tx.send_to(&i.to_be_bytes(), "10.250.0.2:7008").unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        while got.len() < 200 {
            match rx.recv(&mut buf) {
                Ok(4) => got.push(u32::from_be_bytes(buf)),
                _ => break,
            }
        }
        let st = d.finish();
        let inversions = got.windows(2).filter(|w| w[1] < w[0]).count();
        eprintln!(
            "200 datagrams 1 ms apart at 20±15 ms: {} received, {inversions} inversions ({st:?})",
            got.len()
        );
        assert_eq!(got.len(), 200);
        assert!(inversions >= 10, "{inversions}");
        assert!(st.reordered > 0, "{st:?}");

        remove_rules(&pair.a).unwrap();
        assert!(!has_rules(&pair.a).unwrap());
        remove_rules(&pair.a).unwrap();
        let after = rtt(&mut s, 21);
        eprintln!("round trip after the rules are removed: {after:?}");
        assert!(after < Duration::from_millis(5), "{after:?}");
        drop(s);
        echo.join().unwrap();
    }
}
