//! `tcli dev`: a whole mesh on one machine with nothing configured. Starts a coordinator, an
//! appsrv and a node as child processes (binaries found next to `tcli`), joins the node with a
//! token it makes, deploys the sample app `examples/hello-wasm` through the coordinator (building
//! it when needed), prints the URL to curl and the roster, and on Ctrl-C stops everything it
//! started. State lives under one directory and is reused on the next run.

use crate::table;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use tabbify_client::CoordinatorClient;
use tabbify_wire::health::{MeshState, SupervisorHealth};
use tabbify_wire::token::CreateJoinTokenRequest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// State directory (reused across runs).
    #[arg(long, default_value = ".tabbify-dev")]
    dir: PathBuf,
    /// Coordinator port on 127.0.0.1.
    #[arg(long, default_value_t = tabbify_wire::COORDINATOR_PORT)]
    coordinator_port: u16,
    /// Node control API port on 127.0.0.1.
    #[arg(long, default_value_t = tabbify_wire::SUPERVISOR_PORT)]
    node_port: u16,
    /// Artifact server port on 127.0.0.1.
    #[arg(long, default_value_t = 9000)]
    appsrv_port: u16,
    /// The sample app's component (default: `target/wasm/hello-wasm.wasm` of this checkout,
    /// built with `examples/build.sh` when missing).
    #[arg(long)]
    app: Option<PathBuf>,
    /// Start, print, and stop at once (for scripts and tests).
    #[arg(long)]
    once: bool,
}

/// Directory holding our other binaries: the one `tcli` runs from.
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating tcli")?;
    let dir = exe.parent().context("tcli has no parent directory")?;
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{name} is not next to tcli in {}; build everything with `cargo build --release`",
            dir.display()
        );
    }
    Ok(p)
}

/// Spawns a daemon that dies with us (even on SIGKILL) and logs to `<dir>/<name>.log`.
fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

