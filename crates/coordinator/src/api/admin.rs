//! Admin API: join tokens (create, list, revoke). Every route needs the admin token.

use super::error::ApiError;
use super::extract::JsonBody;
use super::require_admin;
use crate::service::Service;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tabbify_wire::Timestamp;
use tabbify_wire::token::{CreateJoinTokenRequest, CreatedJoinToken, JoinTokenList};

pub async fn create_join_token(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateJoinTokenRequest>,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiError> {
    require_admin(&svc, &headers)?;
    let mut created = svc
        .write(move |store, _| store.create_join_token(&req, Timestamp::now()))
        .await??;
    // The pin is not secret and not stored: it rides along so the token alone is enough for a
    // node to trust this coordinator.
    if let Some(pin) = svc.settings.mtls.as_ref().and_then(|m| m.token_pin) {
        created.token = format!("{}.{pin}", created.token);
    }
    tracing::info!(
        token = %created.info.id,
        uses = ?created.info.uses_allowed,
        expires_at = %created.info.expires_at.to_rfc3339(),
        tags = ?created.info.tags,
        "join token created"
    );
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list_join_tokens(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
) -> Result<Json<JoinTokenList>, ApiError> {
    require_admin(&svc, &headers)?;
    let list = svc.read(|s| s.join_tokens(Timestamp::now())).await??;
    Ok(Json(list))
}

pub async fn revoke_join_token(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&svc, &headers)?;
    let token = id.clone();
    svc.write(move |store, _| store.revoke_join_token(&token, Timestamp::now()))
        .await??;
    tracing::info!(token = %id, "join token revoked");
    Ok(StatusCode::NO_CONTENT)
}
