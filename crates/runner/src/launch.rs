//! Starting a runner so that it outlives the supervisor, and recognising it again later.
//!
//! [`spawn_runner`] starts `tabbify-runner --app-dir DIR` in a session of its own (setsid), with
//! its output in the app directory rather than a pipe to the supervisor, and returns the
//! [`RunnerIdentity`] the supervisor records. After a supervisor restart, [`check_runner`] decides
//! whether the recorded runner is still the same live process: the pid alone is not enough (pids
//! are reused), so the start time from `/proc/<pid>/stat` must match and the control socket must
//! answer `ping` with the right app id.

use crate::app_dir::{AppDir, AppDirError};
use crate::client::RunnerClient;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tabbify_wire::app::AppId;
use tabbify_wire::runner::RunnerIdentity;

/// Why a runner could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    AppDir(#[from] AppDirError),
    #[error("cannot open runner output file {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: PathBuf, source: io::Error },
    #[error("runner pid {pid} vanished before its start time could be read: {source}")]
    Vanished { pid: u32, source: io::Error },
}

/// Starts a detached runner for the app in `app_dir` (which must hold a readable `spec.json`).
/// The runner gets its own session, stdin from /dev/null and stdout/stderr appended to
/// `DIR/runner.out`. The child is reaped by a background thread, so it never lingers as a zombie
/// while the supervisor lives; if the supervisor dies, the runner carries on.
pub fn spawn_runner(runner_bin: &Path, app_dir: &Path) -> Result<RunnerIdentity, LaunchError> {
    spawn_runner_with_exit_hook(runner_bin, app_dir, |_| {})
}

/// Like [`spawn_runner`]; the reaper thread also hands the runner's exit status to `on_exit`
/// (the supervisor records how its runner ended: exit code or signal).
pub fn spawn_runner_with_exit_hook(
    runner_bin: &Path,
    app_dir: &Path,
    on_exit: impl FnOnce(io::Result<std::process::ExitStatus>) + Send + 'static,
) -> Result<RunnerIdentity, LaunchError> {
    let dir = AppDir::new(app_dir);
    dir.read_spec()?;
    let out_path = dir.output_path();
    let open_out = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|source| LaunchError::Output {
                path: out_path.clone(),
                source,
            })
    };
    let (stdout, stderr) = (open_out()?, open_out()?);
    let mut command = Command::new(runner_bin);
    command
        .arg("--app-dir")
        .arg(app_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = command.spawn().map_err(|source| LaunchError::Spawn {
        bin: runner_bin.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    let start = process_start_ticks(pid);
    let reaper = std::thread::Builder::new()
        .name(format!("reap-runner-{pid}"))
        .spawn(move || {
            let status = child.wait();
            tracing::info!(pid, ?status, "runner exited");
            on_exit(status);
        });
    if let Err(e) = reaper {
        tracing::warn!(pid, error = %e, "cannot start the reaper thread; the runner may linger as a zombie");
    }
    let start_time_ticks = start.map_err(|source| LaunchError::Vanished { pid, source })?;
    tracing::info!(pid, app_dir = %app_dir.display(), "runner started");
    Ok(RunnerIdentity {
        pid,
        start_time_ticks,
    })
}

/// The fields of `/proc/<pid>/stat` that identify a process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    /// Start time after boot, in clock ticks (field 22).
    pub start_time_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) come fields 4..; the start time is field 22.
    let start_time_ticks = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcStat {
        state,
        start_time_ticks,
    })
}

pub fn read_proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })
}

/// The start time of a live process, in clock ticks after boot.
pub fn process_start_ticks(pid: u32) -> io::Result<u64> {
    read_proc_stat(pid).map(|s| s.start_time_ticks)
}

/// What became of a recorded runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The same process, answering for the same app.
    Alive,
    /// No such process (or only its zombie).
    Gone,
    /// The pid now belongs to another process.
    PidReused,
    /// The process lives but its socket does not answer (hung, or still starting).
    Unresponsive(String),
    /// Something answers on the socket, but not this runner for this app.
    Impostor(String),
}

