//! The ways to install a node outside Docker: the systemd units of `deploy/systemd` and the
//! install script, and the NixOS module `nixos/tabbify-node.nix`. Units are checked with
//! `systemd-analyze verify` (no output allowed), the module is parsed and evaluated with Debian's
//! nix against a stub of the NixOS lib, and both bootstraps install a real release from a real
//! release server.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
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

/// `Key=Value` lines of a unit file, in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A root directory for `systemd-analyze verify --root`: the host's system units (targets the
/// units depend on) plus ours, and an executable at every path an `Exec*=` line names (unless
/// one is there already).
fn verify_root(root: &Path, units: &[(String, String)]) -> String {
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("no system unit directory");
    let dest = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dest).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{system}/."))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success());
    let unit_dir = root.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let mut paths = Vec::new();
    for (name, text) in units {
        let path = unit_dir.join(format!("{name}.service"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
        for (key, value) in settings(text) {
            if !key.starts_with("Exec") {
                continue;
            }
            let exe = value
                .trim_start_matches(['-', '@', ':', '+', '!'])
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            let stub = root.join(exe.trim_start_matches('/'));
            if !stub.exists() {
                std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
                std::fs::write(&stub, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn deploy_units() -> Vec<(String, String)> {
    UNITS
        .iter()
        .map(|u| {
            let path = workspace_root().join(format!("deploy/systemd/{u}.service"));
            (u.to_string(), std::fs::read_to_string(path).unwrap())
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

fn nix_eval(settings: &Value) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(workspace_root().join("nixos/tests/eval.nix"))
        .args(["--argstr", "settingsJson", &settings.to_string()])
        .env("NIX_CONFIG", "build-users-group =")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn nixos_module_parses_and_evaluates_to_the_four_units() {
    require!(Capability::Nix);
    let module = workspace_root().join("nixos/tabbify-node.nix");
    let parse = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&module)
        .env("NIX_CONFIG", "build-users-group =")
        .output()
        .unwrap();
    assert!(parse.status.success(), "{}", text(&parse));

    let eval = nix_eval(&serde_json::json!({})).unwrap();
    let cfg = &eval["config"];
    let services = &cfg["systemd"]["services"];
    for u in UNITS {
        assert!(services[u].is_object(), "{u} is missing: {services}");
    }
    let sup = &services["tabbify-supervisor"];
    assert_eq!(sup["serviceConfig"]["Type"], "notify");
    assert_eq!(sup["serviceConfig"]["Restart"], "on-failure");
    assert_eq!(sup["serviceConfig"]["KillMode"], "process");
    assert_eq!(sup["serviceConfig"]["User"], "root");
    assert_eq!(sup["environment"]["SUPERVISOR_NAME"], "tabbify-node-1");
    assert_eq!(
        sup["requires"],
        serde_json::json!(["tabbify-fetch.service"])
    );
    assert_eq!(
        services["tabbify-fetch"]["serviceConfig"]["Type"],
        "oneshot"
    );
    assert!(
        services["tabbify-update"]["wantedBy"].is_null(),
        "on demand only"
    );
    assert_eq!(
        services["tabbify-appsrv"]["environment"]["TABBIFY_APPSRV_LISTEN"],
        "[::]:9000"
    );
    assert_eq!(
        cfg["boot"]["kernelModules"],
        serde_json::json!(["tun", "kvm-intel"])
    );
    let packages = cfg["environment"]["systemPackages"].to_string();
    for tool in ["firecracker", "iproute2", "e2fsprogs", "busybox", "oras"] {
        assert!(
            packages.contains(&format!("-{tool}\"")),
            "{tool} not installed: {packages}"
        );
    }
    assert!(
        cfg["virtualisation"]["docker"]["enable"].is_null(),
        "docker stays off by default: {}",
        cfg["virtualisation"]
    );
    let bootstrap = &eval["scripts"]["tabbify-fetch-bootstrap"]["text"];
    assert!(
        bootstrap.as_str().unwrap().contains("sha256sum --check"),
        "{bootstrap}"
    );

    // Every option is honoured.
    let eval = nix_eval(&serde_json::json!({
        "nodeName": "edge-fra-1",
        "coordinator": "http://coord.example:8888",
        "joinTokenFile": "/run/secrets/join",
        "kvmVendor": "amd",
        "capabilities": { "docker": true },
        "extraTags": ["eu-central"],
        "releaseUrl": "https://releases.internal/tabbify",
        "appsrv": { "port": 9100 },
        "update": { "healthWindow": "2m" },
    }))
    .unwrap();
    let cfg = &eval["config"];
    let sup = &cfg["systemd"]["services"]["tabbify-supervisor"];
    assert_eq!(sup["environment"]["SUPERVISOR_NAME"], "edge-fra-1");
    assert_eq!(
        sup["environment"]["TABBIFY_MESH_COORDINATOR"],
        "http://coord.example:8888"
    );
    assert_eq!(
        sup["environment"]["TABBIFY_JOIN_TOKEN_FILE"],
        "/run/secrets/join"
    );
    assert_eq!(
        sup["serviceConfig"]["ExecStart"],
        "/var/lib/tabbify/current/tabbify-supervisor --data-dir /var/lib/tabbify --tag eu-central"
    );
    assert_eq!(
        cfg["boot"]["kernelModules"],
        serde_json::json!(["tun", "kvm-amd"])
    );
    assert_eq!(cfg["virtualisation"]["docker"]["enable"], true);
    let update_exec = cfg["systemd"]["services"]["tabbify-update"]["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        update_exec.contains("--release-url https://releases.internal/tabbify"),
        "{update_exec}"
    );
    assert!(update_exec.contains("--health-window 2m"), "{update_exec}");
    assert_eq!(
        cfg["networking"]["firewall"]["interfaces"]["tbf0"]["allowedTCPPorts"],
        serde_json::json!([8730, 9100])
    );
    let eval = nix_eval(&serde_json::json!({ "capabilities": { "firecracker": false } })).unwrap();
    assert_eq!(
        eval["config"]["boot"]["kernelModules"],
        serde_json::json!(["tun"])
    );

    // Bad settings stop the evaluation with the option's name.
    for (bad, expect) in [
        (
            serde_json::json!({ "kvmVendor": "arm" }),
            "option services.tabbify-node.kvmVendor",
        ),
        (
            serde_json::json!({ "nodename": "x" }),
            "unknown option services.tabbify-node.nodename",
        ),
        (
            serde_json::json!({ "nodeName": "has space" }),
            "option services.tabbify-node.nodeName",
        ),
        (
            serde_json::json!({ "releaseUrl": "ftp://x" }),
            "option services.tabbify-node.releaseUrl",
        ),
    ] {
        let err = nix_eval(&bad).unwrap_err();
        assert!(err.contains(expect), "{bad}: {err}");
    }
}

#[test]
fn nixos_units_verify_without_warnings() {
    require!(Capability::Nix);
    require!(Capability::SystemdAnalyze);
    let eval = nix_eval(&serde_json::json!({ "capabilities": { "docker": true } })).unwrap();
    let units: Vec<(String, String)> = eval["units"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(units.len(), 4);
    let root = tempfile::tempdir().unwrap();
    let warnings = verify_root(root.path(), &units);
    assert_eq!(warnings, "", "systemd-analyze verify complained");
}

/// A release with the real tabbify-fetch, as the bootstraps expect to find it.
fn publish_installable(server: &ReleaseServer, version: &str, fetch: Vec<u8>) {
    let r = Release::new(version)
        .file("tabbify-supervisor", supervisor_build(version))
        .file("tabbify-fetch", std::fs::read(FETCH).unwrap())
        .file("tabbify-update", std::fs::read(UPDATE).unwrap());
    server.publish(version, &[&r], Some(b"kernel image"));
    // What the server actually sends for tabbify-fetch (the manifest keeps the real hash).
    server.put(&format!("{version}/tabbify-fetch"), fetch);
}

#[test]
fn nixos_fetch_bootstrap_installs_a_release() {
    require!(Capability::Nix);
    let server = ReleaseServer::start();
    publish_installable(&server, "0.1.0", std::fs::read(FETCH).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let eval = nix_eval(&serde_json::json!({
        "stateDir": state.display().to_string(),
        "releaseUrl": server.url,
    }))
    .unwrap();
    let script = tmp.path().join("bootstrap.sh");
    std::fs::write(
        &script,
        eval["scripts"]["tabbify-fetch-bootstrap"]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let env = &eval["config"]["systemd"]["services"]["tabbify-fetch"]["environment"];
    let run_bootstrap = || {
        let mut cmd = Command::new("bash");
        cmd.arg(&script);
        for (k, v) in env.as_object().unwrap() {
            cmd.env(k, v.as_str().unwrap());
        }
        cmd.output().unwrap()
    };
    let out = run_bootstrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(current_target(&state).as_deref(), Some("releases/0.1.0"));
    assert_eq!(
        std::fs::read(state.join("current/tabbify-supervisor")).unwrap(),
        supervisor_build("0.1.0")
    );
    assert_eq!(
        std::fs::read(state.join("kernels/vmlinux")).unwrap(),
        b"kernel image"
    );

    // A tampered tabbify-fetch is never run.
    let state2 = tmp.path().join("state2");
    let eval = nix_eval(&serde_json::json!({
        "stateDir": state2.display().to_string(),
        "releaseUrl": server.url,
    }))
    .unwrap();
    std::fs::write(
        &script,
        eval["scripts"]["tabbify-fetch-bootstrap"]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let pwned = tmp.path().join("pwned");
    server.put(
        "0.1.0/tabbify-fetch",
        format!("#!/bin/sh\ntouch '{}'\n", pwned.display()).into_bytes(),
    );
    let out = run_bootstrap();
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
    assert!(!state2.join("current").exists());
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
            (u.to_string(), std::fs::read_to_string(p).unwrap())
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
