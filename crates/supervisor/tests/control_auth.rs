//! The control API needs an operator token (attacks on a real `--no-mesh` supervisor over
//! loopback): no token, a read-only token, an expired one, one for another node, one signed by
//! another key, and a wasm app calling its own node's API are all refused with 401 and the
//! reason, and nothing changes. `/health` stays open; root's unix socket needs no token and is
//! 0600. The tokens here are signed with the node's own `--no-mesh` key (read from its data dir),
//! the test playing the part of the token issuer.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;

use apps_support::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{SystemTime, UNIX_EPOCH};
use tabbify_auth::{Grant, Scope, SigningKey};
use tabbify_wire::node_apps::AppState;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn node_key(node: &Node) -> SigningKey {
    SigningKey::load(&node.data_dir.join("local-signing-key")).unwrap()
}

fn mint(key: &SigningKey, scopes: &[Scope], issued: u64, ttl: u64) -> String {
    mint_grant(
        key,
        Grant {
            subject: "attack-test".into(),
            scopes: scopes.to_vec(),
            ttl_secs: ttl,
            nodes: None,
            tags: None,
        },
        issued,
    )
}

fn mint_grant(key: &SigningKey, grant: Grant, issued: u64) -> String {
    tabbify_auth::mint(key, &grant, issued).0
}

/// `curl` with `Authorization: Bearer <token>` (or none): status and JSON body.
fn call(token: Option<&str>, method: &str, url: &str) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", method];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    args.push(url);
    curl_json(&args)
}

fn assert_refused(got: (u16, serde_json::Value), code: &str, says: &str) {
    let (status, body) = got;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(says),
        "{body} should say {says:?}"
    );
}

/// Deploys hello-wasm with the node's own token and waits until it serves.
fn deploy_victim(node: &Node, name: &str) -> String {
    let app = node.deploy_ok(&manifest(name, ""), &example_wasm("hello-wasm"));
    node.wait_running(app.app_id.as_str());
    app.app_id.to_string()
}

#[test]
fn without_a_token_nothing_but_health_answers_and_nothing_changes() {
    let node = Node::start(&[]);
    let id = deploy_victim(&node, "victim");
    let api = node.api();
    assert_eq!(
        curl_get(&format!("{api}/health")).0,
        200,
        "/health stays open"
    );
    for (method, path) in [
        ("GET", "/v1/apps".to_string()),
        ("GET", format!("/v1/apps/{id}")),
        ("GET", format!("/v1/apps/{id}/logs")),
        ("GET", "/v1/about".into()),
        ("GET", "/metrics".into()),
        ("POST", format!("/v1/apps/{id}/stop")),
        ("POST", format!("/v1/apps/{id}/restart")),
        ("POST", format!("/v1/apps/{id}/reset")),
        ("DELETE", format!("/v1/apps/{id}")),
    ] {
        assert_refused(
            call(None, method, &format!("{api}{path}")),
            "token_missing",
            "no operator token",
        );
    }
    // A deploy without a token: refused before its body is read.
    let (status, body) = deploy_to(
        api,
        "X-Nothing: here",
        &manifest("intruder", ""),
        &std::fs::read(example_wasm("hello-wasm")).unwrap(),
    );
    assert_eq!(status, 401, "{body}");
    // The admin token of a coordinator is no operator token either.
    assert_refused(
        call(
            Some("tbfa_0123456789abcdef"),
            "POST",
            &format!("{api}/v1/apps/{id}/stop"),
        ),
        "token_malformed",
        "does not start with tbfo_",
    );
    let app = node.app(&id);
    assert_eq!(app.state, AppState::Running, "still running");
    let (_, list) = node.get("/v1/apps");
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn a_read_token_reads_but_cannot_change_anything() {
    let node = Node::start(&[]);
    let id = deploy_victim(&node, "victim");
    let before = node.app(&id);
    let read = mint(&node_key(&node), &[Scope::NodeRead], unix_now(), 600);
    let api = node.api();
    assert_eq!(call(Some(&read), "GET", &format!("{api}/v1/apps")).0, 200);
    let auth = format!("Authorization: Bearer {read}");
    assert_eq!(curl(&["-H", &auth, &format!("{api}/metrics")]).0, 200);
    for (method, path) in [
        ("POST", format!("/v1/apps/{id}/stop")),
        ("POST", format!("/v1/apps/{id}/restart")),
        ("DELETE", format!("/v1/apps/{id}")),
    ] {
        assert_refused(
            call(Some(&read), method, &format!("{api}{path}")),
            "wrong_scope",
            "does not grant node:write",
        );
    }
    let (status, body) = deploy_to(
        api,
        &format!("Authorization: Bearer {read}"),
        &manifest("victim", ""),
        &std::fs::read(example_wasm("misbehave")).unwrap(),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "wrong_scope", "{body}");
    let after = node.app(&id);
    assert_eq!(after.state, AppState::Running);
    assert_eq!(after.version, before.version, "not replaced");
    assert_eq!(after.runner_pid, before.runner_pid, "not restarted");
    // An artifacts:write token is no node token.
    let art = mint(&node_key(&node), &[Scope::ArtifactsWrite], unix_now(), 600);
    assert_refused(
        call(Some(&art), "GET", &format!("{api}/v1/apps")),
        "wrong_scope",
        "does not grant node:read",
    );
}

#[test]
fn expired_foreign_and_tampered_tokens_are_refused() {
    let node = Node::start(&["--name", "node-a", "--tag", "eu"]);
    let id = deploy_victim(&node, "victim");
    let key = node_key(&node);
    let stop = format!("{}/v1/apps/{id}/stop", node.api());
    let both = [Scope::NodeRead, Scope::NodeWrite];
    let now = unix_now();

    let expired = mint(&key, &both, now - 3600, 600);
    assert_refused(
        call(Some(&expired), "POST", &stop),
        "token_expired",
        "expired",
    );
    let future = mint(&key, &both, now + 3600, 600);
    assert_refused(
        call(Some(&future), "POST", &stop),
        "token_not_yet_valid",
        "not valid yet",
    );
    let other_key = mint(&SigningKey::generate(), &both, now, 600);
    assert_refused(
        call(Some(&other_key), "POST", &stop),
        "token_bad_signature",
        "signature",
    );
    // A read token whose payload is swapped for one granting write keeps the old signature.
    let read = mint(&key, &[Scope::NodeRead], now, 600);
    let write = mint(&key, &both, now, 600);
    let forged = format!(
        "{}.{}",
        write.rsplit_once('.').unwrap().0,
        read.rsplit_once('.').unwrap().1
    );
    assert_refused(
        call(Some(&forged), "POST", &stop),
        "token_bad_signature",
        "signature",
    );

    let for_b = mint_grant(
        &key,
        Grant {
            subject: "t".into(),
            scopes: both.to_vec(),
            ttl_secs: 600,
            nodes: Some(vec!["node-b".into()]),
            tags: None,
        },
        now,
    );
    assert_refused(
        call(Some(&for_b), "POST", &stop),
        "wrong_node",
        "\"node-a\"",
    );
    let for_us = tabbify_wire::Tag::new("us").unwrap();
    let tagged_us = mint_grant(
        &key,
        Grant {
            subject: "t".into(),
            scopes: both.to_vec(),
            ttl_secs: 600,
            nodes: None,
            tags: Some(vec![for_us]),
        },
        now,
    );
    assert_refused(
        call(Some(&tagged_us), "POST", &stop),
        "wrong_node",
        "tagged us",
    );
    assert_eq!(node.app(&id).state, AppState::Running, "nothing changed");

    // The same limits pass on the node they name.
    let for_a = mint_grant(
        &key,
        Grant {
            subject: "t".into(),
            scopes: both.to_vec(),
            ttl_secs: 600,
            nodes: Some(vec!["node-a".into()]),
            tags: Some(vec![tabbify_wire::Tag::new("eu").unwrap()]),
        },
        now,
    );
    let (status, body) = call(Some(&for_a), "POST", &stop);
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.app(&id).state, AppState::Stopped);
}

