//! Who is calling: the operator (admin token), a node (its certificate, or with
//! `--insecure-no-mtls` its peer credential), or nobody. Handlers ask for the kind of caller a
//! route needs; a refusal is a 401 (or 404 `unknown_peer`, which tells a node to register again)
//! with the reason.

use super::error::ApiError;
use super::extract::{Bearer, bearer};
use crate::listener::PeerCertificate;
use crate::node_auth::{NodeAuthError, NodeProof};
use crate::service::Service;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tabbify_wire::ErrorCode;
use tabbify_wire::mesh::PeerId;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    tabbify_wire::Timestamp::now().0 / 1000
}

/// What the request carries to say it is a node. With mTLS only the certificate counts; a
/// bearer value is then left for the admin check.
pub(crate) fn node_proof(
    svc: &Service,
    cert: &PeerCertificate,
    headers: &HeaderMap,
) -> Option<NodeProof> {
    if svc.mtls() {
        cert.0.as_ref().map(|c| NodeProof::Certificate {
            peer_id: c.peer_id.clone(),
            serial: c.serial.clone(),
            not_after: c.not_after,
        })
    } else {
        match bearer(headers) {
            Bearer::Value(v) if v.starts_with(crate::tokens::PEER_CREDENTIAL_PREFIX) => {
                Some(NodeProof::Credential(v))
            }
            _ => None,
        }
    }
}

impl From<NodeAuthError> for ApiError {
    fn from(e: NodeAuthError) -> Self {
        match e {
            NodeAuthError::UnknownPeer => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownPeer, e.to_string())
            }
            _ => ApiError::unauthorized(e.to_string()),
        }
    }
}

fn missing_node_proof(svc: &Service) -> ApiError {
    if svc.mtls() {
        ApiError::unauthorized(
            "node routes need the node's client certificate (mTLS), issued at registration",
        )
    } else {
        ApiError::unauthorized(
            "node routes need `Authorization: Bearer <peer credential>` (returned by register)",
        )
    }
}

/// The node making this request, checked against the roster now.
pub(crate) async fn calling_node(
    svc: &Service,
    cert: &PeerCertificate,
    headers: &HeaderMap,
) -> Result<(PeerId, NodeProof), ApiError> {
    let proof = node_proof(svc, cert, headers).ok_or_else(|| missing_node_proof(svc))?;
    let mtls = svc.mtls();
    let p = proof.clone();
    let peer = svc
        .read(move |s| s.authenticate(&p, mtls, false, unix_now()))
        .await??;
    Ok((peer, proof))
}

/// Who may read the roster and app endpoints.
#[derive(Debug, Clone)]
pub(crate) enum Reader {
    Admin,
    /// An operator token granting `mesh:read`, valid until `exp` (Unix seconds).
    Operator {
        subject: String,
        exp: u64,
    },
    Node(NodeProof),
}

/// Checks an operator token (`tbfo_…`) for `mesh:read`: signed by this coordinator's key, not
/// expired, and not limited to some nodes (the roster names them all).
pub(crate) fn operator_reader(svc: &Service, token: &str) -> Result<Reader, ApiError> {
    let need = tabbify_auth::Requirement {
        scope: tabbify_wire::operator::Scope::MeshRead,
        node: None,
    };
    let key = svc.signing_key().verifying_key();
    let claims = tabbify_auth::verify(Some(token), &key, unix_now(), &need).map_err(|refusal| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            refusal.code(),
            refusal.to_string(),
        )
    })?;
    if claims.nodes.is_some() || claims.tags.is_some() {
        return Err(ApiError::unauthorized(
            "the operator token is limited to some nodes, and the roster names every node: \
             use a token without node or tag limits",
        ));
    }
    Ok(Reader::Operator {
        subject: claims.sub,
        exp: claims.exp,
    })
}

/// The operator or a node of the mesh; anybody else gets a 401 saying what is needed.
pub(crate) async fn require_reader(
    svc: &Service,
    cert: &PeerCertificate,
    headers: &HeaderMap,
) -> Result<Reader, ApiError> {
    if let Some(proof) = node_proof(svc, cert, headers) {
        let mtls = svc.mtls();
        let p = proof.clone();
        // A reader that is no (longer a) member is simply not authorised here.
        svc.read(move |s| s.authenticate(&p, mtls, false, unix_now()))
            .await?
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        return Ok(Reader::Node(proof));
    }
    match bearer(headers) {
        Bearer::Value(v) if svc.is_admin(&v) => Ok(Reader::Admin),
        Bearer::Value(v) if v.starts_with(tabbify_auth::TOKEN_PREFIX) => operator_reader(svc, &v),
        Bearer::Value(_) => Err(ApiError::unauthorized(
            "the bearer token is neither the admin token, an operator token nor a credential \
             this coordinator accepts",
        )),
        Bearer::Absent | Bearer::NotBearer => Err(ApiError::unauthorized(if svc.mtls() {
            "the roster is readable by nodes of the mesh (client certificate) and operators \
             (`Authorization: Bearer <admin token or mesh:read operator token>`)"
        } else {
            "the roster is readable by nodes of the mesh (`Authorization: Bearer <peer \
             credential>`) and operators (`Authorization: Bearer <admin token or mesh:read \
             operator token>`)"
        })),
    }
}

/// Sleeps until `at` (Unix seconds).
async fn sleep_until_unix(at: u64) {
    let left = at.saturating_sub(unix_now());
    tokio::time::sleep(std::time::Duration::from_secs(left)).await;
}

/// `stream`, ended as soon as its reader may no longer read: a node's proof stops identifying a
/// peer of the roster (removed, purged, certificates revoked) or its certificate expires; an
/// operator token expires. The admin token never ends it.
pub(crate) fn until_revoked<S>(
    svc: Arc<Service>,
    reader: Reader,
    stream: S,
) -> impl futures_util::Stream<Item = S::Item> + Send + 'static
where
    S: futures_util::Stream + Send + 'static,
{
    use futures_util::StreamExt;
    let ended = async move {
        let proof = match reader {
            Reader::Admin => return std::future::pending::<()>().await,
            Reader::Operator { subject, exp } => {
                sleep_until_unix(exp).await;
                tracing::info!(%subject, "closing a stream: the operator token expired");
                return;
            }
            Reader::Node(proof) => proof,
        };
        let expiry = match &proof {
            NodeProof::Certificate { not_after, .. } => Some(*not_after),
            NodeProof::Credential(_) => None,
        };
        let expired = async move {
            match expiry {
                Some(at) => sleep_until_unix(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(expired);
        let mut changes = svc.subscribe_auth();
        let claimed = proof.claimed_peer();
        let mtls = svc.mtls();
        loop {
            tokio::select! {
                () = &mut expired => {
                    tracing::info!(peer = ?claimed, "closing a stream: the node certificate expired");
                    return;
                }
                changed = changes.recv() => {
                    match changed {
                        // Another peer's change: nothing to check.
                        Ok(ids) if !claimed.as_ref().is_some_and(|c| ids.contains(c)) => continue,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    let p = proof.clone();
                    let still = svc.read(move |s| s.authenticate(&p, mtls, false, unix_now())).await;
                    if !matches!(still, Ok(Ok(_))) {
                        tracing::info!(peer = ?claimed, "closing a stream: its peer was removed or its certificate revoked");
                        return;
                    }
                }
            }
        }
    };
    stream.take_until(Box::pin(ended))
}
