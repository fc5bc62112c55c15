//! The app table as the coordinator holds it in memory (apps, where each replica is placed, what
//! nodes reported, each node's assignment revision) and the views derived from it: a node's
//! [`AssignmentSet`], an operator's [`AppView`] with its status, an ingress's [`AppEndpoints`].
//!
//! Plain data and pure functions; `store::apps` persists the table and `placement` decides it.

use crate::app_spec::AppSpec;
use crate::placement::{Placed, SlotKey};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tabbify_wire::Timestamp;
use tabbify_wire::app::AppName;
use tabbify_wire::mesh::{Peer, PeerId};
use tabbify_wire::node_apps::AppState;
use tabbify_wire::placement::{
    AppEndpoints, AppStatus, AppView, Assignment, AssignmentSet, ReplicaReport, ReplicaView,
};

/// One app: the checked request plus its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub version: u64,
    pub spec: AppSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl AppRecord {
    pub fn name(&self) -> &AppName {
        &self.spec.manifest.app.name
    }
}

/// What a node last said about the replica it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    pub report: ReplicaReport,
    pub reported_at: Timestamp,
}

/// One placed slot and its node's latest report (cleared when the slot moves).
#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRecord {
    pub placed: Placed,
    pub report: Option<StoredReport>,
}

/// The whole table. Cloning is cheap enough to build the next state beside the current one and
/// swap it in after the commit: apps are shared, assignments are small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppsState {
    /// The coordinator-wide apps revision: only grows.
    pub revision: u64,
    pub apps: BTreeMap<AppName, Arc<AppRecord>>,
    pub assignments: BTreeMap<SlotKey, AssignmentRecord>,
    /// The revision at which each node's assignment set last changed.
    pub node_revisions: BTreeMap<PeerId, u64>,
}

/// The states an app's replica may report that mean it is not serving and will not by itself
/// soon (or at all).
const FAILED: [AppState; 5] = [
    AppState::Backoff,
    AppState::Crashloop,
    AppState::Parked,
    AppState::Exited,
    AppState::Stopped,
];

impl AppsState {
    /// The assignments of `peer`, by app name.
    pub fn node_assignments(&self, peer: &str) -> Vec<Assignment> {
        self.assignments
            .iter()
            .filter(|(_, a)| a.placed.peer_id == peer)
            .filter_map(|((name, replica), a)| {
                let app = self.apps.get(name)?;
                Some(Assignment {
                    app: name.clone(),
                    replica: *replica,
                    version: app.version,
                    runtime: app.spec.runtime(),
                    manifest: app.spec.manifest_text.clone(),
                    artifact_digest: app.spec.artifact_digest.clone(),
                    appsrv_url: app.spec.appsrv_url.clone(),
                    assigned_at: a.placed.assigned_at,
                })
            })
            .collect()
    }

    /// The complete set of `peer` as a node reads it.
    pub fn assignment_set(&self, peer: &str) -> AssignmentSet {
        AssignmentSet {
            revision: self.node_revision(peer),
            peer_id: peer.to_string(),
            assignments: self.node_assignments(peer),
        }
    }

    pub fn node_revision(&self, peer: &str) -> u64 {
        self.node_revisions.get(peer).copied().unwrap_or(0)
    }

    /// Every node that holds a slot in `self` or in `other`.
    pub fn nodes_in_either(&self, other: &AppsState) -> BTreeSet<PeerId> {
        self.assignments
            .values()
            .chain(other.assignments.values())
            .map(|a| a.placed.peer_id.clone())
            .collect()
    }

    /// Whether the app records differ (a create, update or delete).
    pub fn apps_differ(&self, other: &AppsState) -> bool {
        self.apps.len() != other.apps.len()
            || self
                .apps
                .iter()
                .zip(other.apps.iter())
                .any(|((na, a), (nb, b))| na != nb || !(Arc::ptr_eq(a, b) || a == b))
    }
}

/// The operator's view of one app.
pub fn app_view<'p>(
    state: &AppsState,
    app: &AppRecord,
    pending: &BTreeMap<SlotKey, String>,
    peer: &dyn Fn(&str) -> Option<&'p Peer>,
) -> AppView {
    let name = app.name();
    let replicas: Vec<ReplicaView> = (0..app.spec.manifest.app.replicas)
        .map(|replica| {
            let slot = (name.clone(), replica);
            match state.assignments.get(&slot) {
                Some(a) => placed_replica(replica, a, peer(&a.placed.peer_id)),
                None => ReplicaView {
                    pending_reason: Some(
                        pending
                            .get(&slot)
                            .cloned()
                            .unwrap_or_else(|| "not placed yet".into()),
                    ),
                    ..empty_replica(replica)
                },
            }
        })
        .collect();
    let (status, pending_reason) = status(app.version, &replicas);
    AppView {
        name: name.clone(),
        version: app.version,
        runtime: app.spec.runtime(),
        replicas_desired: app.spec.manifest.app.replicas,
        resources: app.spec.manifest.resources,
        artifact_digest: app.spec.artifact_digest.clone(),
        appsrv_url: app.spec.appsrv_url.clone(),
        status,
        pending_reason,
        replicas,
        created_at: app.created_at,
        updated_at: app.updated_at,
        manifest: app.spec.manifest_text.clone(),
    }
}

