//! A mesh laboratory for tests: a coordinator (and an appsrv) on one network-namespace host of a
//! bridged underlay LAN, supervisors on others, each with its own TUN device and WireGuard data
//! plane. Everything it starts is killed and every namespace removed when it is dropped, even
//! when the test fails.

#![allow(dead_code, clippy::unwrap_used)] // test support: a panic is the failure report

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tabbify_testkit::netns::{Host, Lan};
use tabbify_testkit::{ChildGuard, bin_path, read_ready_line};

pub struct MeshLab {
    pub lan: Lan,
    pub coord_host: Host,
    coord: Option<ChildGuard>,
    coord_args: Vec<String>,
    pub coord_url: String,
    pub admin_file: PathBuf,
    pub dir: tempfile::TempDir,
}

pub struct LabNode {
    pub name: String,
    pub host: Host,
    pub guard: ChildGuard,
    pub data_dir: PathBuf,
    pub ula: Ipv6Addr,
    /// An operator token (node:read, node:write) the coordinator minted, for its control API.
    pub token: String,
}

/// How a node is started.
#[derive(Default, Clone)]
pub struct NodeOpts {
    /// Reach the machine's Docker daemon (the node then carries the `docker` tag).
    pub docker: bool,
    pub extra_args: Vec<String>,
}

pub fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

impl MeshLab {
    /// A LAN with the coordinator's host; `coord_args` are added to the coordinator's flags.
    pub fn new(tag: &str, coord_args: &[&str]) -> MeshLab {
        let dir = tempfile::tempdir().unwrap();
        let lan = Lan::new(tag).unwrap();
        let coord_host = lan.add_host("coord").unwrap();
        // As the spec writes it: the join token's CA pin makes the node talk TLS to it anyway.
        let coord_url = format!("http://{}:8888", coord_host.underlay_addr());
        let mut lab = MeshLab {
            lan,
            coord_host,
            coord: None,
            coord_args: coord_args.iter().map(|s| s.to_string()).collect(),
            coord_url,
            admin_file: dir.path().join("coordinator/admin-token"),
            dir,
        };
        lab.start_coordinator();
        lab
    }

    fn start_coordinator(&mut self) {
        let mut cmd = self
            .coord_host
            .command(bin_path("tabbify-coordinator").unwrap());
        cmd.args(["--listen", "0.0.0.0:8888"])
            .args(["--heartbeat-interval", "1s"])
            .args(&self.coord_args)
            .arg("--data-dir")
            .arg(self.dir.path().join("coordinator"))
            .stdout(Stdio::piped())
            .stderr(log_file(self.dir.path(), "coordinator"));
        let mut coord = self.coord_host.spawn(cmd).unwrap();
        let out = coord.child.as_mut().unwrap().stdout.take().unwrap();
        read_ready_line(out, "listening on", Duration::from_secs(30)).unwrap();
        self.coord = Some(coord);
    }

