//! The lease watchdog of one group's floating address.
//!
//! [`Holder`] owns the address while a lease runs: [`Holder::acquire`] adds it (netlink) and
//! announces it (gratuitous ARP) with a deadline, [`Holder::extend`] moves the deadline while
//! the master keeps hearing from a quorum, and a plain OS thread removes the address the
//! moment the deadline passes without an extension. The thread does not depend on the async
//! runtime: a master whose runtime is starved or stuck still lets go of the address on time.
//! (A process stopped by SIGSTOP cannot: the kernel keeps answering for an address whose
//! owner is frozen. That is what the external fence hook is for; see the crate docs.)

use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::netlink::Cidr;

/// Where a group's floating address lives on this node.
#[derive(Debug, Clone)]
pub struct AddressSpec {
    /// Interface the address is added to (`eth0`).
    pub interface: String,
    pub cidr: Cidr,
    /// Gratuitous ARP announcements after acquisition, and the gap between them.
    pub announce_count: u32,
    pub announce_gap: Duration,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    deadline: Option<Instant>,
    /// Times the watchdog removed the address because the lease ran out.
    expiries: u64,
    quit: bool,
    /// The last deadline the guard was told about.
    guard_told: Option<Instant>,
}

struct Inner {
    group: String,
    spec: Option<AddressSpec>,
    /// Told about every acquisition and release, to clean up after a crash.
    guard: Option<Arc<crate::guard::Guard>>,
    state: Mutex<State>,
    cv: Condvar,
}

/// The floating address of one group on this node (or, without an address, just the lease).
#[derive(Clone)]
pub struct Holder {
    inner: Arc<Inner>,
}

impl Holder {
    /// Starts the watchdog. With `spec = None` the holder tracks the lease only (address-less
    /// mode: services are gated, nothing is added to an interface).
    pub fn new(
        group: &str,
        spec: Option<AddressSpec>,
        guard: Option<Arc<crate::guard::Guard>>,
    ) -> std::io::Result<Holder> {
        let inner = Arc::new(Inner {
            group: group.to_string(),
            spec,
            guard,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let w = inner.clone();
        std::thread::Builder::new()
            .name(format!("lease-{group}"))
            .spawn(move || watchdog(&w))?;
        Ok(Holder { inner })
    }

    pub fn address(&self) -> Option<Ipv4Addr> {
        self.inner.spec.as_ref().map(|s| s.cidr.addr)
    }

    pub fn spec(&self) -> Option<&AddressSpec> {
        self.inner.spec.as_ref()
    }

    /// Takes the address with the lease ending at `deadline`; an error leaves it released.
    pub fn acquire(&self, deadline: Instant) -> std::io::Result<()> {
        let mut st = self.lock();
        if Instant::now() >= deadline {
            return Err(std::io::Error::other("lease already expired"));
        }
        if let Some(spec) = &self.inner.spec {
            if let Some(g) = &self.inner.guard {
                g.hold(
                    &spec.interface,
                    spec.cidr,
                    deadline.saturating_duration_since(Instant::now()),
                );
            }
            crate::netlink::add_address(&spec.interface, spec.cidr)?;
            if let Err(e) = crate::arp::announce(
                &spec.interface,
                spec.cidr.addr,
                spec.announce_count.max(1),
                spec.announce_gap,
            ) {
                // The address is ours; peers with a stale neighbour entry learn the hard
                // way (their next ARP). Not a reason to give up mastership.
                tracing::warn!(group = %self.inner.group, error = %e, "gratuitous ARP failed");
            }
        }
        st.held = true;
        st.deadline = Some(deadline);
        st.guard_told = Some(deadline);
        self.inner.cv.notify_all();
        Ok(())
    }

    /// Moves the lease deadline forward; false when the address is not held (the lease ran
    /// out and the watchdog already removed it, or it was released).
    pub fn extend(&self, deadline: Instant) -> bool {
        let mut st = self.lock();
        if !st.held {
            return false;
        }
        if st.deadline.is_none_or(|d| deadline > d) {
            // No wake-up for the watchdog: a later deadline only means that, when it wakes
            // at the earlier one, it goes back to sleep until this one. Waking it here cost
            // two context switches per commit (extend runs at every metrics report).
            let was_unset = st.deadline.is_none();
            st.deadline = Some(deadline);
            if was_unset {
                self.inner.cv.notify_all();
            }
            // The guard enforces the lease too (see crate::guard); tell it at most every
            // 20 ms of progress, not at every metrics report.
            if let (Some(g), Some(spec)) = (&self.inner.guard, &self.inner.spec)
                && st
                    .guard_told
                    .is_none_or(|t| deadline >= t + Duration::from_millis(20))
            {
                st.guard_told = Some(deadline);
                g.hold(
                    &spec.interface,
                    spec.cidr,
                    deadline.saturating_duration_since(Instant::now()),
                );
            }
        }
        true
    }

    /// Gives the address up now (idempotent).
    pub fn release(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        st.deadline = None;
        let was = std::mem::replace(&mut st.held, false);
        self.inner.cv.notify_all();
        if let Some(spec) = &self.inner.spec
            && was
        {
            crate::netlink::del_address(&spec.interface, spec.cidr)?;
            if let Some(g) = &self.inner.guard {
                g.release(&spec.interface, spec.cidr);
            }
        }
        Ok(())
    }

    pub fn is_held(&self) -> bool {
        self.lock().held
    }

    /// How long the current lease has left (`None` when not held).
    pub fn remaining(&self) -> Option<Duration> {
        let st = self.lock();
        st.held
            .then(|| {
                st.deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
            })
            .flatten()
    }

    /// Times the watchdog had to remove the address because a lease ran out.
    pub fn expiries(&self) -> u64 {
        self.lock().expiries
    }

    /// Releases the address and stops the watchdog thread.
    pub fn close(&self) {
        let _ = self.release();
        let mut st = self.lock();
        st.quit = true;
        self.inner.cv.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn watchdog(inner: &Inner) {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.quit {
            return;
        }
        match (st.held, st.deadline) {
            (true, Some(d)) => {
                let now = Instant::now();
                if now >= d {
                    st.held = false;
                    st.deadline = None;
                    st.expiries += 1;
                    if let Some(spec) = &inner.spec {
                        match crate::netlink::del_address(&spec.interface, spec.cidr) {
                            Ok(()) => {
                                if let Some(g) = &inner.guard {
                                    g.release(&spec.interface, spec.cidr);
                                }
                            }
                            Err(e) => {
                                tracing::error!(group = %inner.group, error = %e, "lease expired but the address could not be removed");
                            }
                        }
                    }
                    tracing::warn!(group = %inner.group, late_us = now.duration_since(d).as_micros() as u64, "lease expired: address released by the watchdog");
                    continue;
                }
                st = inner
                    .cv
                    .wait_timeout(st, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            _ => {
                st = inner.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_out_without_extension_and_not_with_it() {
        let h = Holder::new("t", None, None).unwrap();
        assert!(!h.is_held());
        h.acquire(Instant::now() + Duration::from_millis(150))
            .unwrap();
        assert!(h.is_held());
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(60));
            assert!(h.extend(Instant::now() + Duration::from_millis(150)));
        }
        assert!(h.is_held(), "extended lease must hold");
        assert_eq!(h.expiries(), 0);
        let t = Instant::now();
        while h.is_held() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!h.is_held(), "lease without extension must run out");
        assert_eq!(h.expiries(), 1);
        assert!(!h.extend(Instant::now() + Duration::from_secs(1)));
        h.close();
    }
}
