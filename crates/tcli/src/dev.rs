//! `tcli dev`: a whole mesh on one machine with nothing configured. Starts a coordinator and a
//! node as child processes (binaries found next to `tcli`), joins the node with a token it makes,
//! prints where everything is, and on Ctrl-C stops everything it started. State lives under one
//! directory and is reused on the next run.

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
        ],
        &coord_log,
    )?;
    let url = wait_line(&mut coord, "tabbify-coordinator listening on", &coord_log)
        .await
        .context("coordinator")?;
    let client = CoordinatorClient::new(&url)?;
    let admin_path = dir.join("coordinator").join("admin-token");
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

    let peers = client.peers(None).await?;
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
    println!("coordinator  {url}  (roster: {url}/v1/mesh/peers)");
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
        "state        {}  (logs: coordinator.log, node.log)",
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
    stop(&mut coord).await;
    println!("stopped");
    Ok(())
}

/// TUN device of the dev node (distinct from a real node's `tbf0`).
const DEV_TUN: &str = "tbf-dev";

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
