//! The restart policy: when an app's runner exits, whether and when the supervisor starts it
//! again, when the app counts as crashlooping, and when the supervisor gives up (parks it until an
//! operator's `reset`). Pure functions over plain data with the clock passed in; the app manager
//! only applies the decisions.
//!
//! The knobs are the manifest's `[restart]` section ([`RestartSpec`]):
//! - the first restart after a failure happens at once; restart *n* ≥ 2 waits
//!   `backoff_initial_ms × backoff_multiplier^(n-2)`, capped at `backoff_max_ms`;
//! - a runner that stayed up `reset_after_ms` was healthy: the failure count starts over;
//! - `crashloop_after` failures in a row (default 3) mark the app `crashloop` (it keeps
//!   restarting);
//! - after `max_restarts` restarts in a row that all failed, the app is parked (`None`: never).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{RestartPolicy, RestartSpec};

/// Why the supervisor does not restart an app any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaveUp {
    /// Too many failures in a row; only `reset` restarts it.
    Parked,
    /// The policy does not restart this exit (`never`, or a clean exit under `on-failure`).
    Finished,
}

/// What the policy remembers about one app. Kept in the app's record, so a supervisor restart
/// does not forget a crashloop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartTracker {
    /// Restarts made since this version was deployed.
    pub restarts: u32,
    /// Exits in a row without a healthy period in between.
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GaveUp>,
}

/// How a runner ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exit code 0.
    Clean,
    /// A non-zero exit, a signal, or an exit whose status nobody saw.
    Failure,
}

/// What to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the runner again at `at` (`delay` after the exit).
    Restart { at: Timestamp, delay: Duration },
    /// Give up until `reset`.
    Park,
    /// Leave it exited (the policy does not restart this exit).
    Leave,
}

impl RestartTracker {
    /// The app has failed so often in a row (`crashloop_after` of its restart spec) that it
    /// counts as crashlooping.
    pub fn in_crashloop(&self, crashloop_after: u32) -> bool {
        self.consecutive_failures >= crashloop_after.max(1) && self.gave_up.is_none()
    }

    pub fn is_parked(&self) -> bool {
        self.gave_up == Some(GaveUp::Parked)
    }

    /// The operator's `reset`: forget the failures and un-park (the restart count stays).
    pub fn reset(self) -> Self {
        Self {
            restarts: self.restarts,
            consecutive_failures: 0,
            gave_up: None,
        }
    }

    /// The operator started the app again: a `Finished` app may run once more; a parked one
    /// stays parked until `reset`.
    pub fn started_by_operator(self) -> Self {
        Self {
            gave_up: self.gave_up.filter(|g| *g == GaveUp::Parked),
            ..self
        }
    }

    /// A runner up since `started` is still up at `now`: once it has been up `reset_after_ms`,
    /// it was healthy and the failure count starts over.
    pub fn settle(self, spec: &RestartSpec, started: Timestamp, now: Timestamp) -> Self {
        if uptime(started, now) >= Duration::from_millis(spec.reset_after_ms) {
            Self {
                consecutive_failures: 0,
                ..self
            }
        } else {
            self
        }
    }

    /// The runner that started at `started` ended at `exited`. Returns the new tracker and what to
    /// do.
    pub fn on_exit(
        self,
        spec: &RestartSpec,
        started: Timestamp,
        exited: Timestamp,
        kind: ExitKind,
    ) -> (Self, Decision) {
        let restarts_this_exit = match (spec.policy, kind) {
            (RestartPolicy::Never, _) | (RestartPolicy::OnFailure, ExitKind::Clean) => false,
            (RestartPolicy::Always, _) | (RestartPolicy::OnFailure, ExitKind::Failure) => true,
        };
        let settled = self.settle(spec, started, exited);
        if !restarts_this_exit {
            let left = Self {
                gave_up: Some(GaveUp::Finished),
                ..settled
            };
            return (left, Decision::Leave);
        }
        let failures = settled.consecutive_failures.saturating_add(1);
        if spec.max_restarts.is_some_and(|max| failures > max) {
            let parked = Self {
                consecutive_failures: failures,
                gave_up: Some(GaveUp::Parked),
                ..settled
            };
            return (parked, Decision::Park);
        }
        let delay = restart_delay(spec, failures);
        let next = Self {
            restarts: settled.restarts.saturating_add(1),
            consecutive_failures: failures,
            gave_up: None,
        };
        let at = Timestamp(
            exited
                .unix_ms()
                .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        );
        (next, Decision::Restart { at, delay })
    }
}

