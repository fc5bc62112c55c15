//! Support for the Docker tests of the node images: building the images once per test binary
//! (dev-profile musl binaries in this build's target directory), `docker` calls that fail with
//! their output, and a scope that owns every container, volume and network a test creates and
//! removes them when it ends, however it ends.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tabbify_testkit::workspace_root;

pub const TCLI: &str = env!("CARGO_BIN_EXE_tcli");

/// This build's target directory (`<target>/<profile>/deps/<test>` -> `<target>`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf()
}

/// Docker tests in one binary run one at a time: they share host ports (8730) and the
/// machine's two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds `images` with deploy/docker/build-images.sh, at most once per test binary for each
/// distinct list. The binaries come from this build's own (host, dev) artifacts, which
/// `cargo test` has just built, so the images cost no extra compile;
/// `TABBIFY_IMAGE_BUILD=musl` builds the static musl binaries releases use instead.
pub fn build_images(images: &[&str]) {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let key = images.join(",");
    if built.contains(&key) {
        return;
    }
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("deploy/docker/build-images.sh"))
        .args(["--profile", "dev", "--target-dir"])
        .arg(target_dir());
    if std::env::var("TABBIFY_IMAGE_BUILD").as_deref() != Ok("musl") {
        cmd.arg("--host");
    }
    let out = cmd
        .args(images)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-images.sh {key} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("built images {key} in {:.0?}", started.elapsed());
    built.push(key);
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Runs docker and returns its trimmed stdout; panics with the output when it fails.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    check()
}

/// Owns the Docker objects of one test; removes them on drop.
pub struct DockerScope {
    pub id: String,
    containers: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl DockerScope {
    pub fn new(prefix: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self {
            id: format!("{prefix}{}{:04x}", std::process::id(), nanos & 0xffff),
            containers: Mutex::default(),
            volumes: Mutex::default(),
            networks: Mutex::default(),
        }
    }

    /// `<kind>-<id>`, remembered for removal.
    pub fn container(&self, kind: &str) -> String {
        let n = format!("tbft-{kind}-{}", self.id);
        self.containers.lock().unwrap().push(n.clone());
        n
    }

    pub fn volume(&self, kind: &str) -> String {
        let n = format!("tbft-{kind}-{}", self.id);
        self.volumes.lock().unwrap().push(n.clone());
        n
    }

    pub fn network(&self) -> String {
        let n = format!("tbft-net-{}", self.id);
        docker_ok(&["network", "create", &n]);
        self.networks.lock().unwrap().push(n.clone());
        n
    }

    /// The container's last log lines, for failure messages.
    pub fn logs(&self, container: &str) -> String {
        let out = docker(&["logs", "--tail", "30", container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        let containers = self
            .containers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for v in self.volumes.lock().map(|v| v.clone()).unwrap_or_default() {
            let _ = docker(&["volume", "rm", "-f", &v]);
        }
        for n in self.networks.lock().map(|n| n.clone()).unwrap_or_default() {
            let _ = docker(&["network", "rm", &n]);
        }
    }
}
