//! Background helper processes of the nemeses that outlive the call that applied them: the
//! packet delayer (`halyard-lab chaos-delayd`, inside a node's namespace) and the clock strober
//! (`halyard-lab chaos-strobed`). `halyard-lab chaos` applies a fault and exits, and a Jepsen run
//! applies and heals many, so the helper is a process of its own, in a process group of its own
//! (a Ctrl-C at the terminal does not reach it), whose pid is kept in a file next to the
//! testbed's state.
//!
//! A helper prints one line, `ready`, on standard output once it is in place (the queue bound,
//! the first offset written); [`spawn`] waits for it so that the fault is on when `apply`
//! returns. Its standard error goes to a log file beside the pid file.
//!
//! [`stop`] ends a helper with SIGTERM (it then undoes what it did: accepts held packets,
//! writes a zero offset), SIGKILL after two seconds, and finds strays whose pid file was lost
//! by scanning `/proc` for the helper's subcommand.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Target;

/// Where helpers of nodes without a state directory keep their files.
const FALLBACK_DIR: &str = "/run/halyard-chaos";

/// How long a helper has to say `ready`.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// How long a helper has to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// The directory of `t`'s helper files.
pub(crate) fn dir(t: &Target) -> PathBuf {
    t.state_dir
        .clone()
        .unwrap_or_else(|| Path::new(FALLBACK_DIR).join(&t.ns))
}

pub(crate) fn pid_file(t: &Target, kind: &str) -> PathBuf {
    dir(t).join(format!("chaos-{kind}-n{}.pid", t.id))
}

fn log_file(t: &Target, kind: &str) -> PathBuf {
    dir(t).join(format!("chaos-{kind}-n{}.log", t.id))
}

/// The command line of process `pid`, split at NULs.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True once `pid` is gone or a zombie (reaping it if it is our child).
fn gone(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid we may have spawned; ECHILD otherwise, ignored.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Starts `<this binary> <args>` (inside namespace `netns` if given) as `t`'s helper `kind`,
/// waits for its `ready` line and records its pid.
pub(crate) fn spawn(
    t: &Target,
    kind: &str,
    netns: Option<&str>,
    args: &[String],
) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("the halyard binary: {e}"))?;
    let d = dir(t);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(t, kind))
        .map_err(|e| format!("{}: {e}", log_file(t, kind).display()))?;
    let mut cmd = match netns {
        // `ip netns exec` execs the command: the child's pid is the helper's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let pid = child.id() as i32;
    let out = child.stdout.take().ok_or("helper stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader ends at the first line or when the helper exits (EOF).
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(READY_WITHIN) {
        Ok(line) if line.trim() == "ready" => {}
        other => {
            let _ = child.kill();
            let _ = child.wait();
            let why = match other {
                Ok(l) if l.is_empty() => "exited".to_string(),
                Ok(l) => format!("said {:?}", l.trim()),
                Err(_) => format!("not ready within {READY_WITHIN:?}"),
            };
            return Err(format!(
                "{kind} helper for node {} {why}; see {}",
                t.id,
                log_file(t, kind).display()
            ));
        }
    }
    std::fs::write(pid_file(t, kind), pid.to_string())
        .map_err(|e| format!("{}: {e}", pid_file(t, kind).display()))?;
    Ok(pid)
}

/// Ends `t`'s helper `kind`: the pid in its pid file and any process for which `is_ours`
/// (given the pid and its command line) holds. Idempotent.
pub(crate) fn stop(
    t: &Target,
    kind: &str,
    is_ours: impl Fn(i32, &[String]) -> bool,
) -> Result<(), String> {
    let mut pids: Vec<i32> = Vec::new();
    let pf = pid_file(t, kind);
    if let Some(p) = std::fs::read_to_string(&pf)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        && cmdline(p).is_some_and(|c| is_ours(p, &c))
    {
        pids.push(p);
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                && !pids.contains(&p)
                && cmdline(p).is_some_and(|c| is_ours(p, &c))
            {
                pids.push(p);
            }
        }
    }
    for p in &pids {
        // SAFETY: a helper process of this node (checked by its command line).
        unsafe {
            libc::kill(*p, libc::SIGTERM);
        }
    }
    let t0 = Instant::now();
    while !pids.iter().all(|p| gone(*p)) && t0.elapsed() < TERM_GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in &pids {
        if !gone(*p) {
            // SAFETY: as above.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
    }
    match std::fs::remove_file(&pf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", pf.display())),
    }
}

/// Set by SIGTERM / SIGINT in a helper process.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// In a helper process: SIGTERM and SIGINT set [`STOP`] instead of killing it, so it can undo
/// what it did first.
pub fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// In a helper process: tells [`spawn`] it is ready.
pub fn say_ready() {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(b"ready\n");
    let _ = o.flush();
}
