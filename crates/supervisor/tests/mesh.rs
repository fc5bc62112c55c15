//! The mesh for real: a coordinator and supervisors, each in its own network namespace on a
//! bridged underlay LAN, carrying traffic over their TUN devices with userspace WireGuard.
//! Covers reachability between every pair of ULAs, the control API bound to the ULA only, the
//! roster driving the peer set, identity across restarts, forged sources, and roaming.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod mesh_support;

use mesh_support::{LabNode as Node, MeshLab, NodeOpts, eventually, ping};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_testkit::netns::Host;
use tabbify_testkit::{Capability, require};

/// The roster tests' nodes reach no Docker daemon: their tags are `wasm` only.
fn start_node(mesh: &MeshLab, host: &Host, name: &str, token: &str, dir: &Path) -> Node {
    mesh.start_node(host, name, token, dir, &NodeOpts::default())
}

fn curl(from: &Host, url: &str) -> Option<String> {
    curl_with(from, &[], url)
}

fn curl_with(from: &Host, extra: &[&str], url: &str) -> Option<String> {
    let mut args = vec!["-sS", "-m", "3", "-g"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = from.exec("curl", &args).ok()?;
    if !out.status.success() {
        eprintln!(
            "curl {url} from {}: {}",
            from.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mesh_stats(from: &Host, node: &Node) -> serde_json::Value {
    let body = curl_with(
        from,
        &["-H", &node.auth()],
        &format!("http://[{}]:8730/v1/mesh", node.ula),
    )
    .unwrap();
    serde_json::from_str(&body).unwrap()
}

fn peer_id(from: &Host, node: &Node) -> String {
    let body = curl(from, &format!("http://[{}]:8730/health", node.ula)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["peer_id"].as_str().unwrap().to_string()
}

#[test]
fn three_nodes_reach_each_other_and_follow_the_roster() {
    require!(Capability::NetNs);
    let mesh = MeshLab::new("sup3", &[]);
    let token = mesh.token();
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| mesh.lan.add_host(n).unwrap())
        .collect();
    let dirs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| mesh.dir.path().join(format!("node-{n}")))
        .collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            start_node(
                &mesh,
                &hosts[i],
                &format!("node-{}", ["a", "b", "c"][i]),
                &token,
                &dirs[i],
            )
        })
        .collect();

    // Every pair: ping6 and HTTP to the other's control API on its ULA.
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let (from, to) = (&nodes[i], &nodes[j]);
            eventually(
                &format!("ping {} -> {}", from.host.name, to.host.name),
                Duration::from_secs(15),
                || ping(&from.host, to.ula),
            );
            let body = curl(&from.host, &format!("http://[{}]:8730/health", to.ula)).unwrap();
            assert!(body.contains(&format!("node-{}", to.host.name)), "{body}");
            assert!(body.contains("\"mesh\":\"joined\""), "{body}");
        }
    }
    // The control API is on the ULA, not on the underlay address.
    let underlay_b = format!("http://{}:8730/health", nodes[1].host.underlay_addr());
    assert_eq!(
        curl(&nodes[0].host, &underlay_b),
        None,
        "API must not answer on the underlay"
    );

    // A forged inner source (an address outside a's /64) is dropped by b.
    let forged = Ipv6Addr::from(u128::from(nodes[0].ula) ^ (1u128 << 64));
    nodes[0]
        .host
        .exec_ok(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{forged}/128"),
                "dev",
                "tbf0",
                "nodad",
            ],
        )
        .unwrap();
    // b's own view (asked from b: a would now pick the forged address as its source).
    let before = mesh_stats(&nodes[1].host, &nodes[1])["dropped_source"]
        .as_u64()
        .unwrap();
    let out = nodes[0]
        .host
        .exec(
            "ping",
            &[
                "-6",
                "-c",
                "2",
                "-W",
                "1",
                "-I",
                &forged.to_string(),
                &nodes[1].ula.to_string(),
            ],
        )
        .unwrap();
    assert!(!out.status.success(), "a forged source must get no answer");
    let after = mesh_stats(&nodes[1].host, &nodes[1])["dropped_source"]
        .as_u64()
        .unwrap();
    assert!(
        after >= before + 2,
        "b counted the forged packets: {before} -> {after}"
    );
    nodes[0]
        .host
        .exec_ok(
            "ip",
            &["-6", "addr", "del", &format!("{forged}/128"), "dev", "tbf0"],
        )
        .unwrap();

    // Restart b after a crash (SIGKILL: its TUN is left behind) with the same state: same ULA,
    // traffic flows again.
    let ula_b = nodes[1].ula;
    nodes[1].guard.kill();
    let b = start_node(&mesh, &hosts[1], "node-b", &token, &dirs[1]);
    assert_eq!(b.ula, ula_b);
    nodes[1] = b;
    eventually("a reaches the restarted b", Duration::from_secs(15), || {
        ping(&hosts[0], ula_b)
    });

    // Remove c at the coordinator (with its token gone it cannot rejoin): traffic to it stops.
    let c_id = peer_id(&hosts[0], &nodes[2]);
    let token_id = token.split('_').nth(1).unwrap().to_string();
    mesh.tcli(&["token", "revoke", &token_id]);
    mesh.tcli(&["peer", "rm", &c_id]);
    let ula_c = nodes[2].ula;
    eventually(
        "traffic to the removed c stops",
        Duration::from_secs(5),
        || !ping(&hosts[0], ula_c),
    );
    let peers_of_a = mesh_stats(&hosts[0], &nodes[0])["peers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(peers_of_a, 1, "a keeps only b");

    // c with a wiped state dir joins as a new peer: new ULA, the old one unreachable.
    nodes[2].guard.kill();
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    let token2 = mesh.token();
    let c = start_node(&mesh, &hosts[2], "node-c", &token2, &dirs[2]);
    assert_ne!(c.ula, ula_c);
    eventually("a reaches the new c", Duration::from_secs(15), || {
        ping(&hosts[0], c.ula)
    });
    assert!(!ping(&hosts[0], ula_c), "the old address is gone");
    nodes[2] = c;

    // SIGTERM removes the TUN device.
    let host_a = nodes[0].host.clone();
    nodes[0]
        .guard
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(
        nodes[0]
            .guard
            .wait_timeout(Duration::from_secs(10))
            .is_some()
    );
    let links = host_a.exec_ok("ip", &["-o", "link"]).unwrap();
    assert!(!links.contains("tbf0"), "TUN removed on SIGTERM: {links}");
    let _ = &nodes[0].data_dir;
}

#[test]
fn peers_follow_a_node_that_moves() {
    require!(Capability::NetNs);
    let mesh = MeshLab::new("move", &[]);
    let token = mesh.token();
    let ha = mesh.lan.add_host("a").unwrap();
    let hb = mesh.lan.add_host("b").unwrap();
    let a = start_node(&mesh, &ha, "node-a", &token, &mesh.dir.path().join("a"));
    let b = start_node(&mesh, &hb, "node-b", &token, &mesh.dir.path().join("b"));
    eventually("b reaches a", Duration::from_secs(15), || ping(&hb, a.ula));

    let new_addr = mesh.lan.spare_addr();
    ha.set_underlay_addr(new_addr).unwrap();
    // b starts the conversation, so it must learn the new address from the roster (a's
    // heartbeat advertises it), not from a's packets.
    eventually(
        "b reaches a at its new address",
        Duration::from_secs(20),
        || ping(&hb, a.ula),
    );
    let stats = mesh_stats(&hb, &b);
    let endpoint = stats["peers"][0]["endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with(&new_addr.to_string()), "{endpoint}");
}
