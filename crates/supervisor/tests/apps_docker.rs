//! Docker apps on a real supervisor and the machine's real Docker daemon. The image is
//! `examples/hello-http` (a static musl binary) in an image built `FROM scratch` by the test (no
//! registry is reachable). Deploy and curl; `docker kill` the container and see our restart policy
//! (not Docker's) bring it back; kill -9 the supervisor, then the runner, and see the same
//! container adopted; stop and delete leave no container. The image can also come as a
//! `docker save` tarball. A missing image and a command that exits at once are clear errors, and
//! the crashloop state for a deployed app; a container that never listens times out and is
//! removed. A node without a daemon refuses docker apps, and one whose daemon goes away says so
//! while the app keeps serving.
//!
//! Every test has its own supervisor, image tags and container labels (they name the test's data
//! directory), so the tests run in parallel on one daemon; a guard removes their containers and
//! images however a test ends (`apps_support/docker.rs`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use apps_support::docker::*;
use apps_support::*;
use std::process::Command;
use tabbify_testkit::{Capability, require};
use tabbify_wire::node_apps::AppState;

#[test]
fn a_docker_app_serves_is_restarted_by_our_policy_adopted_and_removed() {
    require!(Capability::Docker);
    let mut dn = DockerNode::start(&[]);
    let image = dn.build_image("hello", "[\"/bin/hello-http\"]");
    let app = deploy_ok(&dn, &docker_manifest("dk-hello", &image, ""), None);
    let id = app.app_id.to_string();
    assert_eq!(app.state, AppState::Running, "{app:#?}");
    assert_eq!(app.runtime.to_string(), "docker");
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));

    // One container, labelled for the app, with Docker's restart policy off.
    let first = dn.the_container(&id);
    let seen = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{index .Config.Labels \"tabbify.version\"}} {{.Name}}",
        &first,
    ]);
    assert_eq!(seen, format!("no v1 /tabbify-{id}-v1"));
    // Its output is in the app log.
    assert!(
        dn.app_log(&id)
            .contains("hello-http listening on 0.0.0.0:8080"),
        "{}",
        dn.app_log(&id)
    );

    // docker kill: our policy starts a new container at once, on the same address.
    docker(&["kill", &first]);
    let back = dn.node.wait_app(&id, "a restart after docker kill", |a| {
        a.state == AppState::Running && a.restart.restarts == 1
    });
    let exit = back.last_exit.clone().unwrap();
    assert!(
        exit.error
            .as_deref()
            .is_some_and(|e| e.contains("exited with code 137 (SIGKILL)")),
        "{exit:?}"
    );
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    let second = dn.the_container(&id);
    assert_ne!(second, first, "a new container");
    assert!(
        docker_try(&["inspect", &first]).is_err(),
        "the dead one is removed"
    );

    // kill -9 the supervisor: the restarted one adopts the runner, and so the container.
    let pid = back.runner_pid.unwrap();
    dn.node.kill9();
    assert_eq!(curl_get(&app.url).0, 200, "serves without its supervisor");
    dn.node.boot();
    let adopted = dn.node.wait_running(&id);
    assert_eq!(adopted.runner_pid, Some(pid));
    assert_eq!(dn.the_container(&id), second, "the same container");

    // kill -9 the runner: the new runner adopts the container that still runs.
    kill_pid(pid);
    let rerun = dn.node.wait_app(&id, "a new runner", |a| {
        a.state == AppState::Running && a.runner_pid.is_some_and(|p| p != pid)
    });
    assert_eq!(dn.the_container(&id), second, "adopted, not a second one");
    assert!(
        dn.app_log(&id).contains("adopted the running container"),
        "{}",
        dn.app_log(&id)
    );
    assert_eq!(curl_get(&rerun.url), (200, BODY.to_string()));

    // Stop: the container is gone; start: a new one serves.
    let (status, stopped) = dn.node.post(&format!("/v1/apps/{id}/stop"));
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")));
    assert!(
        dn.containers_of(&id).is_empty(),
        "{:?}",
        dn.containers_of(&id)
    );
    let (status, started) = dn.node.post(&format!("/v1/apps/{id}/start"));
    assert_eq!((status, started["state"].as_str()), (200, Some("running")));
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    dn.the_container(&id);

    // Delete: answered once the container is gone.
    let (status, _) = dn.node.delete(&format!("/v1/apps/{id}"));
    assert_eq!(status, 204);
    assert!(
        dn.containers_of(&id).is_empty(),
        "{:?}",
        dn.containers_of(&id)
    );
    assert!(!dn.node.app_dir(&id).exists());
}

