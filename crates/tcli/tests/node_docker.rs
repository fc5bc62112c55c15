//! The Docker path, for real: the images are built from this repository (no registry), the
//! description's `--no-mesh` commands run verbatim, and a whole mesh runs in containers — a
//! coordinator and three nodes (one started by the description's `docker run`, one by
//! `tcli node up`, one with the Docker socket and the host network) that join, get the right
//! tags, ping each other's ULAs over the WireGuard mesh, keep their ULA across `docker restart`,
//! join as a new peer with a fresh volume, and go offline and back when their network is
//! disconnected and reconnected. Every container, volume and network is removed at the end.

#![allow(clippy::unwrap_used)]

mod node_support;

use node_support::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use tabbify_testkit::{Capability, require};

fn get_health(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn the_descriptions_no_mesh_commands_print_health() {
    require!(Capability::Docker);
    let _serial = serial();
    build_images(&["base", "supervisor"]);
    // Removes the verbatim command's container (it has no name) however the test ends.
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let ids = docker(&[
                "ps",
                "-aq",
                "--filter",
                "ancestor=tabbify-supervisor",
                "--filter",
                "publish=8730",
            ]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
    let _cleanup = Cleanup;
    let mut run = Command::new("sh")
        .arg("-c")
        .arg("docker run --rm -p 8730:8730 tabbify-supervisor --no-mesh --bind 0.0.0.0:8730")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    let answered = wait_until(Duration::from_secs(30), || {
        let out = Command::new("sh")
            .arg("-c")
            .arg("curl -s localhost:8730/health")
            .output()
            .unwrap();
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && !body.is_empty()
    });
    let _ = Command::new("sh")
        .arg("-c")
        .arg("docker ps -q --filter ancestor=tabbify-supervisor --filter publish=8730 | xargs -r docker stop -t 5")
        .status();
    let _ = run.wait();
    assert!(answered, "curl -s localhost:8730/health never answered");
    println!("curl -s localhost:8730/health\n{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mesh"], "no_mesh");
    assert_eq!(health["firecracker"], false, "no /dev/kvm was given");
    assert_eq!(health["docker"], false, "no Docker socket was given");
    assert!(health.get("ula").is_some(), "{body}");
    assert!(health["version"].is_string());
}

/// The roster as tcli shows it.
fn peers(coordinator: &str, admin: &str) -> Vec<Value> {
    let out = Command::new(TCLI)
        .args(["--coordinator", coordinator, "peers", "--json"])
        .env("TABBIFY_ADMIN_TOKEN", admin)
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["peers"].as_array().cloned().unwrap_or_default()
}

fn peer<'a>(list: &'a [Value], name: &str, online: bool) -> Option<&'a Value> {
    list.iter()
        .find(|p| p["display_name"] == name && p["online"] == online)
}

