//! Interoperation with stock WireGuard: node 0 runs `tabbify-mesh`, node 1 runs Debian's
//! `wireguard-go` configured with `wg`. Handshakes both ways, ping6 and TCP (an echo and bulk
//! transfers that fill super-packets) in both directions, with our offload on and forced off;
//! and a source the wireguard-go side forges is still dropped by our inner-source check.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod dataplane_support;

use anyhow::{Context, Result, bail};
use dataplane_support::{MESH_PREFIX, Mesh, PORT};
use std::time::{Duration, Instant};
use tabbify_mesh::dataplane::keys;
use tabbify_testkit::{Capability, ChildGuard, require};

with_and_without_offload!(wireguard_go_and_a_node_carry_traffic_both_ways);

/// `wireguard-go` on `mesh.nodes[i]` as interface `dev`, peered with every other node.
fn start_wireguard_go(mesh: &Mesh, i: usize, dev: &str) -> Result<ChildGuard> {
    let me = &mesh.nodes[i];
    let mut cmd = me.host.command("wireguard-go");
    cmd.args(["-f", dev])
        // Debian's build refuses to run next to the kernel module without this.
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&me.log_path)?);
    let guard = me.host.spawn(cmd)?;
    // The control socket lives in the (shared) filesystem, not the namespace.
    let socket = format!("/var/run/wireguard/{dev}.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&socket).exists() {
        if Instant::now() > deadline {
            bail!("wireguard-go made no control socket; log:\n{}", mesh.log(i));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key_path = mesh.dir.path().join(format!("{dev}.key"));
    tabbify_fsutil::atomic_write(
        &key_path,
        keys::encode_key(&me.private_key).as_bytes(),
        0o600,
    )?;
    let mut args: Vec<String> = [
        "set",
        dev,
        "private-key",
        key_path.to_str().context("key path")?,
        "listen-port",
        &PORT.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for (j, peer) in mesh.nodes.iter().enumerate() {
        if j == i {
            continue;
        }
        args.extend([
            "peer".into(),
            keys::encode_key(&peer.public_key),
            "allowed-ips".into(),
            peer.subnet.to_string(),
            "endpoint".into(),
            format!("{}:{PORT}", peer.host.underlay_addr()),
        ]);
    }
    me.host.exec_ok("wg", &args)?;
    me.host
        .exec_ok("ip", &["link", "set", dev, "mtu", "1420", "up"])?;
    me.host.exec_ok(
        "ip",
        &["-6", "addr", "add", &format!("{}/64", me.ula), "dev", dev],
    )?;
    me.host
        .exec_ok("ip", &["-6", "route", "add", MESH_PREFIX, "dev", dev])?;
    Ok(guard)
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn wireguard_go_and_a_node_carry_traffic_both_ways(offload: bool) {
    require!(Capability::NetNs);
    require!(Capability::WireguardGo);
    let mut mesh = Mesh::with_offload("wggo", 2, offload).unwrap();
    // Unique per test run: the control socket directory is shared by every namespace.
    let dev = format!("wgt{}{}", std::process::id() % 100_000, u8::from(offload));
    let _wg = start_wireguard_go(&mesh, 1, &dev).unwrap();
    mesh.write_config(0, &[1], None).unwrap();
    mesh.start(0).unwrap();

    // Each side starts a handshake once: ours first, then theirs after we lose the session.
    assert!(
        mesh.ping_until(0, 1, Duration::from_secs(15)),
        "node → wireguard-go"
    );
    assert!(
        mesh.ping_until(1, 0, Duration::from_secs(15)),
        "wireguard-go → node"
    );
    mesh.tcp_echo(0, 1).unwrap();
    mesh.tcp_echo(1, 0).unwrap();
    mesh.tcp_bulk(0, 1, 16 << 20).unwrap();
    mesh.tcp_bulk(1, 0, 16 << 20).unwrap();

    let s = mesh
        .wait_stats(0, Duration::from_secs(5), |s| {
            s.peers
                .first()
                .is_some_and(|p| p.rx_bytes > 16 << 20 && p.tx_bytes > 16 << 20)
        })
        .unwrap();
    let p = &s.peers[0];
    assert!(p.last_handshake_secs_ago.is_some(), "{p:?}");
    assert_eq!(s.dropped_invalid, 0, "{s:?}");
    // wireguard-go counted the same traffic.
    let transfer = mesh.nodes[1]
        .host
        .exec_ok("wg", &["show", &dev, "transfer"])
        .unwrap();
    let counts: Vec<u64> = transfer
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(
        counts.len() == 2 && counts.iter().all(|&c| c > 16 << 20),
        "wg show transfer: {transfer:?}"
    );

    // wireguard-go does not check what its own host sends: a forged source goes out, and our
    // inner-source check drops it.
    let forged = "fd7a:7bf0:1:9::99";
    mesh.nodes[1]
        .host
        .exec_ok(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{forged}/128"),
                "dev",
                &dev,
                "nodad",
            ],
        )
        .unwrap();
    let before = mesh.stats(0).unwrap().dropped_source;
    let ula0 = mesh.nodes[0].ula;
    assert!(!mesh.ping_addr(1, ula0, Some(forged.parse().unwrap())));
    mesh.wait_stats(0, Duration::from_secs(5), |s| {
        s.dropped_source >= before + 3
    })
    .unwrap();
    let ula1 = mesh.nodes[1].ula;
    assert!(mesh.ping_addr(1, ula0, Some(ula1)));
}
