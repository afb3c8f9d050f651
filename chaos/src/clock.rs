//! Clock nemeses through libfaketime: a node's wall clock jumps by an offset
//! ([`crate::Fault::ClockSkew`]) or flips between two offsets ([`crate::Fault::ClockStrobe`]).
//!
//! The testbed (`halyard-lab cluster up` / `start`) starts every node with [`node_env`]:
//! `LD_PRELOAD` of libfaketime (the thread-safe `libfaketimeMT.so.1` when present), its offset
//! read from a file of the node's own ([`file`], `<state dir>/clock-n<id>`, created as `+0`)
//! and re-read each time the real second changes (`FAKETIME_CACHE_DURATION` [`CACHE_SECS`]),
//! and `FAKETIME_DONT_FAKE_MONOTONIC=1`: only
//! `CLOCK_REALTIME` (`SystemTime`, `chrono::Utc::now`, message dates, log timestamps, the
//! audit times of fencing records) is skewed. `CLOCK_MONOTONIC` — `Instant`, what Raft timers,
//! leases and the lease watchdog run on — stays true: a skewed node must still be safe, and
//! this nemesis checks exactly that the wall clock is not trusted for anything that matters.
//!
//! The file holds one libfaketime offset, `+S.mmm` / `-S.mmm` seconds (see the libfaketime
//! README, "Using offsets for relative dates"); [`write_offset`] replaces it atomically so a
//! node never reads it half-written. A new offset takes effect within a second; a strobe
//! faster than that is sampled, the node seeing one of its two offsets each second.
//!
//! libfaketime also keeps a semaphore and shared memory per process in `/dev/shm`, removed
//! only when that process exits normally; a node killed with -9 leaves them, and a later
//! process given the same pid would die at start. [`node_env`] sweeps the stale ones first
//! ([`sweep_stale_shm`]).
//!
//! A strobe runs in a helper process (`halyard-lab chaos-strobed`, see [`crate::helper`]) that
//! flips the file every `period_ms` for `duration_ms` and then writes `+0`; [`stop`] (part of
//! [`crate::heal`]) ends it and writes `+0`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Target;
use crate::helper;

/// `FAKETIME_CACHE_DURATION`: libfaketime reads the file again once more than this many whole
/// seconds have passed since it last did, so 0 is "each new second" (1 would be every other
/// second; `FAKETIME_NO_CACHE` would read the file on every wall-clock call, ten times slower).
pub const CACHE_SECS: u64 = 0;

/// The hidden subcommand that runs a strobe.
pub const SUBCOMMAND: &str = "chaos-strobed";

const KIND: &str = "strobe";

/// Where libfaketime may be installed (Debian's package first), thread-safe build first: a node
/// reads the clock from many threads.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime",
    "/usr/lib/aarch64-linux-gnu/faketime",
    "/usr/lib/faketime",
    "/usr/local/lib/faketime",
    "/usr/local/lib",
];
const LIBRARY_NAMES: &[&str] = &["libfaketimeMT.so.1", "libfaketime.so.1"];

/// The libfaketime library, if installed.
pub fn library() -> Option<PathBuf> {
    LIBRARY_DIRS
        .iter()
        .flat_map(|d| LIBRARY_NAMES.iter().map(move |n| Path::new(d).join(n)))
        .find(|p| p.exists())
}

/// The offset file of node `id` in the testbed's state directory.
pub fn file(state_dir: &Path, id: u64) -> PathBuf {
    state_dir.join(format!("clock-n{id}"))
}

/// The environment that puts node `id` under libfaketime, creating its offset file (`+0`)
/// unless it exists (a node restarted during a skew keeps it); `None` without libfaketime.
pub fn node_env(state_dir: &Path, id: u64) -> Result<Option<Vec<(String, String)>>, String> {
    let Some(lib) = library() else {
        return Ok(None);
    };
    sweep_stale_shm();
    let f = file(state_dir, id);
    if !f.exists() {
        write_offset(&f, 0)?;
    }
    Ok(Some(vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE".into(), f.display().to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_CACHE_DURATION".into(), CACHE_SECS.to_string()),
    ]))
}

