//! The candidate's check mode: before a release may replace the running one, its supervisor
//! starts on a spare loopback port with a throwaway identity (`--no-mesh --bind 127.0.0.1:0
//! --data-dir <tmp>`), must print its listening line, answer a healthy `/health` of its own
//! version, and stop cleanly on SIGTERM. It never touches the node's state directory, its mesh
//! identity, port 8730 or the control socket, so the running node is undisturbed.

use crate::health::{probe, probe_client};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The line the supervisor prints once its API listens, followed by the URL.
pub const LISTENING_MARKER: &str = "tabbify-supervisor listening on ";

#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// The binary in the release directory to run.
    pub binary: String,
    /// For the whole check: start, health, stop.
    pub timeout: Duration,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            binary: "tabbify-supervisor".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a candidate failed its check (the text goes into the quarantine record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}{}", stderr_suffix(.stderr))]
pub struct CheckFailure {
    pub what: String,
    /// The last lines the candidate wrote to stderr.
    pub stderr: String,
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {}", stderr.trim())
    }
}

/// Runs the check of the release in `release_dir`, which claims to be `version`.
pub async fn check_candidate(
    release_dir: &Path,
    version: &str,
    settings: &CheckSettings,
) -> Result<(), CheckFailure> {
    let fail = |what: String| CheckFailure {
        what,
        stderr: String::new(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("tabbify-check-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a scratch state directory: {e}")))?;
    let binary = release_dir.join(&settings.binary);
    let mut child = Command::new(&binary)
        .args(["--no-mesh", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.path())
        // The unit's environment must not reach the candidate: not TABBIFY_BIND or a join token,
        // and above all not NOTIFY_SOCKET (it would tell systemd it is the service's main process).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        // Not the node's control socket either (an environment variable, which a release
        // older than the socket ignores, where a flag would fail it).
        .env("TABBIFY_CONTROL_SOCKET", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", binary.display())))?;
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let tail_task = child
        .stderr
        .take()
        .map(|err| tokio::spawn(keep_tail(err, stderr_tail.clone())));
    let result = tokio::time::timeout(settings.timeout, run_check(&mut child, version)).await;
    let outcome = match result {
        Ok(r) => r,
        Err(_) => Err(format!(
            "did not pass its check within {:?}",
            settings.timeout
        )),
    };
    // Whatever happened, the candidate does not outlive the check.
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(task) = tail_task {
        // The pipe is closed now; let the reader take the last lines.
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    outcome.map_err(|what| {
        let tail = stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<String>>().join(" | "))
            .unwrap_or_default();
        CheckFailure { what, stderr: tail }
    })
}

async fn run_check(child: &mut Child, version: &str) -> Result<(), String> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if let Some(rest) = line.split_once(LISTENING_MARKER).map(|(_, r)| r) {
                    break rest.trim().to_string();
                }
            }
            Ok(None) | Err(_) => {
                let status = child.wait().await.map_err(|e| e.to_string())?;
                return Err(format!(
                    "exited ({}) before its API listened",
                    describe(status)
                ));
            }
        }
    };
    // Keep draining stdout so the candidate never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let http = probe_client();
    let health_url = format!("{url}/health");
    let mut last = String::new();
    let mut healthy = false;
    for _ in 0..50 {
        match probe(&http, &health_url, version).await {
            Ok(h) if h.mesh == tabbify_wire::health::MeshState::NoMesh => {
                healthy = true;
                break;
            }
            Ok(h) => last = format!("reports mesh state {:?} in check mode", h.mesh),
            Err(e) => last = e,
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({}) during its check", describe(status)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !healthy {
        return Err(format!("/health was not healthy: {last}"));
    }

    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or("exited right after answering /health")?;
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("cannot send SIGTERM: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "answered /health but did not stop cleanly on SIGTERM ({})",
            describe(status)
        )),
        Ok(Err(e)) => Err(format!("waiting for it to stop: {e}")),
        Err(_) => Err("did not stop within 10s of SIGTERM".into()),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

async fn keep_tail(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut t) = tail.lock() {
            if t.len() == 8 {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}