fn empty_replica(replica: u32) -> ReplicaView {
    ReplicaView {
        replica,
        peer_id: None,
        node_name: None,
        node_ula: None,
        node_online: None,
        assigned_at: None,
        pending_reason: None,
        state: None,
        version: None,
        address: None,
        url: None,
        error: None,
        reported_at: None,
    }
}

fn placed_replica(replica: u32, a: &AssignmentRecord, node: Option<&Peer>) -> ReplicaView {
    let report = a.report.as_ref();
    let address = report.and_then(|r| r.report.address);
    ReplicaView {
        peer_id: Some(a.placed.peer_id.clone()),
        node_name: node.map(|p| p.display_name.clone()),
        node_ula: node.map(|p| p.ula),
        // A node that left the roster is as good as offline until placement moves the replica.
        node_online: Some(node.is_some_and(|p| p.online)),
        assigned_at: Some(a.placed.assigned_at),
        state: report.map(|r| r.report.state),
        version: report.map(|r| r.report.version),
        address,
        url: address.map(|addr| format!("http://{addr}/")),
        error: report.and_then(|r| r.report.error.clone()),
        reported_at: report.map(|r| r.reported_at),
        ..empty_replica(replica)
    }
}

/// An app's status from its replicas, with the first pending reason.
pub fn status(version: u64, replicas: &[ReplicaView]) -> (AppStatus, Option<String>) {
    if let Some(reason) = replicas.iter().find_map(|r| r.pending_reason.clone()) {
        return (AppStatus::Pending, Some(reason));
    }
    let degraded = replicas
        .iter()
        .any(|r| r.node_online == Some(false) || r.state.is_some_and(|s| FAILED.contains(&s)));
    if degraded {
        return (AppStatus::Degraded, None);
    }
    let all_running = replicas
        .iter()
        .all(|r| r.state == Some(AppState::Running) && r.version == Some(version));
    if all_running {
        (AppStatus::Running, None)
    } else {
        (AppStatus::Deploying, None)
    }
}

