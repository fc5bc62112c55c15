//! App manifests (`tabbify.toml`): what an operator writes to describe an app.
//!
//! The operator's TOML is parsed strictly in [`parse`] (unknown keys and missing fields are
//! errors with a line and column) and validated into [`Manifest`]. The validated form travels
//! between our own components as JSON (inside a runner's spec, in the supervisor's records), where
//! unknown fields are ignored so that a newer supervisor can hand a spec to an older runner.
//! Field-by-field documentation for operators is in `docs/manifest.md`.

mod ids;
mod parse;

pub use ids::{AppId, AppIdError, AppName, AppNameError, ArtifactDigest, DigestError};
pub use parse::{ManifestError, Position};

use crate::tag::Tag;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default `[http] port`.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default `[resources] memory_mb`.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Smallest accepted `[resources] memory_mb`.
pub const MIN_MEMORY_MB: u32 = 8;
/// Largest accepted `[resources] memory_mb` (64 GiB).
pub const MAX_MEMORY_MB: u32 = 65_536;
/// Default `[resources] cpus`.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Smallest accepted `[resources] cpus`.
pub const MIN_CPUS: f64 = 0.05;
/// Largest accepted `[resources] cpus`.
pub const MAX_CPUS: f64 = 256.0;
/// Largest accepted `[app] replicas`.
pub const MAX_REPLICAS: u32 = 64;

/// A validated app manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub app: AppSection,
    pub runtime: RuntimeSpec,
    pub http: HttpSection,
    pub resources: Resources,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub restart: RestartSpec,
}

impl Manifest {
    /// Parses and validates the text of a `tabbify.toml`.
    pub fn from_toml_str(text: &str) -> Result<Self, ManifestError> {
        parse::parse_manifest(text)
    }

    /// The mesh tag a node must carry to run this app.
    pub fn required_tag(&self) -> Tag {
        match self.runtime {
            RuntimeSpec::Wasm(_) => Tag::wasm(),
            RuntimeSpec::Docker(_) => Tag::docker(),
            RuntimeSpec::Firecracker(_) => Tag::firecracker(),
        }
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.resources.memory_mb) * 1024 * 1024
    }
}

/// `[app]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSection {
    pub name: AppName,
    /// How many copies placement should run (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

/// The runtime kinds an app can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Wasm,
    Docker,
    Firecracker,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Firecracker => "firecracker",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[runtime]`: the kind plus that kind's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuntimeSpec {
    Wasm(WasmRuntime),
    Docker(DockerRuntime),
    Firecracker(FirecrackerRuntime),
}

impl RuntimeSpec {
    pub fn kind(&self) -> RuntimeKind {
        match self {
            RuntimeSpec::Wasm(_) => RuntimeKind::Wasm,
            RuntimeSpec::Docker(_) => RuntimeKind::Docker,
            RuntimeSpec::Firecracker(_) => RuntimeKind::Firecracker,
        }
    }
}

/// A WASI component exporting `wasi:http/incoming-handler`. Exactly one source is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmRuntime {
    /// Path of the `.wasm`, relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// A staged artifact, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactDigest>,
}

/// A container run by the node's Docker daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRuntime {
    pub image: String,
    /// Overrides the image's command when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default)]
    pub network: DockerNetwork,
}

/// The Docker network mode of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerNetwork {
    #[default]
    Bridge,
    Host,
    None,
}

/// A microVM. Exactly one of `image` (an OCI image to turn into a root filesystem) and `rootfs`
/// (an ext4 image) is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerRuntime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// Guest kernel; the node's default kernel when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Let the guest open connections beyond its node (forwarded and masqueraded through the
    /// node's own addresses). Off: the guest reaches nothing but the host side of its tap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress: bool,
}

/// `[http]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSection {
    /// The port the app is served on.
    pub port: u16,
}

/// `[resources]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_mb: u32,
    pub cpus: f64,
}

/// When the supervisor restarts an app that exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// `[restart]`: the policy and its exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    /// Delay before the second restart of a run of failures (the first one is immediate).
    pub backoff_initial_ms: u64,
    /// Upper bound of the delay.
    pub backoff_max_ms: u64,
    /// Factor applied to the delay after each restart.
    pub backoff_multiplier: f64,
    /// An app that stayed up this long is healthy again: the delay starts over.
    pub reset_after_ms: u64,
    /// Give up after this many consecutive restarts; `None` never gives up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// This many failures in a row, without a healthy period between, mark the app
    /// `crashloop` (it keeps being restarted, with growing delays).
    #[serde(default = "default_crashloop_after")]
    pub crashloop_after: u32,
}

/// Default `[restart] crashloop_after`.
pub const DEFAULT_CRASHLOOP_AFTER: u32 = 3;

fn default_crashloop_after() -> u32 {
    DEFAULT_CRASHLOOP_AFTER
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::OnFailure,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            backoff_multiplier: 2.0,
            reset_after_ms: 60_000,
            max_restarts: None,
            crashloop_after: DEFAULT_CRASHLOOP_AFTER,
        }
    }
}
