//! The `/v1/apps` routes of the control API (documented in `docs/apps-api.md`). Handlers are
//! thin: read the request, ask the app manager through the [`AppsHandle`], turn the answer into a
//! status and a JSON body (errors as `tabbify_wire::ErrorBody`).

use super::error::AppError;
use super::handle::AppsHandle;
use super::logs;
use super::manager::Deployed;
use super::upload::{read_upload, too_large};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tabbify_wire::app::AppId;
use tabbify_wire::node_apps::{AppInfo, AppList};

/// The app routes, with their own state; merge them into the control API's router.
pub fn router<S: Clone + Send + Sync + 'static>(apps: AppsHandle) -> Router<S> {
    let limit = apps.max_upload.body();
    Router::new()
        .route(
            "/v1/apps",
            get(list).post(deploy).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/apps/{id}", get(get_app).delete(delete_app))
        .route("/v1/apps/{id}/stop", post(stop))
        .route("/v1/apps/{id}/start", post(start))
        .route("/v1/apps/{id}/restart", post(restart))
        .route("/v1/apps/{id}/reset", post(reset))
        .route("/v1/apps/{id}/logs", get(logs::logs))
        .with_state(apps)
}

/// An id from the path; one that cannot be an app id names no app.
pub fn parse_id(raw: &str) -> Result<AppId, AppError> {
    AppId::new(raw).map_err(|_| AppError::unknown_app(raw))
}

async fn deploy(
    State(apps): State<AppsHandle>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > apps.max_upload.body() as u64) {
        return Err(too_large(&apps.max_upload, None));
    }
    let multipart = multipart.map_err(|e| {
        AppError::BadRequest(format!(
            "a deploy is a multipart/form-data request with the parts `manifest` and `artifact` ({})",
            e.body_text()
        ))
    })?;
    let upload = read_upload(multipart, &apps.max_upload).await?;
    let Deployed { info, created } = apps.deploy(upload).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/apps/{}", info.app_id);
    Ok((status, [(header::LOCATION, location)], Json(info)).into_response())
}

async fn list(State(apps): State<AppsHandle>) -> Result<Json<AppList>, AppError> {
    Ok(Json(AppList {
        apps: apps.list().await?,
    }))
}

async fn get_app(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppInfo>, AppError> {
    Ok(Json(apps.get(parse_id(&id)?).await?))
}

async fn stop(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppInfo>, AppError> {
    Ok(Json(apps.stop(parse_id(&id)?).await?))
}

async fn start(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppInfo>, AppError> {
    Ok(Json(apps.start(parse_id(&id)?).await?))
}

async fn restart(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppInfo>, AppError> {
    Ok(Json(apps.restart(parse_id(&id)?).await?))
}

async fn reset(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<Json<AppInfo>, AppError> {
    Ok(Json(apps.reset(parse_id(&id)?).await?))
}

async fn delete_app(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    apps.delete(parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
