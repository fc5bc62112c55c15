//! Apps outlive their supervisor: kill -9 the supervisor while a client streams requests to an
//! app and not one request fails; the restarted supervisor adopts the same runner (one runner,
//! same pid) and manages it again. A runner that died while the supervisor was down is started
//! again when the supervisor comes back, and a stopped app stays stopped.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use apps_support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tabbify_wire::node_apps::AppState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_crash_loses_no_request_and_the_runner_is_adopted() {
    let mut node = Node::start(&[]);
    let app = node.deploy_ok(&manifest("steady", ""), &example_wasm("hello-wasm"));
    let id = app.app_id.to_string();
    let pid = app.runner_pid.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(app.url.clone(), stop.clone(), 20_000));
    tokio::time::sleep(Duration::from_millis(300)).await;

    node.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "the runner died with its supervisor");
    let mut node = tokio::task::spawn_blocking(move || {
        node.boot();
        node
    })
    .await
    .unwrap();
    let adopted = tokio::task::block_in_place(|| node.wait_running(&id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, _) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed while the supervisor restarted: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok > 50, "only {ok} requests went through");

    assert_eq!(adopted.runner_pid, Some(pid), "same runner, adopted");
    assert_eq!(adopted.restart.restarts, 0);
    assert_eq!(node.runners_of(&id), vec![pid], "exactly one runner");
    assert!(
        node.log().contains("adopted a running runner"),
        "{}",
        node.log()
    );

    // The adopted runner is managed: kill -9 it and the policy restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = tokio::task::block_in_place(|| {
        node.wait_app(&id, "a restart of the adopted runner", |a| {
            a.state == AppState::Running && a.runner_pid.is_some_and(|p| p != pid)
        })
    });
    let exit = back.last_exit.unwrap();
    assert!(
        exit.description.contains("unknown"),
        "not our child, so no status: {exit:?}"
    );
    assert_eq!(back.restart.restarts, 1);
    assert_eq!(curl_get(&app.url).0, 200);

    // And stopped through the API.
    let (status, stopped) = node.post(&format!("/v1/apps/{id}/stop"));
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")));
    assert!(node.runners_of(&id).is_empty());
    node.kill9();
}

#[test]
fn runners_that_died_meanwhile_restart_and_stopped_apps_stay_stopped() {
    let mut node = Node::start(&[]);
    let hello = example_wasm("hello-wasm");
    let live = node.deploy_ok(&manifest("survivor", ""), &hello);
    let dead = node.deploy_ok(&manifest("casualty", ""), &hello);
    let stopped = node.deploy_ok(&manifest("sleeper", ""), &hello);
    let (status, _) = node.post(&format!("/v1/apps/{}/stop", stopped.app_id));
    assert_eq!(status, 200);

    node.kill9();
    let dead_pid = dead.runner_pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A leftover version directory with no record behind it (a crash mid-redeploy).
    std::fs::create_dir_all(node.app_dir(live.app_id.as_str()).join("v9")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    node.boot();

    let survivor = node.wait_running(live.app_id.as_str());
    assert_eq!(
        survivor.runner_pid, live.runner_pid,
        "the live runner is adopted"
    );
    assert!(!node.app_dir(live.app_id.as_str()).join("v9").exists());
    let respawned = node.wait_running(dead.app_id.as_str());
    assert_ne!(respawned.runner_pid, Some(dead_pid));
    let exit = respawned.last_exit.clone().unwrap();
    assert!(
        exit.description
            .contains("ended while the supervisor was down"),
        "{exit:?}"
    );
    assert_eq!(curl_get(&respawned.url).0, 200);
    let sleeper = node.app(stopped.app_id.as_str());
    assert_eq!(sleeper.state, AppState::Stopped);
    assert!(node.runners_of(stopped.app_id.as_str()).is_empty());
    for app in [&survivor, &respawned] {
        assert_eq!(node.runners_of(app.app_id.as_str()).len(), 1);
    }
}
