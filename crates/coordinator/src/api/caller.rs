//! Who is calling, as far as the stream caps are concerned. One function derives the identity a
//! watch stream is counted under, so switching it (to the peer id in a client certificate, say)
//! is a change in one place.

use super::error::ApiError;
use super::extract::{Bearer, bearer};
use crate::listener::PeerCertificate;
use crate::node_auth::NodeProof;
use crate::service::Service;
use crate::stream_limit::{LimitExceeded, StreamPermit};
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use tabbify_wire::ErrorCode;

/// The identity a request's streams count under: `peer:<id>` for the node certificate the TLS
/// layer checked (or, without mTLS, a valid peer credential), `admin` for the admin token, else
/// `ip:<remote address>` (an invalid or absent credential counts as its address, so guessing
/// credentials buys no extra streams).
pub async fn stream_identity(
    svc: &Service,
    headers: &HeaderMap,
    cert: &PeerCertificate,
    remote: SocketAddr,
) -> Result<String, ApiError> {
    if svc.mtls()
        && let Some(c) = &cert.0
    {
        return Ok(format!("peer:{}", c.peer_id));
    }
    let by_address = format!("ip:{}", remote.ip().to_canonical());
    let Bearer::Value(token) = bearer(headers) else {
        return Ok(by_address);
    };
    if svc.is_admin(&token) {
        return Ok("admin".into());
    }
    if token.starts_with(tabbify_auth::TOKEN_PREFIX) {
        return Ok(match super::auth::operator_reader(svc, &token) {
            Ok(super::auth::Reader::Operator { subject, .. }) => format!("operator:{subject}"),
            _ => by_address,
        });
    }
    let proof = NodeProof::Credential(token);
    let mtls = svc.mtls();
    let peer = svc
        .read(move |s| s.authenticate(&proof, mtls, false, super::auth::unix_now()))
        .await?;
    Ok(peer.map_or(by_address, |id| format!("peer:{id}")))
}

/// A slot for one more watch stream of this caller, or 429 saying which cap was reached.
pub async fn open_stream(
    svc: &Service,
    headers: &HeaderMap,
    cert: &PeerCertificate,
    remote: SocketAddr,
    what: &str,
) -> Result<StreamPermit, ApiError> {
    let identity = stream_identity(svc, headers, cert, remote).await?;
    svc.streams.try_open(&identity).map_err(|e| {
        let cap = match &e {
            LimitExceeded::PerIdentity { .. } => "per_identity",
            LimitExceeded::Total { .. } => "total",
        };
        tracing::warn!(%identity, %remote, stream = what, cap, "watch stream refused: {e}");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyStreams,
            e.to_string(),
        )
    })
}
