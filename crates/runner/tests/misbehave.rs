//! The misbehave example against a real runner: a trap, an endless loop and a memory bomb each
//! get the runner's error answer, and the runner keeps serving `/` after every one.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::time::{Duration, Instant};

const DEADLINE_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread")]
async fn guest_failures_are_contained() {
    let app = TestApp::new(&example_wasm("misbehave"), 32, DEADLINE_MS);
    let running = app.start();
    let ok = |r: (u16, Option<String>, String)| assert_eq!((r.0, r.2.as_str()), (200, "ok\n"));
    ok(get(&running.url("/")).await);

    let (status, error, body) = get(&running.url("/trap")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(error.as_deref(), Some("trap"));
    assert!(body.contains("app trapped"), "{body}");
    ok(get(&running.url("/")).await);

    let started = Instant::now();
    let (status, error, body) = get(&running.url("/loop")).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(error.as_deref(), Some("deadline"));
    assert!(
        took >= Duration::from_millis(DEADLINE_MS),
        "cut off early: {took:?}"
    );
    // Cut off, not just answered for: the guest stopped running (the runner also answers 504
    // when the guest outlives the deadline, and then it would still be spinning).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = app.client().status().await.unwrap();
        if st.requests_in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the looping guest is still running: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok(get(&running.url("/")).await);

    let (status, error, body) = get(&running.url("/alloc")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(error.as_deref(), Some("memory-limit"));
    assert!(body.contains("memory limit of 32 MiB"), "{body}");
    ok(get(&running.url("/")).await);

    let st = app.client().status().await.unwrap();
    assert_eq!(st.requests_failed, 3);
    assert_eq!(st.requests_served, 4);
    assert!(st.last_error.unwrap().contains("memory limit"));
    assert!(pid_alive(running.guard.pid()));
    let log = app.log();
    assert!(log.contains("deliberate trap requested on /trap"), "{log}");
    assert!(log.contains("request failed (deadline)"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_loops_do_not_starve_other_requests_forever() {
    let app = TestApp::new(&example_wasm("misbehave"), 32, DEADLINE_MS);
    let running = app.start();
    let loops: Vec<_> = (0..3)
        .map(|_| tokio::spawn(get_owned(running.url("/loop"))))
        .collect();
    for handle in loops {
        assert_eq!(handle.await.unwrap().0, 504);
    }
    assert_eq!(get(&running.url("/")).await.0, 200);
}

async fn get_owned(url: String) -> (u16, Option<String>, String) {
    get(&url).await
}
