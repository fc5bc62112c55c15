//! The control socket against a real runner: ping, health, status, stop, versions and garbage;
//! and the supervisor's path: a detached runner started with `spawn_runner` and recognised with
//! `check_runner`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::time::Duration;
use tabbify_runner::{ClientError, Liveness, check_runner, spawn_runner};
use tabbify_wire::runner::{RunnerErrorCode, RunnerOp, RunnerReply, RunnerState};

#[tokio::test(flavor = "multi_thread")]
async fn ping_health_status_stop() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let mut running = app.start();
    let client = app.client();

    let (app_id, pid) = client.ping().await.unwrap();
    assert_eq!(app_id.as_str(), "test-app-1");
    assert_eq!(pid, running.guard.pid());

    match client.request(RunnerOp::Health).await.unwrap() {
        RunnerReply::Health { healthy, state, .. } => {
            assert!(healthy);
            assert_eq!(state, RunnerState::Serving);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&running.url("/")).await.0, 200);
    let status = client.status().await.unwrap();
    assert_eq!(status.name.as_str(), "test-app");
    assert_eq!(status.requests_served, 1);
    assert_eq!(status.state, RunnerState::Serving);

    client.stop(Duration::from_millis(500)).await.unwrap();
    let exit = running.guard.wait_timeout(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "runner did not exit cleanly: {exit:?}"
    );
    assert!(!app.spec.socket.exists(), "socket file left behind");
    assert!(
        !app.path().join("runner.pid").exists(),
        "pid file left behind"
    );
    assert!(
        app.log().ends_with("[tabbify-runner] stopped\n"),
        "{}",
        app.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_versions_and_garbage_get_error_replies() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let _running = app.start();
    let client = app.client();
    let refused = |r: Result<RunnerReply, ClientError>| match r {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("expected an error reply, got {other:?}"),
    };
    let (code, message) = refused(client.raw_line(b"{\"v\":2,\"op\":\"ping\"}\n").await);
    assert_eq!(code, RunnerErrorCode::UnsupportedVersion);
    assert!(message.contains("speaks v1"), "{message}");
    let (code, _) = refused(client.raw_line(b"hello?\n").await);
    assert_eq!(code, RunnerErrorCode::BadRequest);
    let (code, _) = refused(client.raw_line(b"{\"v\":1,\"op\":\"reboot\"}\n").await);
    assert_eq!(code, RunnerErrorCode::BadRequest);
    let mut huge = vec![b'x'; 70_000];
    huge.push(b'\n');
    let (code, message) = refused(client.raw_line(&huge).await);
    assert_eq!(code, RunnerErrorCode::BadRequest);
    assert!(message.contains("longer than"), "{message}");
    // Still answering after all that.
    client.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let mut running = app.start();
    running
        .guard
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let exit = running.guard.wait_timeout(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert!(!app.spec.socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_runner_for_the_same_socket_is_refused() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let running = app.start();
    let (status, stderr) = app.run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by a live process"), "{stderr}");
    // The first one still owns its socket and its pid file.
    app.client().ping().await.unwrap();
    let pid_file = tabbify_runner::AppDir::new(app.path()).read_pid();
    assert_eq!(pid_file, Some(running.guard.pid()));
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_runner_is_recognised_and_its_death_noticed() {
    let app = TestApp::new(&example_wasm("hello-wasm"), 64, 2_000);
    let identity = spawn_runner(RUNNER.as_ref(), app.path()).unwrap();
    // Whatever happens below, do not leave the detached runner behind.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _kill = KillOnDrop(identity.pid);

    // Its own session: it survives the supervisor's session/process group going away.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(identity.pid as i32))).unwrap();
    assert_eq!(sid.as_raw() as u32, identity.pid);

    let app_id = app.spec.app_id.clone();
    let socket = app.spec.socket.clone();
    let mut liveness = Liveness::Gone;
    for _ in 0..300 {
        liveness = check_runner(&identity, &app_id, &socket, Duration::from_millis(500)).await;
        if liveness == Liveness::Alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(liveness, Liveness::Alive);
    assert_eq!(
        tabbify_runner::AppDir::new(app.path()).read_pid(),
        Some(identity.pid)
    );

    let mut reused = identity;
    reused.start_time_ticks += 1;
    assert_eq!(
        check_runner(&reused, &app_id, &socket, Duration::from_millis(500)).await,
        Liveness::PidReused
    );
    let other = tabbify_wire::app::AppId::new("someone-else").unwrap();
    assert!(matches!(
        check_runner(&identity, &other, &socket, Duration::from_millis(500)).await,
        Liveness::Impostor(_)
    ));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(identity.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(
        identity.pid
    )));
    assert_eq!(
        check_runner(&identity, &app_id, &socket, Duration::from_millis(500)).await,
        Liveness::Gone
    );
}
