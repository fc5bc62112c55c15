//! How long to wait before the next join attempt: exponential from one second, capped, with
//! jitter so a fleet restarting together does not hammer the coordinator in lockstep.

use std::time::Duration;

const BASE: Duration = Duration::from_secs(1);

/// Delay before attempt number `attempt` (0 = the first retry). `jitter` in `[0, 1)` spreads the
/// delay over `[d/2, d)`, where `d` is the exponential delay capped at `cap`.
pub fn join_delay(attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = BASE.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let d = exp.min(cap);
    let jitter = jitter.clamp(0.0, 1.0);
    d.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let cap = Duration::from_secs(30);
        let full: Vec<u64> = (0..8).map(|a| join_delay(a, cap, 1.0).as_secs()).collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            join_delay(1000, cap, 1.0),
            cap,
            "huge attempt numbers stay capped"
        );
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let cap = Duration::from_secs(30);
        assert_eq!(join_delay(3, cap, 0.0), Duration::from_secs(4));
        assert_eq!(join_delay(3, cap, 0.5), Duration::from_secs(6));
        assert_eq!(join_delay(3, cap, 7.0), Duration::from_secs(8), "clamped");
    }
}
