//! The ingress between a reqwest client (or a raw socket) and loopback replicas: path and
//! headers, streaming both ways, upgrades, failover and the error answers.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod support;

use bytes::Bytes;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use support::{WAIT, dead_addr, http, spawn_ingress, spawn_replica};
use tabbify_ingress::{IngressConfig, StaticEndpoints};
use tabbify_wire::app::AppName;
use tabbify_wire::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn hello() -> AppName {
    AppName::new("hello").unwrap()
}

async fn error_of(resp: reqwest::Response) -> ErrorBody {
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "error bodies are JSON"
    );
    resp.json().await.unwrap()
}

#[tokio::test]
async fn strips_the_prefix_keeps_the_query_and_sets_forwarding_headers() {
    let replica = spawn_replica("r0").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![replica.addr]);
    let base = spawn_ingress(source, IngressConfig::default()).await;
    let authority = base.trim_start_matches("http://").to_owned();

    let resp = http()
        .get(format!("{base}/app/hello/echo/a%2Fb?x=1&y=two"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop-only")
        .header("keep-alive", "timeout=5")
        .header("cookie", "a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-hop"),
        None,
        "replica's hop-by-hop header leaked"
    );
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["uri"], "/echo/a%2Fb?x=1&y=two");
    assert_eq!(seen["host"], replica.addr.to_string());
    assert_eq!(seen["x_forwarded_for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x_forwarded_proto"], "http");
    assert_eq!(seen["x_forwarded_host"], authority.as_str());
    assert_eq!(seen["x_forwarded_prefix"], "/app/hello");
    assert_eq!(seen["x_secret"], Value::Null);
    assert_eq!(seen["keep_alive"], Value::Null);
    assert_eq!(seen["cookie"], "a=b");

    for (path, want) in [
        ("/app/hello", "/"),
        ("/app/hello/", "/"),
        ("/app/hello?q=1", "/?q=1"),
        ("/app/hello/deep/er/", "/deep/er/"),
    ] {
        let seen: Value = http()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["uri"], want, "for {path}");
    }

    let resp = http()
        .delete(format!("{base}/app/hello/thing"))
        .send()
        .await
        .unwrap();
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["method"], "DELETE");
}

#[tokio::test]
async fn streams_the_response_body() {
    let replica = spawn_replica("r0").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![replica.addr]);
    let base = spawn_ingress(source, IngressConfig::default()).await;

    let mut resp = http()
        .get(format!("{base}/app/hello/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The replica holds back its last chunk until we have seen the first.
    let first = timeout(WAIT, resp.chunk())
        .await
        .expect("first chunk held back");
    assert_eq!(first.unwrap().unwrap(), Bytes::from("first\n"));
    replica.release_stream.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = timeout(WAIT, resp.chunk()).await.unwrap().unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"last\n");
}

#[tokio::test]
async fn streams_the_request_body() {
    let mut replica = spawn_replica("r0").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![replica.addr]);
    let base = spawn_ingress(source, IngressConfig::default()).await;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = tokio::spawn(
        http()
            .post(format!("{base}/app/hello/upload"))
            .body(body)
            .send(),
    );
    tx.send(Ok(Bytes::from("one,"))).await.unwrap();
    // The replica reads the first chunk while the client has not written the second.
    let got = timeout(WAIT, replica.uploads.recv())
        .await
        .expect("first chunk held back");
    assert_eq!(got.unwrap(), Bytes::from("one,"));
    tx.send(Ok(Bytes::from("two"))).await.unwrap();
    drop(tx);
    let resp = timeout(WAIT, request).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "r0:one,two");
}

#[tokio::test]
async fn passes_an_upgrade_through_both_ways() {
    let replica = spawn_replica("r0").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![replica.addr]);
    let base = spawn_ingress(source, IngressConfig::default()).await;
    let authority = base.trim_start_matches("http://");

    let mut sock = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!(
        "GET /app/hello/upgrade HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = timeout(WAIT, sock.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "closed before the end of the head: {answer:?}");
        answer.push(byte[0]);
    }
    let answer = String::from_utf8(answer).unwrap().to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(answer.contains("upgrade: echo\r\n"), "{answer}");
    assert!(answer.contains("connection: upgrade\r\n"), "{answer}");

    for message in [
        &b"ping"[..],
        b"and a longer second message",
        &[0u8, 255, 10, 13],
    ] {
        sock.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        timeout(WAIT, sock.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, message);
    }
    sock.shutdown().await.unwrap();
    let mut tail = Vec::new();
    let n = timeout(WAIT, sock.read_to_end(&mut tail))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "echo ends when we close our side");
}

#[tokio::test]
async fn a_dead_replica_is_skipped_for_requests_with_and_without_bodies() {
    let live = spawn_replica("live").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![dead_addr().await, live.addr]);
    // No cooldown: every other request tries the dead replica first.
    let config = IngressConfig {
        cooldown: Duration::ZERO,
        ..IngressConfig::default()
    };
    let base = spawn_ingress(source, config).await;

    for i in 0..6 {
        let resp = http()
            .get(format!("{base}/app/hello/n/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {i}");
        let seen: Value = resp.json().await.unwrap();
        assert_eq!(seen["replica"], "live");
    }
    for i in 0..6 {
        let resp = http()
            .post(format!("{base}/app/hello/upload"))
            .body(format!("body {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "POST {i}");
        assert_eq!(resp.text().await.unwrap(), format!("live:body {i}"));
    }
    for i in 0..4 {
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from("streamed ")),
            Ok(Bytes::from(i.to_string())),
        ]);
        let resp = http()
            .post(format!("{base}/app/hello/upload"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "streamed POST {i}");
        assert_eq!(resp.text().await.unwrap(), format!("live:streamed {i}"));
    }
}

#[tokio::test]
async fn requests_rotate_over_live_replicas() {
    let a = spawn_replica("a").await;
    let b = spawn_replica("b").await;
    let source = StaticEndpoints::new();
    source.set(hello(), vec![a.addr, b.addr]);
    let base = spawn_ingress(source, IngressConfig::default()).await;
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let v: Value = http()
            .get(format!("{base}/app/hello/"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.insert(v["replica"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn every_replica_dead_is_502() {
    let source = StaticEndpoints::new();
    source.set(hello(), vec![dead_addr().await, dead_addr().await]);
    let base = spawn_ingress(source, IngressConfig::default()).await;
    let resp = http()
        .post(format!("{base}/app/hello/x"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let err = error_of(resp).await;
    assert_eq!(err.error, ErrorCode::BadGateway);
    assert!(err.message.contains("tried 2"), "{}", err.message);
}

#[tokio::test]
async fn no_running_replica_is_503() {
    let source = StaticEndpoints::new();
    source.set(hello(), vec![]);
    let base = spawn_ingress(source, IngressConfig::default()).await;
    let resp = http()
        .get(format!("{base}/app/hello/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(error_of(resp).await.error, ErrorCode::Unavailable);
}

#[tokio::test]
async fn unknown_app_is_404() {
    let base = spawn_ingress(StaticEndpoints::new(), IngressConfig::default()).await;
    for path in ["/app/nobody/", "/app/nobody", "/app/Not_A_Name/x"] {
        let resp = http().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_of(resp).await.error, ErrorCode::NotFound, "{path}");
    }
}
