//! The decision of the assignment loop, pure: given what the coordinator assigns this node, what
//! this node runs because of earlier assignments, what runs here at all, what is in flight and
//! which deploys failed lately, say what to start and what to stop, and when to look again.
//!
//! Apps an operator deployed through the node's own control API are never touched: only the apps
//! in `owned` (deployed because of an assignment) are stopped when no longer assigned. An
//! assigned app takes over a local app of the same name (the node keys apps by name), and stays
//! what was assigned: an assigned app found running another artifact than the one deployed for
//! its assignment (replaced by hand through the control API, same name and version) is put back.
//! Versions alone cannot tell, since a hand deploy does not change the coordinator's version.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, AppName, ArtifactDigest};
use tabbify_wire::node_apps::AppState;

/// An app this node runs because the coordinator assigned it (persisted in `assignments.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owned {
    /// The coordinator's app version that is deployed here; 0 until a deploy succeeded.
    pub version: u64,
    /// The node's id for the app, once deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    /// The artifact that deploy ran (absent in files written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<ArtifactDigest>,
}

/// What the coordinator assigns for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub version: u64,
    /// The artifact to run, when the assignment names one (a docker app may not).
    pub artifact_digest: Option<ArtifactDigest>,
}

/// An app the node's app manager has, whoever deployed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalApp {
    pub app_id: AppId,
    pub state: AppState,
    /// The artifact its current version runs.
    pub artifact_digest: ArtifactDigest,
}

/// A deploy of `version` that failed; the next try waits until `retry_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub version: u64,
    pub attempts: u32,
    pub retry_at: Timestamp,
    pub error: String,
}

/// What the loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch the artifact and deploy (or redeploy) the assigned version.
    Deploy { app: AppName, version: u64 },
    /// The assigned version is here but runs `found`, not the artifact deployed for the
    /// assignment: deploy the assigned one again.
    Restore {
        app: AppName,
        version: u64,
        found: ArtifactDigest,
    },
    /// No longer assigned: delete the app (when it is still here) and forget it.
    Remove { app: AppName, app_id: Option<AppId> },
}

/// The actions, and the earliest moment a postponed retry is due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Timestamp>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The coordinator's current set for this node.
    pub assigned: &'a BTreeMap<AppName, Assigned>,
    pub owned: &'a BTreeMap<AppName, Owned>,
    /// Every app the app manager has, by name.
    pub local: &'a BTreeMap<AppName, LocalApp>,
    /// Apps with a deploy or removal in flight: left alone until it ends.
    pub busy: &'a BTreeSet<AppName>,
    pub failures: &'a BTreeMap<AppName, Failure>,
    pub now: Timestamp,
}

pub fn reconcile(i: Inputs<'_>) -> Plan {
    let mut plan = Plan::default();
    for (app, wanted) in i.assigned {
        let version = wanted.version;
        if i.busy.contains(app) {
            continue;
        }
        let here = i.local.get(app).filter(|l| l.state != AppState::Deleting);
        let owned = i.owned.get(app).filter(|o| o.version == version);
        let mut restore = None;
        if let (Some(o), Some(l)) = (owned, here) {
            // What deploy ran for this assignment, or (for records from before that was kept)
            // what the assignment names.
            let expected = o
                .artifact_digest
                .as_ref()
                .or(wanted.artifact_digest.as_ref());
            match expected {
                Some(d) if *d != l.artifact_digest => restore = Some(l.artifact_digest.clone()),
                _ => continue,
            }
        }
        if let Some(f) = i.failures.get(app)
            && f.version == version
            && i.now < f.retry_at
        {
            plan.wake_at = Some(plan.wake_at.map_or(f.retry_at, |w| w.min(f.retry_at)));
            continue;
        }
        plan.actions.push(match restore {
            Some(found) => Action::Restore {
                app: app.clone(),
                version,
                found,
            },
            None => Action::Deploy {
                app: app.clone(),
                version,
            },
        });
    }
    for app in i.owned.keys() {
        if i.assigned.contains_key(app) || i.busy.contains(app) {
            continue;
        }
        plan.actions.push(Action::Remove {
            app: app.clone(),
            app_id: i.local.get(app).map(|l| l.app_id.clone()),
        });
    }
    plan
}

/// Delay before retrying a deploy that failed `attempts` times in a row: 2 s, doubling, at
/// most a minute.
pub fn retry_delay(attempts: u32) -> Duration {
    let secs = 2u64.saturating_mul(1u64 << attempts.saturating_sub(1).min(5));
    Duration::from_secs(secs.min(60))
}

