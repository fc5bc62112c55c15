//! The control API: `/health`, `/v1/about`, `/v1/mesh`, `/metrics`, and the app routes of
//! [`crate::apps::api`]. It binds the address `run` gives it and reads the node status snapshot;
//! it never changes state itself (app changes go to the app manager). Over TCP every route but
//! `/health` needs an operator token ([`crate::control_auth`]); the unix socket serves the same
//! routes without one.

use crate::status::StatusHandle;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tabbify_mesh::dataplane::DataPlane;
use tabbify_wire::SOFTWARE_VERSION;
use tabbify_wire::health::SupervisorHealth;
use tabbify_wire::{ErrorBody, ErrorCode};

#[derive(Clone)]
pub struct ApiState {
    pub status: StatusHandle,
    pub data_dir: PathBuf,
    /// The running data plane, for its statistics; `None` without one.
    pub dataplane: Arc<RwLock<Option<Arc<DataPlane>>>>,
    /// The app manager behind `/v1/apps`.
    pub apps: crate::apps::AppsHandle,
    /// The key operator tokens are checked with.
    pub trusted_key: crate::control_auth::TrustedKey,
}

impl ApiState {
    pub fn set_dataplane(&self, dp: Option<Arc<DataPlane>>) {
        *self.dataplane.write().unwrap_or_else(|p| p.into_inner()) = dp;
    }
}

/// The routes behind a token check: what the TCP listener serves.
pub fn authorised_router(state: ApiState) -> Router {
    router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        crate::control_auth::require_token,
    ))
}

/// Every route, with no token check: what the unix socket serves (its file mode is the check).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/about", get(about))
        .route("/v1/mesh", get(mesh_stats))
        .route("/metrics", get(metrics))
        .merge(crate::apps::api::router(state.apps.clone()))
        .with_state(state)
}

/// Prometheus text of the node, its apps and its data plane.
async fn metrics(State(st): State<ApiState>) -> Response {
    let apps = st.apps.list().await.unwrap_or_default();
    let dp = st
        .dataplane
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let s = st.status.snapshot();
    let text = crate::metrics::render(&crate::metrics::Snapshot {
        name: &s.name,
        version: SOFTWARE_VERSION,
        tags: s.tags.iter().map(|t| t.as_str().to_string()).collect(),
        joined: s.mesh == tabbify_wire::health::MeshState::Joined,
        apps: &apps,
        dataplane: dp.map(|d| d.stats()),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The data plane's counters: per-peer traffic, handshakes, endpoints, drops.
async fn mesh_stats(State(st): State<ApiState>) -> Response {
    let dp = st
        .dataplane
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match dp {
        Some(dp) => Json(dp.stats()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(ErrorBody::new(
                ErrorCode::NotFound,
                "this node runs no mesh data plane (--no-mesh, --dataplane off, or not joined yet)",
            )),
        )
            .into_response(),
    }
}

async fn health(State(st): State<ApiState>) -> Json<SupervisorHealth> {
    let s = st.status.snapshot();
    Json(SupervisorHealth {
        status: "ok".into(),
        firecracker: s.caps.firecracker(),
        docker: s.caps.docker,
        ula: s.ula,
        name: s.name,
        version: SOFTWARE_VERSION.into(),
        mesh: s.mesh,
        tags: s.tags,
        vmm: s
            .caps
            .vmm
            .as_ref()
            .filter(|_| s.caps.kvm)
            .map(|p| p.display().to_string()),
        peer_id: s.peer_id,
        coordinator: s.coordinator,
        uptime_secs: s.started.elapsed().as_secs(),
        kvm: s.caps.kvm,
        kvm_detail: s.caps.kvm_detail.clone(),
        vm_runtime: s.caps.vm_runtime.clone(),
        mesh_error: s.mesh_error,
    })
}

/// Everything an operator asks about a node, in one place.
#[derive(Debug, Serialize)]
struct About {
    name: String,
    version: &'static str,
    peer_id: Option<String>,
    public_key: String,
    ula: Option<std::net::Ipv6Addr>,
    coordinator: Option<String>,
    data_dir: String,
    mesh: tabbify_wire::health::MeshState,
    tags: Vec<tabbify_wire::Tag>,
    capabilities: crate::probe::Capabilities,
    uptime_secs: u64,
}

async fn about(State(st): State<ApiState>) -> Json<About> {
    let s = st.status.snapshot();
    Json(About {
        name: s.name,
        version: SOFTWARE_VERSION,
        peer_id: s.peer_id,
        public_key: s.public_key,
        ula: s.ula,
        coordinator: s.coordinator,
        data_dir: st.data_dir.display().to_string(),
        mesh: s.mesh,
        tags: s.tags,
        capabilities: s.caps,
        uptime_secs: s.started.elapsed().as_secs(),
    })
}
