//! `CoordinatorEndpoints` against a stand-in for the coordinator's
//! `GET /v1/apps/{name}/endpoints`: answers, unknown apps, the cache, the last answer kept
//! through an outage, and the whole ingress on top.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod support;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::{http, spawn_ingress, spawn_replica};
use tabbify_client::CoordinatorClient;
use tabbify_ingress::{AppLookup, CoordinatorEndpoints, EndpointSource, IngressConfig};
use tabbify_wire::app::AppName;
use tabbify_wire::placement::AppEndpoints;
use tabbify_wire::{ErrorBody, ErrorCode};

const TOKEN: &str = "tbpc_peer_credential";

#[derive(Clone)]
struct Fake {
    replicas: Vec<SocketAddr>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn endpoints(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    if fake.down.load(Ordering::SeqCst) {
        let body = ErrorBody::new(ErrorCode::Internal, "store is down");
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        let body = ErrorBody::new(ErrorCode::Unauthorized, "who are you");
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    if name != "hello" {
        let body = ErrorBody::new(ErrorCode::NotFound, format!("no app named {name:?}"));
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(AppEndpoints {
        app: AppName::new(name).unwrap(),
        version: 3,
        endpoints: fake.replicas.clone(),
    })
    .into_response()
}

async fn spawn_fake(replicas: Vec<SocketAddr>) -> (CoordinatorClient, Fake) {
    let fake = Fake {
        replicas,
        hits: Arc::default(),
        down: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/v1/apps/{name}/endpoints", get(endpoints))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = CoordinatorClient::new(&format!("http://{addr}")).unwrap();
    (client, fake)
}

fn name(s: &str) -> AppName {
    AppName::new(s).unwrap()
}

#[tokio::test]
async fn reads_endpoints_and_asks_once_per_ttl() {
    let replica: SocketAddr = "[fd00:1:2:3::1]:8080".parse().unwrap();
    let (client, fake) = spawn_fake(vec![replica]).await;
    let source = CoordinatorEndpoints::new(client, Some(TOKEN.into()));
    for _ in 0..5 {
        let got = source.lookup(&name("hello")).await.unwrap();
        assert_eq!(got, AppLookup::Replicas(vec![replica]));
    }
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "the answer is cached");
}

#[tokio::test]
async fn asks_again_after_the_ttl() {
    let (client, fake) = spawn_fake(vec![]).await;
    let source = CoordinatorEndpoints::with_ttl(
        client,
        Some(TOKEN.into()),
        Duration::from_millis(50),
        Duration::ZERO,
    );
    assert_eq!(
        source.lookup(&name("hello")).await.unwrap(),
        AppLookup::Replicas(vec![])
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    source.lookup(&name("hello")).await.unwrap();
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_404_is_an_unknown_app_and_other_refusals_are_errors() {
    let (client, _fake) = spawn_fake(vec![]).await;
    let source = CoordinatorEndpoints::new(client.clone(), Some(TOKEN.into()));
    assert_eq!(
        source.lookup(&name("nobody")).await.unwrap(),
        AppLookup::Unknown
    );
    let wrong_token = CoordinatorEndpoints::new(client, Some("tbpc_wrong".into()));
    let err = wrong_token.lookup(&name("hello")).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn keeps_using_the_last_answer_while_the_coordinator_fails() {
    let replica: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (client, fake) = spawn_fake(vec![replica]).await;
    let source = CoordinatorEndpoints::with_ttl(
        client,
        Some(TOKEN.into()),
        Duration::from_millis(10),
        Duration::from_secs(60),
    );
    source.lookup(&name("hello")).await.unwrap();
    fake.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        source.lookup(&name("hello")).await.unwrap(),
        AppLookup::Replicas(vec![replica])
    );
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2, "it did ask again");
    // An app it never heard about has no last answer.
    assert!(source.lookup(&name("other")).await.is_err());
}

#[tokio::test]
async fn the_ingress_routes_through_the_coordinators_answer() {
    let replica = spawn_replica("r0").await;
    let (client, _fake) = spawn_fake(vec![replica.addr]).await;
    let base = spawn_ingress(
        CoordinatorEndpoints::new(client, Some(TOKEN.into())),
        IngressConfig::default(),
    )
    .await;
    let seen: Value = http()
        .get(format!("{base}/app/hello/x?y=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["uri"], "/x?y=1");
    let resp = http()
        .get(format!("{base}/app/nobody/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
