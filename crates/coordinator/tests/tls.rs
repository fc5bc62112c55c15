//! TLS and mTLS, the default: every test here is an attack that the coordinator must refuse, or
//! the way a node is meant to get in, run against the real binary on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Coordinator, random_key, request};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabbify_client::{CaFingerprint, ClientCertSlot, CoordinatorClient, ServerTrust, TlsSettings};
use tabbify_pki::NodeKey;
use tabbify_wire::mesh::{HeartbeatRequest, RegisterResponse, RenewCertificateRequest};
use tabbify_wire::token::CreateJoinTokenRequest;

/// A node's side: its TLS key, the slot its client presents from, and a client trusting the
/// coordinator the way a fresh node does (by the pin in the token).
struct TestNode {
    key: NodeKey,
    slot: Arc<ClientCertSlot>,
    client: CoordinatorClient,
}

impl TestNode {
    fn new(url: &str, trust: ServerTrust) -> Self {
        let slot = ClientCertSlot::new();
        let client = CoordinatorClient::with_tls(
            url,
            &TlsSettings {
                trust,
                identity: Some(slot.clone()),
            },
        )
        .unwrap();
        Self {
            key: NodeKey::generate().unwrap(),
            slot,
            client,
        }
    }

    async fn join(&self, token: &str, name: &str) -> RegisterResponse {
        let mut req = request(random_key(), name);
        req.csr = Some(self.key.csr_pem().unwrap());
        let resp = self.client.register(Some(token), &req).await.unwrap();
        self.install(resp.client_certificate.as_deref().unwrap());
        resp
    }

    fn install(&self, chain: &str) {
        self.slot.set(self.key.certified(chain).unwrap());
        self.client.reset_connections().unwrap();
    }

    async fn heartbeat(&self) -> Result<(), tabbify_client::ClientError> {
        self.client
            .heartbeat(None, &HeartbeatRequest::default())
            .await
            .map(drop)
    }
}

/// Reads `s` until it ends; when. The roster stream may still carry the `removed` event first.
async fn end_of<S, T, E>(mut s: std::pin::Pin<&mut S>) -> Instant
where
    S: futures_util::Stream<Item = Result<T, E>>,
{
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), s.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return Instant::now(),
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the stream stayed open 2 s after the peer was removed"),
        }
    }
}

fn pin_of(token: &str) -> CaFingerprint {
    tabbify_wire::token::split_join_token(token)
        .unwrap()
        .ca_fingerprint
        .unwrap()
        .parse()
        .unwrap()
}

async fn token(c: &Coordinator) -> String {
    c.create_token(&CreateJoinTokenRequest {
        reusable: true,
        ..Default::default()
    })
    .await
    .token
}

#[tokio::test]
async fn a_node_joins_with_nothing_but_the_token_and_then_only_its_certificate_counts() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    assert!(c.url.starts_with("https://"), "{}", c.url);
    let token = token(&c).await;
    let pin = pin_of(&token);
    assert!(pin.matches(&tabbify_pki::pem::certificates(c.ca_pem().as_bytes(), "ca").unwrap()[0]));

    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin));
    let resp = node.join(&token, "n1").await;
    assert_eq!(resp.peer_credential, None, "no bearer credential with mTLS");
    assert_eq!(resp.ca_certificate.as_deref(), Some(c.ca_pem().as_str()));
    let info =
        tabbify_pki::NodeCertInfo::parse_pem(resp.client_certificate.as_deref().unwrap()).unwrap();
    assert_eq!(info.peer_id, resp.peer_id);
    node.heartbeat().await.unwrap();

    // The same calls without the certificate, or with a bearer credential, are refused.
    let stranger = TestNode::new(&c.url, ServerTrust::Pinned(pin));
    let err = stranger.heartbeat().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");
    let err = stranger
        .client
        .heartbeat(
            Some(&format!("tbfp_{}_forged", resp.peer_id)),
            &HeartbeatRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let err = stranger.client.assignments(None).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let health = node.client.health().await.unwrap();
    assert!(health.tls);
}

#[tokio::test]
async fn a_joining_node_refuses_a_coordinator_with_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let real = Coordinator::start_tls(&dir.path().join("real"), &[]);
    let impostor = Coordinator::start_tls(&dir.path().join("impostor"), &[]);
    let token = token(&real).await;
    // The token is sent to the impostor's address (DNS spoofed, a man in the middle...).
    let node = TestNode::new(&impostor.url, ServerTrust::Pinned(pin_of(&token)));
    let mut req = request(random_key(), "victim");
    req.csr = Some(node.key.csr_pem().unwrap());
    let err = node.client.register(Some(&token), &req).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("not from the mesh CA") && text.contains(&pin_of(&token).to_string()),
        "the error must say the certificate is not the pinned CA's: {text}"
    );
    // Nothing reached the impostor's roster.
    let list: tabbify_wire::mesh::PeerList = impostor.get_json("/v1/mesh/peers").await;
    assert!(list.peers.is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_ca_gets_no_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    let token = token(&c).await;
    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    let resp = node.join(&token, "n1").await;
    // A forger makes its own CA and a certificate naming the real peer.
    let rogue = tabbify_pki::MeshCa::generate("rogue").unwrap();
    let forged = rogue
        .issue_node(
            &node.key.csr_pem().unwrap(),
            &resp.peer_id,
            resp.ula,
            &resp.subnet.to_string(),
            Duration::from_secs(3600),
            tabbify_wire::Timestamp::now().0 / 1000,
        )
        .unwrap();
    let forger = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    forger
        .slot
        .set(node.key.certified(&forged.chain_pem).unwrap());
    let err = forger.heartbeat().await.unwrap_err();
    assert_eq!(err.status(), None, "the TLS handshake itself fails: {err}");
}