/// What [`check_runner`] observed, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `None` when `/proc/<pid>/stat` could not be read.
    pub stat: Option<ProcStat>,
    /// The `ping` answer (app id, pid), or why there was none.
    pub ping: Result<(AppId, u32), String>,
}

/// Decides a recorded runner's [`Liveness`] from what was observed.
pub fn judge(expected: &RunnerIdentity, app_id: &AppId, seen: &Observation) -> Liveness {
    let Some(stat) = seen.stat else {
        return Liveness::Gone;
    };
    if stat.state == 'Z' || stat.state == 'X' {
        return Liveness::Gone;
    }
    if stat.start_time_ticks != expected.start_time_ticks {
        return Liveness::PidReused;
    }
    match &seen.ping {
        Err(why) => Liveness::Unresponsive(why.clone()),
        Ok((id, pid)) if id == app_id && *pid == expected.pid => Liveness::Alive,
        Ok((id, pid)) => Liveness::Impostor(format!(
            "socket answered for app {id} pid {pid}, expected app {app_id} pid {}",
            expected.pid
        )),
    }
}

/// Checks a recorded runner: process alive with the recorded start time, and its socket answers
/// `ping` for `app_id` within `timeout`.
pub async fn check_runner(
    expected: &RunnerIdentity,
    app_id: &AppId,
    socket: &Path,
    timeout: Duration,
) -> Liveness {
    let stat = read_proc_stat(expected.pid).ok();
    let ping = if stat.is_some() {
        RunnerClient::new(socket)
            .with_timeout(timeout)
            .ping()
            .await
            .map_err(|e| e.to_string())
    } else {
        Err("process is gone".into())
    };
    judge(expected, app_id, &Observation { stat, ping })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (tabbify (run) er) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 12345 67 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_state_and_start_time_despite_odd_names() {
        assert_eq!(
            parse_proc_stat(STAT),
            Some(ProcStat {
                state: 'S',
                start_time_ticks: 987654
            })
        );
        assert_eq!(parse_proc_stat("1234 (x) S 1 2"), None);
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn reads_our_own_stat() {
        let me = read_proc_stat(std::process::id()).unwrap();
        assert!(me.start_time_ticks > 0);
        assert!(matches!(me.state, 'R' | 'S'), "{me:?}");
    }

    fn seen(state: char, start: u64, ping: Result<(&str, u32), &str>) -> Observation {
        Observation {
            stat: Some(ProcStat {
                state,
                start_time_ticks: start,
            }),
            ping: ping
                .map(|(id, pid)| (AppId::new(id).unwrap(), pid))
                .map_err(str::to_string),
        }
    }

    #[test]
    fn judges_every_case() {
        let id = RunnerIdentity {
            pid: 10,
            start_time_ticks: 500,
        };
        let app = AppId::new("a").unwrap();
        assert_eq!(
            judge(&id, &app, &seen('S', 500, Ok(("a", 10)))),
            Liveness::Alive
        );
        assert_eq!(
            judge(&id, &app, &seen('Z', 500, Ok(("a", 10)))),
            Liveness::Gone
        );
        let none = Observation {
            stat: None,
            ping: Err("x".into()),
        };
        assert_eq!(judge(&id, &app, &none), Liveness::Gone);
        assert_eq!(
            judge(&id, &app, &seen('S', 501, Ok(("a", 10)))),
            Liveness::PidReused
        );
        assert!(matches!(
            judge(&id, &app, &seen('S', 500, Err("timeout"))),
            Liveness::Unresponsive(_)
        ));
        assert!(matches!(
            judge(&id, &app, &seen('S', 500, Ok(("b", 10)))),
            Liveness::Impostor(_)
        ));
        assert!(matches!(
            judge(&id, &app, &seen('R', 500, Ok(("a", 11)))),
            Liveness::Impostor(_)
        ));
    }
}
