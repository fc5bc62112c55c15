//! Bad apps through the API: random bytes, a core module instead of a component, manifests with
//! an unknown key or a missing field, oversized uploads, unknown apps; each gets a precise 4xx
//! and leaves nothing behind. A crashlooping app shows `crashloop`, ends `parked`, and `reset`
//! brings it back.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use apps_support::*;
use tabbify_wire::node_apps::AppState;

/// Asserts the node has no app, no app directory and no runner.
fn assert_nothing_left(node: &Node) {
    let (_, list) = node.get("/v1/apps");
    assert!(list["apps"].as_array().unwrap().is_empty(), "{list}");
    let apps_dir = node.data_dir.join("apps");
    let left: Vec<_> = std::fs::read_dir(&apps_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        apps_dir.display()
    );
    assert!(
        Node::runners_under(&node.data_dir).is_empty(),
        "a runner is left"
    );
}

fn assert_error(answer: (u16, serde_json::Value), status: u16, code: &str, needles: &[&str]) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    for n in needles {
        assert!(message.contains(n), "message lacks {n:?}: {message}");
    }
}

#[test]
fn bad_artifacts_and_manifests_get_precise_errors() {
    let node = Node::start(&["--max-app-upload-mib", "1"]);
    let ok = manifest("hello", "");

    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_error(
        node.deploy(&ok, &noise),
        422,
        "invalid_artifact",
        &["cannot load the app", "is not a WebAssembly binary"],
    );
    assert_nothing_left(&node);

    assert_error(
        node.deploy(&ok, b"\0asm\x01\0\0\0"),
        422,
        "invalid_artifact",
        &["is a core WebAssembly module, not a component"],
    );
    assert_nothing_left(&node);

    let hello = std::fs::read(example_wasm("hello-wasm")).unwrap();
    assert_error(
        node.deploy(&manifest("hello", "colour = \"red\"\n"), &hello),
        400,
        "bad_request",
        &["unknown field `colour`", "line 6, column 1"],
    );
    assert_error(
        node.deploy(
            "[app]\n[runtime]\nkind = \"wasm\"\ncomponent = \"a.wasm\"\n",
            &hello,
        ),
        400,
        "bad_request",
        &["missing field `name`", "line 1", "[app]"],
    );
    assert_nothing_left(&node);

    // Over the 1 MiB limit of a wasm app: 413.
    let big = vec![0u8; 2 * 1024 * 1024];
    assert_error(
        node.deploy(&ok, &big),
        413,
        "payload_too_large",
        &["1048576 bytes"],
    );

    // Parts missing, unknown or not multipart at all.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tabbify.toml");
    std::fs::write(&m, &ok).unwrap();
    let url = format!("{}/v1/apps", node.api());
    let auth = node.auth();
    assert_error(
        curl_json(&[
            "-H",
            &auth,
            "-F",
            &format!("manifest=@{}", m.display()),
            &url,
        ]),
        400,
        "bad_request",
        &["missing part `artifact`"],
    );
    assert_error(
        curl_json(&[
            "-H",
            &auth,
            "-F",
            &format!("manifest=@{}", m.display()),
            "-F",
            "colour=red",
            &url,
        ]),
        400,
        "bad_request",
        &["unknown multipart part `colour`"],
    );
    assert_error(
        curl_json(&[
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
            &url,
        ]),
        400,
        "bad_request",
        &["multipart/form-data"],
    );

    // Unknown apps.
    for path in ["/v1/apps/nope-12345678", "/v1/apps/..%2Fetc"] {
        assert_error(node.get(path), 404, "not_found", &["no app with id"]);
    }
    assert_error(
        node.post("/v1/apps/nope-1/stop"),
        404,
        "not_found",
        &["nope-1"],
    );
    assert_error(
        node.delete("/v1/apps/nope-1"),
        404,
        "not_found",
        &["nope-1"],
    );
    assert_error(
        node.get("/v1/apps/nope-1/logs"),
        404,
        "not_found",
        &["nope-1"],
    );
    assert_nothing_left(&node);

    // After all that, a good deploy still works.
    let app = node.deploy_ok(&ok, &example_wasm("hello-wasm"));
    assert_eq!(curl_get(&app.url).0, 200);
}

#[test]
fn a_crashlooping_app_is_parked_and_reset_brings_it_back() {
    let node = Node::start(&[]);
    let hello = example_wasm("hello-wasm");
    let restart = "[restart]\nmax_restarts = 4\nbackoff_initial_ms = 300\nbackoff_max_ms = 2000\n";
    let app = node.deploy_ok(&manifest("flaky", restart), &hello);
    let id = app.app_id.to_string();

    // The stored artifact goes bad (think disk corruption), then the runner dies: every restart
    // now fails to load.
    let stored = node.app_dir(&id).join("v1/app.wasm");
    std::fs::write(&stored, b"garbage, not wasm").unwrap();
    let pid = app.runner_pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let looping = node.wait_app(&id, "crashloop", |a| a.state == AppState::Crashloop);
    assert!(looping.restart.consecutive_failures >= 3, "{looping:#?}");
    let parked = node.wait_app(&id, "parked", |a| a.state == AppState::Parked);
    assert_eq!(parked.restart.restarts, 4, "{parked:#?}");
    assert_eq!(parked.restart.consecutive_failures, 5);
    assert_eq!(parked.runner_pid, None);
    let exit = parked.last_exit.as_ref().unwrap();
    assert_eq!(exit.code, Some(1), "{exit:?}");
    assert!(
        exit.error
            .as_deref()
            .is_some_and(|e| e.contains("is not a WebAssembly binary")),
        "{exit:?}"
    );
    assert!(node.runners_of(&id).is_empty());
    // Parked means parked: no more restarts, and start says why.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(node.app(&id).restart.restarts, 4);
    assert_error(
        node.post(&format!("/v1/apps/{id}/start")),
        409,
        "conflict",
        &["parked", "reset"],
    );

    // Fix the cause and reset: it runs again.
    std::fs::copy(&hello, &stored).unwrap();
    let (status, reset) = node.post(&format!("/v1/apps/{id}/reset"));
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["state"], "running");
    assert_eq!(reset["restart"]["consecutive_failures"], 0);
    assert_eq!(curl_get(&app.url).0, 200);
}
