//! Tap slots: each VM of the machine needs its own tap name and /30 (`tabbify_vm::TapConfig::
//! for_slot`). A runner claims a slot by holding an exclusive `flock` on the slot's file in a
//! machine-wide directory for as long as it lives; the kernel drops the lock when the runner
//! exits however it exits, so a crashed runner never keeps its slot. A slot whose tap still
//! exists (another node's VM on the same machine) is skipped.

use super::plan;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tabbify_vm::TapConfig;
use tabbify_vm::spec::TAP_SLOTS;
use tabbify_vm::tap::interface_exists;

/// Machine-wide: every node (data directory) on the machine shares the tap address space.
const MACHINE_SLOTS_DIR: &str = "/run/tabbify/vm-slots";
/// Slots tried before giving up.
const ATTEMPTS: u32 = 256;

/// A claimed slot; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SlotClaim {
    pub slot: u32,
    pub tap: TapConfig,
    _lock: File,
    path: PathBuf,
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        // Unlinking while locked is safe: a later claimant creates a new file and locks that.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The directory of slot locks: machine-wide when it can be made, else under `fallback`.
fn slots_dir(fallback: &Path) -> std::io::Result<PathBuf> {
    let machine = PathBuf::from(MACHINE_SLOTS_DIR);
    if std::fs::create_dir_all(&machine).is_ok() {
        return Ok(machine);
    }
    let dir = fallback.join("vm-slots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Claims a free slot, starting at one derived from `app_id`.
pub fn claim(app_id: &str, fallback_dir: &Path) -> Result<SlotClaim, String> {
    let dir = slots_dir(fallback_dir)
        .map_err(|e| format!("cannot create the tap slot directory: {e}"))?;
    let start = plan::first_slot(app_id, TAP_SLOTS);
    for i in 0..ATTEMPTS {
        let slot = (start + i) % TAP_SLOTS;
        let path = dir.join(format!("{slot}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            continue;
        }
        let tap = TapConfig::for_slot(slot).map_err(|e| e.to_string())?;
        if interface_exists(&tap.name) {
            tracing::debug!(slot, tap = %tap.name, "tap slot in use outside our locks; skipped");
            continue;
        }
        return Ok(SlotClaim {
            slot,
            tap,
            _lock: file,
            path,
        });
    }
    Err(format!(
        "no free tap slot among {ATTEMPTS} tried in {}",
        dir.display()
    ))
}
