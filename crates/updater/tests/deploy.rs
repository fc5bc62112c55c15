//! Installing a node on any systemd distribution: the units of `deploy/systemd` and the install
//! script. Units are checked with `systemd-analyze verify` (no output allowed) and the install
//! script installs a real release from a real release server. The NixOS module has its own
//! checks (`nixos.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use common::units::{get, settings, verify_root};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tabbify_testkit::{Capability, require, workspace_root};

const UNITS: [&str; 4] = [
    "tabbify-fetch",
    "tabbify-supervisor",
    "tabbify-appsrv",
    "tabbify-update",
];

fn deploy_units() -> Vec<(String, String)> {
    UNITS
        .iter()
        .map(|u| {
            let path = workspace_root().join(format!("deploy/systemd/{u}.service"));
            (
                format!("{u}.service"),
                std::fs::read_to_string(path).unwrap(),
            )
        })
        .collect()
}

#[test]
fn systemd_units_verify_without_warnings() {
    require!(Capability::SystemdAnalyze);
    let units = deploy_units();
    let root = tempfile::tempdir().unwrap();
    let warnings = verify_root(root.path(), &units);
    assert_eq!(warnings, "", "systemd-analyze verify complained");

    let sup = settings(&units[1].1);
    assert_eq!(get(&sup, "Type"), Some("notify"));
    assert_eq!(get(&sup, "Restart"), Some("on-failure"));
    assert_eq!(get(&sup, "KillMode"), Some("process"));
    assert_eq!(
        get(&sup, "ExecStart"),
        Some("/var/lib/tabbify/current/tabbify-supervisor --data-dir /var/lib/tabbify")
    );
    let fetch = settings(&units[0].1);
    assert_eq!(get(&fetch, "Type"), Some("oneshot"));
    assert_eq!(
        get(&fetch, "ConditionPathExists"),
        Some("!/var/lib/tabbify/current/tabbify-supervisor")
    );
    let appsrv = settings(&units[2].1);
    assert_eq!(
        get(&appsrv, "Environment"),
        Some("TABBIFY_APPSRV_LISTEN=[::]:9000")
    );
    let update = settings(&units[3].1);
    assert!(
        get(&update, "ExecStart")
            .unwrap()
            .contains("--restart-command \"systemctl restart tabbify-supervisor.service\""),
        "{update:?}"
    );
    assert_eq!(get(&update, "WantedBy"), None, "updates run on demand only");
}

#[test]
fn a_broken_unit_is_caught_by_the_same_check() {
    require!(Capability::SystemdAnalyze);
    let mut units = deploy_units();
    units[1].1 = units[1].1.replace("KillMode=process", "KillMode=proces");
    let root = tempfile::tempdir().unwrap();
    let warnings = verify_root(root.path(), &units);
    assert!(warnings.contains("Failed to parse kill mode"), "{warnings}");
}

#[test]
fn install_script_stages_a_node_that_verifies() {
    require!(Capability::SystemdAnalyze);
    let server = ReleaseServer::start();
    publish_installable(&server, "0.2.0", std::fs::read(FETCH).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "tbfj_example\n").unwrap();
    let script = workspace_root().join("deploy/install.sh");
    let install = |root: &Path| {
        Command::new("bash")
            .arg(&script)
            .args(["--root", root.to_str().unwrap()])
            .args(["--release-url", &server.url])
            .args([
                "--node-name",
                "edge-1",
                "--coordinator",
                "http://coord:8888",
            ])
            .args(["--join-token-file", token.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = install(&root);
    assert!(out.status.success(), "{}", text(&out));
    let env = std::fs::read_to_string(root.join("etc/tabbify/node.env")).unwrap();
    for line in [
        format!("TABBIFY_RELEASE_URL={}", server.url),
        "TABBIFY_MESH_COORDINATOR=http://coord:8888".to_string(),
        "SUPERVISOR_NAME=edge-1".to_string(),
        "TABBIFY_JOIN_TOKEN_FILE=/etc/tabbify/join-token".to_string(),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
    let token_mode = std::fs::metadata(root.join("etc/tabbify/join-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(token_mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read(root.join("usr/local/lib/tabbify/tabbify-fetch")).unwrap(),
        std::fs::read(FETCH).unwrap()
    );
    let state = root.join("var/lib/tabbify");
    assert_eq!(current_target(&state).as_deref(), Some("releases/0.2.0"));

    // The staged tree verifies with its real binaries in place (stubs only where none is).
    let units: Vec<(String, String)> = UNITS
        .iter()
        .map(|u| {
            let p = root.join(format!("etc/systemd/system/{u}.service"));
            (format!("{u}.service"), std::fs::read_to_string(p).unwrap())
        })
        .collect();
    let warnings = verify_root(&root, &units);
    assert_eq!(warnings, "");

    // A tampered bootstrap binary: refused, nothing installed.
    let pwned = tmp.path().join("pwned");
    publish_installable(
        &server,
        "0.2.0",
        format!("#!/bin/sh\ntouch '{}'\n", pwned.display()).into_bytes(),
    );
    let root2: PathBuf = tmp.path().join("root2");
    std::fs::create_dir_all(&root2).unwrap();
    let out = install(&root2);
    assert!(
        !pwned.exists(),
        "the tampered tabbify-fetch ran: {}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256 mismatch"),
        "{}",
        text(&out)
    );
    assert!(!root2.join("etc").exists(), "nothing may be installed");
}
