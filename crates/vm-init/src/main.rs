//! `tabbify-vm-init`: PID 1 of a Tabbify microVM (see the crate documentation).
//!
//! Started from our initramfs it is stage 1 (load the kernel modules the guest kernel lacks,
//! mount the root filesystem, switch to it and exec the copy of itself found there); started by
//! the kernel from the root filesystem it is stage 2 (mounts, network, run the app, power off).
//! Any failure is printed as a `tabbify-init: error: ...` console line and powers the VM off, so
//! the host sees a clear reason and never a hung guest.

mod stage1;
mod stage2;
mod supervise;
mod sys;

use std::path::Path;
use tabbify_vm_init::contract::{GuestEvent, INITRAMFS_MARKER};

fn main() {
    let result = if Path::new(INITRAMFS_MARKER).exists() {
        stage1::run()
    } else {
        stage2::run()
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            sys::report(&GuestEvent::Error(format!("{e:#}")));
            1
        }
    };
    sys::power_off(code)
}
