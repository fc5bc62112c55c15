//! What the coordinator does not take on a node's word, as attacks against the real binary over
//! real HTTP, each of which worked before the defence:
//!
//! * a node reports the cloud metadata address (or any address outside its own /64, or another
//!   port than its app's) as its replica: refused with 400, nothing stored, and the ingress never
//!   proxies there (a real HTTP server stands where the node points, and is never hit);
//! * a peer an operator removed comes straight back with its reusable join token: refused with
//!   403 until `readmit`, across a restart;
//! * revoking a token with `cascade` removes the peers it admitted;
//! * one caller opens watch streams without end: 429 past the cap, per caller and in total.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::*;
use reqwest::StatusCode;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tabbify_client::CoordinatorClient;
use tabbify_wire::app::{AppName, ArtifactDigest};
use tabbify_wire::mesh::{NodeResources, RegisterResponse, RemovedPeerList};
use tabbify_wire::node_apps::AppState;
use tabbify_wire::placement::{CreateAppRequest, NodeAppsReport, ReplicaReport};
use tabbify_wire::token::RevokedJoinToken;
use tabbify_wire::{ErrorCode, Ipv6Prefix};

const CALM: [&str; 4] = [
    "--heartbeat-interval",
    "10m",
    "--appsrv",
    "http://127.0.0.1:9000",
];

fn client(c: &Coordinator) -> CoordinatorClient {
    CoordinatorClient::new(&c.url).unwrap()
}

async fn create_web(c: &Coordinator, port: u16) {
    let manifest = format!(
        "[app]\nname = \"web\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"web.wasm\"\n[http]\nport = {port}\n"
    );
    client(c)
        .create_app(
            &c.admin,
            &CreateAppRequest {
                manifest,
                artifact_digest: Some(
                    ArtifactDigest::parse(format!("sha256:{}", "a".repeat(64))).unwrap(),
                ),
                appsrv_url: None,
            },
        )
        .await
        .unwrap();
}

/// A node that can take the app (placement needs its free resources).
async fn join(c: &Coordinator, token: &str, name: &str) -> RegisterResponse {
    let mut req = request(random_key(), name);
    req.resources = Some(NodeResources {
        cpus: 4.0,
        memory_mb: 4096,
        cpus_free: 4.0,
        memory_mb_free: 4096,
    });
    c.register(Some(token), &req).await
}

/// The `n`th host of a node's /64.
fn host(subnet: Ipv6Prefix, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.addr()) | n)
}

