//! MicroVM apps (`kind = "firecracker"`) on a real supervisor: hello-http (a static musl binary)
//! in an image the test writes as a `docker save` tarball, deployed through the control API,
//! booted by the runner in a microVM — QEMU emulating the CPU (TCG) on machines without usable
//! KVM, so the whole path runs for real here — with Debian's cloud kernel from
//! `scripts/fetch-vm-kernel.sh` (`.ci/run` runs it). Curl the app's address and get the guest's
//! answer; stop, and the VMM, the tap and the VM's files are gone; delete leaves nothing. A node
//! without its guest kernel and a corrupt image are clear errors.
//!
//! Runs as root (taps need CAP_NET_ADMIN) in the host's network namespace; each VM has its own
//! tap slot, so the tests run in parallel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod apps_support;
// The image writers and the guest init build of the VM crate's own tests.
#[path = "../../vm/tests/common/mod.rs"]
mod vm_images;

use apps_support::docker::BODY;
use apps_support::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tabbify_testkit::{Capability, require, workspace_root};
use tabbify_vm::tap::interface_exists;
use tabbify_wire::node_apps::AppState;

/// A node directory like /var/lib/tabbify/vm: the kernel, its modules and the guest init.
struct KernelDir {
    dir: tempfile::TempDir,
}

impl KernelDir {
    fn new() -> KernelDir {
        let vm = workspace_root().join("target/vm");
        let kernel = vm.join("vmlinuz");
        assert!(
            kernel.is_file(),
            "no guest kernel at {}: run scripts/fetch-vm-kernel.sh first (.ci/run does)",
            kernel.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&kernel, dir.path().join("vmlinuz")).unwrap();
        if vm.join("modules").is_dir() {
            std::os::unix::fs::symlink(vm.join("modules"), dir.path().join("modules")).unwrap();
        }
        std::fs::copy(vm_images::guest_init(), dir.path().join("tabbify-vm-init")).unwrap();
        KernelDir { dir }
    }

    fn kernel(&self) -> PathBuf {
        self.dir.path().join("vmlinuz")
    }
}

/// The hello-http image as a `docker save` tarball.
fn hello_image(dir: &Path) -> PathBuf {
    let path = dir.join("hello.tar");
    vm_images::docker_archive(
        &path,
        &vm_images::hello_layers(),
        &vm_images::hello_config(),
    );
    path
}

fn vm_manifest(name: &str) -> String {
    format!(
        "[app]\nname = \"{name}\"\n[runtime]\nkind = \"firecracker\"\nimage = \"hello-http\"\n[resources]\nmemory_mb = 256\n"
    )
}

fn vm_node(kernel: &Path) -> Node {
    Node::start(&[
        "--vm-kernel",
        kernel.to_str().unwrap(),
        // TCG boots take tens of seconds, more on a loaded machine.
        "--app-start-timeout",
        "150s",
    ])
}

/// Processes whose command line mentions `needle` (the VMM names the app's disk).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes().to_vec();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let is_runner = cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"tabbify-runner"));
        if !is_runner
            && cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

fn app_log(node: &Node, id: &str) -> String {
    curl(&[
        "-H",
        &node.auth(),
        &format!("{}/v1/apps/{id}/logs", node.api()),
    ])
    .1
}

/// The tap named in the runner's "booting microVM" line.
fn tap_of(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("booting microVM"))
        .unwrap_or_else(|| panic!("no boot line in the app log:\n{log}"));
    let tap = line
        .split("tap ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    tap.to_string()
}

