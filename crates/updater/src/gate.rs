//! The decisions of an update, as pure functions over plain data: whether to update at all, what
//! a `/health` answer means, and when a restarted supervisor counts as healthy or failed. Time is
//! passed in (elapsed since the gate opened), so every rule is tested without sleeping.

use crate::manifest::reported_version;
use std::time::Duration;
use tabbify_wire::health::SupervisorHealth;

/// What to do with a candidate release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdatePlan {
    /// The candidate already runs.
    UpToDate { version: String },
    /// Refused before anything moves.
    Refuse { reason: String },
    /// Install `to`, swap from `from`.
    Swap { from: String, to: String },
}

/// Whether and how to move from `current` to `candidate`.
pub fn plan_update(
    current: Option<&str>,
    candidate: &str,
    candidate_quarantined: bool,
    force: bool,
) -> UpdatePlan {
    let Some(current) = current else {
        return UpdatePlan::Refuse {
            reason: "no release is installed (no `current` link); run tabbify-fetch first".into(),
        };
    };
    if current == candidate && !force {
        return UpdatePlan::UpToDate {
            version: candidate.to_string(),
        };
    }
    if current == candidate {
        return UpdatePlan::Refuse {
            reason: format!(
                "{candidate} is already current; a forced update needs a different version to \
                 fall back to"
            ),
        };
    }
    if candidate_quarantined && !force {
        return UpdatePlan::Refuse {
            reason: format!(
                "{candidate} is quarantined after a failed update; pass --force to try it again"
            ),
        };
    }
    UpdatePlan::Swap {
        from: current.to_string(),
        to: candidate.to_string(),
    }
}

/// Whether a `/health` body is a healthy supervisor of `release_version`.
pub fn judge_health(health: &SupervisorHealth, release_version: &str) -> Result<(), String> {
    if health.status != "ok" {
        return Err(format!("status is {:?}, not \"ok\"", health.status));
    }
    let want = reported_version(release_version);
    if health.version != want {
        return Err(format!(
            "reports version {}, expected {want} (release {release_version})",
            health.version
        ));
    }
    Ok(())
}

/// How long a restarted supervisor gets, and how long it must stay healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// From the restart to the verdict: no steady health by then fails the update.
    pub window: Duration,
    /// Health must hold this long without a failed probe (catches a crash shortly after start).
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    Waiting,
    Healthy,
    Failed { reason: String },
}

/// Folds probe results into a verdict.
#[derive(Debug, Clone)]
pub struct HealthGate {
    policy: GatePolicy,
    healthy_since: Option<Duration>,
    last_error: Option<String>,
    probes: u32,
}

impl HealthGate {
    pub fn new(policy: GatePolicy) -> Self {
        Self {
            policy,
            healthy_since: None,
            last_error: None,
            probes: 0,
        }
    }

