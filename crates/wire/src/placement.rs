//! The coordinator's apps API and the assignment stream: what an operator asks the coordinator to
//! run (`/v1/apps`), what the coordinator tells each node to run (`/v1/nodes/self/assignments`),
//! and what the node reports back (`/v1/nodes/self/apps/state`). Prose for both sides is in
//! `docs/coordinator-apps-api.md`.
//!
//! The request an operator writes ([`CreateAppRequest`]) rejects unknown fields; everything
//! exchanged between our own components ignores them, so a newer node can talk to an older
//! coordinator.

use crate::Timestamp;
use crate::app::{AppId, AppName, ArtifactDigest, Resources, RuntimeKind};
use crate::mesh::PeerId;
use crate::node_apps::AppState;
use serde::{Deserialize, Serialize};
use std::net::{Ipv6Addr, SocketAddr};

/// `POST /v1/apps` (admin): create the app, or update it when the name exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// The text of the app's `tabbify.toml` (see `docs/manifest.md`).
    pub manifest: String,
    /// The staged artifact (on the appsrv) the nodes fetch. Required for a `wasm` app unless the
    /// manifest's `[runtime] artifact` names it; when both are given they must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<ArtifactDigest>,
    /// The appsrv nodes fetch the artifact from (`http://host:9000`). Defaults to the
    /// coordinator's `--appsrv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appsrv_url: Option<String>,
}

/// How an app is doing as a whole, derived from its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    /// Every replica runs the current version.
    Running,
    /// Every replica is placed; some have not reported running the current version yet.
    Deploying,
    /// Some replica's node is offline, or its runner failed (backoff, crashloop, parked, exited).
    Degraded,
    /// Some replica fits on no node; `pending_reason` says why.
    Pending,
    #[serde(other)]
    Other,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Running => "running",
            AppStatus::Deploying => "deploying",
            AppStatus::Degraded => "degraded",
            AppStatus::Pending => "pending",
            AppStatus::Other => "other",
        }
    }
}

impl std::fmt::Display for AppStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replica of an app: where it is placed and what its node last said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The replica's slot, `0..replicas_desired`.
    pub replica: u32,
    /// The node it is assigned to; absent while the replica is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<PeerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ula: Option<Ipv6Addr>,
    /// Whether that node is online in the roster right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Timestamp>,
    /// Why the replica is not placed (only while it is pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// The state the node last reported; absent until it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AppState>,
    /// The app version the node reported running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Where the replica serves, as the node reported it (inside the node's /64 on the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The node's last error for this replica (why it did not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Timestamp>,
}

/// `GET /v1/apps/{name}`, and the answer to `POST /v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub name: AppName,
    /// Counts up by one each time the manifest or the artifact changes.
    pub version: u64,
    pub runtime: RuntimeKind,
    pub replicas_desired: u32,
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<ArtifactDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appsrv_url: Option<String>,
    pub status: AppStatus,
    /// Why the first pending replica is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// One entry per slot, in slot order.
    pub replicas: Vec<ReplicaView>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The manifest text as submitted.
    pub manifest: String,
}

/// `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppView>,
    /// The apps revision this list reflects.
    #[serde(default)]
    pub revision: u64,
}

/// One replica a node is told to run. A node holds at most one replica of an app, so the app
/// name identifies the assignment on that node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub app: AppName,
    pub replica: u32,
    /// The app version to run; a higher one replaces the running one (zero-downtime redeploy).
    pub version: u64,
    pub runtime: RuntimeKind,
    /// The `tabbify.toml` text.
    pub manifest: String,
    /// Fetch this from `appsrv_url` and verify it before running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<ArtifactDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appsrv_url: Option<String>,
    pub assigned_at: Timestamp,
}

/// The complete set of assignments of one node as of `revision`: the body of
/// `GET /v1/nodes/self/assignments` and of every `assignments` event on its watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentSet {
    /// The apps revision at which this node's set last changed. Resume the watch from it.
    pub revision: u64,
    pub peer_id: PeerId,
    pub assignments: Vec<Assignment>,
}

impl AssignmentSet {
    pub fn get(&self, app: &AppName) -> Option<&Assignment> {
        self.assignments.iter().find(|a| &a.app == app)
    }
}

/// `GET /v1/apps/{name}/endpoints` (admin token or any peer credential): where the app can be
/// reached right now, for an ingress. Replicas reported `running` on online nodes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEndpoints {
    pub app: AppName,
    pub version: u64,
    pub endpoints: Vec<SocketAddr>,
}

/// SSE event name on `GET /v1/nodes/self/assignments/watch`.
pub const SSE_ASSIGNMENTS: &str = "assignments";

/// What a node says about one app it runs because of an assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub app: AppName,
    /// The version the node runs (or is starting).
    pub version: u64,
    pub state: AppState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// The supervisor's id for the app instance (for `tcli logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/nodes/self/apps/state`, with `Authorization: Bearer <peer credential>`: the full
/// list of assignment-driven apps on the node. An assigned app missing from the list reads as
/// "not reported"; an app that is not assigned to the node is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeAppsReport {
    /// The assignment revision the node has reconciled to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<u64>,
    pub apps: Vec<ReplicaReport>,
}

/// The answer to a [`NodeAppsReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAppsReportAck {
    /// The node's current assignment revision: a node that applied an older one is behind.
    pub revision: u64,
    /// How many reports matched an assignment of this node.
    pub accepted: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_rejects_unknown_fields() {
        let ok: CreateAppRequest = serde_json::from_str(r#"{"manifest":"x"}"#).unwrap();
        assert_eq!(ok.artifact_digest, None);
        let err = serde_json::from_str::<CreateAppRequest>(r#"{"manifest":"x","replicas":2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn assignment_set_round_trips_and_ignores_new_fields() {
        let text = r#"{"revision":7,"peer_id":"p1","future":1,"assignments":[
            {"app":"hello","replica":0,"version":2,"runtime":"wasm","manifest":"[app]\nname='hello'",
             "artifact_digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000",
             "appsrv_url":"http://127.0.0.1:9000","assigned_at":"2026-01-01T00:00:00Z","later":true}]}"#;
        let set: AssignmentSet = serde_json::from_str(text).unwrap();
        assert_eq!(set.revision, 7);
        let hello = AppName::new("hello").unwrap();
        assert_eq!(set.get(&hello).map(|a| a.version), Some(2));
        let again: AssignmentSet =
            serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(again, set);
    }

    #[test]
    fn a_report_with_an_unknown_state_still_parses() {
        let r: NodeAppsReport = serde_json::from_str(
            r#"{"apps":[{"app":"a","version":1,"state":"hibernating","address":"[fd00::2]:8080"}]}"#,
        )
        .unwrap();
        assert_eq!(r.apps[0].state, AppState::Other);
        assert_eq!(r.applied_revision, None);
    }
}