#[test]
fn hello_http_in_a_microvm_serves_stops_clean_and_deletes() {
    require!(Capability::Root);
    require!(Capability::Qemu);
    let kernel = KernelDir::new();
    let work = tempfile::tempdir().unwrap();
    let image = hello_image(work.path());
    let node = vm_node(&kernel.kernel());

    let t = Instant::now();
    let (status, body) = node.deploy(&vm_manifest("vm-hello"), &std::fs::read(&image).unwrap());
    assert_eq!(status, 201, "{body}\n{}", node.log());
    let app: tabbify_wire::node_apps::AppInfo = serde_json::from_value(body).unwrap();
    let id = app.app_id.to_string();
    assert_eq!(app.state, AppState::Running, "{app:#?}");
    assert_eq!(app.runtime.to_string(), "firecracker");
    assert_eq!(curl_get(&app.url), (200, BODY.to_string()));
    eprintln!(
        "microVM boot: deploy to first 200 in {:?} (QEMU TCG unless KVM works here)",
        t.elapsed()
    );

    // The guest's console is in the app log; the VM runs from the version's directory.
    let log = app_log(&node, &id);
    for line in [
        "booting microVM",
        "tabbify-init: booted",
        "hello-http listening on 0.0.0.0:8080",
    ] {
        assert!(log.contains(line), "the app log lacks {line:?}:\n{log}");
    }
    let boot_line = log.lines().find(|l| l.contains("booting microVM")).unwrap();
    let listens = log
        .lines()
        .find(|l| l.contains("the app listens in the guest"))
        .unwrap();
    eprintln!("{boot_line}\n{listens}");
    let tap = tap_of(&log);
    assert!(
        interface_exists(&tap),
        "tap {tap} missing while the VM runs"
    );
    let vm_dir = node.app_dir(&id).join("v1/vm");
    let vmm = processes_mentioning(&vm_dir);
    assert_eq!(vmm.len(), 1, "one VMM process for the app: {vmm:?}");
    let runner_socket = node.app_dir(&id).join("v1/runner.sock");

    // Stop: the VM is shut down, and nothing it held is left.
    let (status, stopped) = node.post(&format!("/v1/apps/{id}/stop"));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(!alive(vmm[0]), "the VMM (pid {}) outlived the stop", vmm[0]);
    assert!(!interface_exists(&tap), "tap {tap} outlived the stop");
    assert!(!vm_dir.exists(), "{} outlived the stop", vm_dir.display());
    assert!(
        !runner_socket.exists(),
        "the runner's socket outlived the stop"
    );
    assert!(processes_mentioning(&vm_dir).is_empty());
    let log = app_log(&node, &id);
    assert!(
        log.contains("tabbify-init: stopping") && log.contains("microVM stopped"),
        "{log}"
    );

    let (status, _) = node.delete(&format!("/v1/apps/{id}"));
    assert_eq!(status, 204);
    assert!(
        !node.app_dir(&id).exists(),
        "the app's directory outlived the delete"
    );
    assert_eq!(node.get(&format!("/v1/apps/{id}")).0, 404);
}

