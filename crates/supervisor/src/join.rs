//! Joining the coordinator and staying in its roster: register (with retries and capped backoff,
//! so a coordinator that is down never crash-loops the node), persist what it assigned, then
//! heartbeat; when the coordinator has forgotten us, register again.

use crate::backoff::join_delay;
use crate::probe::node_resources;
use crate::status::StatusHandle;
use std::path::PathBuf;
use std::time::Duration;
use tabbify_client::{ClientError, CoordinatorClient};
use tabbify_mesh::identity::MeshIdentity;
use tabbify_wire::health::MeshState;
use tabbify_wire::mesh::{HeartbeatRequest, RegisterRequest, RegisterResponse};
use tabbify_wire::{ErrorCode, SOFTWARE_VERSION};
use tokio::sync::watch;

/// Everything the join task needs.
pub struct Joiner {
    pub client: CoordinatorClient,
    pub data_dir: PathBuf,
    pub identity: MeshIdentity,
    pub join_token: Option<String>,
    pub status: StatusHandle,
    pub backoff_cap: Duration,
    /// The node's TLS key and certificate (mTLS with the coordinator).
    pub tls: std::sync::Arc<crate::node_tls::NodeTls>,
    /// Where the coordinator's token-signing key is pinned for the control API.
    pub trusted_key: crate::control_auth::TrustedKey,
}

/// What to do after a failed registration: pure, from the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRegisterFailure {
    /// The address we asked for is not ours to have any more: ask for none, right away.
    RetryWithoutRequestedUla,
    /// Wait (backoff) and try again.
    Backoff,
}

pub fn after_register_failure(err: &ClientError, requested_ula: bool) -> AfterRegisterFailure {
    let address_refused = matches!(
        err.code(),
        Some(ErrorCode::AddressUnavailable | ErrorCode::BadRequest)
    );
    if requested_ula && address_refused {
        AfterRegisterFailure::RetryWithoutRequestedUla
    } else {
        AfterRegisterFailure::Backoff
    }
}

/// Why the heartbeat loop ended.
enum HeartbeatEnd {
    /// The coordinator no longer knows this peer: register again.
    Forgotten,
}

impl Joiner {
    /// Runs forever: join, then heartbeat, re-joining when forgotten. Every successful
    /// registration is published on `registered`.
    pub async fn run(mut self, registered: watch::Sender<Option<RegisterResponse>>) {
        loop {
            let resp = self.register_until_done().await;
            registered.send_replace(Some(resp.clone()));
            match self.heartbeat_loop(&resp).await {
                HeartbeatEnd::Forgotten => {
                    tracing::warn!("coordinator has forgotten this node; registering again");
                    self.status.update(|s| s.mesh = MeshState::Joining);
                }
            }
        }
    }

