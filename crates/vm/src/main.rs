//! `tabbify-vm`: the microVM runtime by hand, for benches and debugging. Thin: parses arguments
//! and calls the library.
//!
//!   tabbify-vm kvm-check
//!   tabbify-vm build-rootfs --image IMG --init INIT --cache DIR [--cmd ARG]... [--env K=V]...
//!   tabbify-vm run --kernel K --image IMG --init INIT --cache DIR --listen ADDR --port P [...]
//!
//! `run` prints `tabbify-vm ready on http://ADDR` once the app answers TCP through the proxy,
//! then serves until SIGINT/SIGTERM and stops the VM.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tabbify_vm::{
    Accel, AppCommand, GuestKernel, ImageSource, QemuMicrovm, RootfsCache, TapConfig, VmSpec, Vmm,
    VmmDiscovery, build_rootfs, forward,
};

#[derive(Parser)]
#[command(
    name = "tabbify-vm",
    version,
    about = "Build microVM root filesystems and boot apps in microVMs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM when it runs guests here, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(clap::Args)]
struct RootfsArgs {
    /// `docker save` tarball, OCI layout directory or plain directory.
    #[arg(long)]
    image: PathBuf,
    /// The guest init (tabbify-vm-init built for x86_64-unknown-linux-musl).
    #[arg(long)]
    init: PathBuf,
    /// Root filesystem cache directory.
    #[arg(long)]
    cache: PathBuf,
    /// Command (repeat for each argument); the image's when absent.
    #[arg(long = "cmd")]
    command: Vec<String>,
    /// KEY=VALUE environment entries.
    #[arg(long = "env")]
    env: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe KVM; exit status 0 when it runs guests at a usable speed.
    KvmCheck,
    /// Print the VMMs found and whether the node may advertise microVMs.
    Discover,
    /// Build (or find cached) the root filesystem and print it as JSON.
    BuildRootfs(RootfsArgs),
    /// Boot the app behind the proxy and serve until interrupted.
    Run {
        #[command(flatten)]
        rootfs: RootfsArgs,
        /// Guest kernel (a `modules/` directory beside it is used when present).
        #[arg(long)]
        kernel: PathBuf,
        /// Address the proxy listens on.
        #[arg(long)]
        listen: SocketAddr,
        /// The app's port in the guest.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Directory for the VM's rootfs copy, console log and sockets.
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
        accel: AccelArg,
        #[arg(long, default_value_t = 0)]
        slot: u32,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        #[arg(long, default_value_t = 256)]
        memory_mb: u32,
        #[arg(long, default_value_t = 120)]
        boot_timeout_secs: u64,
    },
}

fn app_command(a: &RootfsArgs) -> Result<AppCommand> {
    let mut env = BTreeMap::new();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .with_context(|| format!("--env {e:?} is not KEY=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    Ok(AppCommand {
        command: a.command.clone(),
        env,
        workdir: None,
        user: None,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    match Cli::parse().cmd {
        Cmd::KvmCheck => {
            let p = tabbify_vm::kvm::probe();
            match tabbify_vm::kvm::judge(&p) {
                Ok(per_exit) => println!("KVM runs guests: {per_exit:?} per exit ({p:?})"),
                Err(why) => {
                    println!("KVM is not usable: {why}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Discover => {
            let d = VmmDiscovery::probe();
            println!(
                "{}",
                serde_json::json!({
                    "firecracker": d.firecracker,
                    "qemu": d.qemu,
                    "kvm_usable": d.kvm_usable,
                    "hardware_vms": d.hardware_vms(),
                })
            );
        }
        Cmd::BuildRootfs(a) => {
            let image = ImageSource::detect(&a.image)?;
            let art = build_rootfs(
                &image,
                &app_command(&a)?,
                &RootfsCache::new(&a.cache, &a.init),
            )?;
            println!("{}", serde_json::to_string_pretty(&art)?);
        }
        Cmd::Run {
            rootfs,
            kernel,
            listen,
            port,
            run_dir,
            accel,
            slot,
            vcpus,
            memory_mb,
            boot_timeout_secs,
        } => {
            let t0 = Instant::now();
            std::fs::create_dir_all(&run_dir)
                .with_context(|| format!("creating {}", run_dir.display()))?;
            let image = ImageSource::detect(&rootfs.image)?;
            let cache = RootfsCache::new(&rootfs.cache, &rootfs.init);
            let art = build_rootfs(&image, &app_command(&rootfs)?, &cache)?;
            let disk = run_dir.join("rootfs.ext4");
            art.instance_copy(&disk)?;
            let boot = GuestKernel::from_path(&kernel)?.boot_files(&rootfs.init, &rootfs.cache)?;
            let accel = match accel {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
                AccelArg::Auto if tabbify_vm::kvm_runs_guests() => Accel::Kvm,
                AccelArg::Auto => Accel::Tcg,
            };
            let Some(qemu) = QemuMicrovm::from_path(accel) else {
                bail!("qemu-system-x86_64 is not on PATH");
            };
            let spec = VmSpec {
                name: format!("vm{slot}"),
                kernel: boot.kernel,
                initrd: boot.initrd,
                rootfs: disk,
                rootfs_read_only: false,
                vcpus,
                memory_mb,
                tap: Some(TapConfig::for_slot(slot)?),
                boot_args: None,
                console_log: run_dir.join("console.log"),
                run_dir: run_dir.clone(),
            };
            let prepared = t0.elapsed();
            let mut vm = qemu.start(&spec).await?;
            let booted = vm
                .wait_for_port(port, Duration::from_secs(boot_timeout_secs))
                .await?;
            let guest = vm.guest_addr(port).context("guest address")?;
            let proxy = forward(listen, guest).await?;
            println!(
                "tabbify-vm ready on http://{} (rootfs {} ms{}, boot to listening {} ms, accel {accel:?})",
                proxy.local_addr(),
                prepared.as_millis(),
                if art.from_cache { ", cached" } else { "" },
                booted.as_millis(),
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            proxy.shutdown().await;
            let exit = vm.stop(Duration::from_secs(5)).await?;
            eprintln!("tabbify-vm: VM ended: {exit:?}");
        }
    }
    Ok(())
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