/// The delay before the restart that follows failure number `failures` (1 = the first failure
/// since the app was last healthy): none for the first, then exponential from
/// `backoff_initial_ms`, capped at `backoff_max_ms`.
pub fn restart_delay(spec: &RestartSpec, failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exponent = i32::try_from(failures - 2).unwrap_or(i32::MAX);
    let ms = spec.backoff_initial_ms as f64 * spec.backoff_multiplier.powi(exponent);
    let cap = spec.backoff_max_ms as f64;
    let ms = if ms.is_finite() { ms.min(cap) } else { cap };
    Duration::from_millis(ms.max(0.0) as u64)
}

fn uptime(started: Timestamp, until: Timestamp) -> Duration {
    Duration::from_millis(until.unix_ms().saturating_sub(started.unix_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);

    fn at(ms: u64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    fn spec() -> RestartSpec {
        RestartSpec::default()
    }

    /// Fails the app `n` times, each runner living `uptime_ms`, restarting when told; returns the
    /// decisions and the last tracker.
    fn fail_repeatedly(
        spec: &RestartSpec,
        n: usize,
        uptime_ms: u64,
    ) -> (Vec<Decision>, RestartTracker) {
        let mut t = RestartTracker::default();
        let mut now = T0;
        let mut decisions = Vec::new();
        for _ in 0..n {
            let started = now;
            let exited = Timestamp(started.0 + uptime_ms);
            let (next, d) = t.on_exit(spec, started, exited, ExitKind::Failure);
            t = next;
            decisions.push(d);
            match d {
                Decision::Restart { at, .. } => now = at,
                _ => break,
            }
        }
        (decisions, t)
    }

    fn delays(decisions: &[Decision]) -> Vec<u64> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Restart { delay, .. } => delay.as_millis() as u64,
                other => panic!("expected a restart, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn first_restart_is_immediate_then_backoff_doubles_to_the_cap() {
        let (decisions, t) = fail_repeatedly(&spec(), 10, 5);
        assert_eq!(
            delays(&decisions),
            vec![
                0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(t.restarts, 10);
        assert_eq!(t.consecutive_failures, 10);
        assert_eq!(t.gave_up, None, "max_restarts = None never parks");
    }

    #[test]
    fn restart_time_is_exit_time_plus_delay() {
        let (t, d) = RestartTracker::default().on_exit(&spec(), T0, at(50), ExitKind::Failure);
        assert_eq!(
            d,
            Decision::Restart {
                at: at(50),
                delay: Duration::ZERO
            }
        );
        let (_, d) = t.on_exit(&spec(), at(50), at(80), ExitKind::Failure);
        assert_eq!(
            d,
            Decision::Restart {
                at: at(1_080),
                delay: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn delay_function_edges() {
        let s = spec();
        assert_eq!(restart_delay(&s, 0), Duration::ZERO);
        assert_eq!(restart_delay(&s, 1), Duration::ZERO);
        assert_eq!(restart_delay(&s, 2), Duration::from_millis(1_000));
        assert_eq!(restart_delay(&s, u32::MAX), Duration::from_millis(60_000));
        let flat = RestartSpec {
            backoff_multiplier: 1.0,
            backoff_initial_ms: 250,
            ..s
        };
        assert_eq!(restart_delay(&flat, 2), Duration::from_millis(250));
        assert_eq!(restart_delay(&flat, 50), Duration::from_millis(250));
        let steep = RestartSpec {
            backoff_multiplier: 10.0,
            backoff_initial_ms: 10,
            backoff_max_ms: 3_600_000,
            ..s
        };
        assert_eq!(restart_delay(&steep, 4), Duration::from_millis(1_000));
        assert_eq!(restart_delay(&steep, 400), Duration::from_millis(3_600_000));
    }

    #[test]
    fn a_healthy_period_starts_the_count_over() {
        let s = spec();
        let (_, t) = fail_repeatedly(&s, 5, 5);
        assert_eq!(t.consecutive_failures, 5);
        // The next runner stays up exactly reset_after_ms: healthy, so its failure is the first.
        let (t2, d) = t.on_exit(&s, T0, at(s.reset_after_ms), ExitKind::Failure);
        assert_eq!(t2.consecutive_failures, 1);
        assert_eq!(t2.restarts, 6);
        assert!(matches!(d, Decision::Restart { delay, .. } if delay.is_zero()));
        // One millisecond short of it is not healthy.
        let (t3, d) = t.on_exit(&s, T0, at(s.reset_after_ms - 1), ExitKind::Failure);
        assert_eq!(t3.consecutive_failures, 6);
        assert!(matches!(d, Decision::Restart { delay, .. } if delay == Duration::from_secs(16)));
    }

    #[test]
    fn settle_resets_only_after_the_healthy_period() {
        let s = spec();
        let (_, t) = fail_repeatedly(&s, 4, 5);
        assert!(t.in_crashloop(s.crashloop_after));
        assert_eq!(t.settle(&s, T0, at(s.reset_after_ms - 1)), t);
        let settled = t.settle(&s, T0, at(s.reset_after_ms));
        assert_eq!(settled.consecutive_failures, 0);
        assert_eq!(settled.restarts, t.restarts);
        assert!(!settled.in_crashloop(s.crashloop_after));
    }

    #[test]
    fn crashloop_from_the_third_failure_in_a_row() {
        let s = spec();
        for (n, expected) in [(1, false), (2, false), (3, true), (7, true)] {
            let (_, t) = fail_repeatedly(&s, n, 5);
            assert_eq!(
                t.in_crashloop(s.crashloop_after),
                expected,
                "after {n} failures"
            );
        }
        // Configurable per app.
        let (_, t) = fail_repeatedly(&s, 4, 5);
        assert!(!t.in_crashloop(5));
        let (_, t) = fail_repeatedly(&s, 5, 5);
        assert!(t.in_crashloop(5));
    }

    #[test]
    fn parks_after_max_restarts_failed_restarts() {
        let s = RestartSpec {
            max_restarts: Some(3),
            ..spec()
        };
        let (decisions, t) = fail_repeatedly(&s, 10, 5);
        assert_eq!(decisions.len(), 4);
        assert_eq!(delays(&decisions[..3]), vec![0, 1_000, 2_000]);
        assert_eq!(decisions[3], Decision::Park);
        assert_eq!(t.restarts, 3);
        assert_eq!(t.consecutive_failures, 4);
        assert!(t.is_parked());
        assert!(
            !t.in_crashloop(s.crashloop_after),
            "a parked app is parked, not crashlooping"
        );

        let zero = RestartSpec {
            max_restarts: Some(0),
            ..spec()
        };
        let (decisions, t) = fail_repeatedly(&zero, 3, 5);
        assert_eq!(decisions, vec![Decision::Park]);
        assert_eq!(t.restarts, 0);
    }

    #[test]
    fn long_lived_failures_never_park() {
        let s = RestartSpec {
            max_restarts: Some(2),
            ..spec()
        };
        // Every runner lives past reset_after_ms: each failure is the first of its run.
        let (decisions, t) = fail_repeatedly(&s, 20, s.reset_after_ms);
        assert_eq!(delays(&decisions), vec![0; 20]);
        assert_eq!(t.gave_up, None);
        assert_eq!(t.restarts, 20);
    }

    #[test]
    fn reset_unparks_and_the_next_failure_restarts_at_once() {
        let s = RestartSpec {
            max_restarts: Some(1),
            ..spec()
        };
        let (_, t) = fail_repeatedly(&s, 5, 5);
        assert!(t.is_parked());
        let t = t.reset();
        assert_eq!(t.gave_up, None);
        assert_eq!(t.consecutive_failures, 0);
        assert_eq!(t.restarts, 1, "the count of restarts survives a reset");
        let (t, d) = t.on_exit(&s, T0, at(5), ExitKind::Failure);
        assert!(matches!(d, Decision::Restart { delay, .. } if delay.is_zero()));
        assert_eq!(t.restarts, 2);
    }

    #[test]
    fn policies_decide_which_exits_restart() {
        let cases = [
            (RestartPolicy::Always, ExitKind::Clean, true),
            (RestartPolicy::Always, ExitKind::Failure, true),
            (RestartPolicy::OnFailure, ExitKind::Clean, false),
            (RestartPolicy::OnFailure, ExitKind::Failure, true),
            (RestartPolicy::Never, ExitKind::Clean, false),
            (RestartPolicy::Never, ExitKind::Failure, false),
        ];
        for (policy, kind, restarts) in cases {
            let s = RestartSpec { policy, ..spec() };
            let (t, d) = RestartTracker::default().on_exit(&s, T0, at(5), kind);
            if restarts {
                assert!(matches!(d, Decision::Restart { .. }), "{policy:?} {kind:?}");
                assert_eq!((t.restarts, t.gave_up), (1, None));
            } else {
                assert_eq!(d, Decision::Leave, "{policy:?} {kind:?}");
                assert_eq!(t.gave_up, Some(GaveUp::Finished));
                assert_eq!((t.restarts, t.consecutive_failures), (0, 0));
            }
        }
    }

    #[test]
    fn operator_start_clears_finished_but_not_parked() {
        let finished = RestartTracker {
            gave_up: Some(GaveUp::Finished),
            ..Default::default()
        };
        assert_eq!(finished.started_by_operator().gave_up, None);
        let parked = RestartTracker {
            gave_up: Some(GaveUp::Parked),
            consecutive_failures: 4,
            restarts: 3,
        };
        assert_eq!(parked.started_by_operator(), parked);
    }

    #[test]
    fn a_clock_that_went_backwards_counts_as_zero_uptime() {
        let s = spec();
        let (t, d) = RestartTracker::default().on_exit(&s, at(500), T0, ExitKind::Failure);
        assert_eq!(t.consecutive_failures, 1);
        assert!(matches!(d, Decision::Restart { at, .. } if at == T0));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let t = RestartTracker {
            restarts: u32::MAX,
            consecutive_failures: u32::MAX,
            gave_up: None,
        };
        let (t, d) = t.on_exit(&spec(), T0, at(1), ExitKind::Failure);
        assert_eq!((t.restarts, t.consecutive_failures), (u32::MAX, u32::MAX));
        assert!(matches!(d, Decision::Restart { delay, .. } if delay == Duration::from_secs(60)));
    }

    #[test]
    fn tracker_round_trips_through_the_record() {
        let t = RestartTracker {
            restarts: 4,
            consecutive_failures: 5,
            gave_up: Some(GaveUp::Parked),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"gave_up\":\"parked\""), "{json}");
        assert_eq!(serde_json::from_str::<RestartTracker>(&json).unwrap(), t);
        let fresh: RestartTracker =
            serde_json::from_str(r#"{"restarts":0,"consecutive_failures":0}"#).unwrap();
        assert_eq!(fresh, RestartTracker::default());
    }
}
