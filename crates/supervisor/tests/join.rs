//! A real coordinator and real supervisor processes on loopback: joining, tags from the real
//! capability probe, identity kept across restarts, retries while the coordinator is down, and
//! re-registration after the coordinator forgets a node.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tabbify_client::CoordinatorClient;
use tabbify_testkit::cluster::{CoordinatorProc, SupervisorOpts, SupervisorProc};
use tabbify_testkit::{Capability, require};
use tabbify_wire::health::{MeshState, SupervisorHealth};
use tabbify_wire::mesh::Peer;
use tabbify_wire::token::CreateJoinTokenRequest;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn reusable_token(rt: &tokio::runtime::Runtime, c: &CoordinatorProc) -> String {
    let client = c.client().unwrap();
    let admin = c.admin_token().unwrap();
    rt.block_on(client.create_join_token(
        &admin,
        &CreateJoinTokenRequest {
            reusable: true,
            ..Default::default()
        },
    ))
    .unwrap()
    .token
}

fn health(rt: &tokio::runtime::Runtime, s: &SupervisorProc) -> SupervisorHealth {
    rt.block_on(async {
        reqwest::get(format!("{}/health", s.api))
            .await
            .unwrap()
            .json::<SupervisorHealth>()
            .await
            .unwrap()
    })
}

/// Polls until `f` returns Some, or panics after `timeout` with `what`.
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn joined(rt: &tokio::runtime::Runtime, s: &SupervisorProc) -> SupervisorHealth {
    wait_for(Duration::from_secs(20), "the node to join", || {
        let h = health(rt, s);
        (h.mesh == MeshState::Joined).then_some(h)
    })
}

fn peer_named(
    rt: &tokio::runtime::Runtime,
    client: &CoordinatorClient,
    admin: &str,
    name: &str,
) -> Vec<Peer> {
    rt.block_on(client.peers(Some(admin), None))
        .unwrap()
        .peers
        .into_iter()
        .filter(|p| p.display_name == name)
        .collect()
}

fn opts(c: &CoordinatorProc, name: &str, token: &str) -> SupervisorOpts {
    SupervisorOpts {
        coordinator: Some(c.url.clone()),
        name: Some(name.into()),
        join_token: Some(token.into()),
        // These nodes share the host's network namespace: control plane only. The data plane
        // is exercised between namespaces in tests/mesh.rs.
        args: vec!["--dataplane".into(), "off".into()],
        ..Default::default()
    }
}

#[test]
fn three_nodes_join_with_probed_tags_and_keep_their_ula() {
    require!(Capability::Docker);
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    let token = reusable_token(&rt, &coord);
    let client = coord.client().unwrap();
    let admin = coord.admin_token().unwrap();

    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let a = SupervisorProc::start(&dirs[0], &opts(&coord, "node-a", &token)).unwrap();
    let b = SupervisorProc::start(&dirs[1], &opts(&coord, "node-b", &token)).unwrap();
    let mut c_opts = opts(&coord, "node-c", &token);
    c_opts.env.push((
        "DOCKER_HOST".into(),
        format!("unix://{}/no-docker.sock", dir.path().display()),
    ));
    let c = SupervisorProc::start(&dirs[2], &c_opts).unwrap();

    let ha = joined(&rt, &a);
    let hb = joined(&rt, &b);
    let hc = joined(&rt, &c);
    assert!(ha.docker && hb.docker, "nodes with a daemon report docker");
    assert!(!hc.docker, "DOCKER_HOST pointing nowhere means no docker");

    let roster = rt.block_on(client.peers(Some(&admin), None)).unwrap().peers;
    assert_eq!(roster.len(), 3, "{roster:#?}");
    let ulas: BTreeSet<_> = roster.iter().map(|p| p.ula).collect();
    assert_eq!(ulas.len(), 3, "distinct ULAs");
    for p in &roster {
        assert!(p.online);
        let mut tags: Vec<&str> = p.tags.iter().map(|t| t.as_str()).collect();
        tags.sort();
        match p.display_name.as_str() {
            "node-a" | "node-b" => assert_eq!(tags, ["docker", "wasm"], "{}", p.display_name),
            "node-c" => assert_eq!(tags, ["wasm"]),
            other => panic!("unexpected peer {other}"),
        }
        assert!(p.subnet.contains(p.ula));
    }
    let docker_only = rt
        .block_on(client.peers(Some(&admin), Some(&"docker".parse().unwrap())))
        .unwrap()
        .peers;
    assert_eq!(docker_only.len(), 2);

    // Restart node-a with the same state dir: same ULA, same peer id, no new roster entry.
    let ula_a = ha.ula.unwrap();
    drop(a);
    let a = SupervisorProc::start(&dirs[0], &opts(&coord, "node-a", &token)).unwrap();
    let ha2 = joined(&rt, &a);
    assert_eq!(ha2.ula, Some(ula_a));
    assert_eq!(ha2.peer_id, ha.peer_id);
    assert_eq!(peer_named(&rt, &client, &admin, "node-a").len(), 1);
    assert_eq!(
        rt.block_on(client.peers(Some(&admin), None))
            .unwrap()
            .peers
            .len(),
        3
    );

    // Wipe node-c's state: it joins as a fresh peer with a new ULA.
    drop(c);
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    let c = SupervisorProc::start(&dirs[2], &c_opts).unwrap();
    let hc2 = joined(&rt, &c);
    assert_ne!(hc2.ula, hc.ula);
    assert_ne!(hc2.peer_id, hc.peer_id);
    assert_eq!(peer_named(&rt, &client, &admin, "node-c").len(), 2);
    drop((a, b, c));
}

