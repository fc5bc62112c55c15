//! The supervisor's hands on runner processes: start one (detached, in its own session, so it
//! outlives the supervisor), learn when it exits (its exit status while it is our child; a pidfd
//! once it was adopted after a supervisor restart, when only the kernel can tell), watch its
//! health over the control socket, kill it by identity, and find why it failed in its output.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tabbify_runner::RunnerClient;
use tabbify_runner::launch::{LaunchError, read_proc_stat};
use tabbify_wire::runner::{RunnerIdentity, RunnerOp, RunnerReply, RunnerState};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// Health checks in a row that must fail before a serving runner counts as hung.
pub const UNHEALTHY_AFTER: u32 = 3;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of the runner's output is searched for its last error.
const OUTPUT_TAIL: u64 = 64 * 1024;
/// The prefix of the runner's fatal error line on stderr.
const FATAL_PREFIX: &str = "tabbify-runner: ";

/// A runner just started.
pub struct Spawned {
    pub identity: RunnerIdentity,
    pub exit: oneshot::Receiver<io::Result<ExitStatus>>,
    /// The size of `runner.out` before the runner started: its own output begins here.
    pub output_offset: u64,
}

/// Starts the runner for the app directory `version_dir` (which holds `spec.json`).
pub fn spawn(runner_bin: &Path, version_dir: &Path) -> Result<Spawned, LaunchError> {
    let output = tabbify_runner::AppDir::new(version_dir).output_path();
    let output_offset = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let (tx, exit) = oneshot::channel();
    let identity =
        tabbify_runner::spawn_runner_with_exit_hook(runner_bin, version_dir, move |status| {
            let _ = tx.send(status);
        })?;
    Ok(Spawned {
        identity,
        exit,
        output_offset,
    })
}

/// How the supervisor learns that a runner ended.
pub enum ExitSource {
    /// Our child: the reaper thread hands over its exit status.
    Child(oneshot::Receiver<io::Result<ExitStatus>>),
    /// Adopted after a supervisor restart: not our child, so only its disappearance is seen.
    Adopted,
}