/// Where an app can be reached now: replicas reported `running` on online nodes.
pub fn endpoints<'p>(
    state: &AppsState,
    app: &AppRecord,
    peer: &dyn Fn(&str) -> Option<&'p Peer>,
) -> AppEndpoints {
    let name = app.name();
    let endpoints = state
        .assignments
        .range((name.clone(), 0)..=(name.clone(), u32::MAX))
        .filter(|(_, a)| peer(&a.placed.peer_id).is_some_and(|p| p.online))
        .filter_map(|(_, a)| {
            let r = a.report.as_ref()?;
            (r.report.state == AppState::Running)
                .then_some(r.report.address)
                .flatten()
        })
        .collect();
    AppEndpoints {
        app: name.clone(),
        version: app.version,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_spec::{AppSpec, validate};
    use tabbify_wire::PublicKeyB64;
    use tabbify_wire::app::ArtifactDigest;
    use tabbify_wire::placement::CreateAppRequest;

    fn spec(replicas: u32) -> AppSpec {
        validate(
            CreateAppRequest {
                manifest: format!(
                    "[app]\nname = \"web\"\nreplicas = {replicas}\n[runtime]\nkind = \"wasm\"\ncomponent = \"w.wasm\"\n"
                ),
                artifact_digest: Some(
                    ArtifactDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap(),
                ),
                appsrv_url: Some("http://127.0.0.1:9000".into()),
            },
            None,
        )
        .unwrap()
    }

    fn peer(id: &str, online: bool) -> Peer {
        Peer {
            peer_id: id.into(),
            ula: "fd00::1".parse().unwrap(),
            subnet: "fd00::/64".parse().unwrap(),
            display_name: format!("n-{id}"),
            tags: vec![],
            public_key: PublicKeyB64::from_bytes([1; 32]),
            endpoints: vec![],
            last_seen: Timestamp(0),
            online,
            version: "1".into(),
            joined_at: None,
            resources: None,
        }
    }

    fn report(state: AppState, version: u64, port: u16) -> StoredReport {
        StoredReport {
            report: ReplicaReport {
                app: AppName::new("web").unwrap(),
                version,
                state,
                address: Some(format!("[fd00::2]:{port}").parse().unwrap()),
                app_id: None,
                error: None,
            },
            reported_at: Timestamp(5),
        }
    }

    fn state_with(
        replicas: u32,
        slots: &[(&str, Option<StoredReport>)],
    ) -> (AppsState, Arc<AppRecord>) {
        let app = Arc::new(AppRecord {
            version: 2,
            spec: spec(replicas),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
        });
        let mut s = AppsState::default();
        s.apps.insert(app.name().clone(), Arc::clone(&app));
        for (i, (peer, rep)) in slots.iter().enumerate() {
            s.assignments.insert(
                (app.name().clone(), i as u32),
                AssignmentRecord {
                    placed: Placed {
                        peer_id: (*peer).into(),
                        assigned_at: Timestamp(3),
                        lost_at: None,
                    },
                    report: rep.clone(),
                },
            );
        }
        (s, app)
    }

    fn view(s: &AppsState, app: &AppRecord, peers: &[Peer]) -> AppView {
        let mut pending = BTreeMap::new();
        pending.insert((app.name().clone(), 1), "no node is online".to_string());
        app_view(s, app, &pending, &|id| {
            peers.iter().find(|p| p.peer_id == id)
        })
    }

    #[test]
    fn statuses() {
        let peers = [peer("a", true), peer("b", true), peer("off", false)];
        let running = report(AppState::Running, 2, 1);
        let (s, app) = state_with(
            2,
            &[("a", Some(running.clone())), ("b", Some(running.clone()))],
        );
        let v = view(&s, &app, &peers);
        assert_eq!(v.status, AppStatus::Running);
        assert_eq!(v.replicas[0].url.as_deref(), Some("http://[fd00::2]:1/"));
        assert_eq!(v.replicas[1].node_name.as_deref(), Some("n-b"));

        let (s, app) = state_with(2, &[("a", Some(running.clone())), ("b", None)]);
        assert_eq!(view(&s, &app, &peers).status, AppStatus::Deploying);
        let old = report(AppState::Running, 1, 1);
        let (s, app) = state_with(2, &[("a", Some(running.clone())), ("b", Some(old))]);
        assert_eq!(view(&s, &app, &peers).status, AppStatus::Deploying);
        let (s, app) = state_with(
            2,
            &[("a", Some(running.clone())), ("off", Some(running.clone()))],
        );
        assert_eq!(view(&s, &app, &peers).status, AppStatus::Degraded);
        let (s, app) = state_with(2, &[("a", Some(running.clone())), ("gone", None)]);
        let v = view(&s, &app, &peers);
        assert_eq!(v.status, AppStatus::Degraded);
        assert_eq!(v.replicas[1].node_online, Some(false));
        let (s, app) = state_with(
            2,
            &[
                ("a", Some(running.clone())),
                ("b", Some(report(AppState::Crashloop, 2, 1))),
            ],
        );
        assert_eq!(view(&s, &app, &peers).status, AppStatus::Degraded);

        let (s, app) = state_with(2, &[("a", Some(running))]);
        let v = view(&s, &app, &peers);
        assert_eq!(v.status, AppStatus::Pending);
        assert_eq!(v.pending_reason.as_deref(), Some("no node is online"));
        assert_eq!(
            v.replicas[1].pending_reason.as_deref(),
            Some("no node is online")
        );
        assert_eq!(v.replicas[1].peer_id, None);
    }

    #[test]
    fn endpoints_are_running_replicas_on_online_nodes() {
        let peers = [peer("a", true), peer("b", true), peer("off", false)];
        let (s, app) = state_with(
            4,
            &[
                ("a", Some(report(AppState::Running, 2, 1))),
                ("b", Some(report(AppState::Starting, 2, 2))),
                ("off", Some(report(AppState::Running, 2, 3))),
                ("gone", Some(report(AppState::Running, 2, 4))),
            ],
        );
        let e = endpoints(&s, &app, &|id| peers.iter().find(|p| p.peer_id == id));
        assert_eq!(e.endpoints, vec!["[fd00::2]:1".parse().unwrap()]);
        assert_eq!(e.version, 2);
    }

    #[test]
    fn node_sets_list_only_that_nodes_slots() {
        let (s, app) = state_with(2, &[("a", None), ("b", None)]);
        let set = s.assignment_set("a");
        assert_eq!(set.assignments.len(), 1);
        assert_eq!(set.assignments[0].replica, 0);
        assert_eq!(set.assignments[0].version, app.version);
        assert_eq!(set.revision, 0);
        assert!(s.assignment_set("c").assignments.is_empty());
        let mut other = s.clone();
        assert!(!s.apps_differ(&other));
        Arc::make_mut(other.apps.values_mut().next().unwrap()).version = 3;
        assert!(s.apps_differ(&other));
        assert_eq!(s.nodes_in_either(&other).len(), 2);
    }
}