#[test]
fn keeps_retrying_while_the_coordinator_is_down_then_joins() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    // Find a free port, then start the node pointing at it before anything listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut o = SupervisorOpts {
        coordinator: Some(url.clone()),
        name: Some("early".into()),
        args: vec![
            "--join-backoff-cap".into(),
            "1s".into(),
            "--dataplane".into(),
            "off".into(),
        ],
        ..Default::default()
    };
    let coord_dir = dir.path().join("coord");
    std::fs::create_dir_all(&coord_dir).unwrap();
    // The token must exist before the node starts: pre-create the coordinator state by starting
    // it once, making a token, and stopping it.
    let token = {
        let c = CoordinatorProc::start(&coord_dir, &format!("127.0.0.1:{port}"), &[]).unwrap();
        reusable_token(&rt, &c)
    };
    o.join_token = Some(token);
    let node = SupervisorProc::start(&dir.path().join("n"), &o).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let h = health(&rt, &node);
    assert_eq!(h.mesh, MeshState::Joining);
    assert!(
        h.mesh_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach"),
        "{h:?}"
    );
    assert!(node.guard.pid() > 0);
    let _coord = CoordinatorProc::start(&coord_dir, &format!("127.0.0.1:{port}"), &[]).unwrap();
    let h = joined(&rt, &node);
    assert!(h.ula.is_some());
    assert_eq!(h.mesh_error, None);
}

#[test]
fn a_refused_token_is_reported_and_the_node_stays_up() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    // A token the coordinator never issued, pinning the right CA: TLS works, the join does not.
    let ca = std::fs::read(coord.ca_file()).unwrap();
    let pin =
        tabbify_pki::CaFingerprint::of_der(&tabbify_pki::pem::certificates(&ca, "ca").unwrap()[0]);
    let mut node = SupervisorProc::start(
        &dir.path().join("n"),
        &opts(&coord, "bad-token", &format!("tbfj_nope_nope.{pin}")),
    )
    .unwrap();
    let h = wait_for(Duration::from_secs(10), "the refusal to show", || {
        let h = health(&rt, &node);
        h.mesh_error.is_some().then_some(h)
    });
    assert_eq!(h.mesh, MeshState::Joining);
    let err = h.mesh_error.unwrap();
    assert!(err.contains("token_unknown"), "{err}");
    assert!(
        node.guard
            .wait_timeout(Duration::from_millis(500))
            .is_none(),
        "still running"
    );
    let client = coord.client().unwrap();
    let admin = coord.admin_token().unwrap();
    assert!(
        rt.block_on(client.peers(Some(&admin), None))
            .unwrap()
            .peers
            .is_empty()
    );
}

