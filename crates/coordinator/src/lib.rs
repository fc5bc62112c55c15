//! The Tabbify mesh coordinator: keeps the roster of nodes (keys, ULAs, tags, endpoints), admits
//! new nodes with join tokens, tracks liveness from heartbeats, and streams every roster change
//! as a revisioned event log.
//!
//! Pure decisions (`addressing`, `tokens`, `registration`, `liveness`) sit apart from effects
//! (`store` owns the SQLite file, `service` the lock and the event broadcast, `api` and `watch`
//! the HTTP surface, `server` the process lifecycle). The `tabbify-coordinator` binary only
//! parses arguments and calls [`server::Server`].

pub mod addressing;
pub mod admin_token;
pub mod api;
pub mod config;
pub mod liveness;
pub mod metrics;
pub mod registration;
pub mod server;
pub mod service;
pub mod store;
pub mod tokens;
pub mod watch;
