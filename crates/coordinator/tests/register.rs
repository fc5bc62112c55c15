//! Registration against the real binary: join, re-join with the credential, requested ULAs,
//! 1,000 concurrent joins, every token refusal, tag restrictions and admin auth.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use reqwest::StatusCode;
use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::Arc;
use tabbify_testkit::metrics::Exposition;
use tabbify_wire::ErrorCode;
use tabbify_wire::Tag;
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{HeartbeatResponse, Peer, PeerList, RegisterResponse};
use tabbify_wire::token::{CreateJoinTokenRequest, JoinTokenList, JoinTokenState};

fn ula_in_subnet(resp: &RegisterResponse, subnet: u16, host: u16) -> Ipv6Addr {
    let mut seg = resp.mesh_prefix.addr().segments();
    seg[3] = subnet;
    seg[7] = host;
    Ipv6Addr::from(seg)
}

#[tokio::test]
async fn register_then_reregister_keeps_identity_and_needs_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    let token = c.create_token(&CreateJoinTokenRequest::default()).await;

    let first: RegisterResponse = c
        .register(Some(&token.token), &request(key(1), "edge-1"))
        .await;
    assert!(first.mesh_prefix.contains(first.ula));
    assert_eq!(first.mesh_prefix.len(), 48);
    assert_eq!(first.subnet.len(), 64);
    assert!(first.subnet.contains(first.ula));
    assert_eq!(
        first.ula.segments()[7],
        1,
        "the node address is <subnet>::1"
    );
    assert_ne!(first.ula.segments()[3], 0, "subnet 0 is the coordinator's");
    assert_eq!(first.revision, 1);
    assert_eq!(first.heartbeat_interval_secs, 5);
    assert_eq!(first.observed_addr, Some("127.0.0.1".parse().unwrap()));
    assert!(
        first
            .peer_credential
            .as_deref()
            .unwrap()
            .starts_with("tbfp_")
    );

    let before: PeerList = c.get_json("/v1/mesh/peers").await;

    // Same key, no credential: refused even with a valid join token; nothing changes.
    let fresh = c.create_token(&CreateJoinTokenRequest::default()).await;
    let mut hijack = request(key(1), "evil");
    hijack.endpoints = vec!["203.0.113.66:51820".parse().unwrap()];
    let refused = c.register_raw(Some(&fresh.token), &hijack).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "prove ownership with the node certificate",
    );
    // Wrong credential: refused too.
    hijack.peer_credential = Some(format!("tbfp_{}_notthesecret", first.peer_id));
    let refused = c.register_raw(None, &hijack).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        "already registered",
    );
    let after: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(before, after, "a refused re-registration changes nothing");
    let tokens: JoinTokenList = c.admin_get("/v1/admin/join-tokens").await;
    let fresh_info = tokens
        .tokens
        .iter()
        .find(|t| t.id == fresh.info.id)
        .unwrap();
    assert_eq!(fresh_info.uses, 0, "no token use consumed");

    // With the credential: same peer and address, fields updated, one `updated` revision.
    let mut again = request(key(1), "edge-1-renamed");
    again.tags = vec![Tag::wasm(), Tag::docker()];
    again.peer_credential = first.peer_credential.clone();
    let second: RegisterResponse = c.register(None, &again).await;
    assert_eq!(second.peer_id, first.peer_id);
    assert_eq!(second.ula, first.ula);
    assert_eq!(second.peer_credential, first.peer_credential);
    assert_eq!(second.revision, 2);
    let peer: Peer = c
        .get_json(&format!("/v1/mesh/peers/{}", first.peer_id))
        .await;
    assert_eq!(peer.display_name, "edge-1-renamed");
    assert_eq!(peer.tags, vec![Tag::docker(), Tag::wasm()]);
    // Identical again: idempotent, no new revision.
    let third: RegisterResponse = c.register(None, &again).await;
    assert_eq!((third.ula, third.revision), (first.ula, 2));

    // A known key cannot move to another subnet.
    again.requested_ula = Some(ula_in_subnet(
        &first,
        first.ula.segments()[3].wrapping_add(1).max(1),
        1,
    ));
    let moved = c.register_raw(None, &again).await;
    assert_error(
        &moved,
        StatusCode::CONFLICT,
        ErrorCode::AddressUnavailable,
        "already holds",
    );
    // Naming its own subnet is fine.
    again.requested_ula = Some(first.ula);
    let _: RegisterResponse = c.register(None, &again).await;

    let list: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(list.peers.len(), 1);
    assert_eq!(list.revision, 2);
    let missing = c
        .http
        .get(c.url("/v1/mesh/peers/ffff"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn requested_ula_honoured_outside_reserved_and_taken() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    let token = c.reusable_token().await;
    let probe: RegisterResponse = c.register(Some(&token), &request(key(100), "probe")).await;

    let mut req = request(key(1), "wants-abcd");
    req.requested_ula = Some(ula_in_subnet(&probe, 0xabcd, 0x55));
    let got: RegisterResponse = c.register(Some(&token), &req).await;
    assert_eq!(
        got.ula,
        ula_in_subnet(&probe, 0xabcd, 1),
        "any address names its /64; ::1 is returned"
    );

    let before: PeerList = c.get_json("/v1/mesh/peers").await;
    let mut taken = request(key(2), "also-wants-abcd");
    taken.requested_ula = Some(ula_in_subnet(&probe, 0xabcd, 1));
    let r = c.register_raw(Some(&token), &taken).await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        ErrorCode::AddressUnavailable,
        "held by another peer",
    );

    let mut outside = request(key(3), "outside");
    outside.requested_ula = Some("fd00:dead:beef:1::1".parse().unwrap());
    if probe.mesh_prefix.contains(outside.requested_ula.unwrap()) {
        outside.requested_ula = Some("2001:db8::1".parse().unwrap());
    }
    let r = c.register_raw(Some(&token), &outside).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "outside the mesh prefix",
    );

    let mut reserved = request(key(4), "reserved");
    reserved.requested_ula = Some(ula_in_subnet(&probe, 0, 1));
    let r = c.register_raw(Some(&token), &reserved).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "reserved for the coordinator",
    );

    let after: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(before, after, "refused requests store nothing");
}

