//! Three nodes in network namespaces, each running `tabbify-mesh`: every pair reaches every other
//! over the mesh (ping6, TCP echo and bulk transfers between ULAs), a node that forges an inner
//! source outside its /64 gets its packets dropped by the receiver, a handshake flood is answered
//! with cookies, and UDP GSO runs the underlay refuses are resent datagram by datagram. Each runs
//! with offload on and forced off where both apply.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod dataplane_support;

use dataplane_support::Mesh;
use std::time::Duration;
use tabbify_mesh::dataplane::Offloads;
use tabbify_testkit::{Capability, require};

with_and_without_offload!(
    a_handshake_flood_gets_cookies_and_real_peers_still_connect,
    three_nodes_ping_and_tcp_between_every_pair,
    forged_inner_source_is_dropped_by_the_receiver
);

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn three_nodes_ping_and_tcp_between_every_pair(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("mpair", 3, offload).unwrap();
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
    // A bulk transfer fills 64 KiB super-packets: with offload it crosses as GSO messages that
    // the receiver's socket takes back glued (GRO); forced off, neither is used.
    mesh.tcp_bulk(0, 1, 16 << 20).unwrap();
    let sender = mesh.stats(0).unwrap();
    let receiver = mesh
        .wait_stats(1, Duration::from_secs(5), |s| {
            s.peers.iter().map(|p| p.rx_bytes).sum::<u64>() > 16 << 20
        })
        .unwrap();
    let all = Offloads {
        tun: true,
        udp_gso: true,
        udp_gro: true,
    };
    if offload {
        assert_eq!(sender.offload, all, "this kernel has every offload");
        assert!(sender.gso_messages > 0, "{sender:?}");
        assert!(receiver.gro_messages > 0, "{receiver:?}");
    } else {
        assert_eq!(sender.offload, Offloads::default());
        assert_eq!((sender.gso_messages, receiver.gro_messages), (0, 0));
        assert!(mesh.log(0).contains("offload forced off"));
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

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn forged_inner_source_is_dropped_by_the_receiver(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("mforge", 3, offload).unwrap();
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

#[test]
fn gso_runs_the_underlay_refuses_go_out_one_datagram_at_a_time() {
    require!(Capability::NetNs);
    let mut mesh = Mesh::new("mgsomtu", 2).unwrap();
    // An underlay MTU below our 1452-byte datagrams (a PPPoE-like link): the kernel refuses GSO
    // messages whose segments exceed the path MTU, so each refused run is sent again datagram by
    // datagram (fragmented by IP) and the transfer still arrives whole.
    mesh.nodes[0]
        .host
        .exec_ok("ip", &["link", "set", "eth0", "mtu", "1400"])
        .unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    mesh.tcp_bulk(0, 1, 8 << 20).unwrap();
    let s = mesh.stats(0).unwrap();
    assert!(
        s.offload.udp_gso,
        "a path-MTU refusal does not turn GSO off: {s:?}"
    );
    assert_eq!(s.gso_messages, 0, "every run was refused and resent: {s:?}");
    // The other direction (full MTU) still uses GSO for its runs of ACKs.
    mesh.tcp_bulk(1, 0, 8 << 20).unwrap();
    mesh.wait_stats(1, Duration::from_secs(5), |s| s.gso_messages > 0)
        .unwrap();
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn a_handshake_flood_gets_cookies_and_real_peers_still_connect(offload: bool) {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    use std::os::fd::AsRawFd;

    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("mflood", 2, offload).unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(1, 0, Duration::from_secs(10)));
    let target =
        std::net::SocketAddr::from((mesh.nodes[0].host.underlay_addr(), dataplane_support::PORT));
    // A stranger who knows node 0's public key (so its MACs verify) sends initiations far above
    // the rate limit, 40 glued into each UDP GSO message: with GRO node 0 receives them glued,
    // without it one by one; either way each must meet the limiter.
    let node0 = PublicKey::from(mesh.nodes[0].public_key);
    let mut stranger = Tunn::new(
        StaticSecret::from(rand::random::<[u8; 32]>()),
        node0,
        None,
        None,
        1,
        None,
    );
    let mut init = [0u8; 256];
    let mut burst = Vec::new();
    for _ in 0..40 {
        match stranger.format_handshake_initiation(&mut init, true) {
            TunnResult::WriteToNetwork(p) => burst.extend_from_slice(p),
            _ => panic!("no initiation"),
        }
    }
    mesh.nodes[1]
        .host
        .in_namespace(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let seg: libc::c_int = 148;
            // SAFETY: passes a live c_int and its size.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    (&raw const seg).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            for _ in 0..25 {
                sock.send_to(&burst, target).unwrap();
            }
        })
        .unwrap();
    // Every one of the 1000 is accounted for: over the limit answered with a cookie, under it
    // dropped as an unknown peer after the Diffie-Hellman.
    let s = mesh
        .wait_stats(0, Duration::from_secs(5), |s| {
            s.cookies_sent >= 100
                && s.cookies_sent + s.dropped_unknown_peer + s.dropped_invalid >= 1000
        })
        .unwrap();
    // With offload the bursts did arrive glued.
    assert_eq!(s.gro_messages > 0, offload, "{s:?}");
    // The real peer is unaffected once the flood is over.
    assert!(mesh.ping_until(1, 0, Duration::from_secs(10)));
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
}
