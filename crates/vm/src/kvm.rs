//! Does KVM actually run guests here, at a usable speed?
//!
//! `/dev/kvm` opening is not enough: under nested virtualization it may exist while the virtual
//! CPU it offers is crippled or every exit to the host costs so much that a guest crawls. The
//! probe asks KVM which CPU features it can give a guest (a CPU without SSE3/SSSE3/SSE4 — which
//! every x86-64 host of the last fifteen years has — is a nested setup that masks features, and
//! Linux guests hang on it; seen on this project's CI machine), then runs a real tiny guest: one
//! vCPU in real mode at the reset vector, looping on `out 0x10, al`, and times a fixed number of
//! I/O exits. A few milliseconds, and an honest answer. The verdict is a pure function of the
//! measurement ([`judge`]).
//!
//! This does not decide what the node advertises (the supervisor does, with VMM discovery); the
//! QEMU TCG path used by tests is never reason to advertise `firecracker`.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_SET_TSS_ADDR: libc::c_ulong = 0xAE47;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
const KVM_API_VERSION: i32 = 12;
const KVM_EXIT_IO: u32 = 2;
const PROBE_PORT: u16 = 0x10;

/// Exits timed by the probe.
pub const PROBE_EXITS: u32 = 2_000;
/// Average cost of one exit above which KVM counts as unusable (hardware: ~1–5 µs; a healthy
/// nested setup: tens of µs).
pub const MAX_EXIT_COST: Duration = Duration::from_micros(200);
/// The probe gives up after this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Leaf 1 ECX features every x86-64 host has had since about 2009 (x86-64-v2), by bit.
const BASELINE_ECX1: &[(u32, &str)] = &[
    (0, "sse3"),
    (9, "ssse3"),
    (13, "cx16"),
    (19, "sse4_1"),
    (20, "sse4_2"),
    (23, "popcnt"),
];

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// The guest ran `exits` I/O exits in `elapsed`; `missing` lists baseline CPU features KVM
    /// cannot give a guest.
    Ran {
        exits: u32,
        elapsed: Duration,
        missing: Vec<&'static str>,
    },
    /// KVM is missing or refused something; the reason says what.
    Failed(String),
}

/// The verdict on a probe: `Ok(average exit cost)` or why KVM is not usable.
pub fn judge(probe: &KvmProbe) -> Result<Duration, String> {
    match probe {
        KvmProbe::Failed(why) => Err(why.clone()),
        KvmProbe::Ran { missing, .. } if !missing.is_empty() => Err(format!(
            "KVM offers a CPU without {} (every x86-64 host has them): a nested setup that \
             masks CPU features, where full guests do not boot",
            missing.join(", ")
        )),
        KvmProbe::Ran { exits: 0, .. } => Err("the probe guest made no exits".into()),
        KvmProbe::Ran { exits, elapsed, .. } => {
            let per_exit = *elapsed / *exits;
            if per_exit > MAX_EXIT_COST {
                Err(format!(
                    "KVM runs guests but slowly: {per_exit:?} per exit (limit {MAX_EXIT_COST:?}); \
                     nested virtualization?"
                ))
            } else {
                Ok(per_exit)
            }
        }
    }
}

/// True when KVM runs guests at a usable speed (see [`probe`] and [`judge`]).
pub fn kvm_runs_guests() -> bool {
    let verdict = judge(&probe());
    if let Err(why) = &verdict {
        tracing::info!(%why, "KVM is not usable for microVMs");
    }
    verdict.is_ok()
}

/// Runs the probe guest (on a thread, bounded by [`PROBE_TIMEOUT`]).
pub fn probe() -> KvmProbe {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(run_probe_guest(PROBE_EXITS));
        });
    if let Err(e) = spawned {
        return KvmProbe::Failed(format!("starting the probe thread: {e}"));
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok((exits, elapsed, missing))) => KvmProbe::Ran {
            exits,
            elapsed,
            missing,
        },
        Ok(Err(e)) => KvmProbe::Failed(e),
        Err(_) => KvmProbe::Failed(format!(
            "the probe guest did not finish in {PROBE_TIMEOUT:?}"
        )),
    }
}

fn ioctl(
    fd: &impl AsRawFd,
    req: libc::c_ulong,
    arg: libc::c_ulong,
    what: &str,
) -> Result<i32, String> {
    // SAFETY: KVM ioctls on descriptors we own; `arg` is either an integer or a pointer to a live
    // struct of the type `req` expects.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if rc < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(rc)
}

#[repr(C)]
struct UserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