#[tokio::test]
async fn a_thousand_concurrent_registrations_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(Coordinator::start(&dir.path().join("data"), &[]));
    let token = Arc::new(c.reusable_token().await);
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let c = Arc::clone(&c);
        let token = Arc::clone(&token);
        tasks.push(tokio::spawn(async move {
            let resp: RegisterResponse = c
                .register(Some(&token), &request(key(i), &format!("n{i}")))
                .await;
            resp
        }));
    }
    let mut ulas = HashSet::new();
    let mut ids = HashSet::new();
    let mut revisions = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.mesh_prefix.contains(r.ula));
        assert_ne!(r.ula.segments()[3], 0);
        ulas.insert(r.ula);
        ids.insert(r.peer_id);
        revisions.insert(r.revision);
    }
    assert_eq!(ulas.len(), 1000, "every node has its own address");
    assert_eq!(ids.len(), 1000);
    assert_eq!(revisions.len(), 1000, "each join is its own revision");
    let list: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(list.peers.len(), 1000);
    assert_eq!(list.revision, 1000);
    let listed: HashSet<Ipv6Addr> = list.peers.iter().map(|p| p.ula).collect();
    assert_eq!(listed, ulas);
    let tokens: JoinTokenList = c.admin_get("/v1/admin/join-tokens").await;
    assert_eq!(
        tokens.tokens[0].uses, 1000,
        "one use per join, counted exactly"
    );
    let health: CoordinatorHealth = c.get_json("/health").await;
    assert_eq!(
        (health.peers_total, health.peers_online, health.revision),
        (1000, 1000, 1000)
    );
}

