//! The microVM guest's side: the contract between host and guest ([`contract`]) and the IPv4
//! interface setup both sides use ([`netif`]).
//!
//! The binary of this package (`src/main.rs`) is the guest's init: a static musl program that the
//! host puts into every root filesystem (and into the optional initramfs). It mounts what the
//! guest needs, configures the network from the kernel command line, runs the app described in
//! the rootfs, reports on the serial console and powers the VM off when the app ends. Build it
//! with `cargo build --release --target x86_64-unknown-linux-musl -p tabbify-vm-init`.
//!
//! This crate must stay small and free of async runtimes: it runs as PID 1 inside every VM.

pub mod contract;
pub mod netif;
