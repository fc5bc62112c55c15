//! The microVM runtime: how an app packaged as a container image runs in its own VM.
//!
//! 1. [`rootfs::build_rootfs`] turns an image ([`image::ImageSource`]: a `docker save` tarball,
//!    an OCI layout or a directory) and the app's command ([`app::AppCommand`]) into an ext4 root
//!    filesystem holding our init (`tabbify-vm-init`) and the app description, byte-identical for
//!    the same input and cached by content digest.
//! 2. [`kernel::GuestKernel`] is the node's guest kernel; when its virtio drivers are modules it
//!    also gets a small initramfs ([`initramfs`]) that loads them.
//! 3. A [`spec::VmSpec`] (plain data: kernel, rootfs, vCPUs, memory, tap, boot args) is carried
//!    out by a [`vmm::Vmm`]: [`vmm::Firecracker`] over its REST API when KVM works, or
//!    [`vmm::QemuMicrovm`] (`-M microvm`, KVM or TCG) — which boots the same guest on machines
//!    without usable KVM, such as CI. [`vmm::VmmDiscovery`] and [`kvm::kvm_runs_guests`] say what
//!    this machine can do.
//! 4. Traffic reaches the guest through its tap ([`tap::Tap`]) and the userspace TCP proxy
//!    ([`proxy::forward`]) from the app's address to `guest:port`; nothing else is routed.
//!
//! The guest side (init, and the host/guest contract) is the `tabbify-vm-init` crate.

pub mod app;
pub mod console;
pub mod egress;
pub mod error;
pub mod ext4;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod kvm;
pub mod proxy;
pub mod rootfs;
pub mod spec;
pub mod staging;
pub mod tap;
pub mod vmm;

pub use app::AppCommand;
pub use error::{Result, VmError};
pub use image::ImageSource;
pub use kernel::{BootFiles, GuestKernel};
pub use kvm::kvm_runs_guests;
pub use proxy::{Proxy, forward};
pub use rootfs::{RootfsArtifact, RootfsCache, build_rootfs};
pub use spec::{TapConfig, VmSpec};
pub use tap::{Tap, TapMode};
pub use vmm::{Accel, AnyVmm, Firecracker, QemuMicrovm, RunningVm, VmExit, Vmm, VmmDiscovery};
