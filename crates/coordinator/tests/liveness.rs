//! Liveness in real time with a short heartbeat interval: a silent peer goes offline after the
//! missed intervals (not before), comes back with a heartbeat, and is purged after retention,
//! freeing its address. The decision itself is unit-tested with an injected clock in
//! `src/liveness.rs`.

mod common;

use common::*;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tabbify_wire::ErrorCode;
use tabbify_wire::mesh::{Peer, PeerList, RegisterResponse, RosterEventKind};

#[allow(clippy::unwrap_used)] // test helper
async fn heartbeat(c: &Coordinator, cred: &str) -> (StatusCode, serde_json::Value) {
    let resp = c
        .http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(cred)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn silent_peer_goes_offline_comes_back_and_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let c = std::sync::Arc::new(Coordinator::start(
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "200ms",
            "--offline-after-missed",
            "3",
            "--retention",
            "3s",
        ],
    ));
    let token = c.reusable_token().await;
    let quiet: RegisterResponse = c.register(Some(&token), &request(key(1), "quiet")).await;
    let chatty: RegisterResponse = c.register(Some(&token), &request(key(2), "chatty")).await;
    assert_eq!(
        quiet.heartbeat_interval_secs, 1,
        "sub-second intervals round up on the wire"
    );
    let mut w = c.watch(Some(chatty.revision), false).await;

    // `chatty` heartbeats every 50 ms until told to stop; `quiet` says nothing. The task notes
    // every heartbeat that is not a 200, and the test fails on them when it stops the task (a
    // panic inside a task nobody awaits would fail nothing).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let keepalive = {
        let (c, stop) = (std::sync::Arc::clone(&c), std::sync::Arc::clone(&stop));
        let cred = chatty.peer_credential.clone();
        tokio::spawn(async move {
            let (mut beats, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = heartbeat(&c, cred.as_deref().unwrap()).await;
                if status != StatusCode::OK {
                    failed.push(format!("heartbeat {beats}: {status} {body}"));
                }
                beats += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (beats, failed)
        })
    };

    let ev = w.next(Duration::from_secs(5)).await.expect("offline event");
    let offline = ev.roster_event();
    assert_eq!(offline.kind, RosterEventKind::Offline);
    assert_eq!(offline.peer.peer_id, quiet.peer_id);
    assert!(!offline.peer.online);
    // Both bounds from the coordinator's own timestamps: when it last heard the peer and when it
    // marked it offline (the liveness check runs every 100 ms at this interval).
    let silence = offline.at.unix_ms() - offline.peer.last_seen.unix_ms();
    assert!(
        silence > 600,
        "offline only after 3 x 200 ms of silence, was {silence} ms"
    );
    assert!(
        silence < 600 + 1000,
        "and promptly after that, was {silence} ms"
    );
    let list: PeerList = c.get_json("/v1/mesh/peers").await;
    let state = |id: &str| list.peers.iter().find(|p| p.peer_id == id).unwrap().online;
    assert!(!state(&quiet.peer_id));
    assert!(
        state(&chatty.peer_id),
        "a peer that heartbeats stays online"
    );

    // One heartbeat brings it back, as an `updated` event.
    let (status, _) = heartbeat(&c, quiet.peer_credential.as_deref().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let back = w.next(Duration::from_secs(5)).await.unwrap().roster_event();
    assert_eq!(
        (back.kind, back.peer.online),
        (RosterEventKind::Updated, true)
    );
    assert_eq!(back.revision, offline.revision + 1);

    // Silent again: offline, then after the 3 s retention, removed.
    let off_again = w.next(Duration::from_secs(5)).await.unwrap().roster_event();
    assert_eq!(off_again.kind, RosterEventKind::Offline);
    let peer: Peer = c
        .get_json(&format!("/v1/mesh/peers/{}", quiet.peer_id))
        .await;
    assert_eq!(
        peer.ula, quiet.ula,
        "an offline peer keeps its address during retention"
    );
    let removed = w.next(Duration::from_secs(8)).await.unwrap().roster_event();
    assert_eq!(removed.kind, RosterEventKind::Removed);
    assert_eq!(removed.peer.peer_id, quiet.peer_id);
    let gone = removed.at.unix_ms() - removed.peer.last_seen.unix_ms();
    assert!(gone > 3000, "purged only after retention: {gone} ms");
    stop.store(true, Ordering::SeqCst);
    let (beats, failed) = keepalive.await.expect("the heartbeat task");
    assert!(failed.is_empty(), "chatty's heartbeats failed: {failed:?}");
    assert!(beats > 0);

    // Purged: unknown to heartbeats, and its address can be taken by a new key.
    let (status, body) = heartbeat(&c, quiet.peer_credential.as_deref().unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_error_code(&body, ErrorCode::UnknownPeer), "{body}");
    let mut newcomer = request(key(3), "newcomer");
    newcomer.requested_ula = Some(quiet.ula);
    let took: RegisterResponse = c.register(Some(&token), &newcomer).await;
    assert_eq!(took.ula, quiet.ula);
    let list: PeerList = c.get_json("/v1/mesh/peers").await;
    assert!(list.peers.iter().all(|p| p.peer_id != quiet.peer_id));
}