#[test]
fn a_node_without_its_guest_kernel_says_so() {
    require!(Capability::Root);
    require!(Capability::Qemu);
    let work = tempfile::tempdir().unwrap();
    let image = hello_image(work.path());
    let missing = work.path().join("no-such-vmlinuz");
    let node = vm_node(&missing);
    let (status, body) = node.deploy(&vm_manifest("vm-nokernel"), &std::fs::read(&image).unwrap());
    eprintln!("the expected error: {body}");
    assert_eq!(status, 503, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("this node cannot boot microVMs")
            && msg.contains(missing.to_str().unwrap())
            && msg.contains("--vm-kernel"),
        "{msg}"
    );
    assert_eq!(
        node.get("/v1/apps").1["apps"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn a_corrupt_image_is_an_invalid_artifact() {
    require!(Capability::Root);
    require!(Capability::Qemu);
    let kernel = KernelDir::new();
    let node = vm_node(&kernel.kernel());
    // A tar, but not an image: no manifest.json.
    let junk = vm_images::layer_tar(&[vm_images::Item::File {
        path: "readme.txt",
        mode: 0o644,
        uid: 0,
        data: b"not an image".to_vec(),
    }]);
    let (status, body) = node.deploy(&vm_manifest("vm-corrupt"), &junk);
    eprintln!("the expected error: {body}");
    assert_eq!(status, 422, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("cannot be used"), "{msg}");
}

#[test]
fn a_guest_app_that_exits_at_once_fails_the_deploy_with_its_output() {
    require!(Capability::Root);
    require!(Capability::Qemu);
    let kernel = KernelDir::new();
    let work = tempfile::tempdir().unwrap();
    let image = hello_image(work.path());
    let node = vm_node(&kernel.kernel());
    // An explicit PORT in the manifest wins over the app's port: hello-http refuses it and exits.
    let manifest = format!("{}[env]\nPORT = \"not-a-port\"\n", vm_manifest("vm-exits"));
    let t = Instant::now();
    let (status, body) = node.deploy(&manifest, &std::fs::read(&image).unwrap());
    eprintln!("the expected error after {:?}: {body}", t.elapsed());
    assert_eq!(status, 502, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("the microVM did not start the app")
            && msg.contains("the app exited with code 2")
            && msg.contains("is not a port number"),
        "{msg}"
    );
    assert!(
        processes_mentioning(&node.data_dir.join("apps")).is_empty(),
        "a VMM outlived the failed deploy"
    );
}

/// A host beyond the node: a network namespace behind a veth pair, with a TCP listener. Only
/// forwarding gets a guest's packets there (the node's own addresses it reaches either way).
struct Beyond {
    ns: String,
    host_if: String,
    addr: std::net::Ipv4Addr,
    listener: std::process::Child,
}

impl Beyond {
    fn new() -> Beyond {
        let id = std::process::id() % 250;
        let ns = format!("tbfeg{}", std::process::id());
        let host_if = format!("veg{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("10.254.{id}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.254.{id}.2/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let addr = std::net::Ipv4Addr::new(10, 254, u8::try_from(id).unwrap(), 2);
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',7070))\ns.listen(64)\nwhile True:\n    c,_=s.accept()\n    c.close()\n"
        );
        let listener = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", &script])
            .spawn()
            .unwrap();
        Beyond {
            ns,
            host_if,
            addr,
            listener,
        }
    }

    fn target(&self) -> String {
        format!("{}:7070", self.addr)
    }
}

impl Drop for Beyond {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

#[test]
fn a_guest_reaches_beyond_its_node_only_when_the_manifest_allows_egress() {
    require!(Capability::Root);
    require!(Capability::Qemu);
    let kernel = KernelDir::new();
    let work = tempfile::tempdir().unwrap();
    let image = std::fs::read(hello_image(work.path())).unwrap();
    let node = vm_node(&kernel.kernel());
    let beyond = Beyond::new();
    // The listener is up once the host reaches it.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(
        &beyond.target().parse().unwrap(),
        std::time::Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the listener beyond did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Without egress the guest's packets stop at its tap.
    let (status, body) = node.deploy(&vm_manifest("vm-closed"), &image);
    assert_eq!(status, 201, "{body}\n{}", node.log());
    let closed: tabbify_wire::node_apps::AppInfo = serde_json::from_value(body).unwrap();
    let (code, text) = curl_get(&format!("{}dial?to={}", closed.url, beyond.target()));
    assert_eq!(code, 502, "{text}");
    assert!(text.contains("cannot reach"), "{text}");
    assert_eq!(node.delete(&format!("/v1/apps/{}", closed.app_id)).0, 204);

    // With `egress = true` it gets out, and the rules go with the app. That needs a node that
    // forwards IPv4 (the operator's switch, which the node never flips): without it the rest is
    // skipped with the reason, or fails under TABBIFY_REQUIRE_ALL=1. The refusal on a node that
    // does not forward is tabbify-vm's tests/egress.rs.
    require!(Capability::Ipv4Forwarding);
    let manifest = vm_manifest("vm-open").replace(
        "image = \"hello-http\"\n",
        "image = \"hello-http\"\negress = true\n",
    );
    let (status, body) = node.deploy(&manifest, &image);
    assert_eq!(status, 201, "{body}\n{}", node.log());
    let open: tabbify_wire::node_apps::AppInfo = serde_json::from_value(body).unwrap();
    let id = open.app_id.to_string();
    let (code, text) = curl_get(&format!("{}dial?to={}", open.url, beyond.target()));
    assert_eq!(
        (code, text.trim()),
        (200, format!("connected to {}", beyond.target()).as_str())
    );
    let tap = tap_of(&app_log(&node, &id));
    assert!(tabbify_vm::egress::rules_present(&tap), "rules for {tap}");
    assert_eq!(node.delete(&format!("/v1/apps/{id}")).0, 204);
    assert!(
        !tabbify_vm::egress::rules_present(&tap),
        "the egress rules of {tap} are removed with the app"
    );
}
