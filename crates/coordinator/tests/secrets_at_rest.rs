//! The coordinator keeps only hashes of the secrets it hands out or checks: after join tokens,
//! peer credentials and the admin token have been created, used, refused and revoked, none of
//! them (nor the secret part alone) is in its SQLite database (main file, WAL and shared memory,
//! read while it runs so recent writes are still in the WAL) or in its log. The admin token's
//! own 0600 file is the one place it is meant to be.
#![allow(clippy::unwrap_used)] // test: a panic is the failure report

mod common;

use common::*;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use tabbify_wire::mesh::RegisterResponse;
use tabbify_wire::token::CreateJoinTokenRequest;

/// The secret part of `tbfj_<id>_<secret>`, `tbfp_<id>_<secret>` or `tbfa_<secret>`.
fn secret_part(token: &str) -> &str {
    let (prefix, rest) = token.split_at(5);
    if prefix == "tbfa_" {
        return rest;
    }
    rest.split_once('_').unwrap().1
}

async fn heartbeat(c: &Coordinator, cred: &str) -> StatusCode {
    c.http
        .post(c.url("/v1/mesh/heartbeat"))
        .bearer_auth(cred)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status()
}

/// The files of the data dir the coordinator writes itself (all but the admin token's file).
fn store_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("admin-token"))
        .collect()
}

#[tokio::test]
async fn the_database_and_the_log_hold_no_plaintext_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = Coordinator::start(&data, &["--heartbeat-interval", "10m"]);

    // Tokens: one reusable, one single-use; nodes join with each.
    let fleet = c
        .create_token(&CreateJoinTokenRequest {
            reusable: true,
            description: Some("fleet-token".into()),
            ..Default::default()
        })
        .await;
    let once = c.create_token(&CreateJoinTokenRequest::default()).await;
    let a: RegisterResponse = c
        .register(Some(&fleet.token), &request(key(1), "node-alpha"))
        .await;
    let b: RegisterResponse = c
        .register(Some(&once.token), &request(key(2), "node-beta"))
        .await;

    // Refusals: a used-up token, a known token id with a wrong secret, a wrong credential.
    let (status, _) = c
        .register_raw(Some(&once.token), &request(key(3), "late"))
        .await;
    assert!(status.is_client_error(), "{status}");
    let forged = format!("tbfj_{}_{}", fleet.info.id, "A".repeat(43));
    let (status, _) = c
        .register_raw(Some(&forged), &request(key(4), "forger"))
        .await;
    assert!(status.is_client_error(), "{status}");
    let wrong_cred = format!("tbfp_{}_{}", a.peer_id, "B".repeat(43));
    assert!(heartbeat(&c, &wrong_cred).await.is_client_error());

    // Uses: heartbeats, a re-registration with the credential, admin reads, an app placed.
    assert_eq!(
        heartbeat(&c, a.peer_credential.as_deref().unwrap()).await,
        StatusCode::OK
    );
    let mut again = request(key(1), "node-alpha");
    again.peer_credential = a.peer_credential.clone();
    let _: RegisterResponse = c.register(None, &again).await;
    let _: serde_json::Value = c.admin_get("/v1/admin/join-tokens").await;
    let resp = c
        .http
        .post(c.url("/v1/apps"))
        .bearer_auth(&c.admin)
        .json(&serde_json::json!({
            "manifest": "[app]\nname = \"web\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"web.wasm\"\n",
            "artifact_digest": format!("sha256:{}", "a".repeat(64)),
            "appsrv_url": "http://127.0.0.1:9000",
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let resp = c
        .http
        .get(c.url("/v1/nodes/self/assignments"))
        .bearer_auth(a.peer_credential.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Revocations: the fleet token and node beta; beta's credential is then refused.
    let resp = c
        .http
        .delete(c.url(&format!("/v1/admin/join-tokens/{}", fleet.info.id)))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = c
        .http
        .delete(c.url(&format!("/v1/mesh/peers/{}", b.peer_id)))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        heartbeat(&c, b.peer_credential.as_deref().unwrap()).await,
        StatusCode::NOT_FOUND
    );

    let secrets = [
        ("the fleet join token", fleet.token.as_str()),
        ("the single-use join token", once.token.as_str()),
        (
            "alpha's peer credential",
            a.peer_credential.as_deref().unwrap(),
        ),
        (
            "beta's peer credential",
            b.peer_credential.as_deref().unwrap(),
        ),
        ("the admin token", c.admin.as_str()),
    ];
    let files = store_files(&data);
    let log = data.with_extension("log");
    let wal = data.join("coordinator.db-wal");
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the WAL is where recent writes are: {}",
        wal.display()
    );
    // The search must be able to find what is stored in plain text: ids, names, descriptions.
    let stored: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    for plain in [
        fleet.info.id.as_str(),
        "fleet-token",
        "node-alpha",
        a.peer_id.as_str(),
    ] {
        assert!(
            contains(&stored, plain),
            "{plain:?} should be stored: is this the store?"
        );
    }
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "an empty log");

    for file in files.iter().chain([&log]) {
        let bytes = std::fs::read(file).unwrap();
        for (what, secret) in secrets {
            for needle in [secret, secret_part(secret)] {
                assert!(
                    !contains(&bytes, needle),
                    "{} holds {what} in plain text",
                    file.display()
                );
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
