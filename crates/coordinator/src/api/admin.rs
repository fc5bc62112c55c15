//! Admin API: join tokens (create, list, revoke) and operator tokens (mint). Every route needs
//! the admin token.

use super::error::ApiError;
use super::extract::JsonBody;
use super::require_admin;
use crate::service::Service;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tabbify_wire::Timestamp;
use tabbify_wire::operator::{CreateOperatorTokenRequest, CreatedOperatorToken};
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

/// Mints an operator token. The token is in the answer only: never stored, never logged (its
/// id is, with who holds it and what it grants).
pub async fn create_operator_token(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateOperatorTokenRequest>,
) -> Result<(StatusCode, Json<CreatedOperatorToken>), ApiError> {
    require_admin(&svc, &headers)?;
    let grant = crate::operator_tokens::check_request(&req).map_err(ApiError::bad_request)?;
    let now = Timestamp::now();
    let (token, claims) = tabbify_auth::mint(svc.signing_key(), &grant, now.unix_ms() / 1000);
    tracing::info!(
        id = %claims.jti,
        subject = %claims.sub,
        scopes = ?claims.scopes,
        nodes = ?claims.nodes,
        tags = ?claims.tags,
        ttl_secs = grant.ttl_secs,
        "operator token minted"
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedOperatorToken {
            token,
            id: claims.jti,
            subject: claims.sub,
            scopes: claims.scopes,
            issued_at: Timestamp(claims.iat.saturating_mul(1000)),
            expires_at: Timestamp(claims.exp.saturating_mul(1000)),
            nodes: claims.nodes,
            tags: claims.tags,
        }),
    ))
}
