//! Three nodes in network namespaces, each running `tabbify-mesh`: every pair reaches every other
//! over the mesh (ping6 and TCP between ULAs), and a node that forges an inner source outside its
//! /64 gets its packets dropped by the receiver.

mod dataplane_support;

use dataplane_support::Mesh;
use std::time::Duration;
use tabbify_testkit::{Capability, require};

#[test]
fn three_nodes_ping_and_tcp_between_every_pair() {
    require!(Capability::NetNs);
    let mut mesh = Mesh::new("mpair", 3).unwrap();
    mesh.full_mesh(None).unwrap();
    for a in 0..3 {
        for b in 0..3 {
            if a == b {
                continue;
            }
            assert!(
                mesh.ping_until(a, b, Duration::from_secs(10)),
                "ping6 from node {a} to node {b} failed"
            );
            mesh.tcp_echo(a, b)
                .unwrap_or_else(|e| panic!("TCP from node {a} to node {b}: {e:#}"));
        }
    }
    // Every node saw a handshake with both peers and counted traffic both ways.
    for i in 0..3 {
        let s = mesh.stats(i).unwrap();
        assert_eq!(s.peers.len(), 2);
        for p in &s.peers {
            assert!(p.last_handshake_secs_ago.is_some(), "node {i}: {p:?}");
            assert!(
                p.rx_bytes > 64 * 1024 && p.tx_bytes > 64 * 1024,
                "node {i}: {p:?}"
            );
            assert_eq!(p.dropped_source, 0);
        }
    }
}

#[test]
fn forged_inner_source_is_dropped_by_the_receiver() {
    require!(Capability::NetNs);
    let mut mesh = Mesh::new("mforge", 3).unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    // Counters from after the honest ping ended, so they hold all of it.
    let a_on_b = mesh.stats_from_now(1, Duration::from_secs(5)).unwrap();
    let a_key = mesh.nodes[0].public_key;
    let a_entry = |s: &tabbify_mesh::dataplane::DataPlaneStats| {
        s.peers
            .iter()
            .find(|p| p.public_key.as_bytes() == &a_key)
            .cloned()
            .unwrap()
    };
    let before = a_entry(&a_on_b);

    // Node 0 claims an address in node 2's /64 and pings node 1 from it.
    let forged: std::net::Ipv6Addr = "fd7a:7bf0:1:3::99".parse().unwrap();
    mesh.nodes[0]
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
    let b_ula = mesh.nodes[1].ula;
    assert!(
        !mesh.ping_addr(0, b_ula, Some(forged)),
        "a ping with a forged source got an answer"
    );
    let after = mesh
        .wait_stats(1, Duration::from_secs(5), |s| {
            a_entry(s).dropped_source >= before.dropped_source + 3
        })
        .unwrap();
    // Nothing from the forged pings reached node 1's TUN device.
    assert_eq!(a_entry(&after).rx_packets, before.rx_packets);
    assert_eq!(after.dropped_source, a_entry(&after).dropped_source);
    // Node 2 never heard of it, and the honest source still works (named explicitly: the kernel
    // would otherwise prefer the forged address, which shares a longer prefix with node 1's).
    assert_eq!(mesh.stats(2).unwrap().dropped_source, 0);
    let a_ula = mesh.nodes[0].ula;
    assert!(mesh.ping_addr(0, b_ula, Some(a_ula)));
}
