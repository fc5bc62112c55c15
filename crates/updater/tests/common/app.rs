//! An app that must keep serving while the node updates: a real `tabbify-runner` serving the
//! `hello-wasm` example component, and a load loop that counts every request that fails.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tabbify_testkit::{ChildGuard, bin_path, read_ready_line, workspace_root};
use tabbify_wire::app::{AppId, Manifest};
use tabbify_wire::runner::RunnerSpec;

/// `target/wasm/hello-wasm.wasm`, built (or found up to date) by `examples/build.sh` once per
/// test binary; a failed build fails the test rather than leave it on an old component.
pub fn hello_wasm() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let root = workspace_root();
    let path = root.join("target/wasm/hello-wasm.wasm");
    BUILT.call_once(|| {
        let out = Command::new("bash")
            .arg(root.join("examples/build.sh"))
            .arg("hello-wasm")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "examples/build.sh hello-wasm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert!(
        path.is_file(),
        "examples/build.sh made no {}",
        path.display()
    );
    path
}

pub struct RunningApp {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
}

/// Starts a runner for hello-wasm in `dir`, as the supervisor would (its own process).
pub fn start_app(dir: &Path) -> RunningApp {
    let manifest = Manifest::from_toml_str(
        "[app]\nname = \"update-witness\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"app.wasm\"\n",
    )
    .unwrap();
    let spec = RunnerSpec {
        app_id: AppId::new("update-witness-1").unwrap(),
        manifest,
        artifact: hello_wasm(),
        listen: "127.0.0.1:0".parse().unwrap(),
        log_file: dir.join("logs/app.log"),
        log_max_bytes: 1 << 20,
        log_keep: 1,
        socket: dir.join("runner.sock"),
        cache_dir: dir.join("cache"),
        request_deadline_ms: 10_000,
        max_concurrent_requests: 16,
        vm_kernel: None,
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(tabbify_wire::runner::SPEC_FILE),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(bin_path("tabbify-runner").unwrap())
        .arg("--app-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard::new("tabbify-runner", child);
    let addr = read_ready_line(
        stdout,
        "tabbify-runner serving on ",
        Duration::from_secs(120),
    )
    .unwrap()
    .parse()
    .unwrap();
    RunningApp { guard, addr }
}

/// One GET / on a fresh connection; true on a 200.
pub fn get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// Requests the app every 20 ms on a thread until stopped; counts successes and failures.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if get_ok(addr) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop; returns (ok, failed).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
