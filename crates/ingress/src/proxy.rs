//! The proxy itself: one request in, one attempt per replica until one connects, the replica's
//! response (or upgraded connection) back out. Decisions (path, headers, order) live in their
//! own modules; this one does the I/O.

use crate::balance::Cooldowns;
use crate::body::LentBody;
use crate::error::IngressError;
use crate::headers::{
    Forwarding, announce_upgrade, set_forwarding, strip_hop_by_hop, upgrade_protocol,
};
use crate::path::{replica_uri, split_app_path};
use crate::source::{AppLookup, EndpointSource};
use crate::upgrade;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request};
use axum::http::header::{HOST, HeaderValue, UPGRADE};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tabbify_wire::app::AppName;

/// How the ingress talks to replicas.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// How long connecting to a replica may take before the next one is tried.
    pub connect_timeout: Duration,
    /// How long a replica that failed to connect is tried last.
    pub cooldown: Duration,
    /// How long an idle connection to a replica is kept for reuse.
    pub pool_idle_timeout: Duration,
    /// `X-Forwarded-Proto`: how clients reach the ingress (`http`, or `https` behind a TLS
    /// terminator).
    pub scheme: String,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            cooldown: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(30),
            scheme: "http".into(),
        }
    }
}

/// The reverse proxy for `/app/<name>/...`. Cheap to clone; clones share the connection pool.
pub struct Ingress<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Ingress<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    source: S,
    client: Client<HttpConnector, LentBody>,
    cooldowns: Cooldowns,
    /// Where the next request starts in an app's replica list.
    next: AtomicUsize,
    scheme: String,
}

/// The client side of an upgrade request: the protocol asked for, and the client's connection
/// once it has been answered `101`.
struct ClientUpgrade {
    protocol: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// A request rewritten for the replicas, sent to each in turn.
struct Outgoing {
    method: Method,
    path: String,
    query: Option<String>,
    headers: axum::http::HeaderMap,
    body: LentBody,
}

impl<S: EndpointSource> Ingress<S> {
    pub fn new(source: S) -> Self {
        Self::with_config(source, IngressConfig::default())
    }