#[test]
fn the_local_token_is_private_and_works() {
    let node = Node::start(&[]);
    let path = node.data_dir.join("control-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(node.token().starts_with("tbfo_"));
    assert!(
        node.log().contains("control-token"),
        "the log says where it is: {}",
        node.log()
    );
    assert_eq!(node.get("/v1/apps").0, 200);
}

#[test]
fn root_uses_the_unix_socket_without_a_token() {
    let node = Node::start(&[]);
    let sock = node.proc.as_ref().unwrap().control_socket.clone();
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        sock.display()
    );
    let s = sock.display().to_string();
    let id = deploy_victim(&node, "victim");
    let (status, list) = curl_json(&["--unix-socket", &s, "http://node/v1/apps"]);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["apps"][0]["app_id"], id.as_str());
    let (status, body) = curl_json(&[
        "--unix-socket",
        &s,
        "-X",
        "POST",
        &format!("http://node/v1/apps/{id}/stop"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.app(&id).state, AppState::Stopped);
    // The same request over TCP without a token: refused.
    assert_eq!(
        call(None, "POST", &format!("{}/v1/apps/{id}/start", node.api())).0,
        401
    );
    assert_eq!(node.app(&id).state, AppState::Stopped);
}

#[test]
fn a_wasm_app_cannot_drive_its_own_nodes_api() {
    let node = Node::start(&[]);
    let victim = deploy_victim(&node, "victim");
    let fetcher = node.deploy_ok(&manifest("fetcher", ""), &example_wasm("fetcher"));
    node.wait_running(fetcher.app_id.as_str());
    // The app asks its node's API (the address it could learn from its own) to stop another
    // app, with no credential: the node must refuse.
    let target = format!("{}/v1/apps/{victim}/stop", node.api());
    let url = format!(
        "{}fetch?method=POST&url={}",
        fetcher.url,
        target.replace(':', "%3A").replace('/', "%2F")
    );
    let (status, body) = curl_get(&url);
    assert_eq!(status, 200, "the app made its request: {body}");
    let (code, answer) = body.split_once('\n').unwrap();
    assert_eq!(code, "401", "{body}");
    assert!(answer.contains("token_missing"), "{answer}");
    assert_eq!(
        node.app(&victim).state,
        AppState::Running,
        "the victim runs on"
    );
    // And it cannot list the node's apps either.
    let list = format!("{}/v1/apps", node.api());
    let (_, body) = curl_get(&format!(
        "{}fetch?url={}",
        fetcher.url,
        list.replace(':', "%3A").replace('/', "%2F")
    ));
    assert!(body.starts_with("401\n"), "{body}");
}
