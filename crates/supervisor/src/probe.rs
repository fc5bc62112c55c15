//! What this machine can run. `wasm` always; `docker` when a daemon answers a ping (honouring
//! `DOCKER_HOST`); `firecracker` when `/dev/kvm` opens read-write, answers the KVM API version
//! ioctl, and a `firecracker` binary is on PATH. The supervisor never escalates past what it is
//! given: every check is a read-only look.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_wire::Tag;

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Capabilities {
    pub docker: bool,
    /// Why docker is off, or the daemon's version when on.
    pub docker_detail: String,
    pub kvm: bool,
    pub kvm_detail: String,
    /// Path of the VMM that can use KVM (today: a `firecracker` binary).
    pub vmm: Option<PathBuf>,
}

impl Capabilities {
    /// True when the node may advertise `firecracker`.
    pub fn firecracker(&self) -> bool {
        self.kvm && self.vmm.is_some()
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
    let (kvm, kvm_detail) = probe_kvm(Path::new("/dev/kvm"));
    Capabilities {
        docker,
        docker_detail,
        kvm,
        kvm_detail,
        vmm: find_on_path("firecracker"),
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
