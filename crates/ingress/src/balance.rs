//! Which replica a request tries first, and which next. Requests rotate over the replicas; a
//! replica that could not be connected to recently is moved to the back for a cooldown, so a
//! dead node costs one connect timeout per cooldown rather than one per request. It is still
//! tried when nothing else is left.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The order to try `replicas` in: rotated to start at `start % len`, then the ones `is_down`
/// says failed recently moved to the end (order among each group kept).
pub(crate) fn attempt_order(
    replicas: &[SocketAddr],
    start: usize,
    is_down: impl Fn(&SocketAddr) -> bool,
) -> Vec<SocketAddr> {
    if replicas.is_empty() {
        return Vec::new();
    }
    let start = start % replicas.len();
    let rotated = replicas[start..].iter().chain(&replicas[..start]);
    let (up, down): (Vec<SocketAddr>, Vec<SocketAddr>) = rotated.partition(|a| !is_down(a));
    up.into_iter().chain(down).collect()
}

/// Replicas that failed to connect, until when they are tried last. Shared by all requests.
#[derive(Debug)]
pub(crate) struct Cooldowns {
    cooldown: Duration,
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Cooldowns {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            until: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn order(&self, replicas: &[SocketAddr], start: usize) -> Vec<SocketAddr> {
        let now = Instant::now();
        let table = self.table();
        attempt_order(replicas, start, |a| table.get(a).is_some_and(|t| *t > now))
    }

    pub(crate) fn failed(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, until| *until > now);
        table.insert(addr, now + self.cooldown);
    }

    pub(crate) fn succeeded(&self, addr: SocketAddr) {
        let mut table = self.table();
        if !table.is_empty() {
            table.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect()
    }

    #[test]
    fn rotates_over_the_replicas() {
        let a = addrs(3);
        assert_eq!(attempt_order(&a, 0, |_| false), vec![a[0], a[1], a[2]]);
        assert_eq!(attempt_order(&a, 1, |_| false), vec![a[1], a[2], a[0]]);
        assert_eq!(attempt_order(&a, 5, |_| false), vec![a[2], a[0], a[1]]);
        assert!(attempt_order(&[], 7, |_| false).is_empty());
    }

    #[test]
    fn down_replicas_go_last_but_stay() {
        let a = addrs(3);
        let order = attempt_order(&a, 0, |x| *x == a[0]);
        assert_eq!(order, vec![a[1], a[2], a[0]]);
        let order = attempt_order(&a, 2, |_| true);
        assert_eq!(order, vec![a[2], a[0], a[1]]);
    }

    #[test]
    fn a_failed_replica_is_last_until_it_succeeds() {
        let a = addrs(2);
        let c = Cooldowns::new(Duration::from_secs(60));
        c.failed(a[0]);
        assert_eq!(c.order(&a, 0), vec![a[1], a[0]]);
        assert_eq!(c.order(&a, 1), vec![a[1], a[0]]);
        c.succeeded(a[0]);
        assert_eq!(c.order(&a, 0), vec![a[0], a[1]]);
        let instant = Cooldowns::new(Duration::ZERO);
        instant.failed(a[0]);
        assert_eq!(instant.order(&a, 0), vec![a[0], a[1]]);
    }
}