#[test]
fn the_image_can_come_as_a_docker_save_tarball() {
    require!(Capability::Docker);
    let dn = DockerNode::start(&[]);
    let image = dn.build_image("saved", "[\"/bin/hello-http\"]");
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("image.tar");
    docker(&["save", "-o", tarball.to_str().unwrap(), &image]);
    docker(&["rmi", "-f", &image]);
    assert!(docker_try(&["image", "inspect", &image]).is_err());

    let app = deploy_ok(
        &dn,
        &docker_manifest("dk-saved", &image, ""),
        Some(&tarball),
    );
    let id = app.app_id.to_string();
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    assert!(
        docker_try(&["image", "inspect", &image]).is_ok(),
        "loaded into the daemon"
    );
    assert!(
        dn.app_log(&id).contains("loaded image"),
        "{}",
        dn.app_log(&id)
    );

    // A runner that cannot remove its container (frozen, so the stop times out and it is
    // killed): the delete removes the container itself, and answers only once it is gone.
    dn.the_container(&id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.runner_pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let (status, _) = dn.node.delete(&format!("/v1/apps/{id}"));
    assert_eq!(status, 204, "{}", dn.node.log());
    assert!(
        dn.containers_of(&id).is_empty(),
        "{:?}",
        dn.containers_of(&id)
    );
    assert!(!alive(app.runner_pid.unwrap()));
    assert!(
        dn.node.log().contains("removed containers left behind"),
        "the supervisor removed it: {}",
        dn.node.log()
    );

    // A tarball without the image the manifest names is the artifact's fault.
    let (status, body) = deploy(
        &dn.node,
        &docker_manifest("dk-other", "tabbify-test/not-in-it:1", ""),
        Some(&tarball),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "invalid_artifact", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("does not hold image tabbify-test/not-in-it:1"),
        "{msg}"
    );
    assert!(msg.contains(&image), "names what it holds: {msg}");
}

#[test]
fn a_missing_image_and_a_command_that_exits_at_once_are_clear_errors_then_crashloop() {
    require!(Capability::Docker);
    let dn = DockerNode::start(&[]);
    let missing = format!("tabbify-test/missing:{}", unique("m"));

    // At deploy: the deploy answers with the reason (the daemon's own "no such image", not a
    // failed pull, which would name the registry), and nothing is left.
    let (status, body) = deploy(&dn.node, &docker_manifest("dk-missing", &missing, ""), None);
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("app_failed")),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "image {missing} is not on this node's Docker daemon"
        )) && msg.contains("docker save"),
        "{msg}"
    );
    assert!(!msg.contains("registry"), "no pull: {msg}");

    let image = dn.build_image("exits", "[\"/bin/hello-http\"]");
    let (status, body) = deploy(
        &dn.node,
        &docker_manifest("dk-exits", &image, "command = [\"/bin/nope\"]\n"),
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("app_failed")),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("the container exited before it listened on port 8080 (exit code 127)")
            && msg.contains("exec /bin/nope failed"),
        "{msg}"
    );
    let (_, list) = dn.node.get("/v1/apps");
    assert_eq!(list["apps"], serde_json::json!([]), "rolled back");
    assert!(
        dn.our_containers().is_empty(),
        "no container left: {:?}",
        dn.our_containers()
    );

    // A deployed app whose image goes away: each restart fails with the reason, and it
    // crashloops.
    let fast = "[restart]\nbackoff_initial_ms = 100\nbackoff_max_ms = 300\n";
    let app = deploy_ok(&dn, &docker_manifest("dk-loop", &image, fast), None);
    let id = app.app_id.to_string();
    let first = dn.the_container(&id);
    docker(&["rmi", "-f", &image]);
    docker(&["kill", &first]);
    let looping = dn
        .node
        .wait_app(&id, "a crashloop for the missing image", |a| {
            a.state == AppState::Crashloop
                && a.last_exit
                    .as_ref()
                    .and_then(|e| e.error.as_deref())
                    .is_some_and(|e| e.contains("is not on this node's Docker daemon"))
        });
    assert!(looping.restart.consecutive_failures >= 3, "{looping:#?}");

    // Its image comes back, but its command exits at once: still a crashloop, saying why.
    dn.build_as(&image, "[\"/bin/nope\"]");
    dn.node.wait_app(&id, "a crashloop for the command", |a| {
        a.state == AppState::Crashloop
            && a.last_exit
                .as_ref()
                .and_then(|e| e.error.as_deref())
                .is_some_and(|e| e.contains("exited before it listened") && e.contains("127"))
    });
    let (status, stopped) = dn.node.post(&format!("/v1/apps/{id}/stop"));
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")));
    dn.wait_no_container(&id);
}

