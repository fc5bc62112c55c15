//! Bad input gets a 4xx with a precise message, and leaves the roster, the tokens and the
//! revision exactly as they were.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tabbify_wire::ErrorCode;
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{PeerList, RegisterResponse};
use tabbify_wire::token::{CreateJoinTokenRequest, JoinTokenList};

const GOOD_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[allow(clippy::unwrap_used)] // test helper
async fn post_raw(
    c: &Coordinator,
    path: &str,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, serde_json::Value) {
    let resp = c
        .http
        .post(c.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
    (status, json)
}

#[tokio::test]
async fn bad_register_bodies_are_refused_precisely_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), &[]);
    // A single-use token: any accidental consumption would show.
    let token = c.create_token(&CreateJoinTokenRequest::default()).await;
    let existing: RegisterResponse = c
        .register(
            Some(&c.reusable_token().await),
            &request(key(1), "existing"),
        )
        .await;
    let before_peers: PeerList = c.get_json("/v1/mesh/peers").await;
    let before_health: CoordinatorHealth = c.get_json("/health").await;

    let outside = if existing
        .mesh_prefix
        .contains("fd00:1:2:3::1".parse().unwrap())
    {
        "fd00:9:9:3::1"
    } else {
        "fd00:1:2:3::1"
    };
    let short_key = b64(&[7u8; 31]);
    let cases: Vec<(&str, String, StatusCode, ErrorCode, &str)> = vec![
        (
            "malformed JSON",
            format!(r#"{{"public_key": "{GOOD_KEY}", "display_name": "#),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "EOF while parsing",
        ),
        (
            "not an object",
            "[1,2,3]".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "invalid JSON body",
        ),
        (
            "empty body",
            String::new(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "request body is empty",
        ),
        (
            "wrong key length",
            json!({"public_key": short_key, "display_name": "n", "version": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`public_key`: public key must be 32 bytes (X25519), got 31",
        ),
        (
            "key not base64",
            json!({"public_key": "!!!", "display_name": "n", "version": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "not valid base64",
        ),
        (
            "missing field",
            json!({"public_key": GOOD_KEY, "version": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "missing field `display_name`",
        ),
        (
            "unknown tag syntax",
            json!({"public_key": GOOD_KEY, "display_name": "n", "version": "1", "tags": ["wasm", "GPU_A100"]}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`tags[1]`: tag \"GPU_A100\" has invalid syntax",
        ),
        (
            "bad endpoint",
            json!({"public_key": GOOD_KEY, "display_name": "n", "version": "1", "endpoints": ["10.0.0.1"]}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`endpoints[0]`: endpoint \"10.0.0.1\" is not an ip:port address",
        ),
        (
            "ULA outside the prefix",
            json!({"public_key": GOOD_KEY, "display_name": "n", "version": "1", "requested_ula": outside}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "is outside the mesh prefix",
        ),
        (
            "ULA not an address",
            json!({"public_key": GOOD_KEY, "display_name": "n", "version": "1", "requested_ula": "fd00::zz"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`requested_ula`",
        ),
        (
            "oversized display name",
            json!({"public_key": GOOD_KEY, "display_name": "x".repeat(64), "version": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "display_name is 64 characters long; the limit is 63",
        ),
        (
            "empty display name",
            json!({"public_key": GOOD_KEY, "display_name": "", "version": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "display_name must not be empty",
        ),
    ];
    for (what, body, status, code, needle) in cases {
        let got = post_raw(&c, "/v1/mesh/register", &token.token, body).await;
        assert_eq!(got.0, status, "{what}: {}", got.1);
        assert!(is_error_code(&got.1, code), "{what}: {}", got.1);
        let msg = got.1["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{what}: {msg:?} should contain {needle:?}"
        );
    }

    // A 10 MiB body: 413 with an error body, without reading it all.
    let huge = format!(
        "{{\"public_key\":\"{GOOD_KEY}\",\"display_name\":\"{}\",\"version\":\"1\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let got = post_raw(&c, "/v1/mesh/register", &token.token, huge).await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        "1 MiB",
    );

    // Heartbeats and admin bodies get the same treatment.
    let got = post_raw(
        &c,
        "/v1/mesh/heartbeat",
        existing.peer_credential.as_deref().unwrap(),
        "{\"tags\": [\"a b\"]}",
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "`tags[0]`",
    );
    let got = post_raw(
        &c,
        "/v1/admin/join-tokens",
        &c.admin,
        json!({"uses": 1, "colour": "red"}).to_string(),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "unknown field `colour`",
    );
    let got = post_raw(
        &c,
        "/v1/admin/join-tokens",
        &c.admin,
        json!({"ttl_secs": 0}).to_string(),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "ttl_secs must be between 1",
    );
    let got = post_raw(
        &c,
        "/v1/admin/join-tokens",
        &c.admin,
        json!({"uses": -1}).to_string(),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        "`uses`",
    );
    let watch = c
        .http
        .get(c.url("/v1/mesh/watch?since=yesterday"))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = watch.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("revision number"),
        "{body}"
    );

    // Nothing changed: roster, revision, and the single-use token is still unused and usable.
    let after_peers: PeerList = c.get_json("/v1/mesh/peers").await;
    assert_eq!(before_peers, after_peers);
    let after_health: CoordinatorHealth = c.get_json("/health").await;
    assert_eq!(before_health, after_health);
    let tokens: JoinTokenList = c.admin_get("/v1/admin/join-tokens").await;
    assert_eq!(
        tokens.tokens.len(),
        2,
        "the refused admin requests created no token"
    );
    let single = tokens
        .tokens
        .iter()
        .find(|t| t.id == token.info.id)
        .unwrap();
    assert_eq!(single.uses, 0);
    let ok: RegisterResponse = c
        .register(Some(&token.token), &request(key(2), "finally"))
        .await;
    assert_eq!(ok.revision, before_health.revision + 1);
}
