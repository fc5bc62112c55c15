//! `tabbify-update` against a real release server and a real supervisor, restarted the way the
//! systemd unit restarts it (main process only), while a real runner serves an app: a good
//! release is swapped in and serves; a release that fails its check is quarantined without a
//! restart; a release that passes its check but dies in production is rolled back; a sha256
//! mismatch is refused before anything moves. The app answers every request throughout.

#![allow(clippy::unwrap_used)]

mod common;

use common::app::{Traffic, start_app};
use common::*;
use std::time::Duration;

fn update(
    server: &ReleaseServer,
    data: &str,
    sup: &ManagedSupervisor,
    extra: &[&str],
) -> std::process::Output {
    let restart = sup.restart_command();
    let health = sup.health_url();
    let mut args = vec![
        "--release-url",
        &server.url,
        "--data-dir",
        data,
        "--restart-command",
        &restart,
        "--health-url",
        &health,
        "--health-window",
        "8s",
        "--settle",
        "1s",
        "--probe-every",
        "200ms",
    ];
    args.extend_from_slice(extra);
    run(UPDATE, &args)
}

#[test]
fn updates_are_health_gated_and_apps_keep_serving() {
    let supervisor_bin = supervisor_path();
    let server = ReleaseServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    let data_s = data.to_str().unwrap();

    // The node as first boot leaves it: release a installed and running.
    let a = Release::new("0.1.0+a").file("tabbify-supervisor", supervisor_build("a"));
    server.publish("0.1.0+a", &[&a], None);
    let out = run(FETCH, &["--release-url", &server.url, "--data-dir", data_s]);
    assert!(out.status.success(), "{}", text(&out));
    let sup = ManagedSupervisor::new(tmp.path(), &data);
    sup.start();
    let first_pid = sup.pid().unwrap();
    assert_eq!(
        sup.exe().unwrap(),
        data.join("releases/0.1.0+a/tabbify-supervisor")
    );

    // An app on the node, and traffic to it for the whole test.
    let app = start_app(&tmp.path().join("app"));
    let traffic = Traffic::start(app.addr);

    // Already current: nothing happens.
    let out = update(&server, data_s, &sup, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.1.0+a is current"));
    assert_eq!(sup.pid(), Some(first_pid));

    // 1. A good release: checked, swapped, restarted, confirmed.
    let b = Release::new("0.1.0+b").file("tabbify-supervisor", supervisor_build("b"));
    server.publish("0.1.0+b", &[&a, &b], None);
    let out = update(&server, data_s, &sup, &[]);
    assert!(
        out.status.success(),
        "{}\nsupervisor log:\n{}",
        text(&out),
        sup.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("updated 0.1.0+a -> 0.1.0+b; healthy"),
        "{}",
        text(&out)
    );
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+b"));
    assert_ne!(sup.pid(), Some(first_pid), "the supervisor was restarted");
    assert_eq!(
        sup.exe().unwrap(),
        data.join("releases/0.1.0+b/tabbify-supervisor")
    );
    assert_eq!(sup.health().unwrap()["status"], "ok");
    assert!(!data.join("update-pending.json").exists());
    let pid_b = sup.pid().unwrap();

    // An update killed between its swap and its verdict leaves update-pending.json; the next run
    // finishes that health gate first (here: b is healthy, so it stays) and restarts nothing.
    std::fs::write(
        data.join("update-pending.json"),
        r#"{"from":"0.1.0+a","to":"0.1.0+b"}"#,
    )
    .unwrap();
    let out = update(&server, data_s, &sup, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted after its swap"),
        "{}",
        text(&out)
    );
    assert!(!data.join("update-pending.json").exists());
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+b"));
    assert_eq!(sup.pid(), Some(pid_b));

    // 2. A release that cannot even start: rejected by its check, nothing restarted.
    let broken =
        b"#!/bin/sh\necho 'tabbify-supervisor: cannot open /dev/net/tun: bad build' >&2\nexit 1\n";
    let c = Release::new("0.1.0+c").file("tabbify-supervisor", broken.to_vec());
    server.publish("0.1.0+c", &[&a, &b, &c], None);
    let out = update(&server, data_s, &sup, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rejected 0.1.0+c"), "{}", text(&out));
    assert!(
        stdout.contains("bad build"),
        "the candidate's stderr is reported: {}",
        text(&out)
    );
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+b"));
    assert_eq!(
        sup.pid(),
        Some(pid_b),
        "a rejected candidate restarts nothing"
    );
    assert!(!data.join("releases/0.1.0+c").exists());
    let reason = std::fs::read_to_string(data.join("quarantine/0.1.0+c/QUARANTINED")).unwrap();
    assert!(reason.contains("before its API listened"), "{reason}");
    // ... and it is not tried again unless forced.
    let out = update(&server, data_s, &sup, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("quarantined after a failed update; pass --force"),
        "{}",
        text(&out)
    );

    // 3. A release that passes its check but dies when started for real: rolled back.
    let crashes_in_production = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *--no-mesh*127.0.0.1:0*) exec '{}' \"$@\" ;;\nesac\n\
         echo 'tabbify-supervisor: panic in production config' >&2\nexit 101\n",
        supervisor_bin.display()
    );
    let d = Release::new("0.1.0+d").file("tabbify-supervisor", crashes_in_production.into_bytes());
    server.publish("0.1.0+d", &[&a, &b, &d], None);
    let out = update(&server, data_s, &sup, &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\nsupervisor log:\n{}",
        text(&out),
        sup.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rolled back to 0.1.0+b"),
        "{}",
        text(&out)
    );
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+b"));
    assert_eq!(
        sup.exe().unwrap(),
        data.join("releases/0.1.0+b/tabbify-supervisor")
    );
    assert_eq!(
        sup.health().unwrap()["status"],
        "ok",
        "the old version serves"
    );
    let reason = std::fs::read_to_string(data.join("quarantine/0.1.0+d/QUARANTINED")).unwrap();
    assert!(
        reason.contains("failed its health gate after the swap"),
        "{reason}"
    );
    assert!(!data.join("update-pending.json").exists());
    let pid_rolled_back = sup.pid().unwrap();

    // 4. A download that does not match the manifest: refused, nothing moves.
    let mut evil = supervisor_build("e");
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    let e =
        Release::new("0.1.0+e").tampered_file("tabbify-supervisor", supervisor_build("e"), evil);
    server.publish("0.1.0+e", &[&a, &b, &e], None);
    let out = update(&server, data_s, &sup, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256 mismatch for tabbify-supervisor"),
        "{}",
        text(&out)
    );
    assert_eq!(current_target(&data).as_deref(), Some("releases/0.1.0+b"));
    assert!(!data.join("releases/0.1.0+e").exists());
    assert_eq!(sup.pid(), Some(pid_rolled_back));

    // The app answered every request through four updates and three restarts.
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failed) = traffic.finish();
    assert!(ok > 50, "the load loop ran ({ok} requests)");
    assert_eq!(failed, 0, "{failed} of {} app requests failed", ok + failed);
    drop(app);
}