#[tokio::test]
async fn every_token_refusal_has_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    let req = |i| request(key(i), "n");

    let r = c.register_raw(None, &req(1)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenMissing,
        "join token is required",
    );

    for bogus in ["tbfj_00112233_nosuchsecret", "hello", "tbfp_00_aa"] {
        let r = c.register_raw(Some(bogus), &req(1)).await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{bogus}");
        assert!(
            is_error_code(&r.1, ErrorCode::TokenUnknown),
            "{bogus}: {}",
            r.1
        );
    }
    let real = c.create_token(&CreateJoinTokenRequest::default()).await;
    let wrong_secret = format!("tbfj_{}_wrongsecret", real.info.id);
    let r = c.register_raw(Some(&wrong_secret), &req(1)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenUnknown,
        "not known",
    );

    let short = c
        .create_token(&CreateJoinTokenRequest {
            ttl_secs: Some(1),
            ..Default::default()
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = c.register_raw(Some(&short.token), &req(2)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenExpired,
        "expired",
    );

    let once = c.create_token(&CreateJoinTokenRequest::default()).await;
    let _: RegisterResponse = c.register(Some(&once.token), &req(3)).await;
    let r = c.register_raw(Some(&once.token), &req(4)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenUsedUp,
        "used up (1 of 1 joins)",
    );

    let twice = c
        .create_token(&CreateJoinTokenRequest {
            uses: Some(2),
            ..Default::default()
        })
        .await;
    let _: RegisterResponse = c.register(Some(&twice.token), &req(5)).await;
    let _: RegisterResponse = c.register(Some(&twice.token), &req(6)).await;
    let r = c.register_raw(Some(&twice.token), &req(7)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenUsedUp,
        "2 of 2",
    );

    let revoked = c.create_token(&CreateJoinTokenRequest::default()).await;
    let resp = c
        .http
        .delete(c.url(&format!("/v1/admin/join-tokens/{}", revoked.info.id)))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let r = c.register_raw(Some(&revoked.token), &req(8)).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        ErrorCode::TokenRevoked,
        "revoked",
    );

    let list: JoinTokenList = c.admin_get("/v1/admin/join-tokens").await;
    let state = |id: &str| list.tokens.iter().find(|t| t.id == id).unwrap().state;
    assert_eq!(state(&short.info.id), JoinTokenState::Expired);
    assert_eq!(state(&once.info.id), JoinTokenState::UsedUp);
    assert_eq!(state(&revoked.info.id), JoinTokenState::Revoked);
    assert_eq!(state(&real.info.id), JoinTokenState::Active);
    let peers: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(peers.peers.len(), 3, "only the three admitted joins exist");
}