    pub fn with_config(source: S, config: IngressConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                source,
                client,
                cooldowns: Cooldowns::new(config.cooldown),
                next: AtomicUsize::new(0),
                scheme: config.scheme,
            }),
        }
    }

    /// Routes `/app/{name}`, `/app/{name}/` and `/app/{name}/{*rest}` to the proxy. Merge it
    /// into the server's router (the path is read from the original URI, so a router that
    /// rewrote it on the way in does not matter), and serve with connect info so
    /// `X-Forwarded-For` gets the client's address.
    pub fn router<T: Clone + Send + Sync + 'static>(self) -> Router<T> {
        let handler = move |req: Request| {
            let ingress = self.clone();
            async move { ingress.serve(req).await }
        };
        Router::new()
            .route("/app/{name}", any(handler.clone()))
            .route("/app/{name}/", any(handler.clone()))
            .route("/app/{name}/{*rest}", any(handler))
    }

    /// Proxies one request for `/app/<name>/...`; every failure is answered with a JSON error.
    /// For mounting without [`Ingress::router`] (e.g. as a tower service via `service_fn`).
    pub async fn serve(&self, req: Request) -> Response {
        match self.forward(req).await {
            Ok(resp) => resp,
            Err(e) => {
                match e.status() {
                    StatusCode::NOT_FOUND => tracing::debug!(error = %e, "ingress: not found"),
                    _ => tracing::warn!(error = %e, "ingress answered for the app"),
                }
                e.into_response()
            }
        }
    }

    async fn forward(&self, mut req: Request) -> Result<Response, IngressError> {
        let uri = match req.extensions().get::<OriginalUri>() {
            Some(OriginalUri(original)) => original.clone(),
            None => req.uri().clone(),
        };
        let (name, rest) = split_app_path(uri.path())
            .ok_or_else(|| IngressError::NotAnAppPath(uri.path().to_owned()))?;
        let app = AppName::new(name).map_err(|_| IngressError::UnknownApp(name.to_owned()))?;
        let replicas = match self.inner.source.lookup(&app).await {
            Ok(AppLookup::Unknown) => return Err(IngressError::UnknownApp(name.to_owned())),
            Ok(AppLookup::Replicas(r)) if r.is_empty() => {
                return Err(IngressError::NoRunningReplica(name.to_owned()));
            }
            Ok(AppLookup::Replicas(r)) => r,
            Err(source) => {
                return Err(IngressError::Lookup {
                    app: name.to_owned(),
                    source,
                });
            }
        };

        let client_upgrade = upgrade_protocol(req.headers()).map(|protocol| ClientUpgrade {
            protocol,
            on_upgrade: hyper::upgrade::on(&mut req),
        });
        let prefix = format!("/app/{name}");
        let forwarding = Forwarding {
            client_ip: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
            proto: &self.inner.scheme,
            host: client_host(&req),
            prefix: &prefix,
        };
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(HOST);
        if let Some(up) = &client_upgrade {
            announce_upgrade(&mut headers, up.protocol.clone());
        }
        set_forwarding(&mut headers, &forwarding);
        let outgoing = Outgoing {
            method: parts.method,
            path: rest.to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body: LentBody::new(body),
        };
        self.try_replicas(&app, &replicas, outgoing, client_upgrade)
            .await
    }

    /// Sends the request to the replicas in turn until one answers. Moves on only after a
    /// connect failure with the body unread: anything later may have reached the app.
    async fn try_replicas(
        &self,
        app: &AppName,
        replicas: &[SocketAddr],
        outgoing: Outgoing,
        client_upgrade: Option<ClientUpgrade>,
    ) -> Result<Response, IngressError> {
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let order = self.inner.cooldowns.order(replicas, start);
        let mut tried = 0;
        let mut last = String::from("no replica was tried");
        for addr in order {
            let Some(body) = outgoing.body.lend() else {
                break;
            };
            let uri = match replica_uri(addr, &outgoing.path, outgoing.query.as_deref()) {
                Ok(uri) => uri,
                Err(e) => {
                    tracing::warn!(%app, %addr, error = %e, "replica address does not make a URI");
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            tried += 1;
            match self.send(&outgoing, uri, body).await {
                Ok(resp) => {
                    self.inner.cooldowns.succeeded(addr);
                    tracing::debug!(%app, %addr, method = %outgoing.method, path = %outgoing.path, status = resp.status().as_u16(), "proxied");
                    return respond(app, addr, resp, client_upgrade);
                }
                Err(e) if e.is_connect() => {
                    let detail = error_chain(&e);
                    tracing::warn!(%app, %addr, error = %detail, "cannot connect to replica; trying the next");
                    self.inner.cooldowns.failed(addr);
                    last = format!("{addr}: {detail}");
                }
                Err(e) => {
                    return Err(IngressError::ReplicaFailed {
                        app: app.to_string(),
                        addr,
                        detail: error_chain(&e),
                    });
                }
            }
        }
        Err(IngressError::AllReplicasFailed {
            app: app.to_string(),
            tried,
            last,
        })
    }

    async fn send(
        &self,
        outgoing: &Outgoing,
        uri: Uri,
        body: LentBody,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let mut req = hyper::Request::new(body);
        *req.method_mut() = outgoing.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = outgoing.headers.clone();
        self.inner.client.request(req).await
    }
}

/// The replica's answer, as the client gets it.
fn respond(
    app: &AppName,
    addr: SocketAddr,
    mut resp: hyper::Response<hyper::body::Incoming>,
    client_upgrade: Option<ClientUpgrade>,
) -> Result<Response, IngressError> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.extensions = Default::default();
        return Ok(Response::from_parts(parts, Body::new(incoming)));
    }
    let Some(client_upgrade) = client_upgrade else {
        return Err(IngressError::ReplicaFailed {
            app: app.to_string(),
            addr,
            detail: "answered 101 to a request that did not ask to upgrade".into(),
        });
    };
    let protocol = resp.headers().get(UPGRADE).cloned();
    let replica_side = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions = Default::default();
    announce_upgrade(
        &mut parts.headers,
        protocol.unwrap_or(client_upgrade.protocol),
    );
    upgrade::splice(app.clone(), addr, client_upgrade.on_upgrade, replica_side);
    Ok(Response::from_parts(parts, Body::empty()))
}

/// The host the client asked for: `Host`, or the URI's authority (HTTP/2).
fn client_host(req: &Request) -> Option<HeaderValue> {
    req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// An error and its causes on one line (the client's own text only says "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
