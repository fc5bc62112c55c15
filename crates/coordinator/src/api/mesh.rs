//! The mesh API nodes use: register, heartbeat, the roster and its watch stream.

use super::auth::{self, require_reader, until_revoked};
use super::error::ApiError;
use super::extract::{Bearer, JsonBody, bearer, resume_revision};
use super::require_admin;
use crate::listener::PeerCertificate;
use crate::node_auth::NodeProof;
use crate::registration::{self, Admission};
use crate::service::Service;
use crate::store::{CertificateRequest, HeartbeatOutcome, RegisterCommand, Registered};
use crate::watch;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use rand::Rng;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::mesh::{
    HeartbeatRequest, HeartbeatResponse, Peer, RegisterRequest, RegisterResponse,
    RenewCertificateRequest, RenewCertificateResponse,
};
use tabbify_wire::operator::SigningKeyInfo;
use tabbify_wire::{Tag, Timestamp};

/// SSE comment interval that keeps idle watch connections (and proxies) from timing out.
pub(super) const WATCH_KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn register(
    State(svc): State<Arc<Service>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    cert: PeerCertificate,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let req = registration::validate_register(req).map_err(|e| {
        svc.metrics.registration("refused");
        ApiError::bad_request(e.0)
    })?;
    let join_token = match bearer(&headers) {
        Bearer::Absent => None,
        // Sent but not a bearer value: checked (and refused) like any malformed token.
        Bearer::NotBearer => Some(String::new()),
        // The CA pin after the secret is for the node; the coordinator checks the secret.
        Bearer::Value(v) => Some(match tabbify_wire::token::split_join_token(&v) {
            Ok(t) => t.secret.to_string(),
            Err(_) => v,
        }),
    };
    let certificate = match &svc.settings.mtls {
        Some(mtls) => {
            let Some(csr) = req.csr.clone() else {
                svc.metrics.registration("refused");
                return Err(ApiError::bad_request(
                    "this coordinator authenticates nodes with client certificates: the register \
                     body must carry `csr` (a PEM certificate signing request for the node's TLS \
                     key); a node older than this coordinator cannot join it",
                ));
            };
            Some(CertificateRequest {
                ca: Arc::clone(&mtls.ca),
                csr,
                ttl: mtls.node_cert_ttl,
            })
        }
        None => None,
    };
    let proof = match &certificate {
        Some(_) => auth::node_proof(&svc, &cert, &headers),
        None => req.peer_credential.clone().map(NodeProof::Credential),
    };
    let cmd = RegisterCommand {
        request: req,
        join_token,
        open_join: svc.settings.open_join,
        alloc_start: rand::rng().random_range(1..=u16::MAX),
        proof,
        certificate,
    };
    let result = svc
        .write(move |store, sink| {
            let out = store.register(cmd, Timestamp::now());
            if let Ok(Registered {
                event: Some(ev), ..
            }) = &out
            {
                sink.push(ev.clone());
            }
            out
        })
        .await?;
    let reg = result.map_err(|e| {
        svc.metrics.registration("refused");
        tracing::info!(remote = %remote, error = %e, "registration refused");
        ApiError::from(e)
    })?;
    log_admission(&svc, &reg, remote);
    Ok(Json(RegisterResponse {
        peer_id: reg.peer.peer_id,
        ula: reg.peer.ula,
        subnet: reg.peer.subnet,
        mesh_prefix: svc.settings.mesh,
        heartbeat_interval_secs: svc.settings.heartbeat_interval_secs(),
        peer_credential: reg.credential,
        client_certificate: reg.certificate.map(|c| c.chain_pem),
        ca_certificate: svc
            .settings
            .mtls
            .as_ref()
            .map(|m| m.ca.cert_pem().to_string()),
        observed_addr: Some(remote.ip().to_canonical()),
        revision: reg.revision,
        signing_key: Some(svc.signing_key().verifying_key().to_text()),
    }))
}

/// The public key that signs operator tokens (public: it only verifies).
pub async fn signing_key(State(svc): State<Arc<Service>>) -> Json<SigningKeyInfo> {
    Json(SigningKeyInfo {
        public_key: svc.signing_key().verifying_key().to_text(),
    })
}

fn log_admission(svc: &Service, reg: &Registered, remote: SocketAddr) {
    let p = &reg.peer;
    match &reg.admission {
        Admission::Returning => {
            svc.metrics.registration("rejoined");
            tracing::info!(peer_id = %p.peer_id, name = %p.display_name, ula = %p.ula, %remote, "peer re-registered");
        }
        Admission::Token { token_id } => {
            svc.metrics.registration("joined");
            tracing::info!(peer_id = %p.peer_id, name = %p.display_name, ula = %p.ula, %remote, token = %token_id, "peer joined");
        }
        Admission::Open => {
            svc.metrics.registration("joined");
            tracing::warn!(peer_id = %p.peer_id, name = %p.display_name, ula = %p.ula, %remote, "peer joined WITHOUT a join token (--open-join)");
        }
    }
}

