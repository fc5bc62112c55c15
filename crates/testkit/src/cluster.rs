//! Starting our own daemons as real processes for tests: a coordinator on a loopback port and
//! supervisors with their own state directories. Each is killed when its guard drops; stderr goes
//! to `<dir>.log` so a failing test can show what the daemon said.

use crate::process::{ChildGuard, bin_path, read_ready_line};
use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn log_file(dir: &Path) -> Result<(PathBuf, File)> {
    let path = PathBuf::from(format!("{}.log", dir.display()));
    let f = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((path, f))
}

/// A running `tabbify-coordinator`.
pub struct CoordinatorProc {
    pub guard: ChildGuard,
    /// `https://127.0.0.1:PORT` (`http://` with `--insecure-no-mtls`)
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl CoordinatorProc {
    /// Starts on `listen` (e.g. `127.0.0.1:0`) with `extra` flags; waits for its ready line.
    pub fn start(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Self> {
        let (log, stderr) = log_file(data_dir)?;
        let mut child = Command::new(bin_path("tabbify-coordinator")?)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawning tabbify-coordinator")?;
        let stdout = child.stdout.take().context("coordinator stdout")?;
        let guard = ChildGuard::new("tabbify-coordinator", child);
        let url = read_ready_line(stdout, "tabbify-coordinator listening on", READY_TIMEOUT)
            .with_context(|| format!("coordinator did not start; see {}", log.display()))?;
        Ok(Self {
            guard,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        })
    }

    /// `host:port` of the API, for restarting on the same address.
    pub fn addr(&self) -> &str {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    }

    /// The mesh CA (`ca.crt` in its data dir; absent with `--insecure-no-mtls`).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("ca.crt")
    }

    /// A client that trusts this coordinator (by its CA file) and presents no certificate: what
    /// an operator uses, with [`CoordinatorProc::admin_token`].
    pub fn client(&self) -> Result<tabbify_client::CoordinatorClient> {
        let trust = match std::fs::read(self.ca_file()) {
            Ok(pem) => tabbify_client::ServerTrust::Roots(
                tabbify_pki::pem::certificates(&pem, "ca.crt").context("the coordinator's CA")?,
            ),
            Err(_) => tabbify_client::ServerTrust::System,
        };
        Ok(tabbify_client::CoordinatorClient::with_tls(
            &self.url,
            &tabbify_client::TlsSettings {
                trust,
                identity: None,
            },
        )?)
    }

    pub fn admin_token(&self) -> Result<String> {
        let p = self.data_dir.join("admin-token");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }
}

/// A running `tabbify-supervisor`.
pub struct SupervisorProc {
    pub guard: ChildGuard,
    /// `http://ADDR` of its control API.
    pub api: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Its control socket (no token needed): `<data-dir>/control.sock` unless the args name
    /// another.
    pub control_socket: PathBuf,
}

impl SupervisorProc {
    /// The operator token a `--no-mesh` supervisor wrote to `<data-dir>/control-token`.
    pub fn control_token(&self) -> Result<String> {
        let p = self.data_dir.join("control-token");
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }
}

/// How to start a supervisor.
#[derive(Debug, Clone, Default)]
pub struct SupervisorOpts {
    pub coordinator: Option<String>,
    pub name: Option<String>,
    pub join_token: Option<String>,
    pub no_mesh: bool,
    /// Control API address; default `127.0.0.1:0`.
    pub bind: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl SupervisorProc {
    pub fn start(data_dir: &Path, opts: &SupervisorOpts) -> Result<Self> {
        let (log, stderr) = log_file(data_dir)?;
        let mut cmd = Command::new(bin_path("tabbify-supervisor")?);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--bind", opts.bind.as_deref().unwrap_or("127.0.0.1:0")])
            .env_remove("TABBIFY_MESH_COORDINATOR")
            .env_remove("TABBIFY_JOIN_TOKEN")
            .env_remove("SUPERVISOR_NAME")
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(c) = &opts.coordinator {
            cmd.args(["--coordinator", c]);
        }
        if let Some(n) = &opts.name {
            cmd.env("SUPERVISOR_NAME", n);
        }
        if let Some(t) = &opts.join_token {
            cmd.env("TABBIFY_JOIN_TOKEN", t);
        }
        if opts.no_mesh {
            cmd.arg("--no-mesh");
        }
        // Each test's node has its own socket (the default /run/tabbify/control.sock is shared).
        let control_socket = data_dir.join("control.sock");
        if !opts.args.iter().any(|a| a.starts_with("--control-socket")) {
            cmd.arg("--control-socket").arg(&control_socket);
        }
        cmd.args(&opts.args);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning tabbify-supervisor")?;
        let stdout = child.stdout.take().context("supervisor stdout")?;
        let guard = ChildGuard::new("tabbify-supervisor", child);
        let api = read_ready_line(stdout, "tabbify-supervisor listening on", READY_TIMEOUT)
            .with_context(|| format!("supervisor did not start; see {}", log.display()))?;
        Ok(Self {
            guard,
            api,
            data_dir: data_dir.to_path_buf(),
            log,
            control_socket,
        })
    }
}
