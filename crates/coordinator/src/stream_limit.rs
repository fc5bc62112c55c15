//! Caps on open watch streams, per identity and in total. A watch stream holds a connection, a
//! task and a broadcast receiver for as long as the client likes, so without a cap any caller
//! could open them until the coordinator runs out of memory or file descriptors.
//!
//! [`StreamLimiter`] owns the counts; [`StreamLimiter::try_open`] hands out a [`StreamPermit`]
//! that gives its slot back when dropped (the stream ends, the client goes away). Identities are
//! plain strings chosen by the caller (see `api::caller`), so the limiter does not care whether
//! they come from a credential, a certificate or an address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "{identity} already holds {limit} open watch streams, the most one caller may hold (--max-watch-streams-per-identity); close one first"
    )]
    PerIdentity { identity: String, limit: usize },
    #[error(
        "the coordinator already serves {limit} open watch streams, its limit (--max-watch-streams); try again later"
    )]
    Total { limit: usize },
}

#[derive(Debug, Default)]
struct Counts {
    by_identity: HashMap<String, usize>,
    total: usize,
}

#[derive(Debug)]
pub struct StreamLimiter {
    per_identity: usize,
    total: usize,
    counts: Mutex<Counts>,
}

/// One open stream's slot; released on drop.
#[derive(Debug)]
pub struct StreamPermit {
    limiter: Arc<StreamLimiter>,
    identity: String,
}

impl StreamLimiter {
    pub fn new(per_identity: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_identity,
            total,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for `identity`, or says which cap is reached.
    pub fn try_open(self: &Arc<Self>, identity: &str) -> Result<StreamPermit, LimitExceeded> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = c.by_identity.get(identity).copied().unwrap_or(0);
        if mine >= self.per_identity {
            return Err(LimitExceeded::PerIdentity {
                identity: identity.to_string(),
                limit: self.per_identity,
            });
        }
        if c.total >= self.total {
            return Err(LimitExceeded::Total { limit: self.total });
        }
        c.total += 1;
        c.by_identity.insert(identity.to_string(), mine + 1);
        Ok(StreamPermit {
            limiter: Arc::clone(self),
            identity: identity.to_string(),
        })
    }

    /// Streams open now: `(for identity, in total)`.
    pub fn open(&self, identity: &str) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (c.by_identity.get(identity).copied().unwrap_or(0), c.total)
    }

    fn release(&self, identity: &str) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        match c.by_identity.get_mut(identity) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                // Forget identities with nothing open, so the map stays as small as the streams.
                c.by_identity.remove(identity);
            }
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.limiter.release(&self.identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_gets_its_share_and_dropping_gives_it_back() {
        let l = StreamLimiter::new(2, 10);
        let a1 = l.try_open("peer:a").unwrap();
        let _a2 = l.try_open("peer:a").unwrap();
        let err = l.try_open("peer:a").unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::PerIdentity {
                identity: "peer:a".into(),
                limit: 2
            }
        );
        assert!(err.to_string().contains("--max-watch-streams-per-identity"));
        // Others are not affected.
        let _b = l.try_open("ip:10.0.0.1").unwrap();
        assert_eq!(l.open("peer:a"), (2, 3));
        drop(a1);
        assert_eq!(l.open("peer:a"), (1, 2));
        let _a3 = l.try_open("peer:a").unwrap();
    }

    #[test]
    fn the_total_caps_everyone_together() {
        let l = StreamLimiter::new(2, 3);
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| l.try_open(id).unwrap())
            .collect();
        let err = l.try_open("d").unwrap_err();
        assert_eq!(err, LimitExceeded::Total { limit: 3 });
        assert!(err.to_string().contains("--max-watch-streams"));
        drop(held);
        assert_eq!(l.open("a"), (0, 0));
        assert!(l.counts.lock().unwrap().by_identity.is_empty());
        let _d = l.try_open("d").unwrap();
    }

    #[test]
    fn permits_released_from_other_threads_balance_out() {
        let l = StreamLimiter::new(1000, 1000);
        let permits: Vec<_> = (0..400)
            .map(|i| l.try_open(&format!("id{}", i % 7)).unwrap())
            .collect();
        let handles: Vec<_> = permits
            .into_iter()
            .map(|p| std::thread::spawn(move || drop(p)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(l.open("id0"), (0, 0));
    }
}