    /// kill -9 the coordinator (and leave it down).
    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coord.take() {
            c.kill();
        }
    }

    /// kill -9 the coordinator and start it again on the same data directory.
    pub fn crash_and_restart_coordinator(&mut self) {
        if let Some(mut c) = self.coord.take() {
            c.kill();
        }
        self.start_coordinator();
    }

    /// An operator token minted by the coordinator (`POST /v1/admin/operator-tokens` with the
    /// admin token) for `request`, e.g. `{"scopes":["node:read"]}`.
    pub fn operator_token(&self, request: &serde_json::Value) -> String {
        let admin = std::fs::read_to_string(&self.admin_file).unwrap();
        let ca = self.dir.path().join("coordinator/ca.crt");
        let (code, body) = curl(
            &self.coord_host,
            &[
                "--cacert",
                ca.to_str().unwrap(),
                "-H",
                &format!("Authorization: Bearer {}", admin.trim()),
                "-H",
                "content-type: application/json",
                "-d",
                &request.to_string(),
                "https://127.0.0.1:8888/v1/admin/operator-tokens",
            ],
        );
        assert_eq!(code, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// An appsrv on the coordinator's host, taking uploads with `artifacts:write` tokens signed
    /// by the coordinator's key; its URL.
    pub fn start_appsrv(&self) -> (ChildGuard, String) {
        let mut cmd = self.coord_host.command(bin_path("tabbify-appsrv").unwrap());
        cmd.args(["--listen", "0.0.0.0:9000", "--insecure-no-mtls"])
            .arg("--data-dir")
            .arg(self.dir.path().join("appsrv"))
            .arg("--token-key-file")
            .arg(self.dir.path().join("coordinator/signing-key.pub"))
            .stdout(Stdio::piped())
            .stderr(log_file(self.dir.path(), "appsrv"));
        let mut g = self.coord_host.spawn(cmd).unwrap();
        let out = g.child.as_mut().unwrap().stdout.take().unwrap();
        read_ready_line(out, "listening on", Duration::from_secs(30)).unwrap();
        (
            g,
            format!("http://{}:9000", self.coord_host.underlay_addr()),
        )
    }

    /// Runs tcli on the coordinator's host; its stdout, or a panic with its stderr.
    pub fn tcli(&self, args: &[&str]) -> String {
        let mut full = vec![
            "--coordinator".to_string(),
            "https://127.0.0.1:8888".into(),
            "--admin-token-file".into(),
            self.admin_file.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let out = self
            .coord_host
            .exec_timeout(
                bin_path("tcli").unwrap().to_str().unwrap(),
                &full,
                Duration::from_secs(120),
            )
            .unwrap();
        assert!(
            out.status.success(),
            "tcli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn token(&self) -> String {
        self.tcli(&["token", "create", "--reusable"])
            .trim()
            .to_string()
    }

    pub fn start_node(
        &self,
        host: &Host,
        name: &str,
        token: &str,
        data_dir: &Path,
        opts: &NodeOpts,
    ) -> LabNode {
        let mut cmd = host.command(bin_path("tabbify-supervisor").unwrap());
        cmd.args(["--coordinator", &self.coord_url, "--join-token", token])
            .args(["--name", name, "--probe-interval", "1h"])
            .args(&opts.extra_args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--control-socket")
            .arg(data_dir.join("control.sock"))
            .stdout(Stdio::piped())
            .stderr(log_file(self.dir.path(), name));
        if !opts.docker {
            cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        }
        let mut guard = host.spawn(cmd).unwrap();
        let out = guard.child.as_mut().unwrap().stdout.take().unwrap();
        let api = read_ready_line(
            out,
            "tabbify-supervisor listening on",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{name} did not come up: {e:#}; see {}",
                self.dir.path().display()
            )
        });
        // http://[ula]:8730
        let ula: Ipv6Addr = api
            .trim_start_matches("http://[")
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let token =
            self.operator_token(&serde_json::json!({"scopes": ["node:read", "node:write"]}));
        LabNode {
            name: name.into(),
            host: host.clone(),
            guard,
            data_dir: data_dir.to_path_buf(),
            ula,
            token,
        }
    }
}

impl LabNode {
    /// SIGKILLs every process in the node's namespace (the supervisor and its runners): the
    /// machine is gone.
    pub fn kill_machine(&mut self) {
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", self.host.namespace()])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.guard.kill();
    }

    /// `Authorization: Bearer <token>`, for `curl -H`.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}", self.token)
    }

    /// The node's own app list, asked on the node itself.
    pub fn apps(&self) -> serde_json::Value {
        let (code, body) = curl(
            &self.host,
            &[
                "-H",
                &self.auth(),
                &format!("http://[{}]:8730/v1/apps", self.ula),
            ],
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Names of the apps this node runs.
    pub fn app_names(&self) -> Vec<String> {
        self.apps()["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    }
}

pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// curl in `host`'s namespace: the status (0 without an answer) and the body.
pub fn curl(host: &Host, args: &[&str]) -> (u16, String) {
    let mut full = vec!["-sS", "-m", "5", "-g", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = host.exec("curl", &full).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn ping(from: &Host, to: Ipv6Addr) -> bool {
    from.exec("ping", &["-6", "-c", "1", "-W", "1", &to.to_string()])
        .map(|o| o.status.success())
        .unwrap_or(false)
}
