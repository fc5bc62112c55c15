//! Child processes for tests: find the workspace's binaries, start them, read their ready line,
//! and kill them (SIGKILL) when the guard drops.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout};
use std::sync::mpsc;
use std::time::Duration;

/// The workspace root (the directory with the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a binary built by this workspace (`target/<profile>/<name>`), found next to the
/// running test executable. `cargo test --workspace` builds every member's binaries.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile> parent")?;
    let candidate = profile_dir.join(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "binary {name:?} not found at {}; build it with `cargo test --workspace` or `cargo build --bin {name}`",
        candidate.display()
    )
}

/// Kills and reaps the child when dropped, so a failing test leaves no process behind.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child: Some(child),
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal to the child (e.g. `nix::sys::signal::Signal::SIGKILL`).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).context("pid")?);
        nix::sys::signal::kill(pid, sig).context("kill")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for exit up to `timeout`; returns the status, or `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stdout` until a line containing `marker` appears (within `timeout`) and returns the
/// rest of that line after the marker, trimmed. Later lines keep draining in a thread so the
/// child never blocks on a full pipe.
pub fn read_ready_line(stdout: ChildStdout, marker: &str, timeout: Duration) -> Result<String> {
    let (tx, rx) = mpsc::channel();
    let marker_owned = marker.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(idx) = line.find(&marker_owned) {
                let rest = line[idx + marker_owned.len()..].trim().to_string();
                let _ = tx.send(rest);
                sent = true;
            }
        }
    });
    rx.recv_timeout(timeout)
        .with_context(|| format!("no line containing {marker:?} on stdout within {timeout:?}"))
}

/// Processes whose command line (arguments joined by spaces) contains `needle`: pid and command
/// line. Runners outlive their supervisor on purpose, so tests find them, and what they left,
/// by the data directory their command line names.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            (pid != me && cmd.contains(needle)).then_some((pid, cmd.trim_end().to_string()))
        })
        .collect()
}