/// The peer's tags, sorted (the roster's order is the coordinator's business).
fn tags(p: &Value) -> Vec<String> {
    let mut t: Vec<String> = p["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

fn ping(from: &str, ula: &str) -> bool {
    docker(&["exec", from, "ping", "-c", "1", "-W", "2", ula])
        .status
        .success()
}

#[test]
fn a_mesh_of_containers() {
    require!(Capability::Docker);
    let _serial = serial();
    build_images(&["base", "supervisor", "coordinator"]);
    let scope = DockerScope::new("m");
    let net = scope.network();

    // The coordinator, with tcli inside it for the admin side.
    let coord = scope.container("coord");
    let coord_vol = scope.volume("coord");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &coord,
        "--network",
        &net,
        "-p",
        "127.0.0.1::8888",
        "-v",
        &format!("{coord_vol}:/var/lib/tabbify-coordinator"),
        "tabbify-coordinator",
        "--insecure-no-mtls",
        "--heartbeat-interval",
        "1s",
    ]);
    let published = docker_ok(&["port", &coord, "8888/tcp"]);
    let host_url = format!("http://{}", published.lines().next().unwrap());
    let mesh_url = format!("http://{coord}:8888");
    assert!(
        wait_until(Duration::from_secs(30), || get_health(&format!(
            "{host_url}/health"
        ))
        .is_some_and(|h| h["status"] == "ok")),
        "coordinator did not come up: {}",
        scope.logs(&coord)
    );
    // The roster is for operators and members: the host's tcli reads it with the admin token.
    let admin = docker_ok(&[
        "exec",
        &coord,
        "cat",
        "/var/lib/tabbify-coordinator/admin-token",
    ]);
    let token = docker_ok(&[
        "exec",
        &coord,
        "tcli",
        "--coordinator",
        "http://127.0.0.1:8888",
        "token",
        "create",
        "--reusable",
        "--ttl",
        "1h",
        "--description",
        "docker test",
    ]);
    assert!(token.starts_with("tbfj_"), "{token}");

    // Node 1: the description's command (plus where its coordinator is, a name and a token).
    let n1 = scope.container("n1");
    let n1_vol = scope.volume("n1");
    let run_node1 = |volume: &str| {
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &n1,
            "--restart=on-failure",
            "--device",
            "/dev/net/tun",
            "--cap-add",
            "NET_ADMIN",
            "-v",
            &format!("{volume}:/var/lib/tabbify"),
            // Docker before 26 disables IPv6 in containers; the mesh ULA needs it.
            "--sysctl",
            "net.ipv6.conf.all.disable_ipv6=0",
            "--network",
            &net,
            "-e",
            &format!("TABBIFY_MESH_COORDINATOR={mesh_url}"),
            "-e",
            "SUPERVISOR_NAME=node-1",
            "-e",
            &format!("TABBIFY_JOIN_TOKEN={token}"),
            "tabbify-supervisor",
        ])
    };
    run_node1(&n1_vol);

    // Node 2: `tcli node up` from a node.toml, through the Docker API.
    let tmp = tempfile::tempdir().unwrap();
    let n2 = scope.container("n2");
    let n2_vol = scope.volume("n2");
    std::fs::write(tmp.path().join("join-token"), format!("{token}\n")).unwrap();
    let node2_toml = |volume: &str| {
        format!(
            "[backend]\nrestart = \"on-failure\"\ncontainer = \"{n2}\"\nvolume = \"{volume}\"\n\
             network = \"{net}\"\n[mesh]\ncoordinator = \"{mesh_url}\"\nname = \"node-2\"\n\
             join_token_file = \"join-token\"\n[resources]\ncpus = 1\nmemory_mb = 256\n"
        )
    };
    let toml2 = tmp.path().join("node2.toml");
    std::fs::write(&toml2, node2_toml(&n2_vol)).unwrap();
    let up = Command::new(TCLI)
        .args(["node", "up", "-f", toml2.to_str().unwrap(), "--wait", "90s"])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "tcli node up: {}{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr),
        scope.logs(&n2)
    );
    let up_out = String::from_utf8_lossy(&up.stdout);
    assert!(
        up_out.contains(&format!("node {n2} is up: status ok, mesh joined")),
        "{up_out}"
    );

    // Node 3: the Docker runtime — the host's socket and the host network (its own TUN name and
    // WireGuard port, so it cannot collide with anything else on this host).
    let n3 = scope.container("n3");
    let n3_vol = scope.volume("n3");
    let tun3 = format!("tbt{}", &scope.id[scope.id.len().saturating_sub(8)..]);
    let udp3 = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &n3,
        "--restart=on-failure",
        "--device",
        "/dev/net/tun",
        "--cap-add",
        "NET_ADMIN",
        "-v",
        &format!("{n3_vol}:/var/lib/tabbify"),
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--network",
        "host",
        "-e",
        &format!("TABBIFY_MESH_COORDINATOR={host_url}"),
        "-e",
        "SUPERVISOR_NAME=node-3",
        "-e",
        &format!("TABBIFY_JOIN_TOKEN={token}"),
        "tabbify-supervisor",
        "--tun-name",
        &tun3,
        "--listen-port",
        &udp3,
    ]);

    // tcli peers: three nodes online, with the tags their capabilities give.
    let mut roster = Vec::new();
    let all_online = wait_until(Duration::from_secs(90), || {
        roster = peers(&host_url, &admin);
        ["node-1", "node-2", "node-3"]
            .iter()
            .all(|n| peer(&roster, n, true).is_some())
    });
    assert!(
        all_online,
        "roster: {roster:#?}\nnode-1:\n{}\nnode-3:\n{}",
        scope.logs(&n1),
        scope.logs(&n3)
    );
    assert_eq!(roster.len(), 3, "{roster:#?}");
    assert_eq!(tags(peer(&roster, "node-1", true).unwrap()), ["wasm"]);
    assert_eq!(tags(peer(&roster, "node-2", true).unwrap()), ["wasm"]);
    assert_eq!(
        tags(peer(&roster, "node-3", true).unwrap()),
        ["docker", "wasm"]
    );
    let table = Command::new(TCLI)
        .args(["--coordinator", &host_url, "peers"])
        .env("TABBIFY_ADMIN_TOKEN", &admin)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&table.stdout));
    let ula = |list: &[Value], name: &str| {
        peer(list, name, true).unwrap()["ula"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ula1, ula2, ula3) = (
        ula(&roster, "node-1"),
        ula(&roster, "node-2"),
        ula(&roster, "node-3"),
    );
    let id1 = peer(&roster, "node-1", true).unwrap()["peer_id"].clone();

    // Every node reaches every other node's ULA through the mesh.
    for (from, to) in [
        (&n1, &ula2),
        (&n2, &ula1),
        (&n1, &ula3),
        (&n3, &ula1),
        (&n2, &ula3),
        (&n3, &ula2),
    ] {
        assert!(
            wait_until(Duration::from_secs(30), || ping(from, to)),
            "{from} cannot ping {to}\n{}",
            scope.logs(from)
        );
    }

    // tcli node status / logs on the tcli-started node.
    let status = Command::new(TCLI)
        .args(["node", "status", "-f", toml2.to_str().unwrap()])
        .output()
        .unwrap();
    let status_out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status_out}");
    assert!(status_out.contains("running"), "{status_out}");
    assert!(status_out.contains(&format!("ula {ula2}")), "{status_out}");
    let logs = Command::new(TCLI)
        .args(["node", "logs", "--container", &n2, "--tail", "50"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("tabbify-supervisor ready"),
        "{logs:?}"
    );

    // docker restart keeps the identity: same ULA, same peer, still three.
    docker_ok(&["restart", "-t", "5", &n1]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            roster = peers(&host_url, &admin);
            peer(&roster, "node-1", true).is_some_and(|p| p["ula"] == ula1.as_str())
                && ping(&n1, &ula2)
        }),
        "node-1 did not come back with its ULA: {roster:#?}\n{}",
        scope.logs(&n1)
    );
    assert_eq!(peer(&roster, "node-1", true).unwrap()["peer_id"], id1);
    assert_eq!(roster.len(), 3, "a restart is not a new peer: {roster:#?}");

    // The same node with a fresh volume joins as a new peer.
    let down = Command::new(TCLI)
        .args(["node", "down", "-f", toml2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    let fresh = scope.volume("n2-fresh");
    std::fs::write(&toml2, node2_toml(&fresh)).unwrap();
    let up = Command::new(TCLI)
        .args(["node", "up", "-f", toml2.to_str().unwrap(), "--wait", "90s"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}\n{}", scope.logs(&n2));
    assert!(
        wait_until(Duration::from_secs(60), || {
            roster = peers(&host_url, &admin);
            peer(&roster, "node-2", true).is_some_and(|p| p["ula"] != ula2.as_str())
        }),
        "no new node-2: {roster:#?}"
    );
    let new_ula2 = ula(&roster, "node-2");
    assert_eq!(
        roster.len(),
        4,
        "the old node-2 stays in the roster until purged: {roster:#?}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || ping(&n1, &new_ula2)),
        "node-1 cannot reach the new node-2"
    );

    // Network disconnect: offline at the coordinator; reconnect: back online, reachable.
    docker_ok(&["network", "disconnect", &net, &n1]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            roster = peers(&host_url, &admin);
            roster
                .iter()
                .any(|p| p["ula"] == ula1.as_str() && p["online"] == false)
        }),
        "node-1 never went offline: {roster:#?}"
    );
    docker_ok(&["network", "connect", &net, &n1]);
    assert!(
        wait_until(Duration::from_secs(90), || {
            roster = peers(&host_url, &admin);
            peer(&roster, "node-1", true).is_some_and(|p| p["ula"] == ula1.as_str())
        }),
        "node-1 did not come back online: {roster:#?}\n{}",
        scope.logs(&n1)
    );
    assert!(
        wait_until(Duration::from_secs(30), || ping(&n1, &new_ula2)
            && ping(&n3, &ula1)),
        "node-1 is online but not reachable after reconnecting\n{}",
        scope.logs(&n1)
    );
}

