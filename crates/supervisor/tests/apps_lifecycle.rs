//! Apps on a real supervisor without the mesh: deploy hello-wasm with curl and get a 200 from its
//! address; its log; kill -9 its runner and watch the policy bring it back; stop, start and
//! delete leave no process or file behind; a redeploy swaps versions without a failed request,
//! and a bad redeploy leaves the old version serving.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use apps_support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tabbify_testkit::metrics::Exposition;
use tabbify_wire::node_apps::AppState;

#[test]
fn deploy_serve_log_kill_stop_start_delete() {
    let node = Node::start(&[]);
    let hello = example_wasm("hello-wasm");
    let app = node.deploy_ok(&manifest("hello", ""), &hello);
    assert_eq!(app.state, AppState::Running, "{app:#?}");
    assert_eq!(app.version, 1);
    assert!(app.address.ip().is_loopback(), "{}", app.address);
    assert!(app.app_id.as_str().starts_with("hello-"), "{}", app.app_id);
    let id = app.app_id.to_string();
    let pid = app.runner_pid.unwrap();
    assert_eq!(node.runners_of(&id), vec![pid]);

    // A real curl to the app's address.
    let (status, body) = curl_get(&app.url);
    assert_eq!((status, body.as_str()), (200, "hello from tabbify wasm\n"));

    // It is listed, and its record is on disk.
    let (status, list) = node.get("/v1/apps");
    assert_eq!(status, 200);
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.app_dir(&id).join("record.json")).unwrap())
            .unwrap();
    assert_eq!(record["current"]["runner"]["identity"]["pid"], pid);

    // The log has the guest's own line for that request.
    let auth = node.auth();
    let (status, log) = curl(&["-H", &auth, &format!("{}/v1/apps/{id}/logs", node.api())]);
    assert_eq!(status, 200);
    assert!(log.contains("hello-wasm: Method::Get /"), "{log}");
    let (_, tail) = curl(&[
        "-H",
        &auth,
        &format!("{}/v1/apps/{id}/logs?tail=1", node.api()),
    ]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let (status, bad) = node.get(&format!("/v1/apps/{id}/logs?colour=red"));
    assert_eq!(status, 400, "{bad}");

    // kill -9 the runner: the policy restarts it at once, on the same address.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = node.wait_app(&id, "a new runner serving", |a| {
        a.state == AppState::Running && a.runner_pid.is_some_and(|p| p != pid)
    });
    assert!(!alive(pid));
    assert_eq!(back.restart.restarts, 1);
    let exit = back.last_exit.as_ref().unwrap();
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert_eq!(exit.description, "killed by SIGKILL");
    assert_eq!(back.address, app.address);
    assert_eq!(curl_get(&app.url).0, 200);
    assert_eq!(node.runners_of(&id), vec![back.runner_pid.unwrap()]);

    // Stop: the runner is gone and the address refuses.
    let (status, stopped) = node.post(&format!("/v1/apps/{id}/stop"));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(stopped.get("runner_pid").is_none(), "{stopped}");
    assert!(!alive(back.runner_pid.unwrap()));
    assert!(node.runners_of(&id).is_empty());
    assert_eq!(
        curl_get(&app.url).0,
        0,
        "nothing listens on a stopped app's address"
    );
    // Stopping twice is fine.
    assert_eq!(node.post(&format!("/v1/apps/{id}/stop")).0, 200);

    // Start: a new runner serves again.
    let (status, started) = node.post(&format!("/v1/apps/{id}/start"));
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "running");
    let new_pid = started["runner_pid"].as_u64().unwrap() as u32;
    assert_eq!(curl_get(&app.url).0, 200);
    // Restart: another runner.
    let (status, restarted) = node.post(&format!("/v1/apps/{id}/restart"));
    assert_eq!(status, 200, "{restarted}");
    let restarted_pid = restarted["runner_pid"].as_u64().unwrap() as u32;
    assert_ne!(restarted_pid, new_pid);
    assert!(!alive(new_pid));
    assert_eq!(curl_get(&app.url).0, 200);

    // Follow the log: a request made now shows up in the open stream.
    let mut follower = Command::new("curl")
        .args(["-sSN", "--max-time", "30", "-H", auth.as_str()])
        .arg(format!(
            "{}/v1/apps/{id}/logs?follow=true&tail=0",
            node.api()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(lines).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // When the stream is attached is not visible from here: request /probe-1, /probe-2, … until
    // one shows up in it; then a request made after that must show up too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    let recv_until = |seen: &mut Vec<String>, what: &str, until: Instant| -> bool {
        loop {
            if seen.iter().any(|l| l.contains(what)) {
                return true;
            }
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(_) => return false,
            }
        }
    };
    for n in 1.. {
        assert_eq!(curl_get(&format!("{}probe-{n}", app.url)).0, 404);
        let soon = (Instant::now() + Duration::from_millis(200)).min(deadline);
        if recv_until(&mut seen, "Method::Get /probe-", soon) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the followed log never showed a request: {seen:?}"
        );
    }
    assert_eq!(curl_get(&format!("{}followed", app.url)).0, 404);
    assert!(
        recv_until(
            &mut seen,
            "Method::Get /followed",
            Instant::now() + Duration::from_secs(10)
        ),
        "the followed log did not show the request: {seen:?}"
    );

    // Delete: no process, no file, 404 afterwards; the log stream ends.
    let (status, _) = node.delete(&format!("/v1/apps/{id}"));
    assert_eq!(status, 204);
    let ended = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        follower.try_wait().unwrap().is_some()
    });
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(ended, "the log stream of a deleted app did not end");
    assert!(!alive(restarted_pid));
    assert!(node.runners_of(&id).is_empty());
    assert!(!node.app_dir(&id).exists(), "app directory left behind");
    assert_eq!(node.get(&format!("/v1/apps/{id}")).0, 404);
    assert_eq!(node.post(&format!("/v1/apps/{id}/start")).0, 404);
    assert_eq!(curl_get(&app.url).0, 0);
    let (_, list) = node.get("/v1/apps");
    assert!(list["apps"].as_array().unwrap().is_empty(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_swaps_versions_without_a_failed_request() {
    let node = Node::start(&[]);
    let hello = std::fs::read(example_wasm("hello-wasm")).unwrap();
    let misbehave = std::fs::read(example_wasm("misbehave")).unwrap();
    let (status, v1) = node.deploy(&manifest("web", ""), &hello);
    assert_eq!(status, 201, "{v1}");
    let id = v1["app_id"].as_str().unwrap().to_string();
    let url = v1["url"].as_str().unwrap().to_string();
    let v1_pid = v1["runner_pid"].as_u64().unwrap() as u32;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_load(url.clone(), stop.clone(), 100_000));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Version 2 (another component under the same name) replaces version 1 while requests flow.
    let api = node.api().to_string();
    let auth = node.auth();
    let (status, v2) = {
        let (api, auth) = (api.clone(), auth.clone());
        tokio::task::spawn_blocking(move || {
            deploy_to(&api, &auth, &manifest("web", ""), &misbehave)
        })
        .await
        .unwrap()
    };
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["app_id"], id.as_str(), "same app, new version");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["url"], url.as_str(), "same address");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A bad version 3: refused, and version 2 keeps serving throughout.
    let (status, bad) = tokio::task::spawn_blocking(move || {
        deploy_to(&api, &auth, &manifest("web", ""), b"\0asm\x01\0\0\0")
    })
    .await
    .unwrap();
    assert_eq!(status, 422, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{bad}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures, bodies) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok > 50, "only {ok} requests");
    assert_eq!(
        bodies.first().map(String::as_str),
        Some("hello from tabbify wasm\n")
    );
    assert_eq!(
        bodies.last().map(String::as_str),
        Some("ok\n"),
        "{bodies:?}"
    );

    let app = node.app(&id);
    assert_eq!(app.version, 2);
    assert_eq!(app.state, AppState::Running);
    assert!(!alive(v1_pid), "version 1's runner is gone");
    assert_eq!(node.runners_of(&id), vec![app.runner_pid.unwrap()]);
    let mut versions: Vec<String> = std::fs::read_dir(node.app_dir(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v'))
        .collect();
    versions.sort();
    assert_eq!(versions, vec!["v2"], "old and failed versions are removed");
}

/// `/metrics` counts the node's apps by state and their restarts, as Prometheus text.
#[test]
fn metrics_count_apps_by_state_and_their_restarts() {
    let node = Node::start(&[]);
    let hello = example_wasm("hello-wasm");
    let app = node.deploy_ok(&manifest("counted", ""), &hello);
    let id = app.app_id.to_string();
    let (status, text) = curl(&["-H", &node.auth(), &format!("{}/metrics", node.api())]);
    assert_eq!(status, 200);
    let metrics = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(
        metrics.value("tabbify_node_apps", &[("state", "running")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metrics.named("tabbify_node_info").len(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // kill -9 its runner: the policy's restart shows up.
    let pid = app.runner_pid.unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    node.wait_app(&id, "restarted", |a| {
        a.restart.restarts == 1 && a.state == AppState::Running
    });
    let (_, text) = curl(&["-H", &node.auth(), &format!("{}/metrics", node.api())]);
    let metrics = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(
        metrics.value(
            "tabbify_node_app_restarts_total",
            &[("app", "counted"), ("runtime", "wasm")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(node.delete(&format!("/v1/apps/{id}")).0, 204);
}
