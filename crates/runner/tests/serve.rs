//! hello-wasm served by a real `tabbify-runner` process: answers, echoes, logs guest output, and
//! comes back after SIGKILL from the compile cache without recompiling.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;
use tabbify_wire::runner::CompileCache;

#[tokio::test(flavor = "multi_thread")]
async fn hello_answers_and_echoes() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let running = app.start();
    let (status, error, body) = get(&running.url("/")).await;
    assert_eq!((status, error), (200, None));
    assert_eq!(body, "hello from tabbify wasm\n");

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let response = http()
        .post(running.url("/echo"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), payload.as_slice());

    let (status, _, _) = get(&running.url("/nope")).await;
    assert_eq!(status, 404);

    // Guest stdout lands in the app log.
    assert!(
        wait_until(Duration::from_secs(5), || app
            .log()
            .contains("hello-wasm: Method::Post /echo")),
        "log: {}",
        app.log()
    );
    let status = app.client().status().await.unwrap();
    assert_eq!(status.requests_served, 3);
    assert_eq!(status.requests_failed, 0);
    assert_eq!(status.listen, running.addr);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_then_restart_serves_from_the_compile_cache() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let mut first = app.start();
    assert_eq!(get(&first.url("/")).await.0, 200);
    assert_eq!(
        app.client().status().await.unwrap().compile_cache,
        Some(CompileCache::Miss)
    );
    let cached: Vec<_> = std::fs::read_dir(&app.spec.cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].extension().is_some_and(|e| e == "cwasm"));
    let stored_mtime = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();

    let pid = first.guard.pid();
    first.guard.signal(Signal::SIGKILL).unwrap();
    assert!(first.guard.wait_timeout(Duration::from_secs(5)).is_some());
    assert!(!pid_alive(pid), "runner {pid} survived SIGKILL");

    let second = app.start();
    let (status, _, body) = get(&second.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "hello from tabbify wasm\n"));
    let st = app.client().status().await.unwrap();
    assert_eq!(st.compile_cache, Some(CompileCache::Hit));
    assert_ne!(st.pid, pid);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        stored_mtime,
        "the cache file was rewritten"
    );
    assert_eq!(std::fs::read_dir(&app.spec.cache_dir).unwrap().count(), 1);
    assert!(app.log().contains("(compile cache hit)"), "{}", app.log());
}