/// The exit status, as far as the supervisor saw it (both `None`: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeenExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl SeenExit {
    pub fn from_status(status: ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit code 1`, `killed by SIGKILL`, `exit status unknown`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(s) => format!("killed by {}", s.as_str()),
                Err(_) => format!("killed by signal {sig}"),
            },
            (None, None) => {
                "exit status unknown (the runner was adopted after a supervisor restart)".into()
            }
        }
    }
}

/// Whether the process of `identity` still lives (same pid, same start time, not a zombie).
pub fn alive(identity: &RunnerIdentity) -> bool {
    read_proc_stat(identity.pid).is_ok_and(|s| {
        s.start_time_ticks == identity.start_time_ticks && s.state != 'Z' && s.state != 'X'
    })
}

/// SIGKILL to the runner of `identity`, if it is still that process. True when sent.
pub fn kill(identity: &RunnerIdentity) -> bool {
    if !alive(identity) {
        return false;
    }
    let Ok(pid) = i32::try_from(identity.pid) else {
        return false;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

/// Kills the runner of `identity` and waits (up to `timeout`) until it is gone.
pub async fn kill_and_wait(identity: &RunnerIdentity, timeout: Duration) -> bool {
    kill(identity);
    tokio::time::timeout(timeout, wait_gone(*identity))
        .await
        .is_ok()
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; no memory
    // is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `fd` is a descriptor the kernel just created for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolves once the process of `identity` has ended. Uses a pidfd (readable when the process
/// exits, child or not); polls `/proc` where pidfds are unavailable.
pub async fn wait_gone(identity: RunnerIdentity) {
    match pidfd_open(identity.pid) {
        Ok(fd) => {
            // The pid could have been reused before the pidfd was opened.
            if !alive(&identity) {
                return;
            }
            // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open (and the same
            // descriptor) for its whole life.
            if let Ok(fd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                let _ = fd.readable().await;
                return;
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(_) => {}
    }
    while alive(&identity) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_exit(identity: RunnerIdentity, source: ExitSource) -> SeenExit {
    if let ExitSource::Child(rx) = source
        && let Ok(Ok(status)) = rx.await
    {
        return SeenExit::from_status(status);
    }
    wait_gone(identity).await;
    SeenExit::default()
}

/// What a runner's watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerEvent {
    /// It answers health checks: it serves.
    Serving,
    /// It does not serve when it should (hung, or not up in time).
    Unresponsive(String),
    Exited(SeenExit),
}

/// How a watcher checks health.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// Between checks of a serving runner.
    pub health_every: Duration,
    /// A runner not serving this long after its start counts as unresponsive.
    pub start_timeout: Duration,
}

/// Poll quickly while a runner starts (a warm start takes milliseconds), then back off.
fn startup_poll(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(500) {
        Duration::from_millis(3)
    } else if elapsed < Duration::from_secs(5) {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(200)
    }
}

/// Watches one runner until it exits, reporting `Serving` once it serves, `Unresponsive` once
/// when it stops answering (or never starts), and finally `Exited`.
pub async fn watch(
    identity: RunnerIdentity,
    socket: PathBuf,
    exit: ExitSource,
    settings: WatchSettings,
    report: impl Fn(RunnerEvent) + Send + 'static,
) {
    let exited = wait_exit(identity, exit);
    tokio::pin!(exited);
    let client = RunnerClient::new(socket).with_timeout(HEALTH_TIMEOUT);
    let began = Instant::now();
    let mut serving = false;
    let mut failures = 0u32;
    let mut flagged = false;
    loop {
        let pause = if serving {
            settings.health_every
        } else {
            startup_poll(began.elapsed())
        };
        let check = async {
            tokio::time::sleep(pause).await;
            client.request(RunnerOp::Health).await
        };
        tokio::select! {
            seen = &mut exited => {
                report(RunnerEvent::Exited(seen));
                return;
            }
            answer = check => {
                let problem = match answer {
                    Ok(RunnerReply::Health { healthy: true, .. }) => {
                        failures = 0;
                        if !serving {
                            serving = true;
                            report(RunnerEvent::Serving);
                        }
                        None
                    }
                    // Draining after a stop: only the exit matters now.
                    Ok(RunnerReply::Health { state: RunnerState::Stopping, .. }) => None,
                    other => {
                        let why = match other {
                            Ok(reply) => format!("health check answered {reply:?}"),
                            Err(e) => e.to_string(),
                        };
                        if serving {
                            failures += 1;
                            (failures >= UNHEALTHY_AFTER).then(|| {
                                format!("{UNHEALTHY_AFTER} health checks in a row failed, the last with: {why}")
                            })
                        } else if began.elapsed() >= settings.start_timeout {
                            Some(format!(
                                "not serving {} s after it started ({why})",
                                settings.start_timeout.as_secs()
                            ))
                        } else {
                            None
                        }
                    }
                };
                if let Some(why) = problem
                    && !flagged
                {
                    flagged = true;
                    report(RunnerEvent::Unresponsive(why));
                }
            }
        }
    }
}

/// The runner's fatal error (its last `tabbify-runner: ...` line) in `output` after `offset`.
pub fn runner_error(output: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(output).ok()?;
    let len = file.metadata().ok()?.len();
    let start = offset.max(len.saturating_sub(OUTPUT_TAIL));
    if start >= len {
        return None;
    }
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut text = String::new();
    file.take(OUTPUT_TAIL).read_to_string(&mut text).ok()?;
    last_fatal_line(&text)
}

fn last_fatal_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(FATAL_PREFIX))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// Kills a runner whose pid file is in `version_dir` and whose command line names that
/// directory: one started just before a supervisor crash, before its identity was recorded.
pub async fn kill_unrecorded(version_dir: &Path) {
    let app_dir = tabbify_runner::AppDir::new(version_dir);
    let Some(pid) = app_dir.read_pid() else {
        return;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let needle = version_dir.as_os_str().as_bytes();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == needle);
    if !ours {
        return;
    }
    if let Ok(start_time_ticks) = tabbify_runner::launch::process_start_ticks(pid) {
        let identity = RunnerIdentity {
            pid,
            start_time_ticks,
        };
        tracing::warn!(pid, dir = %version_dir.display(), "killing an unrecorded runner");
        kill_and_wait(&identity, Duration::from_secs(3)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exits() {
        assert_eq!(
            SeenExit {
                code: Some(1),
                signal: None
            }
            .describe(),
            "exit code 1"
        );
        assert_eq!(
            SeenExit {
                code: None,
                signal: Some(9)
            }
            .describe(),
            "killed by SIGKILL"
        );
        assert!(SeenExit::default().describe().contains("unknown"));
        assert!(
            SeenExit {
                code: Some(0),
                signal: None
            }
            .is_clean()
        );
        assert!(!SeenExit::default().is_clean());
    }

    #[test]
    fn finds_the_last_fatal_line_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runner.out");
        let first = "2025 INFO starting\ntabbify-runner: cannot load the app: old failure\n";
        std::fs::write(&out, first).unwrap();
        assert_eq!(
            runner_error(&out, 0).as_deref(),
            Some("cannot load the app: old failure")
        );
        // A later runner's output starts after the offset; it has no fatal line yet.
        let offset = first.len() as u64;
        assert_eq!(runner_error(&out, offset), None);
        let mut all = first.to_string();
        all.push_str("2025 WARN x\ntabbify-runner: cannot listen on 127.0.0.1:1: denied\n");
        std::fs::write(&out, &all).unwrap();
        assert_eq!(
            runner_error(&out, offset).as_deref(),
            Some("cannot listen on 127.0.0.1:1: denied")
        );
        assert_eq!(runner_error(&dir.path().join("missing"), 0), None);
    }

    #[tokio::test]
    async fn sees_a_child_exit_through_the_pidfd_and_kills_by_identity() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let identity = RunnerIdentity {
            pid,
            start_time_ticks: tabbify_runner::launch::process_start_ticks(pid).unwrap(),
        };
        assert!(alive(&identity));
        let wrong = RunnerIdentity {
            start_time_ticks: identity.start_time_ticks + 1,
            ..identity
        };
        assert!(!kill(&wrong), "a different start time is another process");
        assert!(alive(&identity));
        let waiter = tokio::spawn(wait_gone(identity));
        assert!(kill(&identity));
        let status = child.wait().unwrap();
        assert_eq!(SeenExit::from_status(status).signal, Some(9));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_gone did not see the exit")
            .unwrap();
        assert!(!alive(&identity));
        assert!(!kill(&identity), "nothing left to kill");
    }
}