#[test]
fn the_fc_image_carries_qemu_and_sees_kvm() {
    require!(Capability::Docker);
    require!(Capability::Kvm);
    require!(Capability::Qemu);
    let _serial = serial();
    build_images(&["base", "supervisor", "fc"]);
    let version = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "qemu-system-x86_64",
        "tabbify-supervisor:fc",
        "--version",
    ]);
    assert!(version.starts_with("QEMU emulator version"), "{version}");
    let scope = DockerScope::new("fc");
    let name = scope.container("fc");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--device",
        "/dev/kvm",
        "-p",
        "127.0.0.1::8730",
        "tabbify-supervisor:fc",
        "--no-mesh",
        "--bind",
        "0.0.0.0:8730",
    ]);
    let published = docker_ok(&["port", &name, "8730/tcp"]);
    let url = format!("http://{}/health", published.lines().next().unwrap());
    let mut health = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            health = get_health(&url);
            health.is_some()
        }),
        "{}",
        scope.logs(&name)
    );
    let health = health.unwrap();
    println!("{health}");
    // The device reached the container: the probe opened it and judged whether it runs guests
    // (on a machine whose KVM cannot run guests at a usable speed it says so, and the node
    // offers no `firecracker`).
    let detail = health["kvm_detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("/dev/kvm runs guests") || detail.starts_with("/dev/kvm opens"),
        "/dev/kvm is passed into the :fc image: {health}"
    );
    // QEMU in the image boots microVM apps either way.
    let vm_runtime = health["vm_runtime"].as_str().unwrap_or_default();
    assert!(vm_runtime.starts_with("qemu-"), "{health}");
    // `firecracker` is offered only with a VMM the probe accepts.
    assert_eq!(
        health["firecracker"],
        !health["vmm"].is_null(),
        "firecracker is claimed only with a VMM: {health}"
    );
}