#[tokio::test]
async fn tag_restricted_token_binds_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    let token = c
        .create_token(&CreateJoinTokenRequest {
            reusable: true,
            tags: Some(vec![Tag::wasm()]),
            ..Default::default()
        })
        .await;
    let mut too_many = request(key(1), "n1");
    too_many.tags = vec![Tag::wasm(), Tag::docker()];
    let r = c.register_raw(Some(&token.token), &too_many).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        ErrorCode::TagNotAllowed,
        "does not allow tag(s) docker",
    );

    let ok: RegisterResponse = c.register(Some(&token.token), &request(key(1), "n1")).await;
    // The restriction stays with the peer: heartbeats and re-registrations cannot widen it.
    let hb = c
        .http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(ok.peer_credential.as_deref().unwrap())
        .json(&serde_json::json!({"tags": ["docker"]}))
        .send()
        .await
        .unwrap();
    let status = hb.status();
    let body: serde_json::Value = hb.json().await.unwrap();
    assert_error(
        &(status, body),
        StatusCode::FORBIDDEN,
        ErrorCode::TagNotAllowed,
        "may only advertise wasm",
    );
    too_many.peer_credential = ok.peer_credential.clone();
    let r = c.register_raw(None, &too_many).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        ErrorCode::TagNotAllowed,
        "not allowed: docker",
    );
    let peer: Peer = c.get_json(&format!("/v1/mesh/peers/{}", ok.peer_id)).await;
    assert_eq!(peer.tags, vec![Tag::wasm()]);
    let by_tag: PeerList = c.get_json("/v1/mesh/peers?tag=docker").await;
    assert!(by_tag.peers.is_empty());
    let by_tag: PeerList = c.get_json("/v1/mesh/peers?tag=wasm").await;
    assert_eq!(by_tag.peers.len(), 1);
    let bad = c
        .http
        .get(c.url("/v1/mesh/peers?tag=NOT%20A%20TAG"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    for auth in [None, Some("tbfa_wrong"), Some("Basic abc")] {
        let mut req = c.http.get(c.url("/v1/admin/join-tokens"));
        if let Some(a) = auth {
            req = req.header(
                "authorization",
                if a.starts_with("Basic") {
                    a.to_string()
                } else {
                    format!("Bearer {a}")
                },
            );
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_error(
            &(status, json),
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "admin",
        );
    }
    let resp = c
        .http
        .delete(c.url("/v1/admin/join-tokens/0011223344556677"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Removing a peer is an admin act, and frees its address at once.
    let token = c.reusable_token().await;
    let reg: RegisterResponse = c.register(Some(&token), &request(key(1), "n1")).await;
    let path = format!("/v1/mesh/peers/{}", reg.peer_id);
    let anon = c.http.delete(c.url(&path)).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let del = c
        .http
        .delete(c.url(&path))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let again = c
        .http
        .delete(c.url(&path))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let mut other = request(key(2), "n2");
    other.requested_ula = Some(reg.ula);
    let took: RegisterResponse = c.register(Some(&token), &other).await;
    assert_eq!(took.ula, reg.ula);
    let hb = c
        .http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(reg.peer_credential.as_deref().unwrap())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = hb.json().await.unwrap();
    assert!(is_error_code(&body, ErrorCode::UnknownPeer), "{body}");
}

#[tokio::test]
async fn open_join_admits_without_a_token_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Coordinator::start(&data, &["--open-join"]);
    let health: CoordinatorHealth = c.get_json("/health").await;
    assert!(health.open_join);
    assert!(!health.tls);
    let _: RegisterResponse = c.register(None, &request(key(1), "n1")).await;
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(
        log.contains("WITHOUT a join token"),
        "every token-less join is logged loudly"
    );
    assert!(log.contains("--open-join: ANY machine"), "startup warns");
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    let token = c.reusable_token().await;
    let reg: RegisterResponse = c.register(Some(&token), &request(key(1), "n1")).await;
    let _ = c.register_raw(None, &request(key(2), "n2")).await;
    for _ in 0..3 {
        let hb = c
            .http
            .post(c.url("/v1/mesh/heartbeat"))
            .bearer_auth(reg.peer_credential.as_deref().unwrap())
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(hb.status(), StatusCode::OK);
        let hb: HeartbeatResponse = hb.json().await.unwrap();
        assert_eq!(hb.observed_addr, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(hb.revision, 1, "a plain heartbeat is not a roster change");
    }
    let doc: serde_json::Value = c.get_json("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/mesh/register",
        "/v1/mesh/heartbeat",
        "/v1/mesh/watch",
        "/v1/admin/join-tokens",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let text = c
        .http
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    for (name, labels, want) in [
        (
            "tabbify_coordinator_registrations_total",
            &[("outcome", "joined")][..],
            1.0,
        ),
        (
            "tabbify_coordinator_registrations_total",
            &[("outcome", "refused")],
            1.0,
        ),
        (
            "tabbify_coordinator_heartbeats_total",
            &[("outcome", "ok")],
            3.0,
        ),
        ("tabbify_coordinator_peers_online", &[], 1.0),
        ("tabbify_coordinator_watch_subscribers", &[], 0.0),
    ] {
        assert_eq!(
            metrics.value(name, labels),
            Some(want),
            "{name}{labels:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_missing_operator_certificate_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tabbify-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-cert.pem"), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line");
}
