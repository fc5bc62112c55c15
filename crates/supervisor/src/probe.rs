//! What this machine can run. `wasm` always; `docker` when a daemon answers a ping (honouring
//! `DOCKER_HOST`); `firecracker` (the tag) only when KVM really runs guests — `/dev/kvm` opens,
//! answers the KVM API, and a tiny probe guest runs at a usable speed
//! ([`tabbify_vm::kvm_runs_guests`]) — AND a VMM that uses it (`firecracker` or
//! `qemu-system-x86_64`) is on PATH. Apart from the tag, the node *runs* microVM apps whenever
//! some VMM can boot them, which includes QEMU emulating the CPU (TCG, slow: for tests and
//! machines without KVM); that never makes the node advertise `firecracker`. The supervisor never
//! escalates past what it is given: every check is a look, not a change.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_vm::{Accel, AnyVmm, VmmDiscovery};
use tabbify_wire::Tag;

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Capabilities {
    pub docker: bool,
    /// Why docker is off, or the daemon's version when on.
    pub docker_detail: String,
    pub kvm: bool,
    pub kvm_detail: String,
    /// Path of the VMM that can use KVM (`firecracker`, else `qemu-system-x86_64`).
    pub vmm: Option<PathBuf>,
    /// How microVM apps run here when they can: `firecracker`, `qemu-kvm` or `qemu-tcg`.
    pub vm_runtime: Option<String>,
    /// Why microVM apps cannot run here, or how they do.
    pub vm_detail: String,
}

impl Capabilities {
    /// True when the node may advertise `firecracker`: KVM runs guests and a VMM uses it.
    pub fn firecracker(&self) -> bool {
        self.kvm && self.vmm.is_some()
    }

    /// True when a deployed microVM app can boot here (with or without KVM).
    pub fn runs_vms(&self) -> bool {
        self.vm_runtime.is_some()
    }
}

