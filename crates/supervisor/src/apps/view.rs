//! What the API shows of an app: its [`AppInfo`], with the state derived from plain facts about
//! the entry by a pure function.

use super::manager::{AppEntry, Ending};
use super::offer;
use super::policy::{GaveUp, RestartTracker};
use super::record::Desired;
use crate::probe::Capabilities;
use tabbify_wire::node_apps::{AppInfo, AppState, RestartStatus};

/// The facts the state is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub deleting: bool,
    /// A version was confirmed (false while the first deploy loads).
    pub deployed: bool,
    /// The current version's runner: whether it serves and why it is ending, if it is.
    pub runner: Option<(bool, Option<EndingKind>)>,
    pub desired: Desired,
    pub tracker: RestartTracker,
    pub restart_scheduled: bool,
    /// The app's `[restart] crashloop_after`.
    pub crashloop_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndingKind {
    Stopping,
    Failing,
}

pub fn state(f: &Facts) -> AppState {
    if f.deleting {
        return AppState::Deleting;
    }
    if !f.deployed {
        return AppState::Deploying;
    }
    match f.runner {
        Some((_, Some(EndingKind::Stopping))) => AppState::Stopping,
        Some((true, None)) => AppState::Running,
        Some((_, _)) if f.tracker.in_crashloop(f.crashloop_after) => AppState::Crashloop,
        Some(_) => AppState::Starting,
        None if f.desired == Desired::Stopped => AppState::Stopped,
        None => match f.tracker.gave_up {
            Some(GaveUp::Parked) => AppState::Parked,
            Some(GaveUp::Finished) => AppState::Exited,
            None if f.tracker.in_crashloop(f.crashloop_after) => AppState::Crashloop,
            None if f.restart_scheduled => AppState::Backoff,
            None => AppState::Starting,
        },
    }
}

fn facts(e: &AppEntry) -> Facts {
    Facts {
        deleting: e.deleting.is_some(),
        deployed: e.record.current.is_some(),
        runner: e.current.as_ref().map(|i| {
            let ending = i.ending.as_ref().map(|end| match end {
                Ending::Kill(_) => EndingKind::Failing,
                Ending::Stop | Ending::Restart | Ending::Retire | Ending::Delete => {
                    EndingKind::Stopping
                }
            });
            (i.serving, ending)
        }),
        desired: e.record.desired,
        tracker: e.record.restart,
        restart_scheduled: e.restart_at.is_some(),
        crashloop_after: e
            .record
            .current
            .as_ref()
            .or(e.record.pending.as_ref())
            .map_or(tabbify_wire::app::DEFAULT_CRASHLOOP_AFTER, |v| {
                v.manifest.restart.crashloop_after
            }),
    }
}

/// The app as the API shows it, on a node whose last probe found `caps`; `None` for an entry
/// without any version (the manager never keeps one).
pub fn info(e: &AppEntry, caps: &Capabilities) -> Option<AppInfo> {
    let r = &e.record;
    // While the first deploy loads there is only the pending version to show.
    let (version, runner) = match (&r.current, &r.pending) {
        (Some(v), _) => (v, e.current.as_ref()),
        (None, Some(p)) => (p, e.pending.as_ref().and_then(|p| p.instance.as_ref())),
        (None, None) => return None,
    };
    Some(AppInfo {
        app_id: r.app_id.clone(),
        name: r.name.clone(),
        runtime: version.manifest.runtime.kind(),
        state: state(&facts(e)),
        address: version.listen,
        url: format!("http://{}/", version.listen),
        version: version.version,
        artifact_digest: version.artifact_digest.clone(),
        runner_pid: runner.map(|i| i.identity.pid),
        started_at: runner.map(|i| i.started_at),
        deployed_at: version.deployed_at,
        restart: RestartStatus {
            policy: version.manifest.restart.policy,
            restarts: r.restart.restarts,
            consecutive_failures: r.restart.consecutive_failures,
            max_restarts: version.manifest.restart.max_restarts,
            next_restart_at: e.restart_at,
        },
        last_exit: r.last_exit.clone(),
        runtime_unavailable: offer::unavailable(version.manifest.runtime.kind(), caps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Facts {
        Facts {
            deleting: false,
            deployed: true,
            runner: None,
            desired: Desired::Running,
            tracker: RestartTracker::default(),
            restart_scheduled: false,
            crashloop_after: tabbify_wire::app::DEFAULT_CRASHLOOP_AFTER,
        }
    }

    fn looping() -> RestartTracker {
        RestartTracker {
            restarts: 3,
            consecutive_failures: 3,
            gave_up: None,
        }
    }

    #[test]
    fn every_state_from_its_facts() {
        let cases: Vec<(Facts, AppState)> = vec![
            (
                Facts {
                    deleting: true,
                    ..base()
                },
                AppState::Deleting,
            ),
            (
                Facts {
                    deployed: false,
                    ..base()
                },
                AppState::Deploying,
            ),
            (
                Facts {
                    runner: Some((true, None)),
                    ..base()
                },
                AppState::Running,
            ),
            (
                Facts {
                    runner: Some((false, None)),
                    ..base()
                },
                AppState::Starting,
            ),
            (
                Facts {
                    runner: Some((false, None)),
                    tracker: looping(),
                    ..base()
                },
                AppState::Crashloop,
            ),
            (
                Facts {
                    runner: Some((true, None)),
                    tracker: looping(),
                    ..base()
                },
                AppState::Running,
            ),
            (
                Facts {
                    runner: Some((true, Some(EndingKind::Stopping))),
                    ..base()
                },
                AppState::Stopping,
            ),
            (
                Facts {
                    runner: Some((true, Some(EndingKind::Failing))),
                    ..base()
                },
                AppState::Starting,
            ),
            (
                Facts {
                    desired: Desired::Stopped,
                    ..base()
                },
                AppState::Stopped,
            ),
            (
                Facts {
                    tracker: RestartTracker {
                        gave_up: Some(GaveUp::Parked),
                        ..looping()
                    },
                    ..base()
                },
                AppState::Parked,
            ),
            (
                Facts {
                    tracker: RestartTracker {
                        gave_up: Some(GaveUp::Finished),
                        ..Default::default()
                    },
                    ..base()
                },
                AppState::Exited,
            ),
            (
                Facts {
                    restart_scheduled: true,
                    ..base()
                },
                AppState::Backoff,
            ),
            (
                Facts {
                    restart_scheduled: true,
                    tracker: looping(),
                    ..base()
                },
                AppState::Crashloop,
            ),
            (base(), AppState::Starting),
        ];
        for (facts, expected) in cases {
            assert_eq!(state(&facts), expected, "{facts:?}");
        }
    }
}