    /// Records one probe taken `elapsed` after the restart.
    pub fn observe(&mut self, elapsed: Duration, probe: Result<(), String>) -> GateVerdict {
        self.probes += 1;
        match probe {
            Ok(()) => {
                let since = *self.healthy_since.get_or_insert(elapsed);
                if elapsed.saturating_sub(since) >= self.policy.settle {
                    return GateVerdict::Healthy;
                }
            }
            Err(e) => {
                self.healthy_since = None;
                self.last_error = Some(e);
            }
        }
        if elapsed >= self.policy.window {
            let reason = match (&self.healthy_since, &self.last_error) {
                (Some(_), Some(e)) => format!(
                    "healthy for less than {:?} within {:?} (earlier: {e})",
                    self.policy.settle, self.policy.window
                ),
                (_, Some(e)) => format!(
                    "not healthy within {:?} ({} probes; last: {e})",
                    self.policy.window, self.probes
                ),
                (_, None) => format!(
                    "healthy for less than {:?} within {:?}",
                    self.policy.settle, self.policy.window
                ),
            };
            return GateVerdict::Failed { reason };
        }
        GateVerdict::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn gate() -> HealthGate {
        HealthGate::new(GatePolicy {
            window: s(10_000),
            settle: s(2_000),
        })
    }

    #[test]
    fn healthy_after_settling() {
        let mut g = gate();
        assert_eq!(g.observe(s(0), Err("refused".into())), GateVerdict::Waiting);
        assert_eq!(g.observe(s(500), Ok(())), GateVerdict::Waiting);
        assert_eq!(g.observe(s(1_500), Ok(())), GateVerdict::Waiting);
        assert_eq!(g.observe(s(2_500), Ok(())), GateVerdict::Healthy);
    }

    #[test]
    fn a_failure_restarts_the_settle_period() {
        let mut g = gate();
        assert_eq!(g.observe(s(0), Ok(())), GateVerdict::Waiting);
        assert_eq!(
            g.observe(s(1_900), Err("crashed".into())),
            GateVerdict::Waiting
        );
        assert_eq!(g.observe(s(2_100), Ok(())), GateVerdict::Waiting);
        assert_eq!(g.observe(s(4_000), Ok(())), GateVerdict::Waiting);
        assert_eq!(g.observe(s(4_100), Ok(())), GateVerdict::Healthy);
    }

    #[test]
    fn never_healthy_fails_at_the_window_with_the_last_error() {
        let mut g = gate();
        for t in (0..10_000).step_by(1_000) {
            assert_eq!(g.observe(s(t), Err("refused".into())), GateVerdict::Waiting);
        }
        match g.observe(s(10_000), Err("connection refused".into())) {
            GateVerdict::Failed { reason } => {
                assert!(reason.contains("connection refused"), "{reason}");
                assert!(reason.contains("11 probes"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn healthy_too_late_to_settle_fails() {
        let mut g = gate();
        assert_eq!(g.observe(s(9_000), Ok(())), GateVerdict::Waiting);
        assert!(matches!(
            g.observe(s(10_000), Ok(())),
            GateVerdict::Failed { .. }
        ));
    }

    #[test]
    fn plans() {
        assert_eq!(
            plan_update(Some("0.1.0"), "0.2.0", false, false),
            UpdatePlan::Swap {
                from: "0.1.0".into(),
                to: "0.2.0".into()
            }
        );
        assert_eq!(
            plan_update(Some("0.2.0"), "0.2.0", false, false),
            UpdatePlan::UpToDate {
                version: "0.2.0".into()
            }
        );
        assert!(matches!(
            plan_update(Some("0.2.0"), "0.2.0", false, true),
            UpdatePlan::Refuse { .. }
        ));
        assert!(matches!(
            plan_update(None, "0.2.0", false, false),
            UpdatePlan::Refuse { .. }
        ));
        assert!(matches!(
            plan_update(Some("0.1.0"), "0.2.0", true, false),
            UpdatePlan::Refuse { .. }
        ));
        assert!(matches!(
            plan_update(Some("0.1.0"), "0.2.0", true, true),
            UpdatePlan::Swap { .. }
        ));
    }

    fn health(status: &str, version: &str) -> SupervisorHealth {
        serde_json::from_value(serde_json::json!({
            "status": status, "firecracker": false, "docker": false, "ula": null,
            "name": "n", "version": version, "mesh": "no_mesh"
        }))
        .unwrap()
    }

    #[test]
    fn health_must_be_ok_and_of_the_release() {
        assert_eq!(judge_health(&health("ok", "0.2.0"), "0.2.0+b7"), Ok(()));
        assert!(
            judge_health(&health("degraded", "0.2.0"), "0.2.0")
                .unwrap_err()
                .contains("degraded")
        );
        assert_eq!(
            judge_health(&health("ok", "0.1.0"), "0.2.0").unwrap_err(),
            "reports version 0.1.0, expected 0.2.0 (release 0.2.0)"
        );
    }
}
