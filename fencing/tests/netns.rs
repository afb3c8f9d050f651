//! Addresses really added and removed through netlink, in a private network namespace of
//! the test thread (namespaces are per thread: nothing here touches the host's interfaces).
//! Needs root, as the test command runs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use halyard_fencing::{AddressSpec, Cidr, Holder, netlink};

fn in_private_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET) failed (these tests need root): {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap();
}

#[test]
fn addresses_come_and_go_through_netlink() {
    in_private_netns(|| {
        let c: Cidr = "198.18.0.100/24".parse().unwrap();
        let a = Ipv4Addr::new(198, 18, 0, 100);
        assert!(!netlink::has_address("lo", a).unwrap());
        netlink::add_address("lo", c).unwrap();
        assert!(netlink::has_address("lo", a).unwrap());
        netlink::add_address("lo", c).expect("adding twice is not an error");
        netlink::del_address("lo", c).unwrap();
        assert!(!netlink::has_address("lo", a).unwrap());
        netlink::del_address("lo", c).expect("removing twice is not an error");
        let e = netlink::add_address("nosuch0", c).unwrap_err();
        assert!(e.to_string().contains("nosuch0"), "{e}");
    });
}

#[test]
fn the_watchdog_removes_the_address_when_the_lease_runs_out() {
    in_private_netns(|| {
        // The watchdog is a thread of its own: it must act in this namespace too, so the
        // holder is created here (threads inherit the creating thread's namespace).
        let c: Cidr = "198.18.0.101/24".parse().unwrap();
        let h = Holder::new(
            "t",
            Some(AddressSpec {
                interface: "lo".into(),
                cidr: c,
                announce_count: 0,
                announce_gap: Duration::from_millis(10),
            }),
            None,
        )
        .unwrap();
        // lo has no ARP; the failed announcement is logged, not fatal.
        h.acquire(Instant::now() + Duration::from_millis(200))
            .unwrap();
        assert!(netlink::has_address("lo", c.addr).unwrap());
        let t = Instant::now();
        while netlink::has_address("lo", c.addr).unwrap() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t.elapsed();
        assert!(
            !netlink::has_address("lo", c.addr).unwrap(),
            "still there after {took:?}"
        );
        assert!(!h.is_held());
        assert_eq!(h.expiries(), 1);
        h.acquire(Instant::now() + Duration::from_secs(10)).unwrap();
        assert!(netlink::has_address("lo", c.addr).unwrap());
        h.release().unwrap();
        assert!(!netlink::has_address("lo", c.addr).unwrap());
        h.close();
    });
}
