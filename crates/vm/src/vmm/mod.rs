//! Virtual machine monitors: the [`Vmm`] trait that turns a [`VmSpec`] into a [`RunningVm`], its
//! two implementations ([`QemuMicrovm`], [`Firecracker`]), and finding which one this machine has.
//!
//! A [`RunningVm`] owns everything the VM holds on the host — the VMM process, its tap, its
//! sockets — and removes all of it when stopped or dropped. Its console goes to the spec's log
//! and is watched for init's events, so waiting for the app can end early with the guest's own
//! reason when the app or init fails.

mod firecracker;
pub mod firecracker_api;
mod qemu;

pub use firecracker::Firecracker;
pub use qemu::{Accel, QEMU_BINARY, QemuMicrovm};

use crate::console::{ConsoleTail, GuestExit, GuestState, spawn_pump};
use crate::error::{IoContext, Result, VmError};
use crate::spec::VmSpec;
use crate::tap::Tap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabbify_vm_init::contract::StopRequest;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

/// Extra time after the grace period for the guest to sync and power off.
const POWER_OFF_SLACK: Duration = Duration::from_secs(10);
/// How long a VMM gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// One connection attempt while waiting for the app's port.
const PROBE_CONNECT: Duration = Duration::from_millis(250);

/// Starts VMs.
pub trait Vmm: Send + Sync {
    /// The VMM's name, for logs and errors.
    fn name(&self) -> &'static str;
    /// Starts `spec`'s VM. Returns once the VMM runs the guest (not once the app is ready: see
    /// [`RunningVm::wait_for_port`]).
    fn start(&self, spec: &VmSpec) -> impl Future<Output = Result<RunningVm>> + Send;
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmExit {
    /// The VMM process's status.
    pub vmm_status: ExitStatus,
    /// The app's end, as init reported it (`None` when init never said).
    pub guest: Option<GuestExit>,
    /// True when the VMM had to be killed.
    pub forced: bool,
}

/// A VM that is running; stopping or dropping it removes the VMM process, the tap and the
/// VMM's sockets.
pub struct RunningVm {
    vmm: &'static str,
    child: Child,
    pid: u32,
    console_in: Option<ChildStdin>,
    tail: Arc<ConsoleTail>,
    state: watch::Receiver<GuestState>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    tap: Option<Tap>,
    guest_ip: Option<Ipv4Addr>,
    /// Files to delete when the VM is gone (API sockets).
    cleanup: Vec<PathBuf>,
    started: Instant,
}

impl std::fmt::Debug for RunningVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningVm")
            .field("vmm", &self.vmm)
            .field("pid", &self.pid)
            .field("guest_ip", &self.guest_ip)
            .finish_non_exhaustive()
    }
}

