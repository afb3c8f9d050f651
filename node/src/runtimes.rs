//! The two runtimes of a serving process: **consensus** and **service**.
//!
//! A master keeps its floating address only while a quorum acknowledges its heartbeats within
//! the lease (600 ms by default). With one runtime for everything, a busy master (IMAP FETCHes,
//! SMTP sessions, TLS handshakes; tokio does not preempt a task) let heartbeat replies wait
//! in its run queues behind that work, and on a 2-core machine it lost its lease under ten
//! IMAP clients although nothing had failed (issue 22 §8). So:
//!
//! - **consensus** (threads `halyard-consensus`): openraft's cores and replication streams,
//!   the proposal batchers, the log syncer, the cluster gRPC server (Raft RPCs; admin RPCs
//!   are small), the fencing controllers and lease watchdogs. Nice -5 ([`CONSENSUS_NICE`])
//!   where the process may raise a priority (root or CAP_SYS_NICE): about three times a
//!   normal thread's weight when the machine is saturated.
//! - **service** (threads `halyard-service`, and its blocking pool, where Argon2 runs): the
//!   IMAP, POP3, SMTP and LMTP listeners and sessions, relayed sessions, the job controller,
//!   outbound delivery. Normal priority.
//!
//! The kernel preempts threads; tokio does not preempt tasks. On their own threads the
//! consensus tasks run when they are ready, not when a session's task yields. Service threads
//! are not niced down instead: that would hand their CPU to whatever else runs on the host
//! (measured: FETCH/s halved next to two busy processes), where only consensus should come
//! first.
//!
//! Code that starts service work from the consensus side (a relayed session arriving over
//! the cluster RPC) spawns it on [`service`]. Without [`install`] (tests that start nodes
//! inside one runtime, or `HALYARD_RUNTIMES=single`, which exists to measure the difference)
//! both are the current runtime.

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// How much more CPU share than service threads consensus threads get (nice(2) units: -5
/// is about three times the weight), where the process may raise a priority (root, or
/// CAP_SYS_NICE; elsewhere they keep the process's and the split alone has to do).
pub const CONSENSUS_NICE: i32 = -5;

/// Threads of the consensus runtime (openraft's work is light but latency-bound).
pub const CONSENSUS_THREADS: usize = 2;

static RUNTIMES: OnceLock<(Handle, Handle)> = OnceLock::new();

/// Changes the calling thread's priority by `nice` (Linux: per thread), if allowed.
fn renice_this_thread(nice: i32) {
    // SAFETY: gettid and setpriority on the calling thread only; failures are ignored (the
    // thread then keeps the process's priority).
    unsafe {
        let tid = libc::gettid();
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, cur + nice);
    }
}

/// Builds the service runtime and the consensus runtime (its threads at
/// [`CONSENSUS_NICE`] where allowed; threads they start, such as the log syncer, inherit it).
/// Returns (service, consensus): [`install`] them, then `block_on` the service one.
pub fn build() -> std::io::Result<(Runtime, Runtime)> {
    let service = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("halyard-service")
        .build()?;
    let consensus = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(CONSENSUS_THREADS)
        .thread_name("halyard-consensus")
        .on_thread_start(|| renice_this_thread(CONSENSUS_NICE))
        .build()?;
    Ok((service, consensus))
}

/// Makes `consensus` and `service` the runtimes of this process (once; later calls are
/// ignored).
pub fn install(consensus: Handle, service: Handle) {
    let _ = RUNTIMES.set((consensus, service));
}

/// Where consensus work runs.
pub fn consensus() -> Handle {
    RUNTIMES
        .get()
        .map_or_else(Handle::current, |(c, _)| c.clone())
}

/// Where client-facing work runs.
pub fn service() -> Handle {
    RUNTIMES
        .get()
        .map_or_else(Handle::current, |(_, s)| s.clone())
}

/// Runs `f` on the consensus runtime and waits for it (from any runtime).
pub async fn on_consensus<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    run_on(consensus(), f).await
}

/// Runs `f` on the service runtime and waits for it.
pub async fn on_service<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    run_on(service(), f).await
}

async fn run_on<F>(rt: Handle, f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match rt.spawn(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn consensus_threads_run_at_a_higher_priority_where_allowed() {
        let (service, consensus) = super::build().expect("runtimes");
        let nice = || {
            // SAFETY: as in `renice_this_thread`.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        };
        let base = nice();
        let s = service.block_on(async move { tokio::spawn(async move { nice() }).await });
        let c = consensus.block_on(async move { tokio::spawn(async move { nice() }).await });
        assert_eq!(s.expect("service task"), base);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(c.expect("consensus task"), base + super::CONSENSUS_NICE);
        }
    }
}