/// The failure record after one more failed deploy of `version`.
pub fn record_failure(
    previous: Option<&Failure>,
    version: u64,
    error: String,
    now: Timestamp,
) -> Failure {
    let attempts = match previous {
        Some(f) if f.version == version => f.attempts.saturating_add(1),
        _ => 1,
    };
    let delay = u64::try_from(retry_delay(attempts).as_millis()).unwrap_or(u64::MAX);
    Failure {
        version,
        attempts,
        retry_at: Timestamp(now.unix_ms().saturating_add(delay)),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }

    fn id(s: &str) -> AppId {
        AppId::new(format!("{s}-00000001")).unwrap()
    }

    fn digest(c: char) -> ArtifactDigest {
        ArtifactDigest::parse(format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn local(s: &str, state: AppState) -> (AppName, LocalApp) {
        local_running(s, state, 'a')
    }

    fn local_running(s: &str, state: AppState, artifact: char) -> (AppName, LocalApp) {
        (
            name(s),
            LocalApp {
                app_id: id(s),
                state,
                artifact_digest: digest(artifact),
            },
        )
    }

    fn owned(s: &str, version: u64) -> (AppName, Owned) {
        (
            name(s),
            Owned {
                version,
                app_id: Some(id(s)),
                artifact_digest: Some(digest('a')),
            },
        )
    }

    fn assigned(version: u64) -> Assigned {
        Assigned {
            version,
            artifact_digest: Some(digest('a')),
        }
    }

    struct Case {
        assigned: BTreeMap<AppName, Assigned>,
        owned: BTreeMap<AppName, Owned>,
        local: BTreeMap<AppName, LocalApp>,
        busy: BTreeSet<AppName>,
        failures: BTreeMap<AppName, Failure>,
    }

    impl Case {
        fn new() -> Self {
            Self {
                assigned: BTreeMap::new(),
                owned: BTreeMap::new(),
                local: BTreeMap::new(),
                busy: BTreeSet::new(),
                failures: BTreeMap::new(),
            }
        }

        fn plan(&self, now: u64) -> Plan {
            reconcile(Inputs {
                assigned: &self.assigned,
                owned: &self.owned,
                local: &self.local,
                busy: &self.busy,
                failures: &self.failures,
                now: Timestamp(now),
            })
        }
    }

    fn deploy(s: &str, version: u64) -> Action {
        Action::Deploy {
            app: name(s),
            version,
        }
    }

    #[test]
    fn starts_what_is_assigned_and_missing() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(1));
        c.assigned.insert(name("b"), assigned(4));
        assert_eq!(c.plan(0).actions, vec![deploy("a", 1), deploy("b", 4)]);
        // Deployed and present: nothing to do, whatever state the node's own policy keeps it in.
        c.owned.extend([owned("a", 1), owned("b", 4)]);
        c.local.extend([
            local("a", AppState::Running),
            local("b", AppState::Crashloop),
        ]);
        assert_eq!(c.plan(0), Plan::default());
    }

    #[test]
    fn a_newer_version_or_a_vanished_app_is_deployed_again() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(2));
        c.owned.extend([owned("a", 1)]);
        c.local.extend([local("a", AppState::Running)]);
        assert_eq!(c.plan(0).actions, vec![deploy("a", 2)]);
        // Same version, but the app is gone from the node (deleted by hand, or being deleted).
        c.owned.extend([owned("a", 2)]);
        c.local.clear();
        assert_eq!(c.plan(0).actions, vec![deploy("a", 2)]);
        c.local.extend([local("a", AppState::Deleting)]);
        assert_eq!(c.plan(0).actions, vec![deploy("a", 2)]);
    }

    #[test]
    fn an_assigned_app_replaced_by_hand_is_put_back() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(1));
        c.owned.extend([owned("a", 1)]);
        // Same name, same app id, same coordinator version: another artifact.
        c.local.extend([local_running("a", AppState::Running, 'e')]);
        assert_eq!(
            c.plan(0).actions,
            vec![Action::Restore {
                app: name("a"),
                version: 1,
                found: digest('e'),
            }]
        );
        // Once the assigned artifact runs again, nothing to do.
        c.local.extend([local_running("a", AppState::Running, 'a')]);
        assert_eq!(c.plan(0), Plan::default());
        // A restore that failed waits for its retry like any deploy.
        c.local.extend([local_running("a", AppState::Running, 'e')]);
        c.failures.insert(
            name("a"),
            record_failure(None, 1, "appsrv down".into(), Timestamp(1_000)),
        );
        assert_eq!(c.plan(2_000).actions, vec![]);
        assert!(matches!(
            c.plan(3_000).actions[..],
            [Action::Restore { .. }]
        ));
    }

    #[test]
    fn the_expected_artifact_is_what_deploy_ran_else_what_is_assigned() {
        let mut c = Case::new();
        // A docker app without an artifact in its assignment: what deploy ran is the reference.
        c.assigned.insert(
            name("box"),
            Assigned {
                version: 2,
                artifact_digest: None,
            },
        );
        c.owned.insert(
            name("box"),
            Owned {
                version: 2,
                app_id: Some(id("box")),
                artifact_digest: Some(digest('b')),
            },
        );
        c.local
            .extend([local_running("box", AppState::Running, 'b')]);
        assert_eq!(c.plan(0), Plan::default());
        c.local
            .extend([local_running("box", AppState::Running, 'c')]);
        assert!(matches!(c.plan(0).actions[..], [Action::Restore { .. }]));
        // A record from before digests were kept: the assignment's digest is the reference.
        c.assigned.insert(name("box"), assigned(2));
        c.owned.get_mut(&name("box")).unwrap().artifact_digest = None;
        assert!(matches!(c.plan(0).actions[..], [Action::Restore { .. }]));
        c.local
            .extend([local_running("box", AppState::Running, 'a')]);
        assert_eq!(c.plan(0), Plan::default());
        // Neither known: nothing to compare, nothing to do.
        c.assigned.get_mut(&name("box")).unwrap().artifact_digest = None;
        c.local
            .extend([local_running("box", AppState::Running, 'f')]);
        assert_eq!(c.plan(0), Plan::default());
    }

    #[test]
    fn stops_only_owned_apps_that_are_no_longer_assigned() {
        let mut c = Case::new();
        c.owned.extend([owned("gone", 3)]);
        c.local.extend([
            local("gone", AppState::Running),
            local("mine", AppState::Running),
        ]);
        assert_eq!(
            c.plan(0).actions,
            vec![Action::Remove {
                app: name("gone"),
                app_id: Some(id("gone")),
            }],
            "`mine` was deployed by an operator on this node and is not ours to stop"
        );
        // Owned but already gone from the node: only forgotten.
        c.local.clear();
        assert_eq!(
            c.plan(0).actions,
            vec![Action::Remove {
                app: name("gone"),
                app_id: None
            }]
        );
    }

    #[test]
    fn an_assignment_takes_over_a_local_app_of_the_same_name() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(1));
        c.local.extend([local("a", AppState::Running)]);
        assert_eq!(c.plan(0).actions, vec![deploy("a", 1)]);
    }

    #[test]
    fn busy_apps_wait_for_their_operation_to_end() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(1));
        c.owned.extend([owned("b", 1)]);
        c.busy.extend([name("a"), name("b")]);
        assert_eq!(c.plan(0), Plan::default());
    }

    #[test]
    fn failed_deploys_retry_after_their_delay_and_a_new_version_at_once() {
        let mut c = Case::new();
        c.assigned.insert(name("a"), assigned(1));
        let f = record_failure(None, 1, "digest mismatch".into(), Timestamp(1_000));
        assert_eq!(f.attempts, 1);
        assert_eq!(f.retry_at, Timestamp(3_000));
        c.failures.insert(name("a"), f.clone());
        let early = c.plan(2_000);
        assert!(early.actions.is_empty());
        assert_eq!(early.wake_at, Some(Timestamp(3_000)));
        assert_eq!(c.plan(3_000).actions, vec![deploy("a", 1)]);
        // A new version is not held back by the old version's failures.
        c.assigned.insert(name("a"), assigned(2));
        assert_eq!(c.plan(2_000).actions, vec![deploy("a", 2)]);
        // The next failure of the same version waits longer.
        let again = record_failure(Some(&f), 1, "again".into(), Timestamp(3_000));
        assert_eq!((again.attempts, again.retry_at), (2, Timestamp(7_000)));
        let other = record_failure(Some(&f), 2, "new".into(), Timestamp(3_000));
        assert_eq!(other.attempts, 1);
    }

    #[test]
    fn retry_delays_double_and_cap_at_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(retry_delay(0).as_secs(), 2);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 60);
    }
}
