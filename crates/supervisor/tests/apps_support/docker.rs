//! Docker helpers of the app tests: FROM-scratch images of hello-http built by the test, the
//! node's containers seen through the docker CLI, a [`DockerNode`] that removes its containers and
//! images however a test ends, and a [`DaemonLink`] that stands in for the daemon's socket so a
//! test can take the daemon away from one node without touching anyone else's.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const BODY: &str = "hello from tabbify hello-http\n";

/// `target/native/hello-http`, built once per test binary.
pub fn hello_http() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = workspace_root();
    let built = BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root.join("examples/build.sh"))
            .arg("hello-http")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    // A failed build fails the test rather than leave it on a binary from an earlier build.
    if let Err(e) = built {
        panic!("examples/build.sh hello-http failed: {e}");
    }
    let path = root.join("target/native/hello-http");
    assert!(
        path.is_file(),
        "examples/build.sh made no {}",
        path.display()
    );
    path
}

/// Runs the docker CLI; its trimmed stdout, or the failure.
pub fn docker_try(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

pub fn docker(args: &[&str]) -> String {
    docker_try(args).unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

/// A unique name for this test run: `<what>-<pid>-<n>`.
pub fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A supervisor whose containers and images are removed when it is dropped, however the test
/// ends.
pub struct DockerNode {
    pub node: Node,
    images: Mutex<Vec<String>>,
}

impl DockerNode {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self {
            node: Node::start_with_env(args, env),
            images: Mutex::new(Vec::new()),
        }
    }

    /// Builds a FROM-scratch image of hello-http tagged `tabbify-test/<what>:<unique>`, with
    /// `cmd` as its command (a label makes its id unique too, so removing it removes it).
    pub fn build_image(&self, what: &str, cmd: &str) -> String {
        let tag = format!("tabbify-test/{what}:{}", unique("t"));
        self.build_as(&tag, cmd);
        tag
    }

    pub fn build_as(&self, tag: &str, cmd: &str) {
        self.build_with(tag, cmd, &[]);
    }

    /// Builds `tag` holding hello-http and `extra` binaries (copied to `/bin/<file name>`).
    pub fn build_with(&self, tag: &str, cmd: &str, extra: &[&Path]) {
        let ctx = tempfile::tempdir().unwrap();
        let mut dockerfile = "FROM scratch\nCOPY hello-http /bin/hello-http\n".to_string();
        std::fs::copy(hello_http(), ctx.path().join("hello-http")).unwrap();
        for bin in extra {
            let name = bin.file_name().unwrap().to_str().unwrap();
            std::fs::copy(bin, ctx.path().join(name)).unwrap();
            dockerfile.push_str(&format!("COPY {name} /bin/{name}\n"));
        }
        dockerfile.push_str(&format!("LABEL tabbify.test={tag:?}\nCMD {cmd}\n"));
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        self.images.lock().unwrap().push(tag.to_string());
        let id = docker(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
        // By id too: a tag moved or removed by the test leaves the image behind.
        self.images.lock().unwrap().push(id);
    }

    /// This node's containers (running or not) of app `id`.
    pub fn containers_of(&self, id: &str) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=tabbify.app_id={id}"),
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// The one container of app `id`, running.
    pub fn the_container(&self, id: &str) -> String {
        let all = self.containers_of(id);
        assert_eq!(all.len(), 1, "one container for the app: {all:?}");
        let running = docker(&["inspect", "-f", "{{.State.Running}}", &all[0]]);
        assert_eq!(running, "true", "{}", self.node.log());
        all[0].clone()
    }

    /// Every container of this node's apps.
    pub fn our_containers(&self) -> Vec<String> {
        let listed = docker_try(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=tabbify.app_dir",
            "--format",
            "{{.ID}} {{.Label \"tabbify.app_dir\"}}",
        ])
        .unwrap_or_default();
        listed
            .lines()
            .filter_map(|line| {
                let (id, dir) = line.split_once(' ')?;
                Path::new(dir)
                    .starts_with(&self.node.data_dir)
                    .then(|| id.to_string())
            })
            .collect()
    }

    pub fn wait_no_container(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.containers_of(id).is_empty() {
            assert!(
                Instant::now() < deadline,
                "containers of {id} still there: {:?}",
                self.containers_of(id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn app_log(&self, id: &str) -> String {
        curl(&[
            "-H",
            &self.node.auth(),
            &format!("{}/v1/apps/{id}/logs", self.node.api()),
        ])
        .1
    }
}

impl Drop for DockerNode {
    fn drop(&mut self) {
        self.node.kill9();
        for pid in Node::runners_under(&self.node.data_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for id in self.our_containers() {
            let _ = docker_try(&["rm", "-f", &id]);
        }
        for tag in self.images.lock().unwrap().iter() {
            let _ = docker_try(&["rmi", "-f", tag]);
        }
    }
}

pub fn docker_manifest(name: &str, image: &str, extra: &str) -> String {
    format!("[app]\nname = \"{name}\"\n[runtime]\nkind = \"docker\"\nimage = \"{image}\"\n{extra}")
}

/// Deploys with `curl -F`: the manifest, and the image tarball when given.
pub fn deploy(node: &Node, manifest: &str, tarball: Option<&Path>) -> (u16, serde_json::Value) {
    let api = node.api();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tabbify.toml");
    std::fs::write(&m, manifest).unwrap();
    let mut args = vec![
        "-H".to_string(),
        node.auth(),
        "-F".to_string(),
        format!("manifest=@{}", m.display()),
    ];
    if let Some(t) = tarball {
        args.extend(["-F".to_string(), format!("artifact=@{}", t.display())]);
    }
    args.push(format!("{api}/v1/apps"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl_json(&args)
}

pub fn deploy_ok(node: &DockerNode, manifest: &str, tarball: Option<&Path>) -> AppInfo {
    let (status, body) = deploy(&node.node, manifest, tarball);
    assert_eq!(status, 201, "{body}\n{}", node.node.log());
    serde_json::from_value(body).unwrap()
}

pub fn kill_pid(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The real daemon's unix socket: `DOCKER_HOST` when it is `unix://...`, else the default.
pub fn daemon_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// A stand-in for the daemon's socket that can be taken away: forwards connections to the real
/// socket while up; down closes the listener and every connection.
pub struct DaemonLink {
    path: PathBuf,
    up: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl DaemonLink {
    pub fn new(path: PathBuf) -> Self {
        let mut link = Self {
            path,
            up: Arc::new(AtomicBool::new(false)),
            streams: Arc::default(),
            acceptor: None,
        };
        link.bring_up();
        link
    }

    pub fn bring_up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, streams) = (self.up.clone(), self.streams.clone());
        self.acceptor = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(daemon) = UnixStream::connect(daemon_socket()) else {
                    continue;
                };
                let mut s = streams.lock().unwrap();
                s.push(client.try_clone().unwrap());
                s.push(daemon.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), daemon.try_clone().unwrap());
                pipe(daemon, client);
            }
        }));
    }

    pub fn take_down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the acceptor, which then ends
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let _ = std::fs::remove_file(&self.path);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for DaemonLink {
    fn drop(&mut self) {
        self.take_down();
    }
}

pub fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
