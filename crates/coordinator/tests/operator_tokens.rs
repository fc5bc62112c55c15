//! Operator tokens at the real coordinator: minted only with the admin token, checked input,
//! signed by the key kept in the data dir (0600, the same after a restart), served publicly as
//! `tbfk_…` and handed to every node at registration; the token text never reaches the log.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use reqwest::StatusCode;
use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};
use tabbify_auth::{NodeFacts, Requirement, Scope, VerifyingKey};
use tabbify_wire::mesh::RegisterResponse;
use tabbify_wire::operator::{CreatedOperatorToken, SigningKeyInfo};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn mint(
    c: &Coordinator,
    admin: Option<&str>,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let mut req = c.http.post(c.url("/v1/admin/operator-tokens")).json(&body);
    if let Some(a) = admin {
        req = req.bearer_auth(a);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn tokens_are_minted_with_the_admin_token_and_verify_with_the_served_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Coordinator::start(&data, &[]);

    let info: SigningKeyInfo = c.get_json("/v1/mesh/signing-key").await;
    let key = VerifyingKey::from_text(&info.public_key).unwrap();
    let on_disk = std::fs::read_to_string(data.join("signing-key.pub")).unwrap();
    assert_eq!(on_disk.trim(), info.public_key);
    let mode = std::fs::metadata(data.join("signing-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Without or with a wrong admin token: 401, nothing minted.
    let body = serde_json::json!({"scopes": ["node:write"]});
    assert_eq!(
        mint(&c, None, body.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mint(&c, Some("tbfa_wrong"), body.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, json) = mint(
        &c,
        Some(&c.admin),
        serde_json::json!({"scopes": ["node:read"], "ttl_secs": 600, "subject": "alice", "nodes": ["edge-1"], "tags": ["eu"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let created: CreatedOperatorToken = serde_json::from_value(json).unwrap();
    assert!(created.token.starts_with("tbfo_"));
    assert_eq!(created.subject, "alice");
    assert_eq!(created.scopes, vec![Scope::NodeRead]);
    assert_eq!(
        created.expires_at.unix_ms() - created.issued_at.unix_ms(),
        600_000
    );
    let tags = [tabbify_wire::Tag::new("eu").unwrap()];
    let need = Requirement {
        scope: Scope::NodeRead,
        node: Some(NodeFacts {
            name: "edge-1",
            tags: &tags,
        }),
    };
    let claims = tabbify_auth::verify(Some(&created.token), &key, now(), &need).unwrap();
    assert_eq!(claims.jti, created.id);
    // Another node, or another scope: refused by the same check a node runs.
    let elsewhere = Requirement {
        scope: Scope::NodeRead,
        node: Some(NodeFacts {
            name: "edge-2",
            tags: &tags,
        }),
    };
    assert!(tabbify_auth::verify(Some(&created.token), &key, now(), &elsewhere).is_err());

    // Bad requests: precise 400s.
    for (body, says) in [
        (serde_json::json!({"scopes": []}), "scopes"),
        (
            serde_json::json!({"scopes": ["node:admin"]}),
            "unknown variant",
        ),
        (
            serde_json::json!({"scopes": ["node:read"], "ttl_secs": 99999999}),
            "ttl_secs",
        ),
        (
            serde_json::json!({"scopes": ["node:read"], "admin": true}),
            "admin",
        ),
        (
            serde_json::json!({"scopes": ["node:read"], "nodes": []}),
            "nodes",
        ),
    ] {
        let (status, json) = mint(&c, Some(&c.admin), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert!(
            json["message"].as_str().unwrap().contains(says),
            "{body}: {json}"
        );
    }

    // A node gets the same key at registration.
    let join = c.reusable_token().await;
    let reg: RegisterResponse = c
        .register(Some(&join), &request(common::key(1), "n1"))
        .await;
    assert_eq!(reg.signing_key.as_deref(), Some(info.public_key.as_str()));

    // The token text is in no log line (its id is).
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(!log.contains(&created.token), "token logged");
    let signature = created.token.rsplit_once('.').unwrap().1;
    assert!(!log.contains(signature), "token signature logged");
    assert!(log.contains(&created.id), "{log}");
}

#[tokio::test]
async fn the_signing_key_survives_a_restart_and_a_broken_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Coordinator::start(&data, &[]);
    let first: SigningKeyInfo = c.get_json("/v1/mesh/signing-key").await;
    let (_, json) = mint(
        &c,
        Some(&c.admin),
        serde_json::json!({"scopes": ["node:write"]}),
    )
    .await;
    let token = json["token"].as_str().unwrap().to_string();
    drop(c);
    let c = Coordinator::start(&data, &[]);
    let again: SigningKeyInfo = c.get_json("/v1/mesh/signing-key").await;
    assert_eq!(first, again);
    let key = VerifyingKey::from_text(&again.public_key).unwrap();
    let need = Requirement {
        scope: Scope::NodeWrite,
        node: None,
    };
    assert!(tabbify_auth::verify(Some(&token), &key, now(), &need).is_ok());
    drop(c);

    // A key file others can read is refused, not used.
    std::fs::set_permissions(
        data.join("signing-key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tabbify-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

/// A token signed with the coordinator's own key, issued `age` seconds ago for `ttl` seconds.
fn local_token(c: &Coordinator, scopes: Vec<Scope>, age: u64, ttl: u64) -> String {
    let key = tabbify_auth::SigningKey::load(&c.data_dir.join("signing-key")).unwrap();
    let grant = tabbify_auth::Grant {
        subject: "script".into(),
        scopes,
        ttl_secs: ttl,
        nodes: None,
        tags: None,
    };
    tabbify_auth::mint(&key, &grant, now() - age).0
}

async fn peers_status(c: &Coordinator, token: &str) -> (StatusCode, serde_json::Value) {
    let resp = c
        .http
        .get(c.url("/v1/mesh/peers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn roster_reads_take_a_mesh_read_operator_token_and_nothing_less() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("data"), &[]);

    // Minted by the admin: reads the roster.
    let (status, json) = mint(
        &c,
        Some(&c.admin),
        serde_json::json!({"scopes": ["mesh:read"], "ttl_secs": 600}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let reader: CreatedOperatorToken = serde_json::from_value(json).unwrap();
    let (status, json) = peers_status(&c, &reader.token).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // A node:read token does not grant the roster.
    let (_, json) = mint(
        &c,
        Some(&c.admin),
        serde_json::json!({"scopes": ["node:read", "node:write"]}),
    )
    .await;
    let node_only: CreatedOperatorToken = serde_json::from_value(json).unwrap();
    let (status, json) = peers_status(&c, &node_only.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    assert_eq!(json["error"], "wrong_scope", "{json}");

    // Expired, or signed by another key: refused, and says which.
    let expired = local_token(&c, vec![Scope::MeshRead], 3600, 60);
    let (status, json) = peers_status(&c, &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    assert_eq!(json["error"], "token_expired", "{json}");
    let stranger = tabbify_auth::mint(
        &tabbify_auth::SigningKey::generate(),
        &tabbify_auth::Grant {
            subject: "mallory".into(),
            scopes: vec![Scope::MeshRead],
            ttl_secs: 600,
            nodes: None,
            tags: None,
        },
        now(),
    )
    .0;
    let (status, json) = peers_status(&c, &stranger).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    assert_eq!(json["error"], "token_bad_signature", "{json}");

    // A token limited to some nodes cannot be minted with mesh:read at all.
    let (status, json) = mint(
        &c,
        Some(&c.admin),
        serde_json::json!({"scopes": ["mesh:read"], "nodes": ["edge-1"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
}

#[tokio::test]
async fn a_roster_watch_held_with_an_operator_token_ends_when_the_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_tls(&dir.path().join("data"), &[]);
    let token = local_token(&c, vec![Scope::MeshRead], 0, 3);
    let mut resp = c
        .http
        .get(c.url("/v1/mesh/watch"))
        .bearer_auth(&token)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let opened = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token by 12 s");
    // Not before the token's expiry either (it was valid for 3 s).
    assert!(
        opened.elapsed() >= std::time::Duration::from_secs(1),
        "the stream ended after {:?}, before its token expired",
        opened.elapsed()
    );
}
