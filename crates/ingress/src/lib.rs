//! The ingress: how an app is reached from outside the mesh. It serves
//! `http://ADDR/app/<name>/<path>` and proxies the request to a running replica of app `<name>`
//! as `http://<replica>/<path>`, the query string kept.
//!
//! Where the replicas are comes from an [`EndpointSource`]: the coordinator plugs in a lookup in
//! its own store, a supervisor started with `--ingress ADDR` uses [`CoordinatorEndpoints`] (the
//! coordinator's `GET /v1/apps/{name}/endpoints`, cached for a second).
//!
//! What the proxy does to a request (see `docs/coordinator-apps-api.md`, "Ingress"):
//!
//! * strips `/app/<name>`, keeps the query; drops hop-by-hop headers both ways; appends the
//!   client's IP to `X-Forwarded-For` and sets `X-Forwarded-Proto`, `X-Forwarded-Host` and
//!   `X-Forwarded-Prefix` (`/app/<name>`, for apps that build absolute links);
//! * streams both bodies, never buffering them;
//! * passes `Upgrade` requests (websockets) through: when the replica answers `101`, both
//!   connections are upgraded and bytes are copied both ways until either side closes;
//! * tries the replicas in rotating order, moving on when one cannot be connected to (short
//!   connect timeout). A request moves on only while its body has not been read, which holds
//!   for every connect failure: the body is handed out once and reclaimed when the connection
//!   never came up, so no body is buffered to make retries possible. A replica that failed to
//!   connect is tried last for a few seconds;
//! * answers with the project's JSON error body: `404` for an unknown app, `503` when it has no
//!   running replica (or the lookup failed), `502` when every replica failed.
//!
//! Mount it with [`Ingress::router`] and serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()` so the client's address is known:
//!
//! ```no_run
//! # async fn run(source: tabbify_ingress::StaticEndpoints) -> std::io::Result<()> {
//! use std::net::SocketAddr;
//! let app = axum::Router::new().merge(tabbify_ingress::Ingress::new(source).router());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```

mod balance;
mod body;
mod cache;
mod coordinator_source;
mod error;
mod headers;
mod path;
mod proxy;
mod source;
mod upgrade;

pub use coordinator_source::CoordinatorEndpoints;
pub use error::IngressError;
pub use proxy::{Ingress, IngressConfig};
pub use source::{AppLookup, EndpointSource, SourceError, StaticEndpoints};
