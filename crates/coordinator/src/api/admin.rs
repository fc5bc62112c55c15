//! Admin API: join tokens (create, list, revoke, optionally with the peers they admitted),
//! removed peers (list, re-admit) and operator tokens (mint). Every route needs the admin token.

use super::error::ApiError;
use super::extract::JsonBody;
use super::require_admin;
use crate::service::Service;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use tabbify_wire::Timestamp;
use tabbify_wire::mesh::{RemovedPeer, RemovedPeerList};
use tabbify_wire::operator::{CreateOperatorTokenRequest, CreatedOperatorToken};
use tabbify_wire::token::{
    CreateJoinTokenRequest, CreatedJoinToken, JoinTokenList, RevokedJoinToken,
};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeQuery {
    /// Also remove every peer the token admitted.
    #[serde(default)]
    cascade: bool,
}

/// `DELETE /v1/admin/join-tokens/{id}[?cascade=true]`: 204, or with `cascade` 200 and the
/// peers removed with it.
pub async fn revoke_join_token(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<RevokeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(&svc, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let token = id.clone();
    if !query.cascade {
        svc.write(move |store, _| store.revoke_join_token(&token, Timestamp::now()))
            .await??;
        tracing::info!(token = %id, "join token revoked");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let done = svc
        .write(move |store, sink| {
            let out = store.revoke_join_token_cascade(&token, Timestamp::now());
            if let Ok(done) = &out {
                sink.extend(done.events.iter().cloned());
            }
            out
        })
        .await??;
    for r in &done.removed {
        tracing::info!(token = %id, peer_id = %r.peer_id, name = %r.display_name, "peer removed with its join token");
    }
    tracing::info!(token = %id, removed = done.removed.len(), "join token revoked with --cascade");
    Ok(Json(RevokedJoinToken {
        id,
        removed_peers: done.removed,
    })
    .into_response())
}

/// `GET /v1/admin/removed-peers`: the peers whose keys are refused until re-admitted.
pub async fn list_removed_peers(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
) -> Result<Json<RemovedPeerList>, ApiError> {
    require_admin(&svc, &headers)?;
    let removed_peers = svc.read(|s| s.removed_peers()).await?;
    Ok(Json(RemovedPeerList { removed_peers }))
}

/// `POST /v1/admin/removed-peers/{peer id or public key}/readmit`: the key may register again
/// (with a join token, as a new peer). Answers with the entry that was lifted.
pub async fn readmit_peer(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(which): Path<String>,
) -> Result<Json<RemovedPeer>, ApiError> {
    require_admin(&svc, &headers)?;
    let w = which.clone();
    let lifted = svc.write(move |store, _| store.readmit(&w)).await??;
    match lifted {
        Some(r) => {
            tracing::info!(peer_id = %r.peer_id, key = %r.public_key, "removed peer re-admitted");
            Ok(Json(r))
        }
        None => Err(ApiError::not_found(format!(
            "no removed peer has id or public key {which:?} (see GET /v1/admin/removed-peers)"
        ))),
    }
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

/// Issues a mesh-CA server certificate for another service of the mesh (the appsrv, say) from
/// its CSR, for the names the operator lists.
pub async fn issue_server_certificate(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<tabbify_wire::certificate::IssueServerCertificateRequest>,
) -> Result<
    (
        StatusCode,
        Json<tabbify_wire::certificate::IssuedServerCertificate>,
    ),
    ApiError,
> {
    require_admin(&svc, &headers)?;
    let Some(mtls) = svc.settings.mtls.clone() else {
        return Err(ApiError::bad_request(
            "this coordinator runs with --insecure-no-mtls and has no mesh CA to issue from",
        ));
    };
    let ttl = crate::server_certs::check_request(&req).map_err(ApiError::bad_request)?;
    let now = Timestamp::now().unix_ms() / 1000;
    let issued = mtls
        .ca
        .issue_service(&req.csr, &req.names, ttl, now)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(names = ?req.names, serial = %issued.serial, ttl_secs = ttl.as_secs(), "server certificate issued");
    Ok((
        StatusCode::CREATED,
        Json(tabbify_wire::certificate::IssuedServerCertificate {
            certificate_chain: issued.chain_pem,
            ca: mtls.ca.cert_pem().to_string(),
            serial: issued.serial,
            not_after: Timestamp(issued.not_after.saturating_mul(1000)),
        }),
    ))
}