impl RunningVm {
    /// Spawns the VMM `cmd` with the console on its stdio and starts the console pumps.
    pub(crate) fn launch(
        vmm: &'static str,
        mut cmd: Command,
        spec: &VmSpec,
        tap: Option<Tap>,
        cleanup: Vec<PathBuf>,
    ) -> Result<RunningVm> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C or group signal meant for the caller must not
            // kill the VM behind the caller's back; the caller stops it properly.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: runs in the child between fork and exec and only calls prctl(2), which is
        // async-signal-safe. The VMM dies with the thread that started it, so a caller killed
        // with SIGKILL (no destructors) leaves no VM behind: start VMs from a long-lived thread.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| VmError::Vmm {
            vmm,
            detail: format!("cannot start {:?}: {e}", cmd.as_std().get_program()),
        })?;
        let pid = child.id().unwrap_or(0);
        let tail = Arc::new(ConsoleTail::default());
        let (tx, state) = watch::channel(GuestState::default());
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(spawn_pump(
                out,
                &spec.console_log,
                "",
                tail.clone(),
                Some(tx),
            ));
        }
        if let Some(err) = child.stderr.take() {
            let prefix: &'static str = if vmm == "firecracker" {
                "[firecracker] "
            } else {
                "[qemu] "
            };
            pumps.push(spawn_pump(
                err,
                &spec.console_log,
                prefix,
                tail.clone(),
                None,
            ));
        }
        tracing::info!(vm = %spec.name, vmm, pid, "VM started");
        Ok(RunningVm {
            vmm,
            console_in: child.stdin.take(),
            child,
            pid,
            tail,
            state,
            pumps,
            guest_ip: spec.tap.as_ref().map(|t| t.guest_addr),
            tap,
            cleanup,
            started: Instant::now(),
        })
    }

    /// The VMM process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn vmm(&self) -> &'static str {
        self.vmm
    }

    /// The host-side name of the VM's tap.
    pub fn tap_name(&self) -> Option<&str> {
        self.tap.as_ref().map(Tap::name)
    }

    /// `guest_ip:port`, when the VM has a network.
    pub fn guest_addr(&self, port: u16) -> Option<SocketAddr> {
        self.guest_ip.map(|ip| SocketAddr::from((ip, port)))
    }

    /// What init has reported so far.
    pub fn guest_state(&self) -> GuestState {
        self.state.borrow().clone()
    }

    /// The last console lines (for error messages).
    pub fn console_tail(&self) -> String {
        self.tail.text()
    }

    /// Waits until the app accepts TCP connections on `port` in the guest; returns the time since
    /// the VMM started. Fails at once with the guest's reason when the app exits, init fails or
    /// the VMM ends, and with a timeout error after `timeout`.
    pub async fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<Duration> {
        let addr = self
            .guest_addr(port)
            .ok_or_else(|| VmError::Spec("the VM has no network interface".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let ending = self.state.borrow().ending();
            if let Some(reason) = ending {
                return Err(self.gone(reason).await);
            }
            if let Some(status) = self
                .child
                .try_wait()
                .io_ctx(|| format!("waiting for {}", self.vmm))?
            {
                let reason = format!("{} exited with {status}", self.vmm);
                return Err(self.gone(reason).await);
            }
            if let Ok(Ok(_)) =
                tokio::time::timeout(PROBE_CONNECT, tokio::net::TcpStream::connect(addr)).await
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("the app to listen on {addr}"),
                    after: timeout,
                    console: self.console_tail(),
                });
            }
            // Wake early on a guest event; otherwise poll again shortly.
            let _ = tokio::time::timeout(Duration::from_millis(50), self.state.changed()).await;
        }
    }

    /// The error for a guest that went away: waits briefly for the VMM and the console pumps so
    /// the last lines (often the reason) are in the message.
    async fn gone(&mut self, reason: String) -> VmError {
        let _ = tokio::time::timeout(POWER_OFF_SLACK, self.child.wait()).await;
        self.drain_pumps().await;
        let state = self.state.borrow().clone();
        let reason = match state.ending() {
            Some(guest) if !reason.contains(&guest) => format!("{guest} ({reason})"),
            _ => reason,
        };
        VmError::GuestExited {
            reason,
            console: self.console_tail(),
        }
    }

    async fn drain_pumps(&mut self) {
        for p in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
    }

    /// Resolves when the VMM process has ended, leaving the handle usable (cancel-safe, for a
    /// `select!` beside the serving loop); [`wait`](Self::wait) then releases what the VM held.
    pub async fn exited(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .await
            .io_ctx(|| format!("waiting for {}", self.vmm))
    }

    /// Waits for the VM to end by itself.
    pub async fn wait(mut self) -> Result<VmExit> {
        let status = self
            .child
            .wait()
            .await
            .io_ctx(|| format!("waiting for {}", self.vmm))?;
        Ok(self.finish(status, false).await)
    }

    /// Stops the VM: asks init to stop the app (SIGTERM, then SIGKILL after `grace`) and power
    /// off; a VMM still running after that gets SIGTERM, then SIGKILL. Everything the VM held on
    /// the host is gone when this returns.
    pub async fn stop(mut self, grace: Duration) -> Result<VmExit> {
        let mut forced = false;
        if let Some(stdin) = self.console_in.as_mut() {
            let line = StopRequest {
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            }
            .render();
            let _ = stdin.write_all(line.as_bytes()).await;
            let _ = stdin.flush().await;
        }
        let mut status = tokio::time::timeout(grace + POWER_OFF_SLACK, self.child.wait()).await;
        if status.is_err() {
            forced = true;
            tracing::warn!(
                vmm = self.vmm,
                pid = self.pid,
                "guest did not power off; SIGTERM to the VMM"
            );
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            status = tokio::time::timeout(TERM_GRACE, self.child.wait()).await;
        }
        let status = match status {
            Ok(s) => s.io_ctx(|| format!("waiting for {}", self.vmm))?,
            Err(_) => {
                let _ = self.child.start_kill();
                self.child
                    .wait()
                    .await
                    .io_ctx(|| format!("waiting for {}", self.vmm))?
            }
        };
        Ok(self.finish(status, forced).await)
    }

    async fn finish(&mut self, status: ExitStatus, forced: bool) -> VmExit {
        self.drain_pumps().await;
        self.release();
        let exit = VmExit {
            vmm_status: status,
            guest: self.state.borrow().exit,
            forced,
        };
        tracing::info!(vmm = self.vmm, pid = self.pid, ?exit, "VM ended");
        exit
    }

    /// Removes the tap and the VMM's files (the process is gone or being killed).
    fn release(&mut self) {
        self.console_in = None;
        self.tap = None;
        for p in self.cleanup.drain(..) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; reap here so the tap's last descriptor is closed before
        // the tap itself goes.
        let _ = self.child.start_kill();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.release();
    }
}

