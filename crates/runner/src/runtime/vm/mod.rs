//! The microVM runtime (`kind = "firecracker"`): the app runs in its own VM, and the runner
//! stands in front of it.
//!
//! Loading turns the deployed artifact into the VM's disk — an image (`docker save` tarball or
//! OCI layout in a tar) becomes an ext4 root filesystem with our init through
//! [`tabbify_vm::build_rootfs`], cached by content digest in the node's cache; an ext4 `rootfs`
//! is used as it is (it must hold our init, as `tabbify-vm build-rootfs` makes it) — and gives
//! the VM its own writable copy. The node's guest kernel comes from the spec (`--vm-kernel` of
//! the supervisor), with the guest init `tabbify-vm-init` beside it (or beside the runner). The
//! VMM is the best this machine has ([`tabbify_vm::VmmDiscovery::choose`]): Firecracker with
//! KVM, QEMU with KVM, else QEMU emulating the CPU. The VM gets a tap of its own slot
//! ([`slot`]), its console goes to the app log ([`console`]), and the app is ready once it
//! accepts connections on its port in the guest.
//!
//! Serving forwards the app's address to `guest:port` through the tap (the same TCP forwarding as
//! containers). A stop asks init to stop the app and power off, then kills the VMM after the
//! grace period; the tap, the VMM's sockets, the disk copy and the console FIFO are gone when the
//! runner exits. The VMM dies with the runner even when the runner is killed with SIGKILL (it is
//! started with a parent-death signal from a runtime worker thread). A guest that powers off by
//! itself ends the runner, and the supervisor's restart policy decides what comes next.

mod console;
pub mod plan;
mod slot;

use crate::control::ControlState;
use crate::log_file::AppLog;
use crate::runtime::AppEnded;
use crate::runtime::docker::proxy::{self, Target};
use crate::stats::RequestStats;
use console::ConsoleCopy;
use slot::SlotClaim;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabbify_vm::console::GuestExit;
use tabbify_vm::{
    AnyVmm, GuestKernel, ImageSource, RootfsCache, RunningVm, VmError, VmSpec, Vmm, VmmDiscovery,
    build_rootfs,
};
use tabbify_wire::app::{RuntimeKind, RuntimeSpec};
use tabbify_wire::runner::{RunnerSpec, RunnerState};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The start of the error when the node itself cannot boot the app (no kernel, no guest init,
/// no VMM); the supervisor answers 503 for it, whatever the app.
pub const NODE_UNABLE: &str = "this node cannot boot microVMs";
/// The start of the error when the guest ended or hung before its app listened.
pub const GUEST_FAILED: &str = "the microVM did not start the app";
/// The node's guest kernel when the spec names none.
pub const DEFAULT_KERNEL: &str = "/var/lib/tabbify/kernels/vmlinux";
/// The guest init's file name, looked for beside the runner and beside the kernel.
pub const INIT_NAME: &str = "tabbify-vm-init";
/// How long the guest may take to listen. Generous: under QEMU's CPU emulation a boot takes tens
/// of seconds, and the supervisor's own start timeout is the real bound.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a microVM app could not be loaded or started.
#[derive(Debug, thiserror::Error)]
pub enum VmAppError {
    /// The node lacks what any microVM needs.
    #[error("{NODE_UNABLE}: {0}")]
    Node(String),
    /// The deployed artifact is not a usable image or root filesystem.
    #[error("the deployed {what} {path} cannot be used: {reason}")]
    Artifact {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The guest ended, or did not listen in time.
    #[error("{GUEST_FAILED}: {0}")]
    Guest(String),
    /// Anything else on the way (a tap that cannot be made, a VMM that does not start).
    #[error("{0}")]
    Start(String),
    #[error("the spec's runtime is {0}, not firecracker")]
    NotVm(RuntimeKind),
}

impl VmAppError {
    /// Whether the deployed artifact is at fault (the deploy is refused as an invalid artifact);
    /// anything else is an app that could not start.
    pub fn is_artifact_problem(&self) -> bool {
        matches!(self, VmAppError::Artifact { .. })
    }

    fn guest(e: VmError) -> Self {
        match e {
            VmError::GuestExited { reason, console } => VmAppError::Guest(format!(
                "{reason}; its last console lines: {}",
                plan::one_line(&console)
            )),
            VmError::Timeout {
                what,
                after,
                console,
            } => VmAppError::Guest(format!(
                "no answer after {} s waiting for {what}; its last console lines: {}",
                after.as_secs(),
                plan::one_line(&console)
            )),
            other => VmAppError::Start(plan::one_line(&other.to_string())),
        }
    }
}

/// A microVM serving the app.
pub struct VmApp {
    vm: RunningVm,
    guest: SocketAddr,
    log: AppLog,
    stats: Arc<RequestStats>,
    console: ConsoleCopy,
    // Dropped after the VM (declaration order): the slot stays ours until its tap is gone.
    _slot: SlotClaim,
    _run_dir: RunDir,
}

/// The VM's private directory (disk copy, console FIFO, VMM sockets), removed when dropped.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the VM directory");
        }
    }
}

