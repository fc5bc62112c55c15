//! Shared by the runner's integration tests: the example components, app directories with a spec,
//! and a running `tabbify-runner` that is killed when the test ends.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tabbify_runner::{AppDir, READY_MARKER, RunnerClient};
use tabbify_testkit::{ChildGuard, read_ready_line, workspace_root};
use tabbify_wire::app::{AppId, Manifest};
use tabbify_wire::runner::RunnerSpec;

pub const RUNNER: &str = env!("CARGO_BIN_EXE_tabbify-runner");

/// `target/wasm/<name>.wasm`, built by `examples/build.sh` once per test binary.
pub fn example_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = workspace_root();
    let built = BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root.join("examples/build.sh"))
            .stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let path = root.join("target/wasm").join(format!("{name}.wasm"));
    // A failed build fails the test: a component left over from an earlier build would test
    // old code.
    if let Err(e) = built {
        panic!("examples/build.sh failed: {e}");
    }
    assert!(
        path.is_file(),
        "examples/build.sh made no {}",
        path.display()
    );
    path
}

/// An app directory with a spec for `artifact`, listening on a free loopback port.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub spec: RunnerSpec,
}

impl TestApp {
    pub fn new(artifact: &Path, memory_mb: u32, deadline_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        Self::with_cache(dir, artifact, memory_mb, deadline_ms, cache_dir)
    }

    pub fn with_cache(
        dir: tempfile::TempDir,
        artifact: &Path,
        memory_mb: u32,
        deadline_ms: u64,
        cache_dir: PathBuf,
    ) -> Self {
        let manifest = Manifest::from_toml_str(&format!(
            "[app]\nname = \"test-app\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"app.wasm\"\n\
             [resources]\nmemory_mb = {memory_mb}\n[env]\nGREETING = \"hi\"\n"
        ))
        .unwrap();
        let spec = RunnerSpec {
            app_id: AppId::new("test-app-1").unwrap(),
            manifest,
            artifact: artifact.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            log_file: dir.path().join("logs/app.log"),
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 2,
            socket: dir.path().join("runner.sock"),
            cache_dir,
            request_deadline_ms: deadline_ms,
            max_concurrent_requests: 16,
            vm_kernel: None,
        };
        AppDir::new(dir.path()).write_spec(&spec).unwrap();
        Self { dir, spec }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log_file).unwrap_or_default()
    }

    pub fn client(&self) -> RunnerClient {
        RunnerClient::new(&self.spec.socket)
    }

    /// Starts the runner as a child of the test and waits for its ready line.
    pub fn start(&self) -> Running {
        let mut child = Command::new(RUNNER)
            .arg("--app-dir")
            .arg(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard::new("tabbify-runner", child);
        let addr = read_ready_line(stdout, READY_MARKER, Duration::from_secs(60))
            .unwrap()
            .parse()
            .unwrap();
        Running { guard, addr }
    }

    /// Runs the runner to completion (for apps that must fail to load): exit status, stderr.
    pub fn run_to_exit(&self) -> (std::process::ExitStatus, String) {
        let stderr_path = self.path().join(format!("stderr.{}", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(RUNNER)
            .arg("--app-dir")
            .arg(self.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut guard = ChildGuard::new("tabbify-runner", child);
        let status = guard
            .wait_timeout(Duration::from_secs(60))
            .expect("runner did not exit within 60 s");
        (status, std::fs::read_to_string(&stderr_path).unwrap())
    }
}

pub struct Running {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// GET `url`, returning status, `x-tabbify-error` and body.
pub async fn get(url: &str) -> (u16, Option<String>, String) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let error = response
        .headers()
        .get("x-tabbify-error")
        .map(|v| v.to_str().unwrap().to_string());
    (status, error, response.text().await.unwrap())
}

/// Polls `check` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

pub fn pid_alive(pid: u32) -> bool {
    tabbify_runner::launch::read_proc_stat(pid).is_ok_and(|s| s.state != 'Z')
}