#[tokio::test]
async fn the_roster_is_for_members_and_operators() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    let token = token(&c).await;
    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    let resp = node.join(&token, "n1").await;
    for path in [
        "/v1/mesh/peers".to_string(),
        format!("/v1/mesh/peers/{}", resp.peer_id),
        "/v1/mesh/watch".to_string(),
    ] {
        let anonymous = c.http.get(c.url(&path)).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let text = anonymous.text().await.unwrap();
        assert!(text.contains("admin token"), "{path}: {text}");
    }
    let list = node.client.peers(None, None).await.unwrap();
    assert_eq!(list.peers.len(), 1);
    let by_admin: tabbify_wire::mesh::PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(by_admin.peers.len(), 1);
}

#[tokio::test]
async fn a_removed_peer_loses_its_streams_within_a_second_and_its_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    let token = token(&c).await;
    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    let resp = node.join(&token, "n1").await;

    let roster = node.client.watch(None, None).await.unwrap();
    let assignments = node.client.watch_assignments(None, None).await.unwrap();
    let mut roster = std::pin::pin!(roster);
    let mut assignments = std::pin::pin!(assignments);
    use futures_util::StreamExt;
    // Both streams deliver their first item (snapshot / set) before the removal.
    roster.next().await.unwrap().unwrap();
    assignments.next().await.unwrap().unwrap();

    let removed_at = Instant::now();
    let del = c
        .http
        .delete(c.url(&format!("/v1/mesh/peers/{}", resp.peer_id)))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let roster_closed = end_of(roster.as_mut()).await;
    assert!(
        roster_closed - removed_at < Duration::from_secs(1),
        "{:?}",
        roster_closed - removed_at
    );
    let assignments_closed = end_of(assignments.as_mut()).await;
    assert!(
        assignments_closed - removed_at < Duration::from_secs(1),
        "{:?}",
        assignments_closed - removed_at
    );
    let err = node.heartbeat().await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn revoked_certificates_are_refused_and_their_streams_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    let token = token(&c).await;
    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    let resp = node.join(&token, "n1").await;
    let stream = node.client.watch_assignments(None, None).await.unwrap();
    let mut stream = std::pin::pin!(stream);
    use futures_util::StreamExt;
    stream.next().await.unwrap().unwrap();

    let admin = CoordinatorClient::with_tls(
        &c.url,
        &TlsSettings {
            trust: ServerTrust::Pinned(pin_of(&token)),
            identity: None,
        },
    )
    .unwrap();
    let revoked_at = Instant::now();
    admin
        .revoke_certificates(&c.admin, &resp.peer_id)
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
    assert!(matches!(end, Ok(None)), "stream still open after 1 s");
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    let err = node.heartbeat().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("revoked"), "{err}");
    // Nor can it talk its way back in with the revoked certificate.
    let err = node
        .client
        .renew_certificate(&RenewCertificateRequest {
            csr: node.key.csr_pem().unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let mut again = request(random_key(), "n1");
    again.csr = Some(node.key.csr_pem().unwrap());
    // Its own key (known to the coordinator) with the revoked certificate: not the owner.
    let peer = c
        .get_json::<tabbify_wire::mesh::Peer>(&format!("/v1/mesh/peers/{}", resp.peer_id))
        .await;
    again.public_key = peer.public_key;
    let err = node.client.register(None, &again).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_but_can_renew() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &["--node-cert-ttl", "2s"]);
    let token = token(&c).await;
    let node = TestNode::new(&c.url, ServerTrust::Pinned(pin_of(&token)));
    let resp = node.join(&token, "n1").await;
    let first =
        tabbify_pki::NodeCertInfo::parse_pem(resp.client_certificate.as_deref().unwrap()).unwrap();
    node.heartbeat().await.unwrap();
    // Wait until the certificate's own expiry has passed (whole seconds on both sides).
    while tabbify_wire::Timestamp::now().0 / 1000 < first.not_after + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.client.reset_connections().unwrap();
    let err = node.heartbeat().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("expired"), "{err}");
    let renewed = node
        .client
        .renew_certificate(&RenewCertificateRequest {
            csr: node.key.csr_pem().unwrap(),
        })
        .await
        .unwrap();
    let second = tabbify_pki::NodeCertInfo::parse_pem(&renewed.client_certificate).unwrap();
    assert_ne!(second.serial, first.serial);
    node.install(&renewed.client_certificate);
    node.heartbeat().await.unwrap();
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("c"), &[]);
    let plain = c.url.replace("https://", "http://");
    let resp = reqwest::get(format!("{plain}/health")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("use https://"));
}

#[tokio::test]
async fn insecure_no_mtls_still_serves_plaintext_with_peer_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("c"), &[]);
    assert!(c.url.starts_with("http://"));
    let token = token(&c).await;
    assert!(
        tabbify_wire::token::split_join_token(&token)
            .unwrap()
            .ca_fingerprint
            .is_none(),
        "no CA to pin: {token}"
    );
    let client = CoordinatorClient::new(&c.url).unwrap();
    let resp = client
        .register(Some(&token), &request(random_key(), "lab"))
        .await
        .unwrap();
    assert!(resp.client_certificate.is_none());
    let cred = resp.peer_credential.unwrap();
    client
        .heartbeat(Some(&cred), &HeartbeatRequest::default())
        .await
        .unwrap();
    let list = client.peers(Some(&cred), None).await.unwrap();
    assert_eq!(list.peers.len(), 1);
    let health = client.health().await.unwrap();
    assert!(!health.tls);
}
