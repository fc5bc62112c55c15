//! Apps on the mesh: two nodes in their own network namespaces joined through a real
//! coordinator. An app deployed on node A gets its own address in A's /64 (a /128 on A's `lo`)
//! and node B reaches it with curl over the WireGuard mesh. After a supervisor crash the app and
//! its address stay, strays are removed, and deleting the app removes its address.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;
mod mesh_support;

use mesh_support::{MeshLab, NodeOpts, curl, eventually};
use std::net::Ipv6Addr;
use std::time::Duration;
use tabbify_testkit::{Capability, bin_path, require};

fn lo_addrs(host: &tabbify_testkit::netns::Host) -> String {
    host.exec_ok("ip", &["-6", "addr", "show", "dev", "lo"])
        .unwrap()
}

#[test]
fn an_app_on_node_a_answers_node_b_over_the_mesh() {
    require!(Capability::NetNs);
    assert!(
        bin_path("tabbify-runner").is_ok(),
        "build tabbify-runner first (cargo build -p tabbify-runner)"
    );
    let lab = MeshLab::new("apps", &[]);
    let token = lab.token();
    let no_docker = NodeOpts::default();
    let (ha, hb) = (
        lab.lan.add_host("a").unwrap(),
        lab.lan.add_host("b").unwrap(),
    );
    let data_a = lab.dir.path().join("node-a");
    let mut node_a = lab.start_node(&ha, "node-a", &token, &data_a, &no_docker);
    let ula_a = node_a.ula;
    let _node_b = lab.start_node(
        &hb,
        "node-b",
        &token,
        &lab.dir.path().join("node-b"),
        &no_docker,
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
            "-H",
            &node_a.auth(),
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
    node_a.guard.kill();
    // The app keeps serving on A; B waits for the mesh data plane, which lives in the supervisor.
    assert_eq!(
        curl(&ha, &[&url]).0,
        200,
        "the app serves while its supervisor is down"
    );
    let node_a2 = lab.start_node(&ha, "node-a", &token, &data_a, &no_docker);
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
    let (status, body) = curl(
        &ha,
        &[
            "-H",
            &node_a2.auth(),
            "-X",
            "DELETE",
            &format!("{api_a}/v1/apps/{id}"),
        ],
    );
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