/// Removes libfaketime's per-process files (`/dev/shm/faketime_shm_<pid>`,
/// `/dev/shm/sem.faketime_sem_<pid>`) of processes that no longer exist; how many.
pub fn sweep_stale_shm() -> usize {
    let Ok(rd) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten().take(100_000) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = name
            .strip_prefix("faketime_shm_")
            .or_else(|| name.strip_prefix("sem.faketime_sem_"))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// libfaketime's spelling of an offset of `ms` milliseconds: `+0`, `+1.500`, `-0.250`.
pub fn spec(ms: i64) -> String {
    if ms == 0 {
        return "+0".into();
    }
    let sign = if ms < 0 { '-' } else { '+' };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

/// Replaces the offset in `path` (write a sibling, then rename over it).
pub fn write_offset(path: &Path, ms: i64) -> Result<(), String> {
    // Per process: heal and a strobe may write at the same moment.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", spec(ms)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The offset file of target `t`, which must exist (the node runs under libfaketime).
fn target_file(t: &Target) -> Result<PathBuf, String> {
    let dir = t
        .state_dir
        .as_deref()
        .ok_or_else(|| format!("node {}: no state directory, so no clock file", t.id))?;
    let f = file(dir, t.id);
    if !f.exists() {
        return Err(format!(
            "node {} does not run under libfaketime ({} is missing): install libfaketime \
             (scripts/deps.sh --test) and restart the node",
            t.id,
            f.display()
        ));
    }
    Ok(f)
}

/// Sets `t`'s wall-clock offset (ending a strobe on it first).
pub fn skew(t: &Target, offset_ms: i64) -> Result<(), String> {
    let f = target_file(t)?;
    stop_strobe(t)?;
    write_offset(&f, offset_ms)
}

/// Flips the offset in `path` between `delta_ms` and 0 every `period`, for `duration` or until
/// `stop`; leaves it at 0. Calls `started` after the first write. The number of flips.
pub fn strobe(
    path: &Path,
    delta_ms: i64,
    period: Duration,
    duration: Duration,
    stop: &AtomicBool,
    started: impl FnOnce(),
) -> Result<u64, String> {
    let period = period.max(Duration::from_millis(1));
    let t0 = Instant::now();
    let mut flips = 0u64;
    let mut started = Some(started);
    // Bounded by `duration` (and so by duration / period flips).
    let r = (|| {
        while t0.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let on = flips.is_multiple_of(2);
            write_offset(path, if on { delta_ms } else { 0 })?;
            flips += 1;
            if let Some(f) = started.take() {
                f();
            }
            let next = t0 + period * flips.min(u32::MAX as u64) as u32;
            // Sleep in slices so a stop is noticed within 50 ms.
            while Instant::now() < next && t0.elapsed() < duration && !stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
        }
        Ok(())
    })();
    if let Some(f) = started.take() {
        f();
    }
    write_offset(path, 0)?;
    r.map(|()| flips)
}

/// The body of `halyard-lab chaos-strobed`.
pub fn daemon(path: &Path, delta_ms: i64, period_ms: u64, duration_ms: u64) -> Result<u64, String> {
    helper::catch_stop_signals();
    strobe(
        path,
        delta_ms,
        Duration::from_millis(period_ms),
        Duration::from_millis(duration_ms),
        &helper::STOP,
        helper::say_ready,
    )
}

/// Starts a strobe on `t` (replacing one already running) and returns once it has begun.
pub fn start_strobe(
    t: &Target,
    delta_ms: i64,
    period_ms: u64,
    duration_ms: u64,
) -> Result<(), String> {
    let f = target_file(t)?;
    stop_strobe(t)?;
    let args: Vec<String> = vec![
        SUBCOMMAND.into(),
        "--file".into(),
        f.display().to_string(),
        "--delta-ms".into(),
        delta_ms.to_string(),
        "--period-ms".into(),
        period_ms.to_string(),
        "--duration-ms".into(),
        duration_ms.to_string(),
    ];
    helper::spawn(t, KIND, None, &args).map(|_| ())
}

fn stop_strobe(t: &Target) -> Result<(), String> {
    let Some(dir) = t.state_dir.as_deref() else {
        return Ok(());
    };
    let f = file(dir, t.id).display().to_string();
    helper::stop(t, KIND, |_, cmd| {
        cmd.iter().any(|a| a == SUBCOMMAND) && cmd.contains(&f)
    })
}

/// Ends any strobe on `t` and puts its clock back (offset 0, if it runs under libfaketime).
/// Idempotent.
pub fn stop(t: &Target) -> Result<(), String> {
    let r = stop_strobe(t);
    if let Some(dir) = t.state_dir.as_deref() {
        let f = file(dir, t.id);
        if f.exists() {
            write_offset(&f, 0)?;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_spelled_as_libfaketime_reads_them() {
        assert_eq!(spec(0), "+0");
        assert_eq!(spec(1500), "+1.500");
        assert_eq!(spec(-250), "-0.250");
        assert_eq!(spec(-3_600_000), "-3600.000");
        assert_eq!(spec(7), "+0.007");
    }

    #[test]
    fn a_strobe_flips_and_ends_at_zero() {
        let dir = std::env::temp_dir().join(format!("hcs{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = file(&dir, 1);
        let seen = std::sync::Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(280) {
                    if let Ok(x) = std::fs::read_to_string(&f) {
                        seen.lock().unwrap().push(x);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let flips = strobe(
                &f,
                2000,
                Duration::from_millis(40),
                Duration::from_millis(240),
                &stop,
                || {},
            )
            .unwrap();
            assert!((5..=7).contains(&flips), "{flips}");
        });
        let seen = seen.into_inner().unwrap();
        assert!(seen.iter().any(|x| x == "+2.000\n"), "{seen:?}");
        assert!(seen.iter().any(|x| x == "+0\n"), "{seen:?}");
        assert!(
            seen.iter().all(|x| x == "+2.000\n" || x == "+0\n"),
            "{seen:?}"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "+0\n");
        // A stop ends it early, still at zero.
        stop.store(true, Ordering::Relaxed);
        let flips = strobe(
            &f,
            -5,
            Duration::from_secs(1),
            Duration::from_secs(60),
            &stop,
            || {},
        )
        .unwrap();
        assert_eq!(flips, 0);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "+0\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_shared_memory_of_dead_processes_is_swept() {
        // A pid above pid_max's ceiling (2^22) cannot be alive.
        let dead = "/dev/shm/faketime_shm_4194999";
        let mine = format!("/dev/shm/sem.faketime_sem_{}", std::process::id());
        std::fs::write(dead, b"").unwrap();
        std::fs::write(&mine, b"").unwrap();
        sweep_stale_shm();
        assert!(!Path::new(dead).exists());
        assert!(Path::new(&mine).exists());
        std::fs::remove_file(&mine).unwrap();
    }

    /// The file format and environment really move `date`'s clock (skipped without
    /// libfaketime).
    #[test]
    fn libfaketime_reads_the_offset_file() {
        if library().is_none() {
            eprintln!("skipped: libfaketime is not installed (apt-get install libfaketime)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("hcf{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = node_env(&dir, 3).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(file(&dir, 3)).unwrap(), "+0\n");
        let date = |env: &[(String, String)]| -> i64 {
            let o = std::process::Command::new("date")
                .arg("+%s")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        assert!((date(&env) - now()).abs() <= 1);
        write_offset(&file(&dir, 3), -7_200_000).unwrap();
        assert!((date(&env) - now() + 7200).abs() <= 1);
        write_offset(&file(&dir, 3), 90_500).unwrap();
        assert!((date(&env) - now() - 90).abs() <= 2);
        // An existing file is kept (a node restarted while skewed stays skewed).
        node_env(&dir, 3).unwrap();
        assert_eq!(std::fs::read_to_string(file(&dir, 3)).unwrap(), "+90.500\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
