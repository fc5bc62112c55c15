//! Request counters of one runner, written by the request path and read by `status`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters shared between the HTTP side (writer) and the control socket (reader).
#[derive(Debug, Default)]
pub struct RequestStats {
    served: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A consistent-enough copy for a `status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub served: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub last_error: Option<String>,
}

impl RequestStats {
    /// A request entered the app; the guard counts it out however it ends.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self.clone(),
        }
    }

    /// The app produced a response.
    pub fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// The runner had to answer for the app (trap, deadline, memory, bad request).
    pub fn failed(&self, error: impl Into<String>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.into());
    }

    /// Records an error that did not belong to one request (e.g. a connection failure).
    pub fn note_error(&self, error: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.into());
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            served: self.served.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Counts one request out of `in_flight` when dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<RequestStats>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_keeps_the_last_error() {
        let stats = Arc::new(RequestStats::default());
        {
            let _a = stats.begin();
            let _b = stats.begin();
            assert_eq!(stats.in_flight(), 2);
            stats.served();
            stats.failed("trap: unreachable");
        }
        stats.failed("deadline");
        let snap = stats.snapshot();
        assert_eq!(
            snap,
            StatsSnapshot {
                served: 1,
                failed: 2,
                in_flight: 0,
                last_error: Some("deadline".into())
            }
        );
    }
}
