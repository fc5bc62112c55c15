//! Shared by the updater's integration tests: a release server on a loopback port (real HTTP,
//! files and manifest the test edits as it goes, a count of what was downloaded), release
//! builders that compute real sizes and sha256s, and the node's supervisor run the way systemd
//! would run it (a restart command that stops the main process only and starts `current`).

#![allow(dead_code, clippy::unwrap_used)]

pub mod app;
pub mod nix_cli;
pub mod units;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FETCH: &str = env!("CARGO_BIN_EXE_tabbify-fetch");
pub const UPDATE: &str = env!("CARGO_BIN_EXE_tabbify-update");

#[derive(Default)]
struct Files {
    /// URL path (without the leading slash) -> body.
    bodies: HashMap<String, Vec<u8>>,
    hits: HashMap<String, u32>,
}

/// A release server on 127.0.0.1, serving whatever the test puts in it.
pub struct ReleaseServer {
    pub url: String,
    files: Arc<Mutex<Files>>,
    runtime: tokio::runtime::Runtime,
}

async fn serve(
    State(files): State<Arc<Mutex<Files>>>,
    UrlPath(path): UrlPath<String>,
) -> axum::response::Response {
    let mut f = files.lock().unwrap();
    *f.hits.entry(path.clone()).or_default() += 1;
    match f.bodies.get(&path) {
        Some(body) => body.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

impl ReleaseServer {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let files = Arc::new(Mutex::new(Files::default()));
        let app = axum::Router::new()
            .route("/releases/{*path}", axum::routing::get(serve))
            .with_state(files.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/releases"),
            files,
            runtime,
        }
    }

    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .bodies
            .insert(path.to_string(), body);
    }

    pub fn hits(&self, path: &str) -> u32 {
        self.files
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Publishes `releases` (their files) and a manifest naming `latest`.
    pub fn publish(&self, latest: &str, releases: &[&Release], kernel: Option<&[u8]>) {
        let mut entries = Vec::new();
        for r in releases {
            let mut files = Vec::new();
            for (name, body, served) in &r.files {
                let path = format!("{}/{name}", r.version);
                files.push(serde_json::json!({
                    "name": name, "path": path, "size": body.len(), "sha256": sha256(body),
                }));
                self.put(&path, served.clone().unwrap_or_else(|| body.clone()));
            }
            entries.push(serde_json::json!({ "version": r.version, "files": files }));
        }
        let mut manifest =
            serde_json::json!({ "schema": 1, "latest": latest, "releases": entries });
        if let Some(k) = kernel {
            self.put("kernels/vmlinux-test", k.to_vec());
            manifest["guest_kernel"] = serde_json::json!({
                "name": "vmlinux", "path": "kernels/vmlinux-test", "size": k.len(),
                "sha256": sha256(k),
            });
        }
        self.put(
            "manifest.json",
            serde_json::to_vec_pretty(&manifest).unwrap(),
        );
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        // Dropping the runtime stops the server task.
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        rt.shutdown_background();
    }
}

/// One release: files as the manifest describes them; `served` replaces what the server sends.
pub struct Release {
    pub version: String,
    pub files: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
}

impl Release {
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_string(),
            files: Vec::new(),
        }
    }

    pub fn file(mut self, name: &str, body: Vec<u8>) -> Self {
        self.files.push((name.to_string(), body, None));
        self
    }

    /// A file whose manifest entry describes `body` but whose download is `served` instead.
    pub fn tampered_file(mut self, name: &str, body: Vec<u8>, served: Vec<u8>) -> Self {
        self.files.push((name.to_string(), body, Some(served)));
        self
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The real supervisor binary with `marker` appended: still the same program (ELF ignores
/// trailing bytes), but a different file with its own sha256, like a new build.
pub fn supervisor_build(marker: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(supervisor_path()).unwrap();
    bytes.extend_from_slice(format!("\0tabbify-test-build:{marker}").as_bytes());
    bytes
}

pub fn supervisor_path() -> PathBuf {
    tabbify_testkit::bin_path("tabbify-supervisor").expect(
        "the supervisor binary is needed: `cargo build -p tabbify-supervisor` (cargo test \
         --workspace builds it)",
    )
}

pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn current_target(data: &Path) -> Option<String> {
    std::fs::read_link(data.join("current"))
        .ok()
        .map(|p| p.display().to_string())
}

/// A free loopback port (bound and released; the supervisor binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// The node's supervisor, managed like the systemd unit manages it: `restart.sh` stops the main
/// process only (KillMode=process) and starts `<data>/current/tabbify-supervisor` detached, on a
/// fixed loopback port. Killed when dropped.
pub struct ManagedSupervisor {
    pub script: PathBuf,
    pub pidfile: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl ManagedSupervisor {
    pub fn new(dir: &Path, data: &Path) -> Self {
        let port = free_port();
        let script = dir.join("restart.sh");
        let pidfile = dir.join("supervisor.pid");
        let log = dir.join("supervisor.log");
        let state = dir.join("node-state");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
# Stops the running supervisor (its main process only), then starts `current` again.
set -eu
if [ -f '{pid}' ]; then
    pid=$(cat '{pid}')
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; do
        i=$((i + 1)); [ "$i" -gt 200 ] && kill -KILL "$pid" 2>/dev/null || true
        sleep 0.05
    done
fi
setsid '{data}/current/tabbify-supervisor' --no-mesh --bind 127.0.0.1:{port} \
    --data-dir '{state}' </dev/null >>'{log}' 2>&1 &
echo $! > '{pid}'
"#,
                pid = pidfile.display(),
                data = data.display(),
                state = state.display(),
                log = log.display(),
            ),
        )
        .unwrap();
        Self {
            script,
            pidfile,
            port,
            log,
        }
    }

    pub fn restart_command(&self) -> String {
        format!("sh '{}'", self.script.display())
    }

    /// Starts it the first time and waits for /health.
    pub fn start(&self) {
        let st = Command::new("sh").arg(&self.script).status().unwrap();
        assert!(st.success());
        assert!(
            wait_until(Duration::from_secs(30), || self.health().is_some()),
            "supervisor never answered; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The file the running supervisor was started from.
    pub fn exe(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/exe", self.pid()?)).ok()
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    pub fn health(&self) -> Option<serde_json::Value> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        let body = out.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body.trim()).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ManagedSupervisor {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A release with the real tabbify-fetch, as the bootstraps expect to find it.
pub fn publish_installable(server: &ReleaseServer, version: &str, fetch: Vec<u8>) {
    let r = Release::new(version)
        .file("tabbify-supervisor", supervisor_build(version))
        .file("tabbify-fetch", std::fs::read(FETCH).unwrap())
        .file("tabbify-update", std::fs::read(UPDATE).unwrap());
    server.publish(version, &[&r], Some(b"kernel image"));
    // What the server actually sends for tabbify-fetch (the manifest keeps the real hash).
    server.put(&format!("{version}/tabbify-fetch"), fetch);
}
