//! Shared by the app tests: a real `tabbify-supervisor` (no mesh) with its own data directory,
//! deploys with a real `curl -F`, the example components, and cleanup that leaves no runner
//! behind (runners outlive their supervisor on purpose, so the guard hunts them down by their
//! command line, which names the data directory).

#![allow(dead_code, clippy::unwrap_used)]

pub mod docker;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tabbify_testkit::cluster::{SupervisorOpts, SupervisorProc};
use tabbify_testkit::{bin_path, workspace_root};
use tabbify_wire::node_apps::{AppInfo, AppState};

/// `target/wasm/<name>.wasm`, built by `examples/build.sh` once per test binary.
pub fn example_wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = workspace_root();
    let built = BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root.join("examples/build.sh"))
            .args(["hello-wasm", "misbehave", "fetcher"])
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

/// A manifest for a wasm app named `name`, with `extra` TOML appended.
pub fn manifest(name: &str, extra: &str) -> String {
    format!(
        "[app]\nname = \"{name}\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"app.wasm\"\n{extra}"
    )
}

/// A supervisor in loopback mode, killed (with every runner it started) when dropped.
pub struct Node {
    pub proc: Option<SupervisorProc>,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    /// Extra environment of the supervisor (and so of its runners).
    pub env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn start(args: &[&str]) -> Node {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Node {
        assert!(
            bin_path("tabbify-runner").is_ok(),
            "tabbify-runner is not built next to the tests; run `cargo build -p tabbify-runner` (or `cargo test --workspace`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node");
        let mut node = Node {
            proc: None,
            data_dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
        };
        node.boot();
        node
    }

    /// Starts the supervisor (again) on the same data directory.
    pub fn boot(&mut self) {
        let opts = SupervisorOpts {
            no_mesh: true,
            args: self.args.clone(),
            env: self.env.clone(),
            ..Default::default()
        };
        self.proc = Some(SupervisorProc::start(&self.data_dir, &opts).unwrap());
    }

    pub fn api(&self) -> &str {
        &self.proc.as_ref().unwrap().api
    }

    /// The node's local operator token (`<data-dir>/control-token`).
    pub fn token(&self) -> String {
        self.proc.as_ref().unwrap().control_token().unwrap()
    }

    /// `Authorization: Bearer <the node's token>`, for `curl -H`.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}", self.token())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(format!("{}.log", self.data_dir.display())).unwrap_or_default()
    }

    /// SIGKILL to the supervisor only; its runners keep running.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.guard.kill();
        }
    }

    pub fn app_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("apps").join(id)
    }

    /// `curl -F manifest=@... -F artifact=@...`: the HTTP status and the JSON body.
    pub fn deploy(&self, manifest: &str, artifact: &[u8]) -> (u16, serde_json::Value) {
        deploy_to(self.api(), &self.auth(), manifest, artifact)
    }

    /// Deploys and expects success; returns the app.
    pub fn deploy_ok(&self, manifest: &str, artifact: &Path) -> AppInfo {
        let (status, body) = self.deploy(manifest, &std::fs::read(artifact).unwrap());
        assert!(
            status == 201 || status == 200,
            "deploy answered {status}: {body}\n{}",
            self.log()
        );
        serde_json::from_value(body).unwrap()
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        curl_json(&["-H", &self.auth(), &format!("{}{path}", self.api())])
    }

    pub fn post(&self, path: &str) -> (u16, serde_json::Value) {
        curl_json(&[
            "-H",
            &self.auth(),
            "-X",
            "POST",
            &format!("{}{path}", self.api()),
        ])
    }

    pub fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        curl_json(&[
            "-H",
            &self.auth(),
            "-X",
            "DELETE",
            &format!("{}{path}", self.api()),
        ])
    }

    pub fn app(&self, id: &str) -> AppInfo {
        let (status, body) = self.get(&format!("/v1/apps/{id}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Polls the app until `check` holds.
    pub fn wait_app(&self, id: &str, what: &str, check: impl Fn(&AppInfo) -> bool) -> AppInfo {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let app = self.app(id);
            if check(&app) {
                return app;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {app:#?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_running(&self, id: &str) -> AppInfo {
        self.wait_app(id, "the app to run", |a| a.state == AppState::Running)
    }

    /// Every runner process whose app directory lies under `dir`.
    pub fn runners_under(dir: &Path) -> Vec<u32> {
        let needle = dir.as_os_str().as_encoded_bytes().to_vec();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let is_runner = cmdline
                .split(|b| *b == 0)
                .next()
                .is_some_and(|a| a.ends_with(b"tabbify-runner"));
            if is_runner
                && cmdline
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
                && alive(pid)
            {
                pids.push(pid);
            }
        }
        pids.sort();
        pids
    }

    pub fn runners_of(&self, id: &str) -> Vec<u32> {
        Self::runners_under(&self.app_dir(id))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        for pid in Self::runners_under(&self.data_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Deploys to the supervisor API at `api` with `curl -F` and the header `auth`: the HTTP status
/// and the JSON body.
pub fn deploy_to(
    api: &str,
    auth: &str,
    manifest: &str,
    artifact: &[u8],
) -> (u16, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tabbify.toml");
    let a = dir.path().join("app.wasm");
    std::fs::write(&m, manifest).unwrap();
    std::fs::write(&a, artifact).unwrap();
    curl_json(&[
        "-H",
        auth,
        "-F",
        &format!("manifest=@{}", m.display()),
        "-F",
        &format!("artifact=@{}", a.display()),
        &format!("{api}/v1/apps"),
    ])
}

/// A process that exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Runs curl with `args`; returns the HTTP status and the body as JSON (Null when empty).
pub fn curl_json(args: &[&str]) -> (u16, serde_json::Value) {
    let (status, body) = curl(args);
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, json)
}

/// Runs curl with `args`; returns the HTTP status (0 when no response) and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// GET `url` with curl: the status (0 when the connection failed) and the body.
pub fn curl_get(url: &str) -> (u16, String) {
    curl(&["-g", url])
}

/// A client for a steady stream of requests: a new connection for every request, so each one
/// really goes through accept on the app's address.
pub fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends GET requests to `url` one after another until `stop` is set (or `max` requests);
/// returns how many succeeded with `expect_status` and the failures.
pub async fn steady_load(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
) -> (usize, Vec<String>, Vec<String>) {
    let client = fresh_connections();
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut bodies = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failures.len() < max {
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => match r.text().await {
                Ok(body) => {
                    ok += 1;
                    if bodies.last() != Some(&body) {
                        bodies.push(body);
                    }
                }
                Err(e) => failures.push(format!("body: {e}")),
            },
            Ok(r) => failures.push(format!("status {}", r.status())),
            Err(e) => failures.push(format!("{e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (ok, failures, bodies)
}