    fn register_request(&self, with_ula: bool) -> RegisterRequest {
        let status = self.status.snapshot();
        // Our ULA and credential mean something only to the coordinator that issued them.
        let reg = self
            .identity
            .registration
            .as_ref()
            .filter(|r| r.coordinator == self.client.base_url());
        RegisterRequest {
            public_key: self.identity.public_key().clone(),
            display_name: status.name.clone(),
            tags: status.tags.clone(),
            endpoints: status.endpoints.clone(),
            requested_ula: reg.filter(|_| with_ula).map(|r| r.ula),
            version: SOFTWARE_VERSION.to_string(),
            peer_credential: reg.and_then(|r| r.peer_credential.clone()),
            resources: Some(node_resources()),
            csr: match self.tls.csr() {
                Ok(csr) => Some(csr),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot make a certificate request");
                    None
                }
            },
        }
    }

    async fn register_until_done(&mut self) -> RegisterResponse {
        let mut attempt: u32 = 0;
        let mut with_ula = true;
        loop {
            let req = self.register_request(with_ula);
            let requested = req.requested_ula.is_some();
            match self.client.register(self.join_token.as_deref(), &req).await {
                Ok(resp) => {
                    self.on_registered(&resp);
                    return resp;
                }
                Err(err) => {
                    let msg = err.to_string();
                    self.status.update(|s| s.mesh_error = Some(msg.clone()));
                    match after_register_failure(&err, requested) {
                        AfterRegisterFailure::RetryWithoutRequestedUla => {
                            tracing::warn!(error = %err, "requested ULA refused; joining with a new address");
                            with_ula = false;
                            continue;
                        }
                        AfterRegisterFailure::Backoff => {
                            let delay = join_delay(attempt, self.backoff_cap, rand::random());
                            if err.is_transient() {
                                tracing::warn!(error = %err, retry_in = ?delay, "cannot join the mesh yet");
                            } else {
                                tracing::error!(error = %err, retry_in = ?delay, "the coordinator refused this node");
                            }
                            crate::systemd::status(&format!("joining: {msg}"));
                            attempt = attempt.saturating_add(1);
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        }
    }

    fn on_registered(&mut self, resp: &RegisterResponse) {
        if let Some(chain) = &resp.client_certificate {
            match self.tls.accept(chain, resp.ca_certificate.as_deref()) {
                Ok(info) => {
                    tracing::info!(serial = %info.serial, not_after = info.not_after, "node certificate issued")
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the coordinator's certificate for this node is unusable")
                }
            }
            // Pooled connections were opened without it.
            if let Err(e) = self.client.reset_connections() {
                tracing::error!(error = %e, "cannot renew the coordinator connections");
            }
        }
        let before = self.identity.ula();
        self.identity
            .apply_registration(self.client.base_url(), resp);
        if let Err(e) = self.identity.save(&self.data_dir) {
            // The join still counts; the next start re-registers with the key, which is on disk.
            tracing::error!(error = %e, "could not save the mesh identity");
        }
        match before {
            Some(old) if old != resp.ula => {
                tracing::warn!(%old, new = %resp.ula, "joined with a new ULA")
            }
            _ => {}
        }
        tracing::info!(peer_id = %resp.peer_id, ula = %resp.ula, subnet = %resp.subnet, "joined the mesh");
        match &resp.signing_key {
            Some(key) => crate::control_auth::pin(&self.data_dir, &self.trusted_key, key),
            None => tracing::warn!(
                "the coordinator sent no token-signing key: the control API keeps the key it had (or refuses every token)"
            ),
        }
        self.status.update(|s| {
            s.observed_addr = resp.observed_addr;
            s.peer_id = Some(resp.peer_id.clone());
            s.ula = Some(resp.ula);
            s.mesh_error = None;
        });
    }

    async fn heartbeat_loop(&self, resp: &RegisterResponse) -> HeartbeatEnd {
        let credential = resp.peer_credential.clone();
        let mut interval = Duration::from_secs(resp.heartbeat_interval_secs.max(1));
        let mut changes = self.status.subscribe();
        let advertised = |s: &crate::status::NodeStatus| (s.tags.clone(), s.endpoints.clone());
        let mut last_sent = advertised(&self.status.snapshot());
        let mut next = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return HeartbeatEnd::Forgotten;
                    }
                    let now = advertised(&changes.borrow_and_update());
                    if now == last_sent {
                        continue;
                    }
                    tracing::info!(tags = ?now.0, endpoints = ?now.1, "tags or endpoints changed; telling the coordinator now");
                }
            }
            let status = self.status.snapshot();
            let req = HeartbeatRequest {
                tags: status.tags.clone(),
                endpoints: status.endpoints.clone(),
                version: Some(SOFTWARE_VERSION.to_string()),
                resources: Some(node_resources()),
            };
            match self.client.heartbeat(credential.as_deref(), &req).await {
                Ok(hb) => {
                    last_sent = (req.tags, req.endpoints);
                    interval = Duration::from_secs(hb.heartbeat_interval_secs.max(1));
                    if status.mesh_error.is_some() || status.observed_addr != hb.observed_addr {
                        self.status.update(|s| {
                            s.mesh_error = None;
                            s.observed_addr = hb.observed_addr;
                        });
                    }
                }
                Err(err) if matches!(err.status(), Some(401 | 404)) => {
                    return HeartbeatEnd::Forgotten;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "heartbeat failed");
                    let msg = err.to_string();
                    self.status.update(|s| s.mesh_error = Some(msg));
                }
            }
            next = tokio::time::Instant::now() + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabbify_wire::ErrorBody;

    fn api(code: ErrorCode, status: u16) -> ClientError {
        ClientError::Api {
            what: "register".into(),
            status,
            body: ErrorBody::new(code, "x"),
        }
    }

    #[test]
    fn refused_address_drops_the_request_only_when_we_made_one() {
        let taken = api(ErrorCode::AddressUnavailable, 409);
        assert_eq!(
            after_register_failure(&taken, true),
            AfterRegisterFailure::RetryWithoutRequestedUla
        );
        assert_eq!(
            after_register_failure(&taken, false),
            AfterRegisterFailure::Backoff
        );
        let outside = api(ErrorCode::BadRequest, 400);
        assert_eq!(
            after_register_failure(&outside, true),
            AfterRegisterFailure::RetryWithoutRequestedUla
        );
    }

    #[test]
    fn token_and_transport_failures_back_off() {
        for code in [
            ErrorCode::TokenMissing,
            ErrorCode::TokenExpired,
            ErrorCode::Conflict,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                after_register_failure(&api(code, 401), true),
                AfterRegisterFailure::Backoff
            );
        }
    }
}
