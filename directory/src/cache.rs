//! A bounded cache with a time to live, for directory lookups ("cached in the process, with
//! configurable size and time", as the seed puts it). Negative answers (unknown addresses) are
//! cached too, usually for a shorter time, so a spammer's dictionary attack does not become a
//! directory load test.
//!
//! Eviction is oldest-inserted-first once `capacity` is reached; expired entries are dropped
//! when met. A failed lookup is never cached.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    map: HashMap<K, (V, Instant)>,
    order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The cached value if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.map.get(key) {
            Some((v, expires)) if *expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                g.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.map
            .insert(key.clone(), (value, Instant::now() + ttl))
            .is_none()
        {
            g.order.push_back(key);
        }
        while g.map.len() > self.capacity {
            match g.order.pop_front() {
                Some(old) => {
                    g.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys re-inserted after expiry leave stale entries in `order`; keep it bounded.
        if g.order.len() > 2 * self.capacity {
            let Inner { map, order } = &mut *g;
            order.retain(|k| map.contains_key(k));
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_evicts() {
        let c = TtlCache::new(2);
        c.insert("a", 1, Duration::from_millis(50));
        c.insert("b", 2, Duration::from_secs(60));
        assert_eq!(c.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(c.get(&"a"), None, "expired");
        c.insert("c", 3, Duration::from_secs(60));
        c.insert("d", 4, Duration::from_secs(60));
        assert_eq!(c.len(), 2, "bounded");
        assert_eq!(c.get(&"d"), Some(4));
        c.insert("z", 9, Duration::ZERO);
        assert_eq!(c.get(&"z"), None, "ttl 0 disables caching");
    }
}