#[test]
fn a_container_that_never_listens_times_out_and_is_removed() {
    require!(Capability::Docker);
    let dn = DockerNode::start(&["--app-start-timeout", "3s"]);
    // A static program that runs and never listens (hello-http's build makes sure the musl
    // target is there).
    hello_http();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("deaf.rs");
    std::fs::write(
        &src,
        "fn main() { println!(\"deaf: up, not listening\"); std::thread::sleep(std::time::Duration::from_secs(3600)); }\n",
    )
    .unwrap();
    let deaf = dir.path().join("deaf");
    let built = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "--target",
            "x86_64-unknown-linux-musl",
            "-o",
        ])
        .arg(&deaf)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = format!("tabbify-test/deaf:{}", unique("t"));
    dn.build_with(&image, "[\"/bin/deaf\"]", &[&deaf]);
    let (status, body) = deploy(&dn.node, &docker_manifest("dk-deaf", &image, ""), None);
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("app_failed")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not become healthy")),
        "{body}"
    );
    // The runner was killed while it waited: the supervisor removed its container before
    // answering.
    assert!(
        dn.our_containers().is_empty(),
        "no container left: {:?}",
        dn.our_containers()
    );
    assert!(
        dn.node.log().contains("removed containers left behind"),
        "{}",
        dn.node.log()
    );
}

#[test]
fn a_node_without_a_daemon_refuses_docker_apps() {
    let dn = DockerNode::start_with_env(&[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let (status, body) = deploy(&dn.node, &docker_manifest("dk-none", "hello:1", ""), None);
    assert_eq!(status, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("offers no docker runtime"), "{msg}");
}

#[test]
fn a_daemon_that_goes_away_is_reported_and_the_app_keeps_serving() {
    require!(Capability::Docker);
    if !daemon_socket().exists() {
        let reason = "the Docker daemon is not on a unix socket this test can stand in for";
        assert!(
            std::env::var("TABBIFY_REQUIRE_ALL").as_deref() != Ok("1"),
            "{reason} (TABBIFY_REQUIRE_ALL=1)"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("docker.sock");
    let mut link = DaemonLink::new(sock.clone());
    let host = format!("unix://{}", sock.display());
    let dn = DockerNode::start_with_env(&["--probe-interval", "300ms"], &[("DOCKER_HOST", &host)]);
    let image = dn.build_image("away", "[\"/bin/hello-http\"]");
    let app = deploy_ok(&dn, &docker_manifest("dk-away", &image, ""), None);
    let id = app.app_id.to_string();
    assert_eq!(app.runtime_unavailable, None);

    link.take_down();
    let away = dn
        .node
        .wait_app(&id, "the app to say the daemon is gone", |a| {
            a.runtime_unavailable.is_some()
        });
    assert!(
        away.runtime_unavailable
            .as_deref()
            .is_some_and(|n| n.contains("Docker daemon is not available")),
        "{away:#?}"
    );
    // The container itself still runs, and the runner still forwards to it.
    assert_eq!(away.state, AppState::Running, "{away:#?}");
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    let (status, body) = deploy(&dn.node, &docker_manifest("dk-later", &image, ""), None);
    assert_eq!(status, 422, "no new docker apps meanwhile: {body}");

    link.bring_up();
    let back = dn.node.wait_app(&id, "the daemon to be back", |a| {
        a.runtime_unavailable.is_none()
    });
    assert_eq!(back.state, AppState::Running);
    assert_eq!(
        back.runner_pid, app.runner_pid,
        "the same runner rode it out"
    );
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    let (status, _) = dn.node.delete(&format!("/v1/apps/{id}"));
    assert_eq!(status, 204);
    assert!(dn.containers_of(&id).is_empty());
}
