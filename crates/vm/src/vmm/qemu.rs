//! QEMU's `microvm` machine (Debian's `qemu-system-x86`) as a VMM: virtio-mmio devices found by
//! the guest through ACPI, the console on QEMU's stdio, the tap handed over as a descriptor.
//! With KVM when KVM runs guests; otherwise TCG (the CPU emulated), which is slow but boots the
//! very same kernel, rootfs and init — the path tests take on machines without usable KVM.
//!
//! The command line is a pure function of the spec ([`QemuMicrovm::args`]).

use super::{RunningVm, Vmm};
use crate::error::Result;
use crate::spec::VmSpec;
use crate::tap::{Tap, TapMode};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`-accel kvm -cpu host`).
    Kvm,
    /// Emulation (`-accel tcg -cpu max`).
    Tcg,
}

/// QEMU `-M microvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuMicrovm {
    pub binary: PathBuf,
    pub accel: Accel,
    /// The host's TSC frequency in kHz, told to a TCG guest: microvm has no PIT/HPET reference
    /// the guest kernel could calibrate against under emulation, and it hangs without it.
    pub tsc_khz: u64,
}

impl QemuMicrovm {
    pub fn new(binary: PathBuf, accel: Accel) -> QemuMicrovm {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        QemuMicrovm {
            binary,
            accel,
            tsc_khz: tsc_khz_from_cpuinfo(&cpuinfo).unwrap_or(2_000_000),
        }
    }

    /// QEMU from `PATH`.
    pub fn from_path(accel: Accel) -> Option<QemuMicrovm> {
        super::find_on_path(QEMU_BINARY).map(|b| QemuMicrovm::new(b, accel))
    }

    /// Kernel arguments this VMM needs.
    fn cmdline_args(&self) -> Vec<String> {
        // The guest reboots to end; with -no-reboot QEMU then exits. A triple fault works on
        // every QEMU machine.
        // microvm has no PCI bus unless asked for one: do not probe for it.
        let mut v = vec!["reboot=t".to_string(), "pci=off".to_string()];
        if self.accel == Accel::Tcg {
            v.push(format!("tsc_early_khz={}", self.tsc_khz));
        }
        v
    }

    /// The full argument list for `spec`, with the tap on descriptor `tap_fd`.
    pub fn args(&self, spec: &VmSpec, tap_fd: Option<i32>) -> Vec<String> {
        let extra = self.cmdline_args();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-name", &spec.name]);
        push(&["-M", "microvm,acpi=on,x-option-roms=off"]);
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        }
        push(&[
            "-m",
            &format!("{}M", spec.memory_mb),
            "-smp",
            &spec.vcpus.to_string(),
        ]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        push(&["-kernel", &qemu_path(&spec.kernel)]);
        if let Some(initrd) = &spec.initrd {
            push(&["-initrd", &qemu_path(initrd)]);
        }
        push(&["-append", &spec.kernel_cmdline(&extra)]);
        push(&[
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        let ro = if spec.rootfs_read_only {
            ",readonly=on"
        } else {
            ""
        };
        push(&[
            "-drive",
            &format!(
                "id=root,file={},format=raw,if=none{ro}",
                qemu_path(&spec.rootfs)
            ),
            "-device",
            "virtio-blk-device,drive=root",
        ]);
        if let (Some(tap), Some(fd)) = (&spec.tap, tap_fd) {
            push(&[
                "-netdev",
                &format!("tap,id=net0,fd={fd},vhost=off"),
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={}", tap.guest_mac),
            ]);
        }
        a
    }
}

/// A path inside a QEMU option value: commas are doubled.
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// `cpu MHz : 2594.019` → 2594019.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != "cpu MHz" {
            return None;
        }
        let mhz: f64 = v.trim().parse().ok()?;
        (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
    })
}

impl Vmm for QemuMicrovm {
    fn name(&self) -> &'static str {
        "qemu-microvm"
    }

    async fn start(&self, spec: &VmSpec) -> Result<RunningVm> {
        spec.validate()?;
        let tap = match &spec.tap {
            Some(cfg) => Some(Tap::create(cfg, TapMode::Descriptor)?),
            None => None,
        };
        let tap_fd = tap.as_ref().and_then(Tap::fd).map(|fd| fd.as_raw_fd());
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(self.args(spec, tap_fd));
        if let Some(fd) = tap_fd {
            // SAFETY: runs in the child between fork and exec and only calls fcntl, which is
            // async-signal-safe; it lets the tap descriptor survive the exec.
            unsafe {
                cmd.pre_exec(move || {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        RunningVm::launch(self.name(), cmd, spec, tap, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TapConfig;

    fn spec() -> VmSpec {
        VmSpec {
            name: "hello".into(),
            kernel: "/k/vmlinuz".into(),
            initrd: Some("/k/initrd,1.cpio".into()),
            rootfs: "/r/rootfs.ext4".into(),
            rootfs_read_only: false,
            vcpus: 2,
            memory_mb: 256,
            tap: Some(TapConfig::for_slot(0).unwrap()),
            boot_args: None,
            console_log: "/r/console.log".into(),
            run_dir: "/r".into(),
        }
    }

    #[test]
    fn tcg_args_carry_the_tsc_and_the_devices() {
        let q = QemuMicrovm {
            binary: "qemu".into(),
            accel: Accel::Tcg,
            tsc_khz: 2_594_019,
        };
        let a = q.args(&spec(), Some(7)).join(" ");
        assert!(a.contains("-M microvm,acpi=on"), "{a}");
        assert!(a.contains("-accel tcg -cpu max -m 256M -smp 2"), "{a}");
        assert!(a.contains("-initrd /k/initrd,,1.cpio"), "{a}");
        assert!(a.contains("reboot=t pci=off tsc_early_khz=2594019"), "{a}");
        assert!(a.contains("-drive id=root,file=/r/rootfs.ext4,format=raw,if=none -device virtio-blk-device,drive=root"), "{a}");
        assert!(a.contains("-netdev tap,id=net0,fd=7,vhost=off -device virtio-net-device,netdev=net0,mac=02:54:42:00:00:00"), "{a}");
        assert!(a.contains("-no-reboot"), "{a}");
    }

    #[test]
    fn kvm_args_use_the_host_cpu_and_no_tsc_hint() {
        let q = QemuMicrovm {
            binary: "qemu".into(),
            accel: Accel::Kvm,
            tsc_khz: 1,
        };
        let mut s = spec();
        s.tap = None;
        s.rootfs_read_only = true;
        let a = q.args(&s, None).join(" ");
        assert!(a.contains("-accel kvm -cpu host"), "{a}");
        assert!(!a.contains("tsc_early_khz"), "{a}");
        assert!(!a.contains("-netdev"), "{a}");
        assert!(a.contains(",readonly=on"), "{a}");
        assert!(a.contains(" ro "), "{a}");
    }

    #[test]
    fn the_tsc_frequency_comes_from_cpuinfo() {
        let text = "processor\t: 0\ncpu MHz\t\t: 2594.019\n";
        assert_eq!(tsc_khz_from_cpuinfo(text), Some(2_594_019));
        assert_eq!(tsc_khz_from_cpuinfo("nothing"), None);
    }
}