/// Tags to advertise: pure, from the probe result and the operator's extra tags.
pub fn tags_for(caps: &Capabilities, extra: &[Tag]) -> Vec<Tag> {
    let mut tags = vec![Tag::wasm()];
    if caps.docker {
        tags.push(Tag::docker());
    }
    if caps.firecracker() {
        tags.push(Tag::firecracker());
    }
    for t in extra {
        // Operators cannot claim a runtime the probe did not find.
        let runtime = [Tag::wasm(), Tag::docker(), Tag::firecracker()].contains(t);
        if !runtime && !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

/// Runs every check. Never fails: a failed check is an absent capability with its reason.
pub async fn probe() -> Capabilities {
    let (docker, docker_detail) = probe_docker().await;
    let vms = tokio::task::spawn_blocking(probe_vms)
        .await
        .unwrap_or_else(|e| VmProbe {
            kvm: false,
            kvm_detail: format!("the KVM probe failed: {e}"),
            discovery: VmmDiscovery {
                firecracker: None,
                qemu: None,
                kvm_usable: false,
            },
        });
    let d = &vms.discovery;
    let vmm = d
        .hardware_vms()
        .then(|| d.firecracker.clone().or_else(|| d.qemu.clone()))
        .flatten();
    let (vm_runtime, vm_detail) = vm_runtime(d);
    Capabilities {
        docker,
        docker_detail,
        kvm: vms.kvm,
        kvm_detail: vms.kvm_detail,
        vmm,
        vm_runtime,
        vm_detail,
    }
}

/// What the microVM checks found.
struct VmProbe {
    kvm: bool,
    kvm_detail: String,
    discovery: VmmDiscovery,
}

/// `/dev/kvm` answers the API, then a real probe guest must run at a usable speed; the VMMs are
/// looked up on PATH. Blocking (the probe guest runs for a few milliseconds).
fn probe_vms() -> VmProbe {
    let (mut kvm, mut kvm_detail) = probe_kvm(Path::new("/dev/kvm"));
    if kvm && let Err(why) = tabbify_vm::kvm::judge(&tabbify_vm::kvm::probe()) {
        kvm = false;
        kvm_detail = format!("/dev/kvm opens but does not run guests: {why}");
    } else if kvm {
        kvm_detail = "/dev/kvm runs guests".into();
    }
    VmProbe {
        kvm,
        kvm_detail,
        discovery: VmmDiscovery {
            firecracker: find_on_path("firecracker"),
            qemu: find_on_path(tabbify_vm::vmm::QEMU_BINARY),
            kvm_usable: kvm,
        },
    }
}

/// Which VMM a runner would pick for a microVM app (pure): the same choice the runner makes.
pub fn vm_runtime(d: &VmmDiscovery) -> (Option<String>, String) {
    match d.choose(true) {
        Some(AnyVmm::Firecracker(f)) => (
            Some("firecracker".into()),
            format!("Firecracker {} with KVM", f.binary.display()),
        ),
        Some(AnyVmm::Qemu(q)) if q.accel == Accel::Kvm => (
            Some("qemu-kvm".into()),
            format!("QEMU {} with KVM", q.binary.display()),
        ),
        Some(AnyVmm::Qemu(q)) => (
            Some("qemu-tcg".into()),
            format!(
                "QEMU {} emulating the CPU (TCG: slow, never advertised as firecracker)",
                q.binary.display()
            ),
        ),
        None => (
            None,
            "no VMM that can boot guests: neither firecracker with usable KVM nor qemu-system-x86_64 is on PATH".into(),
        ),
    }
}

async fn probe_docker() -> (bool, String) {
    let docker = match bollard::Docker::connect_with_defaults() {
        Ok(d) => d,
        Err(e) => return (false, format!("cannot configure docker client: {e}")),
    };
    match tokio::time::timeout(Duration::from_secs(3), docker.version()).await {
        Ok(Ok(v)) => (
            true,
            format!("daemon {}", v.version.unwrap_or_else(|| "?".into())),
        ),
        Ok(Err(e)) => (false, format!("daemon does not answer: {e}")),
        Err(_) => (false, "daemon did not answer within 3s".into()),
    }
}

/// `KVM_GET_API_VERSION` is `_IO(0xAE, 0x00)`; the stable API answers 12.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_API_VERSION: libc::c_int = 12;

fn probe_kvm(dev: &Path) -> (bool, String) {
    use std::os::fd::AsRawFd;
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => {
            return (
                false,
                format!("{} does not open read-write: {e}", dev.display()),
            );
        }
    };
    // SAFETY: the fd is valid for the life of `file`; this ioctl takes no argument.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version == KVM_API_VERSION {
        (true, format!("{} usable (API {version})", dev.display()))
    } else {
        (
            false,
            format!(
                "{} answered KVM API version {version}, expected 12",
                dev.display()
            ),
        )
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// CPUs and memory of this machine, for the coordinator's placement. Free memory is the
/// kernel's `MemAvailable`; free CPUs are all CPUs until apps reserve some.
pub fn node_resources() -> tabbify_wire::mesh::NodeResources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field_mb = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0)
    };
    tabbify_wire::mesh::NodeResources {
        cpus,
        memory_mb: field_mb("MemTotal:"),
        cpus_free: cpus,
        memory_mb_free: field_mb("MemAvailable:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(docker: bool, kvm: bool, vmm: bool) -> Capabilities {
        Capabilities {
            docker,
            kvm,
            vmm: vmm.then(|| PathBuf::from("/usr/bin/firecracker")),
            ..Default::default()
        }
    }

    fn names(tags: &[Tag]) -> Vec<&str> {
        tags.iter().map(Tag::as_str).collect()
    }

    #[test]
    fn wasm_always_docker_and_firecracker_only_when_found() {
        assert_eq!(names(&tags_for(&caps(false, false, false), &[])), ["wasm"]);
        assert_eq!(
            names(&tags_for(&caps(true, false, false), &[])),
            ["wasm", "docker"]
        );
        assert_eq!(
            names(&tags_for(&caps(false, true, false), &[])),
            ["wasm"],
            "kvm without a VMM offers nothing"
        );
        assert_eq!(
            names(&tags_for(&caps(false, false, true), &[])),
            ["wasm"],
            "a VMM without kvm offers nothing"
        );
        assert_eq!(
            names(&tags_for(&caps(true, true, true), &[])),
            ["wasm", "docker", "firecracker"]
        );
    }

    #[test]
    fn qemu_without_kvm_runs_vms_but_is_never_advertised() {
        let tcg = VmmDiscovery {
            firecracker: None,
            qemu: Some("/usr/bin/qemu-system-x86_64".into()),
            kvm_usable: false,
        };
        let (runtime, detail) = vm_runtime(&tcg);
        assert_eq!(runtime.as_deref(), Some("qemu-tcg"));
        assert!(detail.contains("never advertised"), "{detail}");
        let c = Capabilities {
            vm_runtime: runtime,
            ..caps(false, false, false)
        };
        assert!(c.runs_vms() && !c.firecracker());
        assert_eq!(names(&tags_for(&c, &[])), ["wasm"]);
        let kvm = VmmDiscovery {
            firecracker: Some("/usr/bin/firecracker".into()),
            kvm_usable: true,
            ..tcg.clone()
        };
        assert_eq!(vm_runtime(&kvm).0.as_deref(), Some("firecracker"));
        let none = VmmDiscovery {
            firecracker: Some("/usr/bin/firecracker".into()),
            qemu: None,
            kvm_usable: false,
        };
        assert_eq!(vm_runtime(&none).0, None);
    }

    #[test]
    fn extra_tags_cannot_claim_runtimes() {
        let extra = [
            Tag::new("eu-west").unwrap(),
            Tag::docker(),
            Tag::firecracker(),
            Tag::new("eu-west").unwrap(),
        ];
        assert_eq!(
            names(&tags_for(&caps(false, false, false), &extra)),
            ["wasm", "eu-west"]
        );
    }

    #[test]
    fn kvm_probe_reports_missing_device() {
        let (ok, why) = probe_kvm(Path::new("/nonexistent/kvm"));
        assert!(!ok);
        assert!(why.contains("does not open read-write"), "{why}");
    }

    #[test]
    fn kvm_probe_rejects_a_non_kvm_device() {
        // /dev/null opens read-write but does not answer the KVM ioctl.
        let (ok, why) = probe_kvm(Path::new("/dev/null"));
        assert!(!ok);
        assert!(why.contains("expected 12"), "{why}");
    }
}
