//! The versioned request/response protocol between the supervisor and a runner (unix socket),
//! and the spec a runner is started with.
//!
//! A runner is one process per app. The supervisor prepares an app directory holding
//! [`SPEC_FILE`] (a [`RunnerSpec`]), starts `tabbify-runner --app-dir DIR`, and talks to it over
//! the unix socket named in the spec: newline-delimited JSON, one request per line, one response
//! line per request, every message carrying `"v": 1`. A request with another version gets an
//! `unsupported_version` error response (never silence), so an old runner and a new supervisor
//! find out at once. Unknown fields are ignored in both directions.

use crate::app::{AppId, AppName, Manifest, RuntimeKind};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The protocol version this build speaks.
pub const RUNNER_PROTOCOL_VERSION: u32 = 1;
/// The spec's file name inside an app directory.
pub const SPEC_FILE: &str = "spec.json";
/// The file inside an app directory where a runner writes its pid (decimal, newline).
pub const PID_FILE: &str = "runner.pid";
/// Where a detached runner's own stdout/stderr go, inside the app directory.
pub const RUNNER_OUTPUT_FILE: &str = "runner.out";
/// Default grace period of a `stop` without `grace_ms`, and of SIGTERM.
pub const DEFAULT_STOP_GRACE_MS: u64 = 5_000;
/// Longest request line a runner reads.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Everything a runner needs to serve one app. Written by the supervisor as `DIR/spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerSpec {
    pub app_id: AppId,
    pub manifest: Manifest,
    /// The artifact to run: for wasm, the component's `.wasm` file.
    pub artifact: PathBuf,
    /// Where the app is served: loopback in no-mesh mode, an address in the node's /64 otherwise.
    pub listen: SocketAddr,
    /// The app's log (guest stdout and stderr, and the runner's load errors).
    pub log_file: PathBuf,
    /// The log rotates when it would grow past this many bytes.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated files kept besides the current one (`app.log.1` ... `app.log.N`).
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
    /// The runner's control socket.
    pub socket: PathBuf,
    /// Compiled code, shared by every runner of the node.
    pub cache_dir: PathBuf,
    /// A request still running after this long is cut off with 504.
    pub request_deadline_ms: u64,
    /// Requests served at the same time; more wait for a free slot.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: u32,
    /// The node's guest kernel for microVM apps (`--vm-kernel`); a `modules/` directory and the
    /// guest init (`tabbify-vm-init`) may sit beside it. Ignored by other runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_kernel: Option<PathBuf>,
}

fn default_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_log_keep() -> u32 {
    2
}
fn default_max_concurrent_requests() -> u32 {
    64
}

impl RunnerSpec {
    pub fn name(&self) -> &AppName {
        &self.manifest.app.name
    }

    pub fn runtime_kind(&self) -> RuntimeKind {
        self.manifest.runtime.kind()
    }
}

/// How the supervisor recognises its runner after a restart: a pid alone can be reused, a pid
/// with the process's start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot)
/// cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunnerIdentity {
    pub pid: u32,
    pub start_time_ticks: u64,
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRequest {
    pub v: u32,
    #[serde(flatten)]
    pub op: RunnerOp,
}

impl RunnerRequest {
    pub fn new(op: RunnerOp) -> Self {
        Self {
            v: RUNNER_PROTOCOL_VERSION,
            op,
        }
    }
}

/// What the supervisor asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RunnerOp {
    /// Are you there, and who are you?
    Ping,
    /// Are you serving?
    Health,
    /// Counters and state.
    Status,
    /// Stop accepting requests, let in-flight ones finish for up to `grace_ms`, exit.
    Stop {
        #[serde(default = "default_grace")]
        grace_ms: u64,
    },
}

fn default_grace() -> u64 {
    DEFAULT_STOP_GRACE_MS
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerResponse {
    pub v: u32,
    #[serde(flatten)]
    pub reply: RunnerReply,
}

impl RunnerResponse {
    pub fn new(reply: RunnerReply) -> Self {
        Self {
            v: RUNNER_PROTOCOL_VERSION,
            reply,
        }
    }
}

/// What a runner answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum RunnerReply {
    Pong {
        app_id: AppId,
        pid: u32,
    },
    Health {
        healthy: bool,
        state: RunnerState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Status(RunnerStatus),
    Stopping {
        grace_ms: u64,
    },
    Error {
        code: RunnerErrorCode,
        message: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerErrorCode {
    /// The request's `v` is not one this runner speaks.
    UnsupportedVersion,
    /// Not JSON, no `v`, an unknown `op`, or a line too long.
    BadRequest,
    #[serde(other)]
    Other,
}

/// Where a runner is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Loading the artifact; not serving yet.
    Starting,
    /// Accepting requests.
    Serving,
    /// Draining after `stop` or SIGTERM.
    Stopping,
}

/// Whether the compiled code came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileCache {
    /// Loaded from the cache; nothing compiled.
    Hit,
    /// Compiled now and written to the cache.
    Miss,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStatus {
    pub app_id: AppId,
    pub name: AppName,
    pub pid: u32,
    pub runtime: RuntimeKind,
    pub state: RunnerState,
    pub listen: SocketAddr,
    pub started_at: Timestamp,
    /// Requests answered by the app (any status the app chose).
    pub requests_served: u64,
    /// Requests the runner had to answer itself: trap, deadline, memory, bad request.
    pub requests_failed: u64,
    pub requests_in_flight: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<CompileCache>,
    pub software_version: String,
}

/// Why a request line was refused; [`RequestError::into_reply`] is what goes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub code: RunnerErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn into_reply(self) -> RunnerReply {
        RunnerReply::Error {
            code: self.code,
            message: self.message,
        }
    }
}

