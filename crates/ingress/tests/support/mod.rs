//! Loopback servers for the ingress tests: a replica that reports what it received, streams,
//! reads uploads chunk by chunk and echoes an upgraded connection; and the ingress in front.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
#![allow(dead_code)] // each test file uses a part of the helpers

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tabbify_ingress::{EndpointSource, Ingress, IngressConfig};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

pub const WAIT: Duration = Duration::from_secs(10);

/// One replica on 127.0.0.1.
pub struct Replica {
    pub addr: SocketAddr,
    /// Lets `/stream` send its last chunk.
    pub release_stream: Arc<Notify>,
    /// Every chunk `/upload` reads, as it reads it.
    pub uploads: mpsc::UnboundedReceiver<Bytes>,
}

#[derive(Clone)]
struct ReplicaState {
    label: String,
    release_stream: Arc<Notify>,
    uploads: mpsc::UnboundedSender<Bytes>,
}

pub async fn spawn_replica(label: &str) -> Replica {
    let release_stream = Arc::new(Notify::new());
    let (tx, uploads) = mpsc::unbounded_channel();
    let state = ReplicaState {
        label: label.to_owned(),
        release_stream: release_stream.clone(),
        uploads: tx,
    };
    let app = Router::new()
        .route("/stream", get(stream))
        .route("/upload", post(upload))
        .route("/upgrade", any(upgrade))
        .fallback(echo)
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Replica {
        addr,
        release_stream,
        uploads,
    }
}

/// What the replica saw, as JSON.
async fn echo(State(s): State<ReplicaState>, req: Request) -> Response {
    let h = req.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = serde_json::json!({
        "replica": s.label,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "host": get("host"),
        "x_forwarded_for": get("x-forwarded-for"),
        "x_forwarded_proto": get("x-forwarded-proto"),
        "x_forwarded_host": get("x-forwarded-host"),
        "x_forwarded_prefix": get("x-forwarded-prefix"),
        "x_secret": get("x-secret"),
        "keep_alive": get("keep-alive"),
        "cookie": get("cookie"),
    });
    let mut resp = axum::Json(body).into_response();
    // A hop-by-hop header of the replica's own: the client must not see it.
    let headers = resp.headers_mut();
    headers.insert("x-hop", "1".parse().unwrap());
    headers.insert(header::CONNECTION, "x-hop".parse().unwrap());
    resp
}

/// Sends `first\n`, waits for the test's go, sends `last\n`.
async fn stream(State(s): State<ReplicaState>) -> Response {
    let first =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("first\n")) });
    let last = futures_util::stream::once(async move {
        s.release_stream.notified().await;
        Ok(Bytes::from("last\n"))
    });
    Body::from_stream(first.chain(last)).into_response()
}

/// Reports each chunk as it arrives and answers with everything it read.
async fn upload(State(s): State<ReplicaState>, req: Request) -> Response {
    let mut body = req.into_body().into_data_stream();
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        all.extend_from_slice(&chunk);
        let _ = s.uploads.send(chunk);
    }
    format!("{}:{}", s.label, String::from_utf8_lossy(&all)).into_response()
}

/// `Upgrade: echo`: after the 101, every byte read is written back.
async fn upgrade(headers: HeaderMap, mut req: Request) -> Response {
    if headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()) != Some("echo") {
        return (StatusCode::BAD_REQUEST, "want Upgrade: echo").into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Body::empty())
        .unwrap()
}

/// A loopback address nothing listens on: connecting is refused.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The ingress on 127.0.0.1 in front of `source`; returns its base URL.
pub async fn spawn_ingress<S: EndpointSource>(source: S, config: IngressConfig) -> String {
    let app: Router = Ingress::with_config(source, config).router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