/// The VMMs on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmDiscovery {
    pub firecracker: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    /// KVM runs guests at a usable speed ([`crate::kvm::kvm_runs_guests`]).
    pub kvm_usable: bool,
}

impl VmmDiscovery {
    /// Looks at `PATH` and probes KVM.
    pub fn probe() -> VmmDiscovery {
        VmmDiscovery {
            firecracker: find_on_path("firecracker"),
            qemu: find_on_path(qemu::QEMU_BINARY),
            kvm_usable: crate::kvm::kvm_runs_guests(),
        }
    }

    /// Whether the node may advertise microVMs (`firecracker` tag): KVM works and a VMM that
    /// uses it is present. QEMU under TCG never counts.
    pub fn hardware_vms(&self) -> bool {
        self.kvm_usable && (self.firecracker.is_some() || self.qemu.is_some())
    }

    /// The VMM to use: Firecracker with KVM, else QEMU with KVM, else (only when `allow_tcg`)
    /// QEMU emulating the CPU — slow, for tests.
    pub fn choose(&self, allow_tcg: bool) -> Option<AnyVmm> {
        match (&self.firecracker, &self.qemu, self.kvm_usable) {
            (Some(fc), _, true) => Some(AnyVmm::Firecracker(Firecracker::new(fc.clone()))),
            (_, Some(q), true) => Some(AnyVmm::Qemu(QemuMicrovm::new(q.clone(), Accel::Kvm))),
            (_, Some(q), false) if allow_tcg => {
                Some(AnyVmm::Qemu(QemuMicrovm::new(q.clone(), Accel::Tcg)))
            }
            _ => None,
        }
    }
}

/// Either VMM, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyVmm {
    Qemu(QemuMicrovm),
    Firecracker(Firecracker),
}

impl Vmm for AnyVmm {
    fn name(&self) -> &'static str {
        match self {
            AnyVmm::Qemu(q) => q.name(),
            AnyVmm::Firecracker(f) => f.name(),
        }
    }

    async fn start(&self, spec: &VmSpec) -> Result<RunningVm> {
        match self {
            AnyVmm::Qemu(q) => q.start(spec).await,
            AnyVmm::Firecracker(f) => f.start(spec).await,
        }
    }
}

/// The first executable called `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_never_advertises_tcg() {
        let d = VmmDiscovery {
            firecracker: None,
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            kvm_usable: false,
        };
        assert!(!d.hardware_vms());
        assert!(d.choose(false).is_none());
        assert!(matches!(d.choose(true), Some(AnyVmm::Qemu(q)) if q.accel == Accel::Tcg));
        let d = VmmDiscovery {
            firecracker: Some("/usr/bin/firecracker".into()),
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            kvm_usable: true,
        };
        assert!(d.hardware_vms());
        assert!(matches!(d.choose(false), Some(AnyVmm::Firecracker(_))));
        let d = VmmDiscovery {
            firecracker: Some("/usr/bin/firecracker".into()),
            qemu: None,
            kvm_usable: false,
        };
        assert!(!d.hardware_vms());
        assert!(d.choose(true).is_none());
    }

    #[test]
    fn path_lookup_finds_executables_only() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("tabbify-no-such-binary").is_none());
    }
}
