//! The watch stream: resuming from a revision gives every later event exactly once, while
//! changes keep happening, across a coordinator restart, and via a snapshot when the log has
//! been pruned past the requested revision.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::Tag;
use tabbify_wire::mesh::{PeerList, RegisterResponse, RosterEventKind};

const WAIT: Duration = Duration::from_secs(10);

#[allow(clippy::unwrap_used)] // test helper
async fn retag(c: &Coordinator, cred: &str, tags: &[Tag]) {
    let resp = c
        .http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(cred)
        .json(&serde_json::json!({ "tags": tags }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn resume_has_no_gap_and_no_duplicate_while_changes_continue() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(Coordinator::start(&dir.path().join("data"), &[]));
    let token = Arc::new(c.reusable_token().await);
    let mut creds = Vec::new();
    for i in 0..20 {
        let r: RegisterResponse = c
            .register(Some(&token), &request(key(i), &format!("n{i}")))
            .await;
        creds.push(r.peer_credential.unwrap());
    }

    // Read the first 10 events, then go away.
    let mut w = c.watch(Some(0), false).await;
    let first = w.until_revision(10, WAIT).await;
    assert_contiguous(&first, 1, 10);
    assert!(
        first
            .iter()
            .all(|e| e.roster_event().kind == RosterEventKind::Joined)
    );
    drop(w);

    // Changes keep coming while watchers reconnect from different revisions.
    let writer = {
        let (c, token) = (Arc::clone(&c), Arc::clone(&token));
        let creds = creds.clone();
        tokio::spawn(async move {
            for i in 20..120u64 {
                let _: RegisterResponse = c
                    .register(Some(&token), &request(key(i), &format!("n{i}")))
                    .await;
                let cred = &creds[(i % 20) as usize];
                // Each round of 20 flips every peer's tags, so every retag is a change.
                let tags = if (i / 20) % 2 == 1 {
                    vec![Tag::wasm(), Tag::docker()]
                } else {
                    vec![Tag::wasm()]
                };
                retag(&c, cred, &tags).await;
            }
        })
    };
    let mut resumed = c.watch(Some(10), true).await; // via Last-Event-ID
    let mut mid = c.watch(Some(15), false).await; // via ?since
    writer.await.unwrap();
    let final_rev = c.get_json::<PeerList>("/v1/mesh/peers").await.revision;
    assert_eq!(final_rev, 20 + 100 + 100, "joins plus retags");

    let events = resumed.until_revision(final_rev, WAIT).await;
    assert_contiguous(&events, 11, final_rev);
    for e in &events {
        let ev = e.roster_event();
        assert!(matches!(
            ev.kind,
            RosterEventKind::Joined | RosterEventKind::Updated
        ));
    }
    let events = mid.until_revision(final_rev, WAIT).await;
    assert_contiguous(&events, 16, final_rev);
    // Nothing more is pending: the next thing on the stream would be a keep-alive, not an event.
    assert!(resumed.next(Duration::from_millis(300)).await.is_none());

    // A watcher that is already up to date sees only what comes next.
    let mut live = c.watch(Some(final_rev), false).await;
    retag(&c, &creds[0], &[Tag::firecracker()]).await;
    let ev = live.next(WAIT).await.unwrap();
    assert_eq!(ev.revision(), final_rev + 1);
    assert_eq!(ev.roster_event().peer.tags, vec![Tag::firecracker()]);
}

#[tokio::test]
async fn resume_across_a_restart_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Coordinator::start(&data, &[]);
    let token = c.reusable_token().await;
    for i in 0..10 {
        let _: RegisterResponse = c.register(Some(&token), &request(key(i), "a")).await;
    }
    let mut w = c.watch(None, false).await;
    let snap = w.next(WAIT).await.unwrap().snapshot();
    assert_eq!(snap.revision, 10);
    assert_eq!(snap.peers.len(), 10);

    // Graceful stop with the watch open: the process exits promptly and cleanly.
    c.guard.signal(Signal::SIGTERM).unwrap();
    let status = c
        .guard
        .wait_timeout(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        w.next(Duration::from_secs(2)).await.is_none(),
        "stream closed"
    );
    drop(c);

    let mut c = Coordinator::start(&data, &[]);
    for i in 10..15 {
        let _: RegisterResponse = c.register(Some(&token), &request(key(i), "b")).await;
    }
    let mut w = c.watch(Some(10), true).await;
    let events = w.until_revision(15, WAIT).await;
    assert_contiguous(&events, 11, 15);

    // Now without warning.
    c.guard.signal(Signal::SIGKILL).unwrap();
    c.guard
        .wait_timeout(Duration::from_secs(10))
        .expect("killed");
    drop(c);
    let c = Coordinator::start(&data, &[]);
    for i in 15..18 {
        let _: RegisterResponse = c.register(Some(&token), &request(key(i), "c")).await;
    }
    let mut w = c.watch(Some(15), true).await;
    let events = w.until_revision(18, WAIT).await;
    assert_contiguous(&events, 16, 18);
    // From the very start, the whole history is still one unbroken log.
    let mut w = c.watch(Some(0), false).await;
    let events = w.until_revision(18, WAIT).await;
    assert_contiguous(&events, 1, 18);
}

#[tokio::test]
async fn pruned_log_answers_with_a_snapshot_then_continues() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &["--event-log-capacity", "5"]);
    let token = c.reusable_token().await;
    for i in 0..20 {
        let _: RegisterResponse = c.register(Some(&token), &request(key(i), "n")).await;
    }
    // The liveness task prunes; wait until revision 2 is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    let snap = loop {
        let mut w = c.watch(Some(2), false).await;
        let first = w.next(WAIT).await.unwrap();
        if first.event == "snapshot" {
            break (first.snapshot(), w);
        }
        assert!(tokio::time::Instant::now() < deadline, "log never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (snapshot, mut w) = snap;
    assert_eq!(snapshot.revision, 20);
    assert_eq!(snapshot.peers.len(), 20);
    // Still-kept revisions resume normally.
    let mut kept = c.watch(Some(16), false).await;
    assert_contiguous(&kept.until_revision(20, WAIT).await, 17, 20);
    // After the snapshot, live events follow from its revision.
    let _: RegisterResponse = c.register(Some(&token), &request(key(99), "late")).await;
    let ev = w.next(WAIT).await.unwrap();
    assert_eq!(ev.revision(), 21);
    assert_eq!(ev.roster_event().kind, RosterEventKind::Joined);
    // A revision from the future (another coordinator's data) also gets a snapshot.
    let mut future = c.watch(Some(10_000), false).await;
    assert_eq!(future.next(WAIT).await.unwrap().snapshot().revision, 21);
}