pub async fn heartbeat(
    State(svc): State<Arc<Service>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    cert: PeerCertificate,
    headers: HeaderMap,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let Some(proof) = auth::node_proof(&svc, &cert, &headers) else {
        svc.metrics.heartbeat("refused");
        return Err(ApiError::unauthorized(if svc.mtls() {
            "a heartbeat needs the node's client certificate (mTLS), issued at registration"
        } else {
            "a heartbeat needs `Authorization: Bearer <peer credential>` (returned by register)"
        }));
    };
    let mtls = svc.mtls();
    let req = registration::validate_heartbeat(req).map_err(|e| {
        svc.metrics.heartbeat("refused");
        ApiError::bad_request(e.0)
    })?;
    let result = svc
        .write(move |store, sink| {
            let out = store.heartbeat(&proof, mtls, &req, Timestamp::now());
            if let Ok(HeartbeatOutcome {
                event: Some(ev), ..
            }) = &out
            {
                sink.push(ev.clone());
            }
            out
        })
        .await?;
    match result {
        Ok(out) => {
            svc.metrics.heartbeat("ok");
            Ok(Json(HeartbeatResponse {
                heartbeat_interval_secs: svc.settings.heartbeat_interval_secs(),
                revision: out.revision,
                observed_addr: Some(remote.ip().to_canonical()),
            }))
        }
        Err(e) => {
            svc.metrics.heartbeat(match e {
                crate::store::HeartbeatError::Auth(
                    crate::node_auth::NodeAuthError::UnknownPeer,
                ) => "unknown_peer",
                _ => "refused",
            });
            Err(e.into())
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PeersQuery {
    tag: Option<String>,
}

pub async fn list_peers(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    headers: HeaderMap,
    query: Result<Query<PeersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_reader(&svc, &cert, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tag = match query.tag {
        Some(t) => {
            Some(Tag::new(t).map_err(|e| ApiError::bad_request(format!("tag filter: {e}")))?)
        }
        None => None,
    };
    let list = svc.read(move |s| s.peer_list(tag.as_ref())).await?;
    // Serialised off the store lock, into a buffer sized for the roster (about 360 B a peer).
    let mut body = Vec::with_capacity(64 + list.peers.len() * 400);
    serde_json::to_writer(&mut body, &list).map_err(|e| ApiError::internal("listing peers", &e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn get_peer(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    headers: HeaderMap,
    Path(peer_id): Path<String>,
) -> Result<Json<Peer>, ApiError> {
    require_reader(&svc, &cert, &headers).await?;
    let id = peer_id.clone();
    svc.read(move |s| s.peer(&id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no peer with id {peer_id:?}")))
}

pub async fn remove_peer(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(peer_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&svc, &headers)?;
    let id = peer_id.clone();
    let removed = svc
        .write(move |store, sink| {
            let out = store.remove_peer(&id, Timestamp::now());
            if let Ok(Some(ev)) = &out {
                sink.push(ev.clone());
            }
            out
        })
        .await??;
    match removed {
        Some(ev) => {
            tracing::info!(peer_id = %peer_id, ula = %ev.peer.ula, revision = ev.revision, "peer removed by admin");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("no peer with id {peer_id:?}"))),
    }
}

#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    since: Option<String>,
}

pub async fn watch(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let reader = require_reader(&svc, &cert, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = resume_revision(&headers, query.since)?;
    let permit = super::caller::open_stream(&svc, &headers, &cert, remote, "roster").await?;
    // The slot is given back when the response stream is dropped (the client went away).
    let stream = until_revoked(
        Arc::clone(&svc),
        reader,
        watch::start(Arc::clone(&svc), since, WATCH_KEEP_ALIVE).map(move |frame| {
            let _held = &permit;
            Ok::<_, std::convert::Infallible>(frame)
        }),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /v1/mesh/certificate`: a node renews its client certificate, authenticated by the one it
/// has (which may have expired, but must not have been revoked or replaced twice since).
pub async fn renew_certificate(
    State(svc): State<Arc<Service>>,
    cert: PeerCertificate,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RenewCertificateRequest>,
) -> Result<Json<RenewCertificateResponse>, ApiError> {
    let Some(mtls) = svc.settings.mtls.clone() else {
        return Err(ApiError::bad_request(
            "this coordinator runs with --insecure-no-mtls and issues no certificates",
        ));
    };
    let Some(proof) = auth::node_proof(&svc, &cert, &headers) else {
        return Err(ApiError::unauthorized(
            "renewing needs the node's current client certificate (mTLS)",
        ));
    };
    let request = CertificateRequest {
        ca: mtls.ca,
        csr: req.csr,
        ttl: mtls.node_cert_ttl,
    };
    let issued = svc
        .write(move |store, _| store.renew_certificate(&proof, &request, Timestamp::now()))
        .await?
        .map_err(|e| match e {
            crate::store::RenewError::Auth(a) => ApiError::from(a),
            crate::store::RenewError::Certificate(c) => ApiError::bad_request(c.to_string()),
            crate::store::RenewError::Store(s) => ApiError::internal("renewing a certificate", &s),
        })?;
    tracing::debug!(serial = %issued.serial, not_after = issued.not_after, "node certificate renewed");
    Ok(Json(RenewCertificateResponse {
        client_certificate: issued.chain_pem,
        not_after: issued.not_after,
    }))
}

/// `POST /v1/mesh/peers/{id}/revoke-certificates` (admin): the peer's certificates stop
/// working at once and its open streams close; it stays in the roster until removed.
pub async fn revoke_certificates(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(peer_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&svc, &headers)?;
    let id = peer_id.clone();
    let found = svc
        .write(move |store, _| store.revoke_certificates(&id))
        .await??;
    if !found {
        return Err(ApiError::not_found(format!("no peer with id {peer_id:?}")));
    }
    tracing::warn!(peer_id = %peer_id, "node certificates revoked by admin");
    Ok(StatusCode::NO_CONTENT)
}
