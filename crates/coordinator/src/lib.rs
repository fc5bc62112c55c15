//! The Tabbify mesh coordinator: keeps the roster of nodes (keys, ULAs, tags, endpoints), admits
//! new nodes with join tokens, tracks liveness from heartbeats, streams every roster change
//! as a revisioned event log, and keeps what should run where: apps, their placement on nodes,
//! each node's assignment stream and the state the nodes report back.
//!
//! Pure decisions (`addressing`, `tokens`, `registration`, `liveness`, `placement`, `app_spec`,
//! `apps`) sit apart from effects (`store` owns the SQLite file, `service` the lock and the event
//! broadcast, `api`, `watch` and `assignments_watch` the HTTP surface, `server` the process
//! lifecycle). The `tabbify-coordinator` binary only parses arguments and calls
//! [`server::Server`].

pub mod addressing;
pub mod admin_token;
pub mod api;
pub mod app_spec;
pub mod apps;
pub mod assignments_watch;
pub mod config;
pub mod guards;
pub mod ingress;
pub mod listener;
pub mod liveness;
pub mod metrics;
pub mod node_auth;
pub mod operator_tokens;
pub mod placement;
pub mod registration;
pub mod replica_address;
pub mod server;
pub mod server_certs;
pub mod service;
pub mod store;
pub mod stream_limit;
pub mod tokens;
pub mod watch;