/// Posts a report with one running replica of `web` at `addr`; the raw answer.
async fn report(
    c: &Coordinator,
    node: &RegisterResponse,
    addr: SocketAddr,
) -> (StatusCode, serde_json::Value) {
    let body = NodeAppsReport {
        applied_revision: None,
        apps: vec![ReplicaReport {
            app: AppName::new("web").unwrap(),
            version: 1,
            state: AppState::Running,
            address: Some(addr),
            app_id: None,
            error: None,
        }],
    };
    let resp = c
        .http
        .post(c.url("/v1/nodes/self/apps/state"))
        .bearer_auth(node.peer_credential.as_deref().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// A real HTTP server on loopback that counts the requests it gets.
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let h = Arc::clone(&h);
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "reached"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

async fn ingress_status(c: &Coordinator) -> StatusCode {
    c.http
        .get(c.url("/app/web/"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_replica_outside_the_nodes_subnet_is_refused_and_never_proxied_to() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let token = c.reusable_token().await;
    let node = join(&c, &token, "n1").await;
    create_web(&c, 80).await;

    // The cloud metadata service, on the app's own port.
    let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
    let answer = report(&c, &node, metadata).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "169.254.169.254:80 is not in this node's /64",
    );
    assert!(
        answer.1["message"]
            .as_str()
            .unwrap()
            .contains(&node.subnet.to_string()),
        "{}",
        answer.1
    );
    let view = client(&c)
        .app(&c.admin, &AppName::new("web").unwrap())
        .await
        .unwrap();
    assert_eq!(
        view.replicas[0].address, None,
        "nothing of the report is stored"
    );
    assert_eq!(view.replicas[0].state, None);
    assert_eq!(ingress_status(&c).await, StatusCode::SERVICE_UNAVAILABLE);
    let e = client(&c)
        .app_endpoints(Some(&c.admin), &AppName::new("web").unwrap())
        .await
        .unwrap();
    assert!(e.endpoints.is_empty(), "{e:?}");

    // A service on the coordinator's own machine: the proxy would reach it, so the report
    // must not get through (without the lab flag).
    let (backend, hits) = counting_backend().await;
    assert_error(
        &report(&c, &node, backend).await,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "is not in this node's /64",
    );
    for _ in 0..3 {
        assert_eq!(ingress_status(&c).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the ingress never proxied there"
    );
    let log = std::fs::read_to_string(c.data_dir.with_extension("log")).unwrap();
    assert!(
        log.contains("state report refused") && log.contains("169.254.169.254:80"),
        "the refusal is logged"
    );

    // The address the node may claim is accepted.
    let own: SocketAddr = SocketAddr::new(host(node.subnet, 2).into(), 80);
    let (status, json) = report(&c, &node, own).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let e = client(&c)
        .app_endpoints(Some(&c.admin), &AppName::new("web").unwrap())
        .await
        .unwrap();
    assert_eq!(e.endpoints, vec![own]);
}

#[tokio::test]
async fn another_nodes_subnet_the_nodes_own_api_and_other_ports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1").await;
    let n2 = join(&c, &token, "n2").await;
    create_web(&c, 8080).await;
    let app = AppName::new("web").unwrap();
    let on_n1 = client(&c).app(&c.admin, &app).await.unwrap().replicas[0]
        .peer_id
        .clone()
        .unwrap();
    let (holder, other) = if on_n1 == n1.peer_id {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };

    // An app address of the other node: its replica would take this node's traffic.
    let theirs = SocketAddr::new(host(other.subnet, 2).into(), 8080);
    assert_error(
        &report(&c, holder, theirs).await,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        &format!("is not in this node's /64 {}", holder.subnet),
    );
    // Its own control API, and a port that is not the app's.
    assert_error(
        &report(&c, holder, SocketAddr::new(holder.ula.into(), 8730)).await,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "the node's own address",
    );
    assert_error(
        &report(
            &c,
            holder,
            SocketAddr::new(host(holder.subnet, 2).into(), 22),
        )
        .await,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "does not use the app's [http] port 8080",
    );
    let view = client(&c).app(&c.admin, &app).await.unwrap();
    assert_eq!(view.replicas[0].address, None);
    let (status, json) = report(
        &c,
        holder,
        SocketAddr::new(host(holder.subnet, 7).into(), 8080),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn loopback_replicas_only_with_the_lab_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = CALM.to_vec();
    args.push("--allow-loopback-replicas");
    let c = Coordinator::start(&dir.path().join("data"), &args);
    let token = c.reusable_token().await;
    let node = join(&c, &token, "n1").await;
    create_web(&c, 8080).await;
    let (backend, hits) = counting_backend().await;
    let (status, json) = report(&c, &node, backend).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(ingress_status(&c).await, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Still never the metadata service.
    assert_eq!(
        report(&c, &node, "169.254.169.254:80".parse().unwrap())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_removed_peer_does_not_come_back_with_its_reusable_token_until_readmitted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Coordinator::start(&data, &CALM);
    let token = c.reusable_token().await;
    let key = random_key();
    let first: RegisterResponse = c
        .register(Some(&token), &request(key.clone(), "gone"))
        .await;
    let api = client(&c);
    api.remove_peer(&c.admin, &first.peer_id).await.unwrap();

    // The same key with the same (still valid, reusable) token.
    let again = c
        .register_raw(Some(&token), &request(key.clone(), "gone"))
        .await;
    assert_error(
        &again,
        StatusCode::FORBIDDEN,
        ErrorCode::PeerRemoved,
        &format!("tcli peers readmit {}", first.peer_id),
    );
    assert!(
        again.1["message"]
            .as_str()
            .unwrap()
            .contains("removed by an operator")
    );
    let peers: serde_json::Value = c.get_json("/v1/mesh/peers").await;
    assert_eq!(
        peers["peers"].as_array().unwrap().len(),
        0,
        "nothing was added"
    );

    // A new key is a new peer and joins as usual.
    let _fresh = join(&c, &token, "new").await;

    // The refusal outlives a restart.
    drop(c);
    c = Coordinator::start(&data, &CALM);
    assert_eq!(
        c.register_raw(Some(&token), &request(key.clone(), "gone"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let api = client(&c);
    let listed: RemovedPeerList = c.admin_get("/v1/admin/removed-peers").await;
    assert_eq!(listed.removed_peers.len(), 1);
    assert_eq!(listed.removed_peers[0].peer_id, first.peer_id);
    assert_eq!(listed.removed_peers[0].public_key, key);

    // Re-admitted by its key (base64 with `/` and `+` travels escaped), it may join again.
    let err = api.readmit_peer(&c.admin, "nobody").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let lifted = api.readmit_peer(&c.admin, key.as_str()).await.unwrap();
    assert_eq!(lifted.peer_id, first.peer_id);
    let back: RegisterResponse = c.register(Some(&token), &request(key, "gone")).await;
    assert_ne!(back.peer_id, first.peer_id, "it comes back as a new peer");
    let listed: RemovedPeerList = c.admin_get("/v1/admin/removed-peers").await;
    assert!(listed.removed_peers.is_empty());
    // Readmit needs the admin token.
    let resp = c
        .http
        .post(c.url(&format!(
            "/v1/admin/removed-peers/{}/readmit",
            first.peer_id
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_a_token_with_cascade_removes_the_peers_it_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &CALM);
    let leaked = c.reusable_token().await;
    let other = c.reusable_token().await;
    let leaked_id = leaked.split('_').nth(1).unwrap().to_string();
    let k1 = random_key();
    let a: RegisterResponse = c.register(Some(&leaked), &request(k1.clone(), "a")).await;
    let b: RegisterResponse = c.register(Some(&leaked), &request(random_key(), "b")).await;
    let keep: RegisterResponse = c
        .register(Some(&other), &request(random_key(), "keep"))
        .await;
    let mut w = c.watch(Some(3), false).await;

    let resp = c
        .http
        .delete(c.url(&format!("/v1/admin/join-tokens/{leaked_id}?cascade=true")))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let done: RevokedJoinToken = resp.json().await.unwrap();
    let mut gone: Vec<_> = done
        .removed_peers
        .iter()
        .map(|r| r.peer_id.clone())
        .collect();
    gone.sort();
    let mut want = vec![a.peer_id.clone(), b.peer_id.clone()];
    want.sort();
    assert_eq!(gone, want);
    assert!(done.removed_peers[0].reason.contains("--cascade"));

    let peers: serde_json::Value = c.get_json("/v1/mesh/peers").await;
    let left: Vec<_> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![keep.peer_id.clone()]);
    let events = w.until_revision(5, Duration::from_secs(5)).await;
    assert!(
        events
            .iter()
            .all(|e| e.roster_event().kind.as_str() == "removed")
    );
    // Their credentials are dead, their keys refused even with another valid token.
    let hb = c
        .http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(a.peer_credential.as_deref().unwrap())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::NOT_FOUND);
    assert_error(
        &c.register_raw(Some(&other), &request(k1, "a")).await,
        StatusCode::FORBIDDEN,
        ErrorCode::PeerRemoved,
        "revoked with --cascade",
    );
    // The token itself is revoked.
    assert_eq!(
        c.register_raw(Some(&leaked), &request(random_key(), "c"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // A cascade value that is not a boolean is refused, not read as "no".
    let resp = c
        .http
        .delete(c.url(&format!(
            "/v1/admin/join-tokens/{leaked_id}?cascade=yes-please"
        )))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn open(c: &Coordinator, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(c.url(path));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn watch_streams_past_the_cap_are_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = CALM.to_vec();
    args.extend([
        "--max-watch-streams-per-identity",
        "2",
        "--max-watch-streams",
        "4",
    ]);
    let c = Coordinator::start(&dir.path().join("data"), &args);
    let token = c.reusable_token().await;
    let n1 = join(&c, &token, "n1").await;

    // The operator's roster watches count under `admin` (anonymous ones are refused outright).
    assert_eq!(
        open(&c, "/v1/mesh/watch", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let w1 = open(&c, "/v1/mesh/watch", Some(&c.admin)).await;
    let _w2 = open(&c, "/v1/mesh/watch", Some(&c.admin)).await;
    assert_eq!(
        (w1.status(), _w2.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = open(&c, "/v1/mesh/watch", Some(&c.admin)).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = third.json().await.unwrap();
    assert!(is_error_code(&body, ErrorCode::TooManyStreams), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("admin already holds 2"),
        "{body}"
    );
    // A bad credential gets no stream at all.
    let guessed = open(&c, "/v1/mesh/watch", Some("tbfp_x_y")).await;
    assert_eq!(guessed.status(), StatusCode::UNAUTHORIZED);

    // The node's own streams count under the node: roster and assignment watches together.
    let n1_roster = open(&c, "/v1/mesh/watch", n1.peer_credential.as_deref()).await;
    assert_eq!(n1_roster.status(), StatusCode::OK);
    let n1_assign = open(
        &c,
        "/v1/nodes/self/assignments/watch",
        n1.peer_credential.as_deref(),
    )
    .await;
    assert_eq!(n1_assign.status(), StatusCode::OK);
    // Four open: the total cap holds for everyone.
    let n2 = join(&c, &token, "n2").await;
    let admin = open(&c, "/v1/mesh/watch", n2.peer_credential.as_deref()).await;
    assert_eq!(admin.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = admin.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-watch-streams"),
        "{body}"
    );

    // A closed stream gives its slot back.
    drop(w1);
    // (The server notices the closed connection at the latest on the next keep-alive.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = open(&c, "/v1/mesh/watch", Some(&c.admin)).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ordinary requests are not streams and are never capped.
    let peers: serde_json::Value = c.get_json("/v1/mesh/peers").await;
    assert_eq!(peers["peers"].as_array().unwrap().len(), 2);
}
