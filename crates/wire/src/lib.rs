//! Wire types shared by every Tabbify component.
//!
//! The coordinator, the supervisor, the runner and `tcli` all speak through these types, so the
//! protocol cannot drift between the two ends of a connection. Types that operators write by hand
//! (manifests, `node.toml`) reject unknown fields; types exchanged between our own components
//! ignore them, so a newer node can talk to an older coordinator.

pub mod app;
pub mod certificate;
pub mod error;
pub mod health;
pub mod key;
pub mod mesh;
pub mod net;
pub mod node_apps;
pub mod operator;
pub mod placement;
pub mod runner;
pub mod tag;
pub mod time;
pub mod token;

pub use error::{ErrorBody, ErrorCode};
pub use key::{KeyError, PublicKeyB64};
pub use net::{Endpoint, EndpointError, Ipv6Prefix, MAX_ENDPOINTS, PrefixError};
pub use tag::{Tag, TagError};
pub use time::Timestamp;

/// The version of the software, as every component reports it.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default coordinator port (HTTP API, roster).
pub const COORDINATOR_PORT: u16 = 8888;
/// Default supervisor control API port, bound on the node's ULA.
pub const SUPERVISOR_PORT: u16 = 8730;
/// Default artifact server port.
pub const APPSRV_PORT: u16 = 9000;
/// Default WireGuard UDP port.
pub const MESH_LISTEN_PORT: u16 = 51820;
