//! Real microVMs: QEMU `-M microvm` under TCG (the CPU emulated, so it runs on any machine with
//! QEMU), Debian's cloud kernel, our initramfs and init, hello-http inside. Each test runs in its
//! own network namespace (the tap and the proxy live there), so tests run in parallel and leave
//! nothing behind on the host.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::*;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_testkit::netns::Lan;
use tabbify_testkit::{Capability, require};
use tabbify_vm::console::GuestExit;
use tabbify_vm::tap::{forwarding_enabled, interface_exists};
use tabbify_vm::{
    Accel, AppCommand, GuestKernel, ImageSource, QemuMicrovm, RootfsCache, TapConfig, VmError,
    VmSpec, Vmm, build_rootfs, forward,
};

/// Boots under TCG take seconds alone and longer on a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Everything a VM of the test needs on disk.
struct Prepared {
    _dir: tempfile::TempDir,
    spec: VmSpec,
}

fn prepare(name: &str, kernel: &Path, app: AppCommand) -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hello.tar");
    docker_archive(&archive, &hello_layers(), &hello_config());
    let init = guest_init();
    let cache = dir.path().join("cache");
    let art = build_rootfs(
        &ImageSource::DockerArchive(archive),
        &app,
        &RootfsCache::new(&cache, &init),
    )
    .unwrap();
    let disk = dir.path().join("rootfs.ext4");
    art.instance_copy(&disk).unwrap();
    let boot = GuestKernel::from_path(kernel)
        .unwrap()
        .boot_files(&init, &cache)
        .unwrap();
    let spec = VmSpec {
        name: name.into(),
        kernel: boot.kernel,
        initrd: boot.initrd,
        rootfs: disk,
        rootfs_read_only: false,
        vcpus: 1,
        memory_mb: 256,
        tap: Some(TapConfig::for_slot(7).unwrap()),
        boot_args: None,
        console_log: dir.path().join("console.log"),
        run_dir: dir.path().to_path_buf(),
    };
    Prepared { _dir: dir, spec }
}

/// Runs `f` on a current-thread runtime in a fresh network namespace (loopback up); the
/// namespace and every process in it are removed afterwards, whatever happens.
fn in_netns<F: Future<Output = ()>>(tag: &str, f: impl FnOnce() -> F + Send) {
    let lan = Lan::new(tag).unwrap();
    let host = lan.add_host("h").unwrap();
    host.in_namespace(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap();
}

fn qemu() -> QemuMicrovm {
    QemuMicrovm::from_path(Accel::Tcg).expect("qemu-system-x86_64 on PATH")
}

fn gone(pid: u32) -> bool {
    !PathBuf::from(format!("/proc/{pid}")).exists()
}

#[test]
fn hello_http_boots_serves_through_the_proxy_and_stops_clean() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    require!(Capability::Qemu);
    let Some(kernel) = guest_kernel() else { return };
    let p = prepare("hello", &kernel, AppCommand::default());
    let spec = p.spec.clone();
    in_netns("vmboot", || async move {
        let mut vm = qemu().start(&spec).await.unwrap();
        let pid = vm.pid();
        let tap = vm.tap_name().unwrap().to_string();
        assert!(
            interface_exists(&tap),
            "tap {tap} missing while the VM runs"
        );
        // Even with forwarding on in the namespace, nothing the guest sends is forwarded.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(forwarding_enabled(&tap), Some(false));
        let booted = vm
            .wait_for_port(8080, BOOT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("hello-http listening {booted:?} after QEMU started (TCG)");
        assert!(vm.guest_state().booted);

        let proxy = forward("127.0.0.1:0".parse().unwrap(), vm.guest_addr(8080).unwrap())
            .await
            .unwrap();
        let url = format!("http://{}/", proxy.local_addr());
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "60", &url])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nhello from tabbify hello-http\n"),
            "{text}"
        );
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "60",
            ])
            .arg(format!("{url}missing"))
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404");

        let proxy_addr = proxy.local_addr();
        proxy.shutdown().await;
        let exit = vm.stop(Duration::from_secs(5)).await.unwrap();
        // init got the stop line, sent SIGTERM, hello-http died of it, the VM powered off.
        assert_eq!(exit.guest, Some(GuestExit::Killed(15)), "{exit:?}");
        assert!(!exit.forced, "{exit:?}");
        assert!(exit.vmm_status.success(), "{exit:?}");
        assert!(gone(pid), "QEMU (pid {pid}) still there");
        assert!(!interface_exists(&tap), "tap {tap} still there");
        assert!(
            tokio::net::TcpStream::connect(proxy_addr).await.is_err(),
            "proxy still listens"
        );
        let log = std::fs::read_to_string(&spec.console_log).unwrap();
        for line in [
            "tabbify-init: booted",
            "hello-http listening on 0.0.0.0:8080",
            "tabbify-init: stopping grace_ms=5000",
            "tabbify-init: app-killed signal=15",
        ] {
            assert!(log.contains(line), "console log lacks {line:?}:\n{log}");
        }
    });
}