/// Everything the boot needs, prepared on the blocking thread.
struct Prepared {
    vmm: AnyVmm,
    spec: VmSpec,
    port: u16,
    slot: SlotClaim,
    run_dir: RunDir,
}

impl VmApp {
    /// Builds the disk, boots the VM and waits until the app listens. Called on a blocking
    /// thread of the runner's runtime.
    pub fn load(
        spec: &RunnerSpec,
        log: AppLog,
        stats: Arc<RequestStats>,
    ) -> Result<Self, VmAppError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| VmAppError::Start(format!("no async runtime to run the VM from: {e}")))?;
        let prepared = prepare(spec, &log)?;
        // The VMM is spawned from a runtime worker, not this blocking thread: it gets a
        // parent-death signal, and blocking threads end when idle.
        let boot = handle.spawn(boot(prepared, log, stats));
        handle
            .block_on(boot)
            .map_err(|e| VmAppError::Start(format!("the boot task failed: {e}")))?
    }

    /// Forwards the app's address to the guest until a stop is requested (the VM is stopped
    /// with the grace period) or the VM ends by itself (an error unless the app exited with 0).
    pub async fn serve(
        self,
        listener: TcpListener,
        control: Arc<ControlState>,
    ) -> Result<(), AppEnded> {
        let VmApp {
            mut vm,
            guest,
            log,
            stats,
            console,
            _slot,
            _run_dir,
        } = self;
        let stop = control.stop_requested();
        tokio::pin!(stop);
        let mut connections = JoinSet::new();
        let stop_grace = loop {
            tokio::select! {
                grace = &mut stop => break Some(grace),
                _ = vm.exited() => break None,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(proxy::forward_to(
                            Target::MicroVm,
                            stream,
                            Some(guest),
                            stats.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        control.set_state(RunnerState::Stopping);
        drop(listener);
        let result = match stop_grace {
            Some(grace) => {
                tracing::info!(grace_ms = grace.as_millis(), "stopping the microVM");
                match vm.stop(grace).await {
                    Ok(exit) => log.runner_line(&format!(
                        "microVM stopped ({}{})",
                        describe_guest(exit.guest),
                        if exit.forced {
                            "; the VMM was killed"
                        } else {
                            ""
                        }
                    )),
                    Err(e) => log.runner_line(&format!("stopping the microVM: {e}")),
                }
                let drained = tokio::time::timeout(Duration::from_secs(1), async {
                    while connections.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    connections.abort_all();
                }
                Ok(())
            }
            None => {
                connections.abort_all();
                let ended = match vm.wait().await {
                    Ok(exit) if exit.guest == Some(GuestExit::Exited(0)) => Ok(()),
                    Ok(exit) => Err(format!(
                        "the microVM ended: {} (the VMM exited with {})",
                        describe_guest(exit.guest),
                        exit.vmm_status
                    )),
                    Err(e) => Err(format!("the microVM ended: {e}")),
                };
                match ended {
                    Ok(()) => {
                        log.runner_line("the app in the microVM exited with code 0");
                        Ok(())
                    }
                    Err(what) => {
                        tracing::warn!(%what, "the microVM ended");
                        Err(AppEnded(what))
                    }
                }
            }
        };
        console.finish().await;
        result
    }
}

fn describe_guest(exit: Option<GuestExit>) -> String {
    match exit {
        Some(GuestExit::Exited(code)) => format!("the app exited with code {code}"),
        Some(GuestExit::Killed(sig)) => format!("the app was killed by signal {sig}"),
        None => "the app did not report an exit".into(),
    }
}

/// The guest init: beside the runner's executable, else beside the kernel. It runs as PID 1 in
/// a root filesystem that has no dynamic loader, so only a static executable will do (a debug
/// build next to the runner is linked against glibc and is skipped).
fn find_init(kernel: &Path) -> Result<PathBuf, VmAppError> {
    let beside_runner = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(INIT_NAME)));
    let beside_kernel = kernel.parent().map(|d| d.join(INIT_NAME));
    let candidates: Vec<PathBuf> = beside_runner.into_iter().chain(beside_kernel).collect();
    let mut skipped = Vec::new();
    for c in &candidates {
        match std::fs::read(c) {
            Ok(bytes) if is_static_elf(&bytes) => return Ok(c.clone()),
            Ok(_) => skipped.push(format!("{} (not a static executable)", c.display())),
            Err(_) => skipped.push(format!("{} (missing)", c.display())),
        }
    }
    Err(VmAppError::Node(format!(
        "no usable guest init {INIT_NAME}: {} (build it with `cargo build --release --target x86_64-unknown-linux-musl -p tabbify-vm-init` and install it beside the kernel)",
        skipped.join(", ")
    )))
}

/// An ELF executable without a program interpreter (`PT_INTERP`): it needs no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only: what this runtime boots.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        u32_at(at).is_some_and(|t| t != PT_INTERP)
    })
}

