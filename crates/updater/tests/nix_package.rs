//! The Nix build of the node (`nixos/package.nix`) and the flake's outputs, instantiated by
//! Debian's `nix-instantiate` with nixpkgs' lib and a stub `pkgs` (`nixos/tests/package.nix`):
//! the derivation is written (never built: there is no nixpkgs here), and what it is built from
//! is compared with the repository: its Cargo.lock byte for byte, a source that resolves with
//! that lock (`cargo metadata --locked`), every program the NixOS units start.

#![allow(clippy::unwrap_used)]

mod common;

use common::nix_cli::nix_instantiate;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tabbify_testkit::{Capability, nixpkgs_lib, require, workspace_root};

fn workspace_packages(manifest: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&Value> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(&&p["id"]))
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().contains(&json!("bin")))
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            (
                p["name"].as_str().unwrap().to_string(),
                (p["version"].as_str().unwrap().to_string(), bins),
            )
        })
        .collect()
}

fn packages_of(flags: &Value) -> Vec<String> {
    let flags: Vec<&str> = flags
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    flags
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair[0], "-p", "{flags:?}");
            pair[1].to_string()
        })
        .collect()
}

#[test]
fn nix_package_builds_from_the_repository_lock_and_the_flake_exports_it() {
    require!(Capability::Nix);
    require!(Capability::NixpkgsLib);
    let expr = workspace_root().join("nixos/tests/package.nix");
    let drv = nix_instantiate()
        .arg(&expr)
        .args(["--argstr", "nixpkgsLib"])
        .arg(nixpkgs_lib())
        .output()
        .unwrap();
    assert!(drv.status.success(), "{}", text(&drv));
    let drv_path = String::from_utf8_lossy(&drv.stdout).trim().to_string();
    assert!(drv_path.ends_with("-tabbify-node-0.1.0.drv"), "{drv_path}");
    assert!(Path::new(&drv_path).is_file(), "{drv_path}");

    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "-A", "info"])
        .arg(&expr)
        .args(["--argstr", "nixpkgsLib"])
        .arg(nixpkgs_lib())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["drvPath"], drv_path.as_str());

    // cargoLock is the repository's Cargo.lock, byte for byte; every git dependency in it
    // (none today) has its hash in outputHashes.
    let lock_path = workspace_root().join("Cargo.lock");
    let lock = std::fs::read(&lock_path).unwrap();
    assert_eq!(info["lockSha256"], sha256(&lock).as_str());
    assert_eq!(info["vmInit"]["lockFile"], info["lockFile"]);
    let git_sources: Vec<String> = String::from_utf8_lossy(&lock)
        .lines()
        .filter_map(|l| l.strip_prefix("source = \"git+"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        info["outputHashes"].as_array().unwrap().len(),
        git_sources.len(),
        "{git_sources:?}"
    );
    assert_eq!(info["doCheck"], false);

    // The source Nix builds from holds the manifests, the lock and crates/ only, and is a
    // complete workspace that resolves with that lock unchanged (cargo metadata --locked).
    let src = Path::new(info["src"].as_str().unwrap());
    let mut top: Vec<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["Cargo.lock", "Cargo.toml", "crates"]);
    assert_eq!(std::fs::read(src.join("Cargo.lock")).unwrap(), lock);
    let in_src = workspace_packages(&src.join("Cargo.toml"));
    let in_repo = workspace_packages(&workspace_root().join("Cargo.toml"));
    assert_eq!(in_src, in_repo);

    // The version is the workspace's, and the packages built give every program the module
    // and the runner start; the guest init comes from the static (musl) build.
    assert_eq!(info["version"], in_repo["tabbify-supervisor"].0.as_str());
    let bins_of = |flags: &Value| -> Vec<String> {
        packages_of(flags)
            .iter()
            .flat_map(|p| {
                in_repo
                    .get(p)
                    .unwrap_or_else(|| panic!("{p} is not a workspace package"))
                    .1
                    .clone()
            })
            .collect()
    };
    let node_bins = bins_of(&info["cargoBuildFlags"]);
    for bin in [
        "tabbify-supervisor",
        "tabbify-runner",
        "tabbify-appsrv",
        "tabbify-fetch",
        "tabbify-update",
    ] {
        assert!(node_bins.contains(&bin.to_string()), "{bin}: {node_bins:?}");
    }
    assert_eq!(
        bins_of(&info["vmInit"]["cargoBuildFlags"]),
        ["tabbify-vm-init"]
    );
    assert_eq!(info["vmInit"]["flavour"], "musl-static");
    assert!(
        info["postInstall"]
            .as_str()
            .unwrap()
            .contains("/bin/tabbify-vm-init $out/bin/tabbify-vm-init"),
        "{}",
        info["postInstall"]
    );

    // The flake: the module file, and the same derivation as a package and through the overlay.
    assert_eq!(
        info["flake"]["module"],
        workspace_root()
            .join("nixos/tabbify-node.nix")
            .display()
            .to_string()
            .as_str()
    );
    assert_eq!(info["flake"]["package"], drv_path.as_str());
    assert_eq!(info["flake"]["overlayPackage"], drv_path.as_str());
}
