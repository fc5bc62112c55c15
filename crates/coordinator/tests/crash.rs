//! kill -9 in the middle of registrations, restart on the same data dir: every acknowledged join
//! survives with its address, and roster, token uses, event log and revision agree.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tabbify_wire::PublicKeyB64;
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{PeerList, RegisterResponse, RosterEventKind};
use tabbify_wire::token::{CreateJoinTokenRequest, JoinTokenList};

#[derive(Clone)]
struct Acked {
    key: PublicKeyB64,
    resp: RegisterResponse,
}

#[tokio::test]
async fn sigkill_during_registrations_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Coordinator::start(&data, &[]);
    let admin_before = c.admin.clone();
    let token = c
        .create_token(&CreateJoinTokenRequest {
            reusable: true,
            ..Default::default()
        })
        .await;
    let url = c.url.clone();

    // 32 workers register fresh keys as fast as they can until the coordinator dies.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // A worker ends when a request fails; that is expected only once the kill is under way, so
    // a worker that ends before it reports why, and the test fails on it.
    let killing = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..32u64 {
        let (acked, http, url, token, killing) = (
            acked.clone(),
            http.clone(),
            url.clone(),
            token.token.clone(),
            killing.clone(),
        );
        workers.push(tokio::spawn(async move {
            let early = |i: u64, what: String| -> Result<(), String> {
                if killing.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(format!(
                        "worker {w}, registration {i}, before the kill: {what}"
                    ))
                }
            };
            for i in 0.. {
                let k = key(w * 1_000_000 + i);
                let sent = http
                    .post(format!("{url}/v1/mesh/register"))
                    .bearer_auth(&token)
                    .json(&request(k.clone(), &format!("w{w}-{i}")))
                    .send()
                    .await;
                let resp = match sent {
                    Ok(resp) => resp,
                    Err(e) => return early(i, format!("request failed: {e}")),
                };
                let status = resp.status();
                if status != StatusCode::OK {
                    // A coordinator that answers at all answers a valid join with 200.
                    let body = resp.text().await.unwrap_or_default();
                    return Err(format!("worker {w}, registration {i}: {status} {body}"));
                }
                match resp.json::<RegisterResponse>().await {
                    Ok(body) => acked.lock().unwrap().push(Acked { key: k, resp: body }),
                    Err(e) => return early(i, format!("reading the answer: {e}")),
                }
            }
            Ok(())
        }));
    }
    // Let a few hundred land, then kill without warning while requests are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "registrations too slow"
        );
        if let Some(done) = workers.iter().position(|w| w.is_finished()) {
            let ended = workers.swap_remove(done).await.unwrap();
            panic!("a worker stopped before the kill: {ended:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killing.store(true, Ordering::SeqCst);
    c.guard.signal(Signal::SIGKILL).unwrap();
    let status = c
        .guard
        .wait_timeout(Duration::from_secs(10))
        .expect("killed process exits");
    assert!(!status.success());
    for w in workers {
        w.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);
    drop(c);

    // Restart on the same data dir.
    let c = Coordinator::start(&data, &[]);
    assert_eq!(c.admin, admin_before, "the admin token is reused");
    let health: CoordinatorHealth = c.get_json("/health").await;
    let roster: PeerList = c.get_json("/v1/mesh/peers").await;
    let by_id: HashMap<&str, _> = roster
        .peers
        .iter()
        .map(|p| (p.peer_id.as_str(), p))
        .collect();

    // Every acknowledged join is there, with the same key and address.
    for a in &acked {
        let p = by_id
            .get(a.resp.peer_id.as_str())
            .unwrap_or_else(|| panic!("acknowledged peer {} lost", a.resp.peer_id));
        assert_eq!(p.ula, a.resp.ula);
        assert_eq!(p.public_key, a.key);
        assert_eq!(
            a.resp.mesh_prefix.to_string(),
            health.mesh_prefix,
            "same mesh prefix"
        );
    }
    // Joins committed just before the kill may exist without an acknowledgement, never the reverse.
    assert!(roster.peers.len() >= acked.len());
    let ulas: HashSet<_> = roster.peers.iter().map(|p| p.ula).collect();
    assert_eq!(ulas.len(), roster.peers.len(), "addresses stay distinct");

    // Only joins happened, so the revision is the number of peers, and so are the token's uses.
    assert_eq!(roster.revision, roster.peers.len() as u64);
    assert_eq!(health.revision, roster.revision);
    assert_eq!(health.peers_total, roster.peers.len() as u64);
    let tokens: JoinTokenList = c.admin_get("/v1/admin/join-tokens").await;
    assert_eq!(tokens.tokens.len(), 1);
    assert_eq!(
        u64::from(tokens.tokens[0].uses),
        roster.peers.len() as u64,
        "a token use exists exactly when its peer does"
    );

    // The event log is whole: 1..=revision, one `joined` per peer, nothing else.
    let mut watch = c.watch(Some(0), false).await;
    let events = watch
        .until_revision(roster.revision, Duration::from_secs(10))
        .await;
    assert_contiguous(&events, 1, roster.revision);
    let joined: HashSet<String> = events
        .iter()
        .map(|e| {
            let ev = e.roster_event();
            assert_eq!(ev.kind, RosterEventKind::Joined);
            assert_eq!(by_id[ev.peer.peer_id.as_str()].ula, ev.peer.ula);
            ev.peer.peer_id
        })
        .collect();
    assert_eq!(joined.len(), roster.peers.len());

    // Acknowledged credentials still work, and the coordinator carries on allocating.
    for a in acked.iter().take(20) {
        let hb = c
            .http
            .post(c.url("/v1/mesh/heartbeat"))
            .bearer_auth(a.resp.peer_credential.as_deref().unwrap())
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(hb.status(), StatusCode::OK);
    }
    let next: RegisterResponse = c
        .register(Some(&token.token), &request(key(u64::MAX), "after"))
        .await;
    assert_eq!(next.revision, roster.revision + 1);
    assert!(!ulas.contains(&next.ula));
}