/// An anonymous or device mapping, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<&OwnedFd>) -> Result<Mapping, String> {
        let (flags, raw) = match fd {
            Some(f) => (libc::MAP_SHARED, f.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping of `len` bytes; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CpuidEntry2 {
    function: u32,
    index: u32,
    flags: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
    padding: [u32; 3],
}

#[repr(C)]
struct Cpuid2 {
    nent: u32,
    padding: u32,
    entries: [CpuidEntry2; 256],
}

/// Baseline features missing from what KVM can give a guest.
fn missing_cpu_features(kvm: &File) -> Result<Vec<&'static str>, String> {
    let mut c = Box::new(Cpuid2 {
        nent: 256,
        padding: 0,
        entries: [CpuidEntry2::default(); 256],
    });
    ioctl(
        kvm,
        KVM_GET_SUPPORTED_CPUID,
        (&raw mut *c) as libc::c_ulong,
        "KVM_GET_SUPPORTED_CPUID",
    )?;
    let n = usize::try_from(c.nent).unwrap_or(0).min(256);
    let ecx = c.entries[..n]
        .iter()
        .find(|e| e.function == 1)
        .map(|e| e.ecx)
        .ok_or("KVM reports no CPUID leaf 1")?;
    Ok(BASELINE_ECX1
        .iter()
        .filter(|(bit, _)| ecx & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect())
}

/// Runs the guest until it made `exits` port-I/O exits; returns how many, how long, and the
/// baseline CPU features KVM lacks.
fn run_probe_guest(exits: u32) -> Result<(u32, Duration, Vec<&'static str>), String> {
    let kvm = File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let version = ioctl(&kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")?;
    if version != KVM_API_VERSION {
        return Err(format!(
            "KVM API version {version}, expected {KVM_API_VERSION}"
        ));
    }
    let missing = missing_cpu_features(&kvm)?;
    let vm_fd = ioctl(&kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")?;
    // SAFETY: KVM_CREATE_VM returned a new descriptor that we now own.
    let vm = unsafe { OwnedFd::from_raw_fd(vm_fd) };
    // Needed on Intel without unrestricted guest before running real-mode code; harmless elsewhere.
    let _ = ioctl(&vm, KVM_SET_TSS_ADDR, 0xfffb_d000, "KVM_SET_TSS_ADDR");

    // One page at the top of the 4 GiB space: the reset vector (CS base 0xffff0000, IP 0xfff0)
    // lands at its offset 0xff0.
    let mem = Mapping::new(4096, None)?;
    // SAFETY: `mem` is 4096 writable bytes that only this function uses.
    let page = unsafe { std::slice::from_raw_parts_mut(mem.addr.cast::<u8>(), 4096) };
    // offset 0: out 0x10, al ; jmp short 0
    page[..4].copy_from_slice(&[0xE6, PROBE_PORT as u8, 0xEB, 0xFC]);
    // offset 0xff0 (reset vector): jmp near 0xf000 (= offset 0 of this page)
    page[0xff0..0xff3].copy_from_slice(&[0xE9, 0x0D, 0xF0]);
    let region = UserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0xffff_f000,
        memory_size: 4096,
        userspace_addr: mem.addr as u64,
    };
    ioctl(
        &vm,
        KVM_SET_USER_MEMORY_REGION,
        (&raw const region) as libc::c_ulong,
        "KVM_SET_USER_MEMORY_REGION",
    )?;
    let vcpu_fd = ioctl(&vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")?;
    // SAFETY: KVM_CREATE_VCPU returned a new descriptor that we now own.
    let vcpu = unsafe { OwnedFd::from_raw_fd(vcpu_fd) };
    let run_size = ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")?;
    let run = Mapping::new(
        usize::try_from(run_size).map_err(|e| e.to_string())?,
        Some(&vcpu),
    )?;
    let base = run.addr.cast::<u8>();

    let start = Instant::now();
    for done in 0..exits {
        ioctl(&vcpu, KVM_RUN, 0, "KVM_RUN")?;
        // SAFETY: kvm_run is at least a page; exit_reason is the u32 at offset 8 and the io exit
        // (direction u8, size u8, port u16) starts at offset 32.
        let (reason, port) = unsafe {
            (
                std::ptr::read_volatile(base.add(8).cast::<u32>()),
                std::ptr::read_volatile(base.add(34).cast::<u16>()),
            )
        };
        if reason != KVM_EXIT_IO || port != PROBE_PORT {
            return Err(format!(
                "the probe guest stopped with exit reason {reason} (port {port:#x}) after {done} exits"
            ));
        }
    }
    Ok((exits, start.elapsed(), missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_the_exit_cost() {
        let fast = KvmProbe::Ran {
            exits: 1000,
            elapsed: Duration::from_millis(5),
            missing: vec![],
        };
        assert_eq!(judge(&fast), Ok(Duration::from_micros(5)));
        let slow = KvmProbe::Ran {
            exits: 1000,
            elapsed: Duration::from_secs(1),
            missing: vec![],
        };
        assert!(judge(&slow).unwrap_err().contains("slowly"));
        let masked = KvmProbe::Ran {
            exits: 1000,
            elapsed: Duration::from_millis(5),
            missing: vec!["sse3", "ssse3"],
        };
        assert!(judge(&masked).unwrap_err().contains("without sse3, ssse3"));
        assert!(judge(&KvmProbe::Failed("no /dev/kvm".into())).is_err());
        let none = KvmProbe::Ran {
            exits: 0,
            elapsed: Duration::ZERO,
            missing: vec![],
        };
        assert!(judge(&none).is_err());
    }

    #[test]
    fn the_probe_answers_whatever_the_machine() {
        // Runs the real guest where /dev/kvm opens; elsewhere it must fail with a reason, not hang.
        let p = probe();
        match &p {
            KvmProbe::Ran { exits, .. } => assert_eq!(*exits, PROBE_EXITS),
            KvmProbe::Failed(why) => assert!(!why.is_empty()),
        }
        eprintln!("kvm probe: {p:?} -> {:?}", judge(&p));
    }
}