#[test]
fn an_app_that_exits_at_once_is_reported_with_its_code_and_output() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    require!(Capability::Qemu);
    let Some(kernel) = guest_kernel() else { return };
    let app = AppCommand {
        env: [("PORT".to_string(), "not-a-port".to_string())].into(),
        ..Default::default()
    };
    let p = prepare("exits", &kernel, app);
    let spec = p.spec.clone();
    in_netns("vmexit", || async move {
        let mut vm = qemu().start(&spec).await.unwrap();
        let pid = vm.pid();
        // GuestExited, not Timeout: the wait ended because the guest did, not at the timeout.
        let e = vm.wait_for_port(8080, BOOT_TIMEOUT).await.unwrap_err();
        eprintln!("the expected error: {e}");
        match &e {
            VmError::GuestExited { reason, console } => {
                assert!(reason.contains("the app exited with code 2"), "{e}");
                assert!(
                    console.contains("PORT=\"not-a-port\" is not a port number"),
                    "{e}"
                );
            }
            other => panic!("expected GuestExited, got {other}"),
        }
        // The guest powered off by itself; dropping the handle removes the rest.
        drop(vm);
        assert!(gone(pid));
        assert!(!interface_exists(&spec.tap.as_ref().unwrap().name));
    });
}

#[test]
fn a_command_missing_from_the_image_is_init_s_error() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    require!(Capability::Qemu);
    let Some(kernel) = guest_kernel() else { return };
    let app = AppCommand {
        command: vec!["/bin/not-there".into()],
        ..Default::default()
    };
    let p = prepare("nocmd", &kernel, app);
    let spec = p.spec.clone();
    in_netns("vmnocmd", || async move {
        let mut vm = qemu().start(&spec).await.unwrap();
        let e = vm.wait_for_port(8080, BOOT_TIMEOUT).await.unwrap_err();
        eprintln!("the expected error: {e}");
        match &e {
            VmError::GuestExited { reason, .. } => {
                assert!(reason.contains("guest init failed"), "{e}");
                assert!(reason.contains("/bin/not-there"), "{e}");
            }
            other => panic!("expected GuestExited, got {other}"),
        }
    });
}

#[test]
fn a_corrupt_kernel_fails_fast_with_the_vmm_s_message() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    require!(Capability::Qemu);
    let Some(kernel) = guest_kernel() else { return };
    let p = prepare("badkernel", &kernel, AppCommand::default());
    let mut spec = p.spec.clone();
    let junk = spec.run_dir.join("junk-vmlinuz");
    std::fs::write(&junk, vec![0x90u8; 64 * 1024]).unwrap();
    spec.kernel = junk;
    in_netns("vmbadk", || async move {
        let mut vm = qemu().start(&spec).await.unwrap();
        // GuestExited, not Timeout: the VMM's exit ended the wait.
        let e = vm.wait_for_port(8080, BOOT_TIMEOUT).await.unwrap_err();
        eprintln!("the expected error: {e}");
        match &e {
            VmError::GuestExited { reason, console } => {
                assert!(reason.contains("qemu-microvm exited"), "{e}");
                assert!(console.contains("[qemu]"), "{e}");
            }
            other => panic!("expected GuestExited, got {other}"),
        }
    });
}

#[test]
fn a_missing_kernel_is_refused_before_anything_starts() {
    // No privileges needed: the spec is checked before any tap or process exists.
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.ext4");
    std::fs::write(&rootfs, b"x").unwrap();
    let spec = VmSpec {
        name: "nokernel".into(),
        kernel: dir.path().join("vmlinuz-missing"),
        initrd: None,
        rootfs,
        rootfs_read_only: false,
        vcpus: 1,
        memory_mb: 128,
        tap: Some(TapConfig::for_slot(9).unwrap()),
        boot_args: None,
        console_log: dir.path().join("console.log"),
        run_dir: dir.path().to_path_buf(),
    };
    let vmm = QemuMicrovm::new("/nonexistent/qemu".into(), Accel::Tcg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(vmm.start(&spec)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "guest kernel {} is missing or not a regular file",
            spec.kernel.display()
        )
    );
    assert!(!interface_exists("tbfvm9"));
    assert!(GuestKernel::from_path(&spec.kernel).is_err());
}