#[test]
fn re_registers_with_the_same_ula_after_the_coordinator_forgets_it() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(
        &dir.path().join("coord"),
        "127.0.0.1:0",
        &["--heartbeat-interval", "1s"],
    )
    .unwrap();
    let token = reusable_token(&rt, &coord);
    let client = coord.client().unwrap();
    let node =
        SupervisorProc::start(&dir.path().join("n"), &opts(&coord, "forgotten", &token)).unwrap();
    let h = joined(&rt, &node);
    let admin = coord.admin_token().unwrap();
    rt.block_on(client.remove_peer(&admin, h.peer_id.as_deref().unwrap()))
        .unwrap();
    // A removed key stays out until an operator lets it back.
    rt.block_on(client.readmit_peer(&admin, h.peer_id.as_deref().unwrap()))
        .unwrap();
    let back = wait_for(Duration::from_secs(15), "the node to re-register", || {
        let peers = peer_named(&rt, &client, &admin, "forgotten");
        (peers.len() == 1).then(|| peers[0].clone())
    });
    assert_eq!(
        Some(back.ula),
        h.ula,
        "its old address was free, so it got it back"
    );
}

#[test]
fn tells_systemd_it_is_ready_after_joining() {
    use std::os::unix::net::UnixDatagram;
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    // The coordinator is down while the node starts: make a token, stop it, restart it later on
    // the same address.
    let coord_dir = dir.path().join("coord");
    let (token, addr) = {
        let c = CoordinatorProc::start(&coord_dir, "127.0.0.1:0", &[]).unwrap();
        (reusable_token(&rt, &c), c.addr().to_string())
    };
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut o = SupervisorOpts {
        coordinator: Some(format!("http://{addr}")),
        name: Some("notified".into()),
        join_token: Some(token),
        args: vec![
            "--join-backoff-cap".into(),
            "1s".into(),
            "--dataplane".into(),
            "off".into(),
        ],
        ..Default::default()
    };
    o.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    o.env.push(("WATCHDOG_USEC".into(), "400000".into()));
    let node = SupervisorProc::start(&dir.path().join("n"), &o).unwrap();
    let mut seen = String::new();
    let recv = |seen: &mut String| {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    };

    // Up, serving its API, and failing to join: it tells systemd nothing but watchdog pets.
    let h = wait_for(Duration::from_secs(20), "a failed join attempt", || {
        let h = health(&rt, &node);
        h.mesh_error.is_some().then_some(h)
    });
    assert_eq!(h.mesh, MeshState::Joining);
    // Everything it sent so far is queued on the socket in order: read two pets more than
    // are queued now, so whatever came before them (a READY too) has been read.
    let mut queued = String::new();
    sock.set_nonblocking(true).unwrap();
    loop {
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => queued.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        queued.push('\n');
    }
    sock.set_nonblocking(false).unwrap();
    seen.push_str(&queued);
    let mut later = String::new();
    while later.matches("WATCHDOG=1").count() < 2 {
        recv(&mut later);
    }
    seen.push_str(&later);
    assert!(!seen.contains("READY=1"), "READY before joining: {seen}");
    assert_eq!(health(&rt, &node).mesh, MeshState::Joining);

    // The coordinator comes back: READY follows the join.
    let _coord = CoordinatorProc::start(&coord_dir, &addr, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("READY=1") {
        assert!(Instant::now() < deadline, "no READY after joining: {seen}");
        recv(&mut seen);
    }
    let h = health(&rt, &node);
    assert_eq!(h.mesh, MeshState::Joined, "READY only once joined");
}

#[test]
fn no_mesh_mode_serves_health_without_any_coordinator() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let node = SupervisorProc::start(
        &dir.path().join("n"),
        &SupervisorOpts {
            no_mesh: true,
            coordinator: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let h = health(&rt, &node);
    assert_eq!(h.status, "ok");
    assert_eq!(h.mesh, MeshState::NoMesh);
    assert_eq!(h.ula, None);
    assert_eq!(h.tags.first().map(|t| t.as_str()), Some("wasm"));
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = SupervisorProc::start(
        &dir.path().join("n"),
        &SupervisorOpts {
            no_mesh: true,
            ..Default::default()
        },
    )
    .unwrap();
    node.guard
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = node
        .guard
        .wait_timeout(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}