/// Kernel, init, VMM, disk, slot: everything before the VMM starts.
fn prepare(spec: &RunnerSpec, log: &AppLog) -> Result<Prepared, VmAppError> {
    let RuntimeSpec::Firecracker(runtime) = &spec.manifest.runtime else {
        return Err(VmAppError::NotVm(spec.runtime_kind()));
    };
    let node_kernel = spec
        .vm_kernel
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL));
    let kernel_path =
        plan::kernel_path(&node_kernel, runtime.kernel.as_deref()).map_err(VmAppError::Start)?;
    let kernel = GuestKernel::from_path(&kernel_path).map_err(|e| {
        VmAppError::Node(format!(
            "{e} (the node's guest kernel is set with the supervisor's --vm-kernel)"
        ))
    })?;
    let init = find_init(&kernel_path)?;
    let discovery = VmmDiscovery::probe();
    let vmm = discovery.choose(true).ok_or_else(|| {
        VmAppError::Node(
            "no VMM: neither firecracker (with usable KVM) nor qemu-system-x86_64 is on PATH"
                .into(),
        )
    })?;

    let version_dir = spec
        .artifact
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let run_dir = version_dir.join("vm");
    // A runner killed before it could clean up leaves its directory: start afresh.
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| VmAppError::Start(format!("cannot create {}: {e}", run_dir.display())))?;
    let run_dir = RunDir(run_dir);
    let disk = run_dir.0.join("rootfs.ext4");
    let vm_cache = spec.cache_dir.join("vm");
    if !spec.artifact.is_file() {
        return Err(VmAppError::Artifact {
            what: if runtime.rootfs.is_some() {
                "root filesystem"
            } else {
                "image"
            },
            path: spec.artifact.clone(),
            reason: "it is missing (a microVM app is deployed with its image or rootfs)".into(),
        });
    }
    let t = Instant::now();
    if runtime.rootfs.is_some() {
        std::fs::copy(&spec.artifact, &disk).map_err(|e| {
            VmAppError::Start(format!(
                "cannot copy the root filesystem to {}: {e}",
                disk.display()
            ))
        })?;
    } else {
        let cache = RootfsCache::new(vm_cache.join("rootfs"), &init);
        let art = build_rootfs(
            &ImageSource::DockerArchive(spec.artifact.clone()),
            &plan::app_command(&spec.manifest),
            &cache,
        )
        .map_err(|e| match e {
            VmError::Image { .. } | VmError::App(_) => VmAppError::Artifact {
                what: "image",
                path: spec.artifact.clone(),
                reason: plan::one_line(&e.to_string()),
            },
            VmError::Missing { .. } => VmAppError::Node(e.to_string()),
            other => VmAppError::Start(format!(
                "cannot build the root filesystem: {}",
                plan::one_line(&other.to_string())
            )),
        })?;
        art.instance_copy(&disk)
            .map_err(|e| VmAppError::Start(e.to_string()))?;
        log.runner_line(&format!(
            "root filesystem {} {} in {} ms (runs {:?})",
            &art.digest[..art.digest.len().min(12)],
            if art.from_cache {
                "from the cache"
            } else {
                "built"
            },
            t.elapsed().as_millis(),
            art.app.argv
        ));
    }
    let boot = kernel
        .boot_files(&init, &vm_cache.join("initramfs"))
        .map_err(|e| VmAppError::Node(plan::one_line(&e.to_string())))?;
    let slot = slot::claim(spec.app_id.as_str(), &vm_cache).map_err(VmAppError::Start)?;
    let vm_spec = VmSpec {
        name: plan::vm_name(spec.app_id.as_str()),
        kernel: boot.kernel,
        initrd: boot.initrd,
        rootfs: disk,
        rootfs_read_only: false,
        vcpus: plan::vcpus(spec.manifest.resources.cpus),
        memory_mb: plan::memory_mb(spec.manifest.resources.memory_mb),
        tap: Some(tabbify_vm::spec::TapConfig {
            egress: runtime.egress,
            ..slot.tap.clone()
        }),
        boot_args: runtime.boot_args.clone(),
        console_log: run_dir.0.join("console.fifo"),
        run_dir: run_dir.0.clone(),
    };
    Ok(Prepared {
        vmm,
        spec: vm_spec,
        port: spec.manifest.http.port,
        slot,
        run_dir,
    })
}

