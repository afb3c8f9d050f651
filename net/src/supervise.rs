//! The watcher of internal services (listeners, job controllers, floating-address managers):
//! a service that panics or returns while the node is not stopping is logged and started
//! again, as the seed's built-in monitoring restarts a failed process.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs the future `make` builds as a service until `stop`: when it panics or returns early
/// it is logged and started again, after 100 ms doubling up to 5 s (back to 100 ms once a run
/// lasted a minute). Returns the number of restarts once `stop` is set and the service ended.
pub async fn supervise<F, Fut>(name: String, mut stop: watch::Receiver<bool>, make: F) -> u64
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = Duration::from_millis(100);
    let mut restarts = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        let r = tokio::spawn(make()).await;
        if *stop.borrow() {
            return restarts;
        }
        match r {
            Err(e) if e.is_panic() => {
                tracing::error!(service = %name, restarts, "service panicked; restarting it")
            }
            Err(e) => {
                tracing::error!(service = %name, restarts, error = %e, "service failed; restarting it")
            }
            Ok(()) => {
                tracing::warn!(service = %name, restarts, "service stopped unexpectedly; restarting it")
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return restarts,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
        restarts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_service_is_restarted_until_stop() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop, rx) = watch::channel(false);
        let r = runs.clone();
        let task = tokio::spawn(supervise("test".into(), rx, move || {
            let r = r.clone();
            async move {
                // Panics twice, returns early once, then runs until aborted by the stop.
                match r.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => panic!("boom"),
                    2 => {}
                    _ => std::future::pending::<()>().await,
                }
            }
        }));
        let t = tokio::time::Instant::now();
        while runs.load(Ordering::SeqCst) < 4 && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures, three restarts"
        );
        stop.send(true).unwrap();
        // The running instance does not end by itself; the supervisor returns at the next
        // failure or right away when it is already waiting. Here it is running: abort it.
        task.abort();
    }
}
