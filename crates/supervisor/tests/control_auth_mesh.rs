//! The control API on the mesh: a peer that reaches another node's `[ula]:8730` over WireGuard
//! cannot deploy, stop or list anything there without an operator token minted by the
//! coordinator for that node; a node pins the coordinator's signing key at join and keeps
//! checking tokens with it while the coordinator is down.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;
mod mesh_support;

use mesh_support::{MeshLab, NodeOpts, curl, eventually};
use std::time::Duration;
use tabbify_testkit::{Capability, bin_path, require};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_peer_without_a_token_cannot_touch_another_nodes_apps() {
    require!(Capability::NetNs);
    assert!(
        bin_path("tabbify-runner").is_ok(),
        "build tabbify-runner first (cargo build -p tabbify-runner)"
    );
    let mut lab = MeshLab::new("cauth", &[]);
    let join = lab.token();
    let opts = NodeOpts::default();
    let (ha, hb) = (
        lab.lan.add_host("a").unwrap(),
        lab.lan.add_host("b").unwrap(),
    );
    let node_a = lab.start_node(&ha, "node-a", &join, &lab.dir.path().join("node-a"), &opts);
    let node_b = lab.start_node(&hb, "node-b", &join, &lab.dir.path().join("node-b"), &opts);
    let api_a = format!("http://[{}]:8730", node_a.ula);

    // The pinned key is the coordinator's.
    let pinned = std::fs::read_to_string(node_a.data_dir.join("signing-key.pub")).unwrap();
    let served =
        std::fs::read_to_string(lab.dir.path().join("coordinator/signing-key.pub")).unwrap();
    assert_eq!(pinned.trim(), served.trim());
    assert!(pinned.starts_with("tbfk_"));

    // A's operator deploys a victim app with a real token.
    let files = tempfile::tempdir().unwrap();
    let manifest = files.path().join("tabbify.toml");
    std::fs::write(&manifest, apps_support::manifest("victim", "")).unwrap();
    let wasm = apps_support::example_wasm("hello-wasm");
    let deploy_args = |auth: Option<&str>| {
        let mut v: Vec<String> = Vec::new();
        if let Some(a) = auth {
            v.extend(["-H".into(), a.to_string()]);
        }
        v.extend([
            "-F".into(),
            format!("manifest=@{}", manifest.display()),
            "-F".into(),
            format!("artifact=@{}", wasm.display()),
            format!("{api_a}/v1/apps"),
        ]);
        v
    };
    let args = deploy_args(Some(&node_a.auth()));
    let (status, body) = curl(&ha, &strs(&args));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["app_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Node B reaches A's API over the mesh (health is open)...
    let mut health = (0, String::new());
    eventually("B reaches A's API", Duration::from_secs(20), || {
        health = curl(&hb, &[&format!("{api_a}/health")]);
        health.0 == 200
    });
    // ... but without a token it can deploy nothing, stop nothing, read nothing.
    let manifest_b = files.path().join("evil.toml");
    std::fs::write(&manifest_b, apps_support::manifest("evil", "")).unwrap();
    let (status, body) = curl(
        &hb,
        &[
            "-F",
            &format!("manifest=@{}", manifest_b.display()),
            "-F",
            &format!("artifact=@{}", wasm.display()),
            &format!("{api_a}/v1/apps"),
        ],
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token_missing"), "{body}");
    for (method, path) in [
        ("POST", format!("/v1/apps/{id}/stop")),
        ("DELETE", format!("/v1/apps/{id}")),
        ("GET", "/v1/apps".into()),
    ] {
        let (status, body) = curl(&hb, &["-X", method, &format!("{api_a}{path}")]);
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    // A token the coordinator minted for node-b only does not work on node-a.
    let only_b = lab.operator_token(
        &serde_json::json!({"scopes": ["node:read", "node:write"], "nodes": ["node-b"]}),
    );
    let (status, body) = curl(
        &hb,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {only_b}"),
            &format!("{api_a}/v1/apps/{id}/stop"),
        ],
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong_node"), "{body}");
    // A read token cannot deploy.
    let read = lab.operator_token(&serde_json::json!({"scopes": ["node:read"]}));
    let args = deploy_args(Some(&format!("Authorization: Bearer {read}")));
    let (status, body) = curl(&hb, &strs(&args));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong_scope"), "{body}");

    let names = node_a.app_names();
    assert_eq!(names, vec!["victim".to_string()], "nothing was added");
    assert_eq!(node_a.apps()["apps"][0]["state"], "running");

    // With the coordinator down, A still checks tokens with the key it pinned.
    lab.kill_coordinator();
    let (status, body) = curl(&hb, &["-H", &node_b.auth(), &format!("{api_a}/v1/apps")]);
    assert_eq!(status, 200, "a valid token works offline: {body}");
    let (status, _) = curl(&hb, &["-X", "POST", &format!("{api_a}/v1/apps/{id}/stop")]);
    assert_eq!(status, 401);
    assert_eq!(node_a.apps()["apps"][0]["state"], "running");
}
