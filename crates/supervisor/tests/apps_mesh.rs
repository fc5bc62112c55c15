//! Apps on the mesh: two nodes in their own network namespaces joined through a real
//! coordinator. An app deployed on node A gets its own address in A's /64 (a /128 on A's `lo`)
//! and node B reaches it with curl over the WireGuard mesh. After a supervisor crash the app and
//! its address stay, strays are removed, and deleting the app removes its address.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tabbify_testkit::netns::{Host, Lan};
use tabbify_testkit::{Capability, ChildGuard, bin_path, read_ready_line, require};

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

fn start_node(
    host: &Host,
    coord: &str,
    token: &str,
    data: &Path,
    logs: &Path,
    name: &str,
) -> (ChildGuard, Ipv6Addr) {
    let mut cmd = host.command(bin_path("tabbify-supervisor").unwrap());
    cmd.args([
        "--coordinator",
        coord,
        "--join-token",
        token,
        "--name",
        name,
    ])
    .args(["--probe-interval", "1h"])
    .arg("--data-dir")
    .arg(data)
    .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    .stdout(Stdio::piped())
    .stderr(log_file(logs, name));
    let mut guard = host.spawn(cmd).unwrap();
    let out = guard.child.as_mut().unwrap().stdout.take().unwrap();
    let api = read_ready_line(
        out,
        "tabbify-supervisor listening on",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{name} did not come up: {e:#}; logs in {}", logs.display()));
    let ula = api
        .trim_start_matches("http://[")
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (guard, ula)
}

/// curl in `host`'s namespace: status (0 when no answer) and body.
fn curl(host: &Host, args: &[&str]) -> (u16, String) {
    let mut full = vec!["-sS", "-m", "10", "-g", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = host.exec("curl", &full).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn lo_addrs(host: &Host) -> String {
    host.exec_ok("ip", &["-6", "addr", "show", "dev", "lo"])
        .unwrap()
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_app_on_node_a_answers_node_b_over_the_mesh() {
    require!(Capability::NetNs);
    assert!(
        bin_path("tabbify-runner").is_ok(),
        "build tabbify-runner first (cargo build -p tabbify-runner)"
    );
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("apps").unwrap();
    let coord_host = lan.add_host("coord").unwrap();
    let mut cmd = coord_host.command(bin_path("tabbify-coordinator").unwrap());
    cmd.args([
        "--listen",
        "0.0.0.0:8888",
        "--insecure-no-mtls",
        "--heartbeat-interval",
        "1s",
    ])
    .arg("--data-dir")
    .arg(dir.path().join("coordinator"))
    .stdout(Stdio::piped())
    .stderr(log_file(dir.path(), "coordinator"));
    let mut coord = coord_host.spawn(cmd).unwrap();
    let out = coord.child.as_mut().unwrap().stdout.take().unwrap();
    read_ready_line(out, "listening on", Duration::from_secs(30)).unwrap();
    let coord_url = format!("http://{}:8888", coord_host.underlay_addr());
    let admin = dir.path().join("coordinator/admin-token");
    let token = coord_host
        .exec_ok(
            bin_path("tcli").unwrap().to_str().unwrap(),
            &[
                "--coordinator",
                "http://127.0.0.1:8888",
                "--admin-token-file",
                admin.to_str().unwrap(),
                "token",
                "create",
                "--reusable",
            ],
        )
        .unwrap()
        .trim()
        .to_string();

    let (ha, hb) = (lan.add_host("a").unwrap(), lan.add_host("b").unwrap());
    let data_a = dir.path().join("node-a");
    let (mut node_a, ula_a) = start_node(&ha, &coord_url, &token, &data_a, dir.path(), "node-a");
    let (_node_b, _ula_b) = start_node(
        &hb,
        &coord_url,
        &token,
        &dir.path().join("node-b"),
        dir.path(),
        "node-b",
    );
    let api_a = format!("http://[{ula_a}]:8730");

    // Deploy on A (from A) with curl -F.
    let files = tempfile::tempdir().unwrap();
    let manifest = files.path().join("tabbify.toml");
    std::fs::write(
        &manifest,
        apps_support::manifest("meshy", "[http]\nport = 8080\n"),
    )
    .unwrap();
    let wasm = apps_support::example_wasm("hello-wasm");
    let (status, body) = curl(
        &ha,
        &[
            "-F",
            &format!("manifest=@{}", manifest.display()),
            "-F",
            &format!("artifact=@{}", wasm.display()),
            &format!("{api_a}/v1/apps"),
        ],
    );
    assert_eq!(status, 201, "{body}");
    let app: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = app["app_id"].as_str().unwrap().to_string();
    let address: std::net::SocketAddr = app["address"].as_str().unwrap().parse().unwrap();
    let std::net::IpAddr::V6(app_ip) = address.ip() else {
        panic!("a mesh app gets an IPv6 address: {address}");
    };
    assert_eq!(address.port(), 8080);
    assert_ne!(app_ip, ula_a);
    assert_eq!(
        u128::from(app_ip) >> 64,
        u128::from(ula_a) >> 64,
        "inside A's /64"
    );
    assert!(
        lo_addrs(&ha).contains(&format!("{app_ip}/128")),
        "{}",
        lo_addrs(&ha)
    );

    // B reaches it over the mesh.
    let url = format!("http://[{app_ip}]:8080/");
    let mut answer = (0, String::new());
    eventually("B reaches the app on A", Duration::from_secs(20), || {
        answer = curl(&hb, &[&url]);
        answer.0 == 200
    });
    assert_eq!(answer.1, "hello from tabbify wasm\n");

    // A supervisor crash: the address and the app stay; a stray /128 of A's /64 is cleared.
    let stray = Ipv6Addr::from(u128::from(ula_a) | 0x99);
    ha.exec_ok(
        "ip",
        &["-6", "addr", "add", &format!("{stray}/128"), "dev", "lo"],
    )
    .unwrap();
    node_a.kill();
    // The app keeps serving on A; B waits for the mesh data plane, which lives in the supervisor.
    assert_eq!(
        curl(&ha, &[&url]).0,
        200,
        "the app serves while its supervisor is down"
    );
    let (node_a2, _) = start_node(&ha, &coord_url, &token, &data_a, dir.path(), "node-a");
    eventually(
        "the stray address is removed",
        Duration::from_secs(20),
        || !lo_addrs(&ha).contains(&format!("{stray}/128")),
    );
    assert!(lo_addrs(&ha).contains(&format!("{app_ip}/128")));
    eventually("B reaches the app again", Duration::from_secs(20), || {
        curl(&hb, &[&url]).0 == 200
    });

    // Delete: the address goes with the app.
    let (status, body) = curl(&ha, &["-X", "DELETE", &format!("{api_a}/v1/apps/{id}")]);
    assert_eq!(status, 204, "{body}");
    assert!(
        !lo_addrs(&ha).contains(&format!("{app_ip}/128")),
        "{}",
        lo_addrs(&ha)
    );
    assert_eq!(curl(&hb, &["-m", "2", &url]).0, 0);
    assert!(!data_a.join("apps").join(&id).exists());
    drop(node_a2);
}
