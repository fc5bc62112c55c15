//! The HTTP API: routes, body limit, fallbacks, and the operational endpoints (`/health`,
//! `/metrics`). Handlers only translate between HTTP and [`Service`]; decisions live below it.

mod admin;
mod apps;
mod auth;
pub mod caller;
pub mod error;
pub mod extract;
mod mesh;
pub mod openapi;

use crate::service::Service;
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use error::ApiError;
use extract::{BODY_LIMIT, Bearer, bearer};
use std::sync::{Arc, LazyLock};
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::{ErrorCode, SOFTWARE_VERSION};
use tower_http::trace::TraceLayer;

/// All routes, with the service as state.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_document))
        .route("/v1/mesh/register", post(mesh::register))
        .route("/v1/mesh/heartbeat", post(mesh::heartbeat))
        .route("/v1/mesh/peers", get(mesh::list_peers))
        .route(
            "/v1/mesh/peers/{id}",
            get(mesh::get_peer).delete(mesh::remove_peer),
        )
        .route("/v1/mesh/watch", get(mesh::watch))
        .route("/v1/mesh/certificate", post(mesh::renew_certificate))
        .route(
            "/v1/mesh/peers/{id}/revoke-certificates",
            post(mesh::revoke_certificates),
        )
        .route("/v1/mesh/signing-key", get(mesh::signing_key))
        .route(
            "/v1/admin/operator-tokens",
            post(admin::create_operator_token),
        )
        .route(
            "/v1/admin/server-certificates",
            post(admin::issue_server_certificate),
        )
        .route(
            "/v1/admin/join-tokens",
            post(admin::create_join_token).get(admin::list_join_tokens),
        )
        .route(
            "/v1/admin/join-tokens/{id}",
            delete(admin::revoke_join_token),
        )
        .route("/v1/admin/removed-peers", get(admin::list_removed_peers))
        .route(
            "/v1/admin/removed-peers/{which}/readmit",
            post(admin::readmit_peer),
        )
        .route("/v1/apps", post(apps::put_app).get(apps::list_apps))
        .route(
            "/v1/apps/{name}",
            get(apps::get_app).delete(apps::delete_app),
        )
        .route("/v1/apps/{name}/endpoints", get(apps::app_endpoints))
        .route("/v1/nodes/self/assignments", get(apps::assignments))
        .route(
            "/v1/nodes/self/assignments/watch",
            get(apps::watch_assignments),
        )
        .route("/v1/nodes/self/apps/state", post(apps::report_state))
        .merge(
            tabbify_ingress::Ingress::new(crate::ingress::StoreEndpoints {
                service: Arc::clone(&service),
            })
            .router(),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

/// Checks `Authorization: Bearer <admin token>`.
pub(crate) fn require_admin(svc: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Bearer::Value(v) if svc.is_admin(&v) => Ok(()),
        Bearer::Value(_) => Err(ApiError::unauthorized("the admin token is wrong")),
        Bearer::Absent | Bearer::NotBearer => Err(ApiError::unauthorized(
            "admin endpoints need `Authorization: Bearer <admin token>` (see <data-dir>/admin-token)",
        )),
    }
}

async fn health(State(svc): State<Arc<Service>>) -> Result<Json<CoordinatorHealth>, ApiError> {
    let (total, online, revision) = svc
        .read(|s| {
            let (t, o) = s.counts();
            (t, o, s.revision())
        })
        .await?;
    Ok(Json(CoordinatorHealth {
        status: "ok".into(),
        version: SOFTWARE_VERSION.into(),
        tls: svc.mtls(),
        open_join: svc.settings.open_join,
        peers_total: total,
        peers_online: online,
        revision,
        mesh_prefix: svc.settings.mesh.to_string(),
    }))
}

async fn metrics(State(svc): State<Arc<Service>>) -> Result<Response, ApiError> {
    let (total, online, revision) = svc
        .read(|s| {
            let (t, o) = s.counts();
            (t, o, s.revision())
        })
        .await?;
    let text = svc.metrics.render(total, online, revision);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi_document() -> Json<serde_json::Value> {
    static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(openapi::document);
    Json(DOCUMENT.clone())
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadRequest,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
