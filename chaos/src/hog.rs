//! CPU starvation: busy processes beside a node (`halyard-lab chaos-hogd`, started inside the
//! node's network namespace), each thread spinning at normal priority. On the testbed's
//! machine every node shares the same few cores, so a hog on one node slows all of them a
//! little and that node most (its namespace's processes are its neighbours). What it tests:
//! that a master whose runtime is starved of CPU keeps its lease (heartbeats still go out and
//! their acknowledgements are still read in time) or, if it cannot, gives the address up
//! before anyone else may take it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{Target, helper};

/// The helper's subcommand of `halyard-lab`.
pub const SUBCOMMAND: &str = "chaos-hogd";
const KIND: &str = "hog";

/// Longest a hog runs if nobody heals (a harness that died).
pub const DEFAULT_MAX_SECS: u64 = 600;

/// The body of `halyard-lab chaos-hogd`: `threads` spinning threads, `ready`, then until
/// SIGTERM / SIGINT or `max_secs`. Returns the spin count (a rough measure of the CPU taken).
pub fn daemon(threads: usize, max_secs: u64) -> Result<u64, String> {
    helper::catch_stop_signals();
    let spinners: Vec<_> = (0..threads.max(1))
        .map(|_| {
            std::thread::spawn(|| {
                let mut n = 0u64;
                while !helper::STOP.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                n
            })
        })
        .collect();
    helper::say_ready();
    let until = Instant::now() + Duration::from_secs(max_secs);
    while !helper::STOP.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    helper::STOP.store(true, Ordering::Relaxed);
    Ok(spinners.into_iter().map(|s| s.join().unwrap_or(0)).sum())
}

/// Starts `threads` spinning threads in `t`'s namespace (replacing a hog already there).
pub fn start(t: &Target, threads: usize) -> Result<(), String> {
    stop(t)?;
    let args: Vec<String> = vec![SUBCOMMAND.into(), "--threads".into(), threads.to_string()];
    helper::spawn(t, KIND, Some(&t.ns), &args).map(|_| ())
}

/// Ends `t`'s hog. Idempotent.
pub fn stop(t: &Target) -> Result<(), String> {
    let ns = crate::delay::netns_inode(&format!("/run/netns/{}", t.ns));
    helper::stop(t, KIND, |pid, cmd| {
        cmd.iter().any(|a| a == SUBCOMMAND)
            && ns.is_some()
            && crate::delay::netns_inode(&format!("/proc/{pid}/ns/net")) == ns
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hog_spins_and_stops_when_asked() {
        let h = std::thread::spawn(|| super::daemon(2, 1));
        let spun = h.join().expect("hog thread").expect("hog");
        assert!(spun > 0);
    }
}
