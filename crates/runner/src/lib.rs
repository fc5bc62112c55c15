//! The app runner: one process per app, started by the supervisor with an app directory.
//!
//! `tabbify-runner --app-dir DIR` reads `DIR/spec.json` ([`tabbify_wire::runner::RunnerSpec`]),
//! serves the app on the spec's listen address, writes the app's output to its rotating log, and
//! answers the supervisor on a unix socket ([`control`]). It runs in its own session so it
//! outlives a supervisor restart; the supervisor starts it with [`launch::spawn_runner`] and
//! recognises it again with [`launch::check_runner`]. The runtime behind the spec is a
//! [`runtime::LoadedApp`]: a wasm component today, containers and microVMs later.

pub mod app_dir;
pub mod client;
pub mod control;
pub mod launch;
pub mod log_file;
pub mod run;
pub mod runtime;
pub mod stats;

pub use app_dir::AppDir;
pub use client::{ClientError, RunnerClient};
pub use launch::{Liveness, check_runner, spawn_runner, spawn_runner_with_exit_hook};
pub use run::{READY_MARKER, RunError, START_FAILED, run};
