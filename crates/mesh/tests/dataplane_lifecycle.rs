//! Starting and stopping: SIGTERM removes the TUN device and exits cleanly, a restarted node with
//! the same key and address is reachable again, and neither a SIGKILLed process nor a stale
//! persistent `tbf0` stops the next start.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod dataplane_support;

use dataplane_support::Mesh;
use nix::sys::signal::Signal;
use std::time::Duration;
use tabbify_testkit::{Capability, require};

with_and_without_offload!(
    sigterm_removes_the_tun_and_a_restart_reconnects,
    sigkill_and_a_stale_persistent_tun_do_not_break_the_next_start
);

fn stop_with(mesh: &mut Mesh, i: usize, sig: Signal) -> std::process::ExitStatus {
    mesh.signal(i, sig).expect("signal the node");
    let mut guard = mesh.nodes[i].child.take().expect("node is running");
    guard
        .wait_timeout(Duration::from_secs(10))
        .expect("node did not exit")
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn sigterm_removes_the_tun_and_a_restart_reconnects(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("lterm", 2, offload).unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    assert!(mesh.has_tun(0));

    let status = stop_with(&mut mesh, 0, Signal::SIGTERM);
    assert!(status.success(), "exit status {status:?}\n{}", mesh.log(0));
    assert!(!mesh.has_tun(0), "tbf0 survived SIGTERM");
    assert!(mesh.log(0).contains("TUN device removed"));
    assert!(!mesh.ping(1, 0));

    // Same key, same address: both directions work again.
    mesh.start(0).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    assert!(mesh.ping_until(1, 0, Duration::from_secs(10)));
    mesh.tcp_echo(1, 0).unwrap();
}

// `cfg(test)`: a test body (run by `with_and_without_offload!`), linted as one.
#[cfg(test)]
fn sigkill_and_a_stale_persistent_tun_do_not_break_the_next_start(offload: bool) {
    require!(Capability::NetNs);
    let mut mesh = Mesh::with_offload("lkill", 2, offload).unwrap();
    mesh.full_mesh(None).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));

    let status = stop_with(&mut mesh, 0, Signal::SIGKILL);
    assert!(!status.success());
    mesh.start(0).unwrap();
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));
    // The peer, still holding the old session, gets through too (after re-handshaking).
    assert!(mesh.ping_until(1, 0, Duration::from_secs(30)));

    // A leftover persistent TUN with our name (as another tool or an old version could leave).
    stop_with(&mut mesh, 0, Signal::SIGKILL);
    mesh.nodes[0]
        .host
        .exec_ok("ip", &["tuntap", "add", "dev", "tbf0", "mode", "tun"])
        .unwrap();
    assert!(mesh.has_tun(0));
    mesh.start(0).unwrap();
    assert!(
        mesh.log(0)
            .contains("removing a stale persistent TUN device")
    );
    assert!(mesh.ping_until(0, 1, Duration::from_secs(10)));

    // A non-TUN interface with the name is refused with a clear error.
    stop_with(&mut mesh, 0, Signal::SIGTERM);
    mesh.nodes[0]
        .host
        .exec_ok(
            "ip",
            &[
                "link", "add", "tbf0", "type", "veth", "peer", "name", "tbf0p",
            ],
        )
        .unwrap();
    let err = mesh.start(0).unwrap_err();
    assert!(
        mesh.log(0)
            .contains("already exists and is not a TUN device"),
        "{err:#}"
    );
}
