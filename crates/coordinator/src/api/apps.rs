//! The apps API (`docs/coordinator-apps-api.md`): the operator's desired state (`/v1/apps`, admin
//! token) and the node's side (`/v1/nodes/self/...`, node certificate): its assignments, their
//! watch stream, and its state reports. Handlers check the caller before they read a body, then
//! hand plain data to the store; placement runs inside the same store job as the change.

use super::auth::{calling_node, require_reader, until_revoked};
use super::error::ApiError;
use super::extract::{LimitedBody, parse_json, resume_revision};
use super::mesh::WATCH_KEEP_ALIVE;
use super::require_admin;
use crate::app_spec::{self, AppSpecError};
use crate::assignments_watch;
use crate::listener::PeerCertificate;
use crate::service::Service;
use crate::store::{PutApp, ReportError};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tabbify_wire::Timestamp;
use tabbify_wire::app::AppName;
use tabbify_wire::placement::{
    AppEndpoints, AppList, AppView, AssignmentSet, CreateAppRequest, NodeAppsReport,
    NodeAppsReportAck,
};

impl From<AppSpecError> for ApiError {
    fn from(e: AppSpecError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

fn app_name(raw: String) -> Result<AppName, ApiError> {
    AppName::new(raw).map_err(|e| ApiError::bad_request(format!("app name in the path: {e}")))
}

fn no_such_app(name: &AppName) -> ApiError {
    ApiError::not_found(format!("no app named {:?}", name.as_str()))
}

/// `POST /v1/apps`: create or update, then place.
pub async fn put_app(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    require_admin(&svc, &headers)?;
    let req: CreateAppRequest = parse_json(&body)?;
    let spec = app_spec::validate(req, svc.settings.default_appsrv.as_deref())?;
    let grace = svc.settings.node_lost_grace;
    let PutApp { created, view } = svc
        .write(move |store, _| store.put_app(spec, Timestamp::now(), grace))
        .await??;
    tracing::info!(
        app = %view.name,
        version = view.version,
        replicas = view.replicas_desired,
        status = %view.status,
        created,
        "app stored"
    );
    let location = format!("/v1/apps/{}", view.name);
    if created {
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(view),
        )
            .into_response())
    } else {
        Ok(Json(view).into_response())
    }
}

/// `GET /v1/apps`.
pub async fn list_apps(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
) -> Result<Json<AppList>, ApiError> {
    require_admin(&svc, &headers)?;
    Ok(Json(svc.read(|s| s.app_list()).await?))
}

/// `GET /v1/apps/{name}`.
pub async fn get_app(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    require_admin(&svc, &headers)?;
    let name = app_name(raw)?;
    let n = name.clone();
    svc.read(move |s| s.app_view(&n))
        .await?
        .map(Json)
        .ok_or_else(|| no_such_app(&name))
}

/// `DELETE /v1/apps/{name}`: withdraws every replica.
pub async fn delete_app(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&svc, &headers)?;
    let name = app_name(raw)?;
    let n = name.clone();
    let grace = svc.settings.node_lost_grace;
    let deleted = svc
        .write(move |store, _| store.delete_app(&n, Timestamp::now(), grace))
        .await??;
    if !deleted {
        return Err(no_such_app(&name));
    }
    tracing::info!(app = %name, "app deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/apps/{name}/endpoints`: the operator or any node of the mesh.
pub async fn app_endpoints(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<AppEndpoints>, ApiError> {
    require_reader(&svc, &cert, &headers).await?;
    let name = app_name(raw)?;
    let n = name.clone();
    let loopback_ok = svc.settings.guards.allow_loopback_replicas;
    let endpoints = svc.read(move |s| s.app_endpoints(&n, loopback_ok)).await?;
    endpoints.map(Json).ok_or_else(|| no_such_app(&name))
}

/// `GET /v1/nodes/self/assignments`.
pub async fn assignments(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    headers: HeaderMap,
) -> Result<Json<AssignmentSet>, ApiError> {
    let (peer, _) = calling_node(&svc, &cert, &headers).await?;
    Ok(Json(svc.read(move |s| s.assignment_set(&peer)).await?))
}

#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    since: Option<String>,
}

/// `GET /v1/nodes/self/assignments/watch?since=REV`.
pub async fn watch_assignments(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (peer, proof) = calling_node(&svc, &cert, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = resume_revision(&headers, query.since)?;
    let permit = super::caller::open_stream(&svc, &headers, &cert, remote, "assignments").await?;
    tracing::debug!(peer_id = %peer, ?since, "assignment watch opened");
    let stream = until_revoked(
        Arc::clone(&svc),
        super::auth::Reader::Node(proof),
        assignments_watch::start(Arc::clone(&svc), peer, since).map(move |item| {
            let _held = &permit;
            item
        }),
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(WATCH_KEEP_ALIVE))
        .into_response())
}

/// `POST /v1/nodes/self/apps/state`.
pub async fn report_state(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<NodeAppsReportAck>, ApiError> {
    let (peer, _) = calling_node(&svc, &cert, &headers).await?;
    let report: NodeAppsReport = parse_json(&body)?;
    let applied = report.applied_revision;
    let p = peer.clone();
    // Loopback replica addresses only in a lab that allows them, and only from this machine.
    let loopback_ok =
        svc.settings.guards.allow_loopback_replicas && remote.ip().to_canonical().is_loopback();
    let ack = svc
        .write(move |store, _| store.report_apps(&p, report, loopback_ok, Timestamp::now()))
        .await?
        .map_err(|e| {
            if let ReportError::Refused(why) = &e {
                tracing::warn!(peer_id = %peer, %remote, "state report refused, nothing stored: {why}");
            }
            ApiError::from(e)
        })?;
    if applied.is_some_and(|r| r < ack.revision) {
        tracing::debug!(peer_id = %peer, ?applied, current = ack.revision, "node is behind its assignments");
    }
    Ok(Json(ack))
}
