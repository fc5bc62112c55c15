//! Runs the app as init's child and stays PID 1 around it: reaps every orphan, turns a stop line
//! from the host (console input) into SIGTERM then SIGKILL after the grace period, and when the
//! app is gone ends whatever else is left so the VM can power off.

use crate::sys;
use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tabbify_vm_init::contract::{GuestApp, GuestEvent, StopRequest};

/// How often the loop looks for exited children while nothing else happens.
const TICK: Duration = Duration::from_millis(20);
/// How long the rest of the processes get after SIGTERM once the app is gone.
const REST_GRACE: Duration = Duration::from_millis(500);

/// Starts the app, waits for its end, returns the code init should exit with.
pub fn run(app: &GuestApp) -> Result<i32> {
    let (program, args) = app.argv.split_first().context("empty command")?;
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(app.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(&app.workdir)
        .uid(app.uid)
        .gid(app.gid)
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program:?} in {}", app.workdir))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
    // Reaped below with waitpid(-1), together with orphans; the handle is not needed.
    drop(child);
    sys::report(&GuestEvent::AppStarted { pid: child_id(pid) });

    let stop = listen_for_stop();
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = reap(pid) {
            break st;
        }
        if let Some(at) = kill_at
            && Instant::now() >= at
        {
            let _ = killpg(pid, Signal::SIGKILL);
            kill_at = None;
        }
        if let Ok(req) = stop.recv_timeout(TICK) {
            sys::report(&GuestEvent::Stopping {
                grace_ms: req.grace_ms,
            });
            let _ = killpg(pid, Signal::SIGTERM);
            kill_at = Some(Instant::now() + Duration::from_millis(req.grace_ms));
        }
    };
    let (event, code) = match status {
        WaitStatus::Exited(_, code) => (GuestEvent::AppExited { code }, code),
        WaitStatus::Signaled(_, sig, _) => (
            GuestEvent::AppKilled { signal: sig as i32 },
            128 + sig as i32,
        ),
        _ => (GuestEvent::AppExited { code: 1 }, 1),
    };
    sys::report(&event);
    end_the_rest();
    Ok(code)
}

fn child_id(pid: Pid) -> u32 {
    u32::try_from(pid.as_raw()).unwrap_or(0)
}

/// Reaps every exited child; returns the app's status once it is among them.
fn reap(app: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(st) => {
                if st.pid() == Some(app)
                    && matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                {
                    found = Some(st);
                }
            }
        }
    }
}

/// Reads console input lines on a thread; stop requests come out of the channel. Echo is turned
/// off first so the host's line does not show up in the console output.
fn listen_for_stop() -> mpsc::Receiver<StopRequest> {
    let (tx, rx) = mpsc::channel();
    let stdin = std::io::stdin();
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&stdin) {
        t.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    std::thread::spawn(move || {
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if let Some(req) = StopRequest::parse(&line)
                && tx.send(req).is_err()
            {
                break;
            }
        }
    });
    rx
}

/// As PID 1 only: SIGTERM to every process but init, a short wait, SIGKILL to the rest, reap them all.
fn end_the_rest() {
    if std::process::id() != 1 {
        return; // kill(-1) outside a VM would hit every process of the user
    }
    let everyone = Pid::from_raw(-1);
    if kill(everyone, Signal::SIGTERM).is_err() {
        return; // nobody left
    }
    let deadline = Instant::now() + REST_GRACE;
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(TICK),
            _ => {}
        }
    }
    let _ = kill(everyone, Signal::SIGKILL);
    while waitpid(None, None).is_ok() {}
}
