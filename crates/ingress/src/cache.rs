//! A short-lived memory of lookups, so a node's ingress asks the coordinator about an app at
//! most once per `ttl` instead of once per request. Pure: the caller passes the time.
//!
//! An answer older than `ttl` is not used for a request, but is kept for another `stale_for`
//! and used when asking again fails: a coordinator restart does not take the apps down.

use crate::source::AppLookup;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tabbify_wire::app::AppName;

/// Above this many entries, expired ones are dropped on insert (names come from outside).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    stale_for: Duration,
    entries: HashMap<AppName, (Instant, AppLookup)>,
}

impl LookupCache {
    pub(crate) fn new(ttl: Duration, stale_for: Duration) -> Self {
        Self {
            ttl,
            stale_for,
            entries: HashMap::new(),
        }
    }

    /// The answer for `app` if it is younger than `ttl`.
    pub(crate) fn fresh(&self, app: &AppName, now: Instant) -> Option<&AppLookup> {
        self.entries
            .get(app)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, lookup)| lookup)
    }

    /// The answer for `app` if it is younger than `ttl + stale_for`: for when asking failed.
    pub(crate) fn stale(&self, app: &AppName, now: Instant) -> Option<&AppLookup> {
        self.entries
            .get(app)
            .filter(|(at, _)| !self.expired(*at, now))
            .map(|(_, lookup)| lookup)
    }

    pub(crate) fn put(&mut self, app: AppName, lookup: AppLookup, now: Instant) {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&app) {
            let (ttl, stale_for) = (self.ttl, self.stale_for);
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl + stale_for);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(app, (now, lookup));
    }

    fn expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) >= self.ttl + self.stale_for
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn name(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }

    fn replicas() -> AppLookup {
        let addr: SocketAddr = "[fd00::1]:8080".parse().unwrap();
        AppLookup::Replicas(vec![addr])
    }

    #[test]
    fn fresh_until_ttl_then_stale_until_ttl_plus_stale_for() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(1), Duration::from_secs(10));
        let a = name("a");
        assert_eq!(cache.fresh(&a, t0), None);
        cache.put(a.clone(), replicas(), t0);
        assert_eq!(cache.fresh(&a, t0), Some(&replicas()));
        let later = t0 + Duration::from_millis(999);
        assert_eq!(cache.fresh(&a, later), Some(&replicas()));
        let after_ttl = t0 + Duration::from_secs(1);
        assert_eq!(cache.fresh(&a, after_ttl), None);
        assert_eq!(cache.stale(&a, after_ttl), Some(&replicas()));
        assert_eq!(cache.stale(&a, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn unknown_is_remembered_too() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(1), Duration::ZERO);
        cache.put(name("nope"), AppLookup::Unknown, t0);
        assert_eq!(cache.fresh(&name("nope"), t0), Some(&AppLookup::Unknown));
    }

    #[test]
    fn many_names_do_not_grow_the_cache_without_bound() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(1), Duration::from_secs(1));
        for i in 0..MAX_ENTRIES {
            cache.put(name(&format!("a{i}")), AppLookup::Unknown, t0);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // All expired by now: they go, the new one stays.
        let t1 = t0 + Duration::from_secs(3);
        cache.put(name("fresh"), replicas(), t1);
        assert_eq!(cache.len(), 1);
        // None expired: the table is cleared rather than grown.
        for i in 0..MAX_ENTRIES {
            cache.put(name(&format!("b{i}")), AppLookup::Unknown, t1);
        }
        assert!(cache.len() <= MAX_ENTRIES);
        assert_eq!(cache.fresh(&name("b0"), t1), None);
    }
}