/// Reads one request line. The version is checked before anything else so that a future request
/// shape never hangs or confuses an older runner.
pub fn decode_request(line: &str) -> Result<RunnerOp, RequestError> {
    let bad = |message: String| RequestError {
        code: RunnerErrorCode::BadRequest,
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| bad(format!("request is not JSON: {e}")))?;
    let Some(v) = value.get("v") else {
        return Err(bad("request has no \"v\" (protocol version)".into()));
    };
    if v.as_u64() != Some(u64::from(RUNNER_PROTOCOL_VERSION)) {
        return Err(RequestError {
            code: RunnerErrorCode::UnsupportedVersion,
            message: format!(
                "protocol version {v} is not supported; this runner speaks v{RUNNER_PROTOCOL_VERSION}"
            ),
        });
    }
    serde_json::from_value::<RunnerRequest>(value)
        .map(|r| r.op)
        .map_err(|e| bad(format!("bad request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_version_and_op() {
        let json =
            serde_json::to_string(&RunnerRequest::new(RunnerOp::Stop { grace_ms: 250 })).unwrap();
        assert_eq!(json, r#"{"v":1,"op":"stop","grace_ms":250}"#);
        assert_eq!(decode_request(r#"{"v":1,"op":"ping"}"#), Ok(RunnerOp::Ping));
        assert_eq!(
            decode_request(r#"{"v":1,"op":"stop"}"#),
            Ok(RunnerOp::Stop {
                grace_ms: DEFAULT_STOP_GRACE_MS
            })
        );
        // Fields from a newer supervisor are ignored.
        assert_eq!(
            decode_request(r#"{"v":1,"op":"status","trace_id":"x"}"#),
            Ok(RunnerOp::Status)
        );
    }

    #[test]
    fn other_versions_get_an_error_reply() {
        for line in [
            r#"{"v":2,"op":"ping"}"#,
            r#"{"v":"1","op":"ping"}"#,
            r#"{"v":0}"#,
        ] {
            match decode_request(line) {
                Err(RequestError { code, message }) => {
                    assert_eq!(code, RunnerErrorCode::UnsupportedVersion, "{line}");
                    assert!(message.contains("speaks v1"), "{message}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        for line in [
            "",
            "ping",
            r#"{"op":"ping"}"#,
            r#"{"v":1,"op":"reboot"}"#,
            r#"{"v":1}"#,
        ] {
            match decode_request(line) {
                Err(RequestError { code, .. }) => {
                    assert_eq!(code, RunnerErrorCode::BadRequest, "{line}")
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            RunnerReply::Pong {
                app_id: AppId::new("hello-1").unwrap(),
                pid: 42,
            },
            RunnerReply::Health {
                healthy: true,
                state: RunnerState::Serving,
                detail: None,
            },
            RunnerReply::Status(RunnerStatus {
                app_id: AppId::new("hello-1").unwrap(),
                name: AppName::new("hello").unwrap(),
                pid: 42,
                runtime: RuntimeKind::Wasm,
                state: RunnerState::Serving,
                listen: "127.0.0.1:8080".parse().unwrap(),
                started_at: Timestamp(1_764_000_000_000),
                requests_served: 3,
                requests_failed: 1,
                requests_in_flight: 0,
                last_error: Some("trap".into()),
                compile_cache: Some(CompileCache::Hit),
                software_version: "0.1.0".into(),
            }),
            RunnerReply::Stopping { grace_ms: 10 },
            RunnerReply::Error {
                code: RunnerErrorCode::BadRequest,
                message: "x".into(),
            },
        ];
        for reply in replies {
            let line = serde_json::to_string(&RunnerResponse::new(reply.clone())).unwrap();
            assert!(line.starts_with(r#"{"v":1,"reply":"#), "{line}");
            let back: RunnerResponse = serde_json::from_str(&line).unwrap();
            assert_eq!(back.reply, reply);
        }
        let future: RunnerResponse =
            serde_json::from_str(r#"{"v":1,"reply":"error","code":"quota","message":"m"}"#)
                .unwrap();
        assert!(matches!(
            future.reply,
            RunnerReply::Error {
                code: RunnerErrorCode::Other,
                ..
            }
        ));
    }
}
