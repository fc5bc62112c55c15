//! The bodies of a node's app API (`/v1/apps` on the supervisor's control API): what an operator,
//! `tcli` or the coordinator reads about the apps one node runs. Between our own components, so
//! unknown fields are ignored and new [`AppState`]s read as `Other` in an older client.

use crate::Timestamp;
use crate::app::{AppId, AppName, ArtifactDigest, RestartPolicy, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Where an app is in its life on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// The first version is loading; the deploy request has not been answered yet.
    Deploying,
    /// A runner was started and is loading the app.
    Starting,
    /// The runner answers requests.
    Running,
    /// The runner exited; a restart is scheduled.
    Backoff,
    /// The runner failed again and again without a healthy period; restarts continue with growing
    /// delays.
    Crashloop,
    /// Too many consecutive failures: no more restarts until `POST /v1/apps/{id}/reset`.
    Parked,
    /// The runner exited and the restart policy does not restart it (`never`, or a clean exit
    /// under `on-failure`). `start` runs it again.
    Exited,
    /// A stop was requested and the runner is draining.
    Stopping,
    /// Stopped by the operator.
    Stopped,
    /// A delete was requested; the runner is going away.
    Deleting,
    #[serde(other)]
    Other,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Deploying => "deploying",
            AppState::Starting => "starting",
            AppState::Running => "running",
            AppState::Backoff => "backoff",
            AppState::Crashloop => "crashloop",
            AppState::Parked => "parked",
            AppState::Exited => "exited",
            AppState::Stopping => "stopping",
            AppState::Stopped => "stopped",
            AppState::Deleting => "deleting",
            AppState::Other => "other",
        }
    }
}

impl std::fmt::Display for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The restart policy's bookkeeping for one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartStatus {
    pub policy: RestartPolicy,
    /// Restarts the policy made since this version was deployed.
    pub restarts: u32,
    /// Exits in a row without a healthy period in between.
    pub consecutive_failures: u32,
    /// The app is parked after this many consecutive restarts; `None` never parks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// When the scheduled restart happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<Timestamp>,
}

/// How a runner ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    pub at: Timestamp,
    /// The exit code, when the runner exited by itself and the supervisor saw its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// For people: `exit code 1`, `killed by SIGKILL`, ...
    pub description: String,
    /// The runner's own last error (e.g. why the app did not load), when it printed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the runner had been up.
    pub uptime_ms: u64,
}

/// `GET /v1/apps/{id}`, and the answer to deploy and to the lifecycle requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub app_id: AppId,
    pub name: AppName,
    pub runtime: RuntimeKind,
    pub state: AppState,
    /// Where the app serves: `127.0.0.1:<port>` without the mesh, `[<addr in the node's /64>]:<port>`
    /// with it.
    pub address: SocketAddr,
    /// `http://<address>/`.
    pub url: String,
    /// The deployed version: 1 for the first deploy, one more for every redeploy.
    pub version: u32,
    pub artifact_digest: ArtifactDigest,
    /// The process serving the app, when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pid: Option<u32>,
    /// When the current runner started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    pub deployed_at: Timestamp,
    pub restart: RestartStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// Set while the node cannot run the app's runtime at all (a docker app whose node lost its
    /// Docker daemon): why. The state is then what the supervisor last saw, and restarts fail
    /// until the runtime is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_unavailable: Option<String>,
}

/// `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_snake_case_and_unknown_ones_read_as_other() {
        let json = serde_json::to_string(&AppState::Crashloop).unwrap();
        assert_eq!(json, "\"crashloop\"");
        let s: AppState = serde_json::from_str("\"hibernating\"").unwrap();
        assert_eq!(s, AppState::Other);
        for s in [AppState::Running, AppState::Parked, AppState::Deleting] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn info_round_trips_and_ignores_unknown_fields() {
        let info = AppInfo {
            app_id: AppId::new("hello-0a1b2c3d").unwrap(),
            name: AppName::new("hello").unwrap(),
            runtime: RuntimeKind::Wasm,
            state: AppState::Running,
            address: "127.0.0.1:40000".parse().unwrap(),
            url: "http://127.0.0.1:40000/".into(),
            version: 2,
            artifact_digest: ArtifactDigest::parse(format!("sha256:{}", "ab".repeat(32))).unwrap(),
            runner_pid: Some(42),
            started_at: Some(Timestamp(1_764_000_000_000)),
            deployed_at: Timestamp(1_764_000_000_000),
            restart: RestartStatus {
                policy: RestartPolicy::OnFailure,
                restarts: 1,
                consecutive_failures: 0,
                max_restarts: None,
                next_restart_at: None,
            },
            last_exit: Some(LastExit {
                at: Timestamp(1_764_000_000_000),
                code: None,
                signal: Some(9),
                description: "killed by SIGKILL".into(),
                error: None,
                uptime_ms: 1500,
            }),
            runtime_unavailable: None,
        };
        let mut value = serde_json::to_value(&info).unwrap();
        value["from_the_future"] = serde_json::json!(true);
        let back: AppInfo = serde_json::from_value(value).unwrap();
        assert_eq!(back, info);
    }
}