/// Starts the VMM and waits for the app to listen in the guest.
async fn boot(p: Prepared, log: AppLog, stats: Arc<RequestStats>) -> Result<VmApp, VmAppError> {
    let console = ConsoleCopy::start(&p.spec.console_log, log.clone()).map_err(|e| {
        VmAppError::Start(format!(
            "cannot make the console FIFO {}: {e}",
            p.spec.console_log.display()
        ))
    })?;
    let how = match &p.vmm {
        AnyVmm::Firecracker(_) => "Firecracker (KVM)".to_string(),
        AnyVmm::Qemu(q) => format!("QEMU microvm ({:?})", q.accel),
    };
    let mut vm = p
        .vmm
        .start(&p.spec)
        .await
        .map_err(|e| VmAppError::Start(plan::one_line(&e.to_string())))?;
    log.runner_line(&format!(
        "booting microVM {} with {how}: pid {}, tap {}, {} vCPU, {} MiB",
        p.spec.name,
        vm.pid(),
        p.slot.tap.name,
        p.spec.vcpus,
        p.spec.memory_mb
    ));
    let booted = match vm.wait_for_port(p.port, BOOT_TIMEOUT).await {
        Ok(t) => t,
        Err(e) => {
            let err = VmAppError::guest(e);
            // Dropping the VM kills the VMM and removes its tap; the console is copied first.
            drop(vm);
            console.finish().await;
            return Err(err);
        }
    };
    let guest = vm
        .guest_addr(p.port)
        .ok_or_else(|| VmAppError::Start("the VM has no network interface".into()))?;
    log.runner_line(&format!(
        "the app listens in the guest at {guest}, {} ms after the VMM started",
        booted.as_millis()
    ));
    tracing::info!(%guest, booted_ms = booted.as_millis(), slot = p.slot.slot, "microVM ready");
    Ok(VmApp {
        vm,
        guest,
        log,
        stats,
        console,
        _slot: p.slot,
        _run_dir: p.run_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_static_executables_can_be_the_guest_init() {
        // This test binary is dynamically linked (glibc): it has a PT_INTERP header.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&me[..40]));
        // A static one: the same header with its PT_INTERP entry turned into PT_NULL.
        let mut fake = me.clone();
        let phoff = usize::try_from(u64::from_le_bytes(me[32..40].try_into().unwrap())).unwrap();
        let phentsize = usize::from(u16::from_le_bytes([me[54], me[55]]));
        let phnum = usize::from(u16::from_le_bytes([me[56], me[57]]));
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            if fake[at..at + 4] == 3u32.to_le_bytes() {
                fake[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        assert!(is_static_elf(&fake));
    }
}
