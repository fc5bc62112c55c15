//! The peer set changes while everything runs: peers added and removed by rewriting the config and
//! sending SIGHUP, and a node that moves to a new underlay address is followed by its peers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod dataplane_support;

use dataplane_support::Mesh;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tabbify_testkit::{Capability, require};

with_and_without_offload!(
    peers_added_and_removed_live_start_and_stop_traffic,
    a_broken_config_on_reload_keeps_the_current_peers,
    peers_follow_a_node_that_moves_to_a_new_underlay_address
);
use tabbify_wire::Endpoint;

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn peers_added_and_removed_live_start_and_stop_traffic(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("ppeer", 3, offload).unwrap();
    // Node 0 starts knowing only node 2; nodes 1 and 2 know everyone.
    mesh.write_config(0, &[2], None).unwrap();
    mesh.write_config(1, &[0, 2], None).unwrap();
    mesh.write_config(2, &[0, 1], None).unwrap();
    for i in 0..3 {
        mesh.start(i).unwrap();
    }
    assert!(mesh.ping_until(0, 2, Duration::from_secs(10)));
    assert!(!mesh.ping(0, 1), "node 0 reached a peer it does not know");
    assert!(
        !mesh.ping(1, 0),
        "node 1 reached a node that does not know it"
    );

    // Add node 1 to node 0 without restarting: traffic flows both ways.
    mesh.write_config(0, &[1, 2], None).unwrap();
    mesh.reload(0).unwrap();
    mesh.wait_stats(0, Duration::from_secs(5), |s| s.peers.len() == 2)
        .unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    assert!(mesh.ping_until(1, 0, Duration::from_secs(10)));

    // Remove it again: traffic to and from node 1 stops, node 2 is untouched.
    mesh.write_config(0, &[2], None).unwrap();
    mesh.reload(0).unwrap();
    mesh.wait_stats(0, Duration::from_secs(5), |s| s.peers.len() == 1)
        .unwrap();
    assert!(!mesh.ping(0, 1), "traffic to a removed peer still flows");
    assert!(!mesh.ping(1, 0), "traffic from a removed peer still flows");
    assert!(mesh.ping(0, 2));
    let s = mesh.stats(0).unwrap();
    assert!(s.dropped_no_route >= 3, "{s:?}");
    assert!(s.dropped_unknown_peer >= 1, "{s:?}");
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn a_broken_config_on_reload_keeps_the_current_peers(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("pbroken", 2, offload).unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    std::fs::write(&mesh.nodes[0].config_path, b"{ not json").unwrap();
    mesh.reload(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mesh.log(0).contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not reported:\n{}",
            mesh.log(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The reload has been handled (and refused): the peers from before still carry traffic.
    assert_eq!(
        mesh.stats_from_now(0, Duration::from_secs(5))
            .unwrap()
            .peers
            .len(),
        1
    );
    assert!(mesh.ping(0, 1));
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn peers_follow_a_node_that_moves_to_a_new_underlay_address(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("proam", 3, offload).unwrap();
    mesh.full_mesh(Some(1)).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    assert!(mesh.ping_until(0, 2, Duration::from_secs(10)));

    let new_addr = mesh.lan.spare_addr();
    mesh.nodes[0].host.set_underlay_addr(new_addr).unwrap();
    let moved = Endpoint::Udp(SocketAddr::from((new_addr, dataplane_support::PORT)));
    let key = mesh.nodes[0].public_key;
    // Node 0's keepalives now come from the new address; the others follow without being told.
    for i in [1, 2] {
        mesh.wait_stats(i, Duration::from_secs(10), |s| {
            s.peers
                .iter()
                .any(|p| p.public_key.as_bytes() == &key && p.endpoint == Some(moved))
        })
        .unwrap();
        // Traffic started by the peer reaches the moved node.
        assert!(
            mesh.ping_until(i, 0, Duration::from_secs(5)),
            "node {i} cannot reach the moved node"
        );
    }
    let s = mesh.stats(1).unwrap();
    let p = s
        .peers
        .iter()
        .find(|p| p.public_key.as_bytes() == &key)
        .unwrap();
    assert!(p.roams >= 1, "{p:?}");
}