async fn wait_line(child: &mut Child, marker: &str, log: &Path) -> Result<String> {
    let out = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(out).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(i) = line.find(marker) {
                return Some(line[i + marker.len()..].trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found.with_context(|| format!("it did not start; see {}", log.display()))
}

pub async fn run(args: DevArgs) -> Result<()> {
    let dir = std::path::absolute(&args.dir).context("state directory")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let coord_bin = sibling("tabbify-coordinator")?;
    let node_bin = sibling("tabbify-supervisor")?;

    let coord_log = dir.join("coordinator.log");
    let mut coord = spawn(
        &coord_bin,
        &[
            "--data-dir".into(),
            dir.join("coordinator").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", args.coordinator_port),
            // Everything runs on this machine, and without TUN the node's apps serve on
            // loopback: let the coordinator's ingress reach them there.
            "--allow-loopback-replicas".into(),
        ],
        &coord_log,
    )?;
    let appsrv_bin = sibling("tabbify-appsrv")?;
    let url = wait_line(&mut coord, "tabbify-coordinator listening on", &coord_log)
        .await
        .context("coordinator")?;
    let admin_path = dir.join("coordinator").join("admin-token");
    let ca_path = dir.join("coordinator").join(tabbify_pki::ca::CA_CERT_FILE);
    let client =
        CoordinatorClient::with_tls(&url, &crate::trust::settings(None, Some(&ca_path), None)?)?;
    let admin = std::fs::read_to_string(&admin_path)
        .with_context(|| format!("reading {}", admin_path.display()))?;
    let token = client
        .create_join_token(
            admin.trim(),
            &CreateJoinTokenRequest {
                ttl_secs: Some(600),
                description: Some("tcli dev".into()),
                ..Default::default()
            },
        )
        .await
        .context("creating a join token")?;

    let node_log = dir.join("node.log");
    let control_socket = dir.join("node-control.sock");
    let node_args = |dataplane: &str| -> Vec<String> {
        [
            "--data-dir",
            &dir.join("node").display().to_string(),
            "--coordinator",
            &url,
            "--bind",
            &format!("127.0.0.1:{}", args.node_port),
            "--name",
            "dev-node",
            "--join-token",
            &token.token,
            "--dataplane",
            dataplane,
            "--tun-name",
            DEV_TUN,
            "--listen-port",
            "0",
            "--control-socket",
            &control_socket.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // The mesh data plane when this machine lets us open a TUN device; otherwise control plane
    // only, and say so.
    let mut node = spawn(&node_bin, &node_args("tun"), &node_log)?;
    let (node_api, mesh_mode) =
        match wait_line(&mut node, "tabbify-supervisor listening on", &node_log).await {
            Ok(api) => (api, format!("mesh data plane on TUN device {DEV_TUN}")),
            Err(_) => {
                let why = last_error_line(&node_log);
                stop(&mut node).await;
                node = spawn(&node_bin, &node_args("off"), &node_log)?;
                let api = wait_line(&mut node, "tabbify-supervisor listening on", &node_log)
                    .await
                    .context("node")?;
                (api, format!("control plane only (no TUN: {why})"))
            }
        };
    let health = wait_joined(&node_api).await?;

    // The appsrv serves HTTPS with a certificate from the mesh CA, as in production; the key
    // stays in the dev state and is reused on the next run.
    let appsrv_tls = dir.join("appsrv-tls");
    crate::cert::issue(
        &client,
        admin.trim(),
        &crate::cert::IssueArgs {
            names: vec!["127.0.0.1".into(), "localhost".into()],
            out: appsrv_tls.clone(),
            ttl: None,
            new_key: false,
        },
    )
    .await
    .context("issuing the appsrv's certificate")?;
    let appsrv_log = dir.join("appsrv.log");
    let mut appsrv = spawn(
        &appsrv_bin,
        &[
            "--tls-cert".into(),
            appsrv_tls
                .join(crate::cert::CERT_FILE)
                .display()
                .to_string(),
            "--tls-key".into(),
            appsrv_tls.join(crate::cert::KEY_FILE).display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", args.appsrv_port),
            "--data-dir".into(),
            dir.join("appsrv").display().to_string(),
            "--token-key-file".into(),
            dir.join("coordinator")
                .join("signing-key.pub")
                .display()
                .to_string(),
        ],
        &appsrv_log,
    )?;
    let appsrv_url = wait_line(&mut appsrv, "tabbify-appsrv listening on", &appsrv_log)
        .await
        .context("appsrv")?;
    let component = match &args.app {
        Some(p) => p.clone(),
        None => sample_app().await?,
    };
    let manifest = dir.join("hello-wasm.toml");
    let text = format!(
        "[app]\nname = \"{SAMPLE_APP}\"\n\n[runtime]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
        component.display()
    );
    tabbify_fsutil::atomic_write(&manifest, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", manifest.display()))?;
    let deployed = crate::apps::deploy(
        &client,
        admin.trim(),
        &crate::apps::DeployArgs {
            manifest,
            artifact: None,
            appsrv: appsrv_url.clone(),
            no_wait: false,
            timeout: Duration::from_secs(60),
            quiet: true,
        },
    )
    .await
    .context("deploying the sample app")?;
    let app_url = format!("{url}/app/{SAMPLE_APP}/");
    let replica_url = deployed
        .view
        .replicas
        .iter()
        .find_map(|r| r.url.clone())
        .unwrap_or_default();

    let peers = client.peers(Some(admin.trim()), None).await?;
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = peers
        .peers
        .iter()
        .map(|p| {
            vec![
                p.display_name.clone(),
                p.ula.to_string(),
                p.tags
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                if p.online { "online" } else { "offline" }.into(),
                table::ago(p.last_seen, now),
            ]
        })
        .collect();
    println!("app          {app_url}");
    println!("             curl --cacert {} {app_url}", ca_path.display());
    println!(
        "             (the replica itself: {replica_url}; version {}, {})",
        deployed.view.version,
        match deployed.change {
            tabbify_client::AppChange::Created => "deployed now",
            tabbify_client::AppChange::Updated => "already deployed in this state directory",
        }
    );
    println!(
        "coordinator  {url}  (roster: tcli peers --coordinator {url} --ca-file {} --admin-token-file {})",
        ca_path.display(),
        admin_path.display()
    );
    println!("appsrv       {appsrv_url}");
    println!(
        "node         {node_api}/health  ula={}  tags={}",
        health.ula.map(|u| u.to_string()).unwrap_or_default(),
        health
            .tags
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("mesh         {mesh_mode}");
    println!(
        "tokens       `tcli --coordinator {url} --admin-token-file {} login --print`; no token: curl --unix-socket {} http://node/v1/apps",
        admin_path.display(),
        control_socket.display()
    );
    println!(
        "state        {}  (logs: coordinator.log, appsrv.log, node.log)",
        dir.display()
    );
    println!();
    print!(
        "{}",
        table::render(&["NAME", "ULA", "TAGS", "STATUS", "LAST SEEN"], &rows)
    );
    if !args.once {
        println!("\nrunning; Ctrl-C stops everything");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    stop(&mut node).await;
    // Runners outlive their supervisor by design (a node's apps survive a supervisor restart);
    // `tcli dev` owns the whole machine's mesh, so it ends them too. The next run respawns
    // them from the node's records.
    stop_runners_of(&dir.join("node")).await;
    stop(&mut appsrv).await;
    stop(&mut coord).await;
    println!("stopped");
    Ok(())
}

/// TUN device of the dev node (distinct from a real node's `tbf0`).
const DEV_TUN: &str = "tbf-dev";

/// The sample app's name.
const SAMPLE_APP: &str = "hello-wasm";

/// `target/wasm/hello-wasm.wasm` of the checkout `tcli` was built in (it runs from
/// `<repo>/target/<profile>/tcli`), built with `examples/build.sh` when it is not there yet.
async fn sample_app() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating tcli")?;
    let repo = exe
        .ancestors()
        .find(|d| d.join("examples/build.sh").is_file())
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .filter(|d| d.join("examples/build.sh").is_file())
        })
        .context("cannot find the examples/ of a Tabbify checkout; pass --app PATH.wasm")?;
    let wasm = repo.join("target/wasm/hello-wasm.wasm");
    if wasm.is_file() {
        return Ok(wasm);
    }
    eprintln!("building examples/hello-wasm (once)");
    let out = Command::new("bash")
        .arg(repo.join("examples/build.sh"))
        .arg(SAMPLE_APP)
        .stdout(Stdio::null())
        .output()
        .await
        .context("running examples/build.sh")?;
    if !out.status.success() || !wasm.is_file() {
        bail!(
            "examples/build.sh {SAMPLE_APP} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(wasm)
}

/// The last line of a log that mentions an error, for telling the operator why.
fn last_error_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.contains("ERROR") || l.contains("error"))
        .map(|l| l.trim().chars().take(200).collect())
        .unwrap_or_else(|| "see node.log".into())
}

async fn wait_joined(api: &str) -> Result<SupervisorHealth> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(resp) = reqwest_get(&format!("{api}/health")).await {
            if resp.mesh == MeshState::Joined {
                return Ok(resp);
            }
            last = resp.mesh_error;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the node did not join within 30s{}",
        last.map(|e| format!(": {e}")).unwrap_or_default()
    )
}

async fn reqwest_get(url: &str) -> Result<SupervisorHealth> {
    Ok(tabbify_client::get_json(url).await?)
}

/// Pids of `tabbify-runner` processes serving apps out of `node_dir`.
fn runners_of(node_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let prefix = node_dir.display().to_string();
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            let argv0 = args.next()?;
            let is_runner = Path::new(argv0.as_ref())
                .file_name()
                .is_some_and(|n| n == "tabbify-runner");
            (is_runner && args.any(|a| a.starts_with(&prefix))).then_some(pid)
        })
        .collect()
}

async fn stop_runners_of(node_dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for pid in runners_of(node_dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runners_of(node_dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in runners_of(node_dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
