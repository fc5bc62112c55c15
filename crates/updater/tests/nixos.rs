//! The NixOS module `nixos/tabbify-node.nix`, evaluated with nixpkgs' real module system
//! (`lib.evalModules` from the nixpkgs lib `tabbify_testkit::nixpkgs_lib` finds) by Debian's
//! `nix-instantiate`, beside declarations of the NixOS options it sets and a stub `pkgs`
//! (`nixos/tests/`). The units it renders go through `systemd-analyze verify` and
//! `systemd-analyze security --offline`, compared with the units the module rendered before it
//! was hardened (`nixos/tests/baseline/`). The Nix build of the node has its own checks
//! (`nix_package.rs`).
//!
//! Not covered here (no NixOS on this machine): a real `nixos-rebuild`, NixOS's own unit
//! rendering, a NixOS VM test, and running the node under the hardened units.

#![allow(clippy::unwrap_used)]

mod common;

use common::nix_cli::nix_instantiate;
use common::units::{
    exposure, get, get_all, install_units, settings, verify_root, verify_root_status,
};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use tabbify_testkit::{Capability, nixpkgs_lib, require, workspace_root};

/// The module evaluated with `settings` as services.tabbify-node on a host called `host`.
fn eval_on(host: &str, settings: &Value) -> Result<Value, String> {
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json"])
        .arg(workspace_root().join("nixos/tests/eval.nix"))
        .args(["--argstr", "nixpkgsLib"])
        .arg(nixpkgs_lib())
        .args(["--argstr", "settingsJson", &settings.to_string()])
        .args(["--argstr", "hostName", host])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn eval(settings: &Value) -> Result<Value, String> {
    eval_on("node-a", settings)
}

/// The rendered unit files, by file name.
fn units(eval: &Value) -> BTreeMap<String, String> {
    eval["units"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn unit(eval: &Value, name: &str) -> Vec<(String, String)> {
    let units = units(eval);
    let text = units
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", units.keys()));
    settings(text)
}

fn package_path(eval: &Value) -> String {
    eval["package"]["path"].as_str().unwrap().to_string()
}

/// Every option the module offers; a new one needs a line here and a check below.
const OPTIONS: [&str; 25] = [
    "enable",
    "package",
    "nodeName",
    "coordinator",
    "joinTokenFile",
    "extraTags",
    "stateDir",
    "listenPort",
    "tunName",
    "controlPort",
    "openFirewall",
    "ingress",
    "capabilities.firecracker",
    "capabilities.docker",
    "kvmVendor",
    "vmKernel",
    "microvmEgress",
    "appsrv.enable",
    "appsrv.port",
    "appsrv.listenAddress",
    "appsrv.uploadTokenFile",
    "selfUpdate.enable",
    "selfUpdate.releaseUrl",
    "selfUpdate.healthWindow",
    "selfUpdate.timer",
];

/// Everything set at once (the package aside: JSON cannot hold a derivation), with the
/// self-update flow on and a `%` in the release URL.
fn everything() -> Value {
    json!({
        "enable": true,
        "nodeName": "edge-fra-1",
        "coordinator": "http://coord.example:8888",
        "joinTokenFile": "/run/secrets/join",
        "extraTags": ["eu-central", "gpu"],
        "stateDir": "/srv/tabbify",
        "listenPort": 51900,
        "tunName": "mesh7",
        "openFirewall": false,
        "ingress": "0.0.0.0:8080",
        "capabilities": { "firecracker": true, "docker": true },
        "kvmVendor": "amd",
        "vmKernel": "/srv/kernels/vmlinux",
        "microvmEgress": true,
        "appsrv": {
            "enable": true,
            "port": 9100,
            "listenAddress": "[fd00::1]",
            "uploadTokenFile": "/run/secrets/upload"
        },
        "selfUpdate": {
            "enable": true,
            "releaseUrl": "https://releases.internal/tab%20bify",
            "healthWindow": "2m",
            "timer": "weekly"
        }
    })
}

#[test]
fn nixos_module_defaults_build_a_store_pinned_node() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let e = eval(&json!({ "enable": true })).unwrap();
    let pkg = package_path(&e);
    assert!(
        pkg.starts_with("/nix/store/") && pkg.ends_with("-tabbify-node-0.1.0"),
        "{pkg}"
    );
    assert_eq!(
        units(&e).keys().collect::<Vec<_>>(),
        ["tabbify-appsrv.service", "tabbify-supervisor.service"],
        "self-update units only when asked for"
    );

    let sup = unit(&e, "tabbify-supervisor.service");
    assert_eq!(
        get(&sup, "ExecStart").unwrap(),
        format!(
            "{pkg}/bin/tabbify-supervisor --data-dir /var/lib/tabbify --name node-a \
             --listen-port 51820 --tun-name tbf0 --vm-kernel /var/lib/tabbify/kernels/vmlinux"
        )
    );
    for (key, value) in [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        ("KillMode", "process"),
        ("StateDirectory", "tabbify"),
        ("WantedBy", "multi-user.target"),
        ("After", "network-online.target"),
    ] {
        assert_eq!(get(&sup, key), Some(value), "{key}");
    }
    assert_eq!(get(&sup, "Requires"), None);
    assert_eq!(get(&sup, "LoadCredential"), None);
    let path = get(&sup, "Environment").unwrap();
    for tool in [
        "iproute2",
        "iptables",
        "e2fsprogs",
        "firecracker",
        "qemu_kvm",
    ] {
        assert!(
            path.contains(&format!("-{tool}/bin")),
            "{tool} not on {path}"
        );
    }
    for unwanted in ["busybox", "oras"] {
        assert!(!path.contains(unwanted), "{unwanted} on {path}");
    }

    let appsrv = unit(&e, "tabbify-appsrv.service");
    assert_eq!(
        get(&appsrv, "ExecStart").unwrap(),
        format!(
            "{pkg}/bin/tabbify-appsrv --listen \"[::]:9000\" --data-dir /var/lib/tabbify-appsrv \
             --insecure-no-mtls"
        )
    );
    assert_eq!(get(&appsrv, "DynamicUser"), Some("true"));
    assert_eq!(get(&appsrv, "User"), None);
    assert_eq!(
        get_all(&appsrv, "RestrictNetworkInterfaces"),
        ["lo", "tbf0"]
    );

    let sys = &e["system"];
    assert_eq!(
        sys["kernelModules"],
        json!(["tun"]),
        "kvm from the hardware config"
    );
    assert_eq!(sys["sysctl"], json!({}));
    assert_eq!(sys["docker"], false);
    assert_eq!(
        sys["systemPackages"],
        json!([]),
        "tools on the units' path only"
    );
    assert_eq!(sys["tmpfiles"], json!([]));
    assert_eq!(sys["firewall"]["allowedUDPPorts"], json!([51820]));
    assert_eq!(sys["firewall"]["allowedTCPPorts"], json!([]));
    assert_eq!(
        sys["firewall"]["interfaces"],
        json!({ "tbf0": { "allowedTCPPorts": [8730, 9000], "allowedUDPPorts": [] } })
    );
    assert_eq!(e["settings"]["nodeName"], "node-a");
    assert_eq!(e["settings"]["controlPort"], 8730);
    assert_eq!(e["settings"]["selfUpdate"]["enable"], false);

    // The node's name follows the host's.
    let e = eval_on("edge-ams-2", &json!({ "enable": true })).unwrap();
    assert!(
        get(&unit(&e, "tabbify-supervisor.service"), "ExecStart")
            .unwrap()
            .contains("--name edge-ams-2 "),
    );

    // Every option is declared with a type and a description, and the list above is complete.
    let mut names: Vec<String> = e["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let name = o["name"].as_str().unwrap();
            assert!(
                o["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name} has no description"
            );
            assert!(o["type"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
            name.strip_prefix("services.tabbify-node.")
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(names, expected);
}

#[test]
fn nixos_module_honours_every_option() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let e = eval(&everything()).unwrap();
    let pkg = package_path(&e);
    assert_eq!(
        units(&e).keys().collect::<Vec<_>>(),
        [
            "tabbify-appsrv.service",
            "tabbify-fetch.service",
            "tabbify-supervisor.service",
            "tabbify-update.service",
            "tabbify-update.timer"
        ]
    );

    let sup = unit(&e, "tabbify-supervisor.service");
    assert_eq!(
        get(&sup, "ExecStart").unwrap(),
        "/srv/tabbify/current/tabbify-supervisor --data-dir /srv/tabbify --name edge-fra-1 \
         --listen-port 51900 --tun-name mesh7 --vm-kernel /srv/kernels/vmlinux \
         --coordinator http://coord.example:8888 --join-token-file %d/join-token \
         --ingress 0.0.0.0:8080 --tag eu-central --tag gpu"
    );
    assert_eq!(
        get(&sup, "LoadCredential"),
        Some("join-token:/run/secrets/join")
    );
    assert_eq!(get(&sup, "ReadWritePaths"), Some("/srv/tabbify"));
    assert_eq!(get(&sup, "StateDirectory"), None, "not under /var/lib");
    assert_eq!(
        get(&sup, "After"),
        Some("network-online.target tabbify-fetch.service docker.service")
    );
    assert_eq!(
        get(&sup, "Wants"),
        Some("network-online.target tabbify-fetch.service")
    );
    assert_eq!(get(&sup, "Requires"), None, "wants, not requires");

    let appsrv = unit(&e, "tabbify-appsrv.service");
    assert_eq!(
        get(&appsrv, "ExecStart").unwrap(),
        format!(
            "{pkg}/bin/tabbify-appsrv --listen \"[fd00::1]:9100\" \
             --data-dir /var/lib/tabbify-appsrv --insecure-no-mtls \
             --upload-token-file %d/upload-token"
        )
    );
    assert_eq!(
        get(&appsrv, "LoadCredential"),
        Some("upload-token:/run/secrets/upload")
    );
    assert_eq!(
        get_all(&appsrv, "RestrictNetworkInterfaces"),
        ["lo", "mesh7"]
    );

    let fetch = unit(&e, "tabbify-fetch.service");
    assert_eq!(
        get(&fetch, "ExecStart").unwrap(),
        format!(
            "{pkg}/bin/tabbify-fetch --if-missing --data-dir /srv/tabbify \
             --release-url \"https://releases.internal/tab%%20bify\""
        )
    );
    assert_eq!(
        get(&fetch, "ConditionPathExists"),
        Some("!/srv/tabbify/current/tabbify-supervisor")
    );
    let update = unit(&e, "tabbify-update.service");
    let exec = get(&update, "ExecStart").unwrap();
    assert!(
        exec.starts_with(&format!("{pkg}/bin/tabbify-update ")),
        "{exec}"
    );
    for part in [
        "--release-url \"https://releases.internal/tab%%20bify\"",
        "--health-window 2m",
        "--restart-command \"/nix/store/",
        "-systemd/bin/systemctl restart tabbify-supervisor.service\"",
    ] {
        assert!(exec.contains(part), "{part} missing from {exec}");
    }
    assert_eq!(
        get(&update, "WantedBy"),
        None,
        "started by its timer or by hand"
    );
    let timer = unit(&e, "tabbify-update.timer");
    assert_eq!(get(&timer, "OnCalendar"), Some("weekly"));
    assert_eq!(get(&timer, "WantedBy"), Some("timers.target"));

    let sys = &e["system"];
    assert_eq!(sys["kernelModules"], json!(["tun", "kvm-amd"]));
    assert_eq!(sys["sysctl"], json!({ "net.ipv4.ip_forward": 1 }));
    assert_eq!(sys["docker"], true);
    assert_eq!(
        sys["tmpfiles"],
        json!(["d /srv/tabbify 0700 root root - -"])
    );
    assert_eq!(
        sys["firewall"]["allowedUDPPorts"],
        json!([]),
        "openFirewall = false"
    );
    assert_eq!(
        sys["firewall"]["interfaces"],
        json!({ "mesh7": { "allowedTCPPorts": [8730, 9100], "allowedUDPPorts": [] } }),
        "the mesh interface stays open"
    );

    // Without the microVM runtime its tools leave the path; without the appsrv its unit and
    // port go.
    let e = eval(&json!({
        "enable": true,
        "capabilities": { "firecracker": false },
        "appsrv": { "enable": false }
    }))
    .unwrap();
    let path = get(&unit(&e, "tabbify-supervisor.service"), "Environment")
        .unwrap()
        .to_string();
    assert!(path.contains("-iproute2/bin"), "{path}");
    for tool in ["iptables", "e2fsprogs", "firecracker", "qemu_kvm"] {
        assert!(!path.contains(tool), "{tool} on {path}");
    }
    assert_eq!(
        units(&e).keys().collect::<Vec<_>>(),
        ["tabbify-supervisor.service"]
    );
    assert_eq!(
        e["system"]["firewall"]["interfaces"]["tbf0"]["allowedTCPPorts"],
        json!([8730])
    );
}

#[test]
fn nixos_module_refuses_bad_values_with_their_messages() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let on = |extra: Value| {
        let mut s = json!({ "enable": true });
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    for (bad, expect) in [
        (
            on(json!({ "nodename": "x" })),
            "The option `services.tabbify-node.nodename' does not exist.",
        ),
        (
            on(json!({ "kvmVendor": "arm" })),
            "A definition for option `services.tabbify-node.kvmVendor' is not of type `null or one of \"intel\", \"amd\"'",
        ),
        (
            on(json!({ "nodeName": "has space" })),
            "A definition for option `services.tabbify-node.nodeName' is not of type `string matching the pattern",
        ),
        (
            on(json!({ "joinTokenFile": "/nix/store/0000000000000000000000000000000a-token" })),
            "A definition for option `services.tabbify-node.joinTokenFile' is not of type `null or absolute path not in the Nix store'",
        ),
        (
            on(json!({ "joinTokenFile": "secrets/token" })),
            "A definition for option `services.tabbify-node.joinTokenFile' is not of type `null or absolute path not in the Nix store'",
        ),
        (
            on(json!({ "stateDir": "var/lib/tabbify" })),
            "A definition for option `services.tabbify-node.stateDir' is not of type `absolute path not in the Nix store'",
        ),
        (
            on(json!({ "stateDir": "/srv/my state" })),
            "- services.tabbify-node.stateDir must not contain white space, quotes, backslashes, % or $.",
        ),
        (
            on(json!({ "listenPort": 70000 })),
            "A definition for option `services.tabbify-node.listenPort' is not of type `16 bit unsigned integer",
        ),
        (
            on(json!({ "tunName": "a-very-long-interface" })),
            "A definition for option `services.tabbify-node.tunName' is not of type `string matching the pattern",
        ),
        (
            on(json!({ "controlPort": 9999 })),
            "The option `services.tabbify-node.controlPort' is read-only, but it's set multiple times.",
        ),
        (
            on(json!({ "selfUpdate": { "releaseUrl": "ftp://x" } })),
            "A definition for option `services.tabbify-node.selfUpdate.releaseUrl' is not of type `string matching the pattern",
        ),
        (
            on(json!({ "coordinator": "http://coord example" })),
            "A definition for option `services.tabbify-node.coordinator' is not of type `null or string matching the pattern",
        ),
        (
            on(json!({ "microvmEgress": true, "capabilities": { "firecracker": false } })),
            "- services.tabbify-node.microvmEgress needs capabilities.firecracker",
        ),
        (
            on(json!({ "selfUpdate": { "timer": "weekly" } })),
            "- services.tabbify-node.selfUpdate.timer needs selfUpdate.enable.",
        ),
    ] {
        let err = eval(&bad).expect_err(&bad.to_string());
        assert!(err.contains(expect), "{bad}:\n{err}");
        if expect.starts_with("- ") {
            assert!(err.contains("error: Failed assertions:"), "{err}");
        }
    }
    // The default name is checked too: a host name the roster refuses stops the evaluation.
    let err = eval_on("bad host", &json!({ "enable": true })).unwrap_err();
    assert!(
        err.contains("services.tabbify-node.nodeName' is not of type"),
        "{err}"
    );
}

#[test]
fn nixos_module_disabled_changes_nothing() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let mut everything_off = everything();
    everything_off["enable"] = json!(false);
    for settings in [json!({}), json!({ "enable": false }), everything_off] {
        let e = eval(&settings).unwrap();
        assert_eq!(e["system"], e["withoutModule"], "{settings}");
        assert_eq!(e["units"], json!({}), "{settings}");
    }
    // And the comparison sees a difference when there is one.
    let e = eval(&json!({ "enable": true })).unwrap();
    assert_ne!(e["system"], e["withoutModule"]);
}

/// Units named as in the baseline, from a configuration that has all four.
fn hardened_units() -> BTreeMap<String, String> {
    let e = eval(&everything()).unwrap();
    units(&e)
}

#[test]
fn nixos_units_verify_and_are_less_exposed_than_before() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    require!(Capability::SystemdAnalyze);
    for settings in [json!({ "enable": true }), everything()] {
        let e = eval(&settings).unwrap();
        let units: Vec<(String, String)> = units(&e).into_iter().collect();
        let root = tempfile::tempdir().unwrap();
        let warnings = verify_root(root.path(), &units);
        assert_eq!(
            warnings, "",
            "systemd-analyze verify complained about {settings}"
        );
    }

    // The same check catches a `%` left unescaped in the release URL.
    let mut units: Vec<(String, String)> = hardened_units().into_iter().collect();
    for (_, text) in units.iter_mut() {
        *text = text.replace("tab%%20bify", "tab%20bify");
    }
    let root = tempfile::tempdir().unwrap();
    let (ok, printed) = verify_root_status(root.path(), &units);
    assert!(!ok, "{printed}");
    assert!(
        printed
            .contains("Failed to resolve unit specifiers in https://releases.internal/tab%20bify"),
        "{printed}"
    );

    // Exposure per unit: the module as it was (its rendered units, kept in baseline/) against
    // the module now.
    let after_dir = tempfile::tempdir().unwrap();
    let hardened: Vec<(String, String)> = hardened_units()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".service"))
        .collect();
    let after_paths = install_units(after_dir.path(), &hardened);
    let baseline = workspace_root().join("nixos/tests/baseline");
    let mut compared = 0;
    for ((name, _), after_path) in hardened.iter().zip(&after_paths) {
        let before = exposure(&baseline.join(name));
        let after = exposure(after_path);
        println!("{name}: exposure {before:.1} before, {after:.1} now");
        assert!(after < before, "{name}: {after} is not below {before}");
        compared += 1;
    }
    assert_eq!(compared, 4);
}

#[test]
fn nixos_fetch_unit_installs_a_release() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let server = ReleaseServer::start();
    publish_installable(&server, "0.1.0", std::fs::read(FETCH).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let e = eval(&json!({
        "enable": true,
        "stateDir": state.display().to_string(),
        "selfUpdate": { "enable": true, "releaseUrl": server.url },
    }))
    .unwrap();
    let pkg = package_path(&e);
    // The unit's command line, with this build's tabbify-fetch in place of the store's.
    let exec = get(&unit(&e, "tabbify-fetch.service"), "ExecStart")
        .unwrap()
        .to_string();
    let args: Vec<&str> = exec
        .strip_prefix(&format!("{pkg}/bin/tabbify-fetch "))
        .unwrap_or_else(|| panic!("{exec}"))
        .split(' ')
        .collect();
    assert!(args.iter().all(|a| !a.contains(['"', '%', '$'])), "{exec}");
    let out = Command::new(FETCH).args(&args).output().unwrap();
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
    // The supervisor unit starts what was installed, and the fetch unit stands down once it is.
    let sup_exec = get(&unit(&e, "tabbify-supervisor.service"), "ExecStart")
        .unwrap()
        .to_string();
    let installed = state.join("current/tabbify-supervisor");
    assert!(
        sup_exec.starts_with(&format!("{} ", installed.display())),
        "{sup_exec}"
    );
    assert_eq!(
        get(&unit(&e, "tabbify-fetch.service"), "ConditionPathExists"),
        Some(format!("!{}", installed.display()).as_str())
    );
}
