//! The node: `tabbify-supervisor` joins the coordinator with a durable identity, advertises what
//! this machine can run (mesh tags), keeps its roster entry alive with heartbeats and serves the
//! control API (`/health`, `/v1/about`, `/v1/apps`). Apps run in one `tabbify-runner` process
//! each, managed by [`apps`]; [`assignments`] follows what the coordinator places on this node,
//! and [`ingress`] (with `--ingress`) serves the mesh's apps to clients outside it.
//!
//! Decisions (backoff, tags from capabilities) are pure functions in their own modules; the tasks
//! in `join` and `probe` only do I/O. The node's status has one owner, a `watch` channel
//! ([`status::StatusHandle`]), which the API reads.

pub mod api;
pub mod api_server;
pub mod apps;
pub mod assignments;
pub mod backoff;
pub mod config;
pub mod control_auth;
pub mod endpoints;
pub mod ingress;
pub mod join;
pub mod mesh_link;
pub mod metrics;
pub mod node_tls;
pub mod probe;
pub mod roster;
pub mod run;
pub mod status;
pub mod systemd;
