//! `tabbify-mesh`: the data plane on its own, for tests, benchmarks and debugging.
//!
//! - `genkey` prints a new base64 private key; `pubkey` reads one on stdin and prints its public key;
//! - `up --config FILE.json` brings the TUN device and tunnels up, prints `tabbify-mesh up ...` on
//!   stdout when ready, re-reads the peer list on SIGHUP (or when the file changes, with
//!   `--watch-config`), optionally writes stats JSON every 250 ms (`--stats-file`), and shuts down
//!   cleanly on SIGTERM / SIGINT, removing the TUN device. Offload: the file's `offload` field,
//!   else `TABBIFY_MESH_OFFLOAD` (`off` forces plain TUN and one datagram per message).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tabbify_mesh::dataplane::config_file::MeshConfigFile;
use tabbify_mesh::dataplane::{DataPlane, keys};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "tabbify-mesh",
    version,
    about = "Tabbify mesh data plane (userspace WireGuard over TUN)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new base64 private key.
    Genkey,
    /// Read a base64 private key on stdin, print its public key.
    Pubkey,
    /// Run the data plane from a JSON config file.
    Up {
        #[arg(long)]
        config: PathBuf,
        /// Also reload the peer list when the file's modification time changes.
        #[arg(long)]
        watch_config: bool,
        /// Write stats JSON to this path every 250 ms (atomically replaced).
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Genkey => {
            println!("{}", keys::encode_key(&keys::generate_private_key()));
            Ok(())
        }
        Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the private key from stdin")?;
            let private = keys::decode_key(&text).context("private key on stdin")?;
            println!("{}", keys::encode_key(&keys::public_key(&private)));
            Ok(())
        }
        Command::Up {
            config,
            watch_config,
            stats_file,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(up(&config, watch_config, stats_file.as_deref())),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn up(config_path: &Path, watch: bool, stats_file: Option<&Path>) -> Result<()> {
    let file = MeshConfigFile::load(config_path)?;
    let cfg = file.data_plane_config()?;
    let plane = DataPlane::start_with(cfg.clone(), file.offload_policy())
        .await
        .context("starting the data plane")?;
    plane.set_peers(file.peer_configs());
    println!(
        "tabbify-mesh up port={} tun={} public_key={}",
        plane.local_port(),
        plane.tun_name(),
        keys::encode_key(&keys::public_key(&cfg.private_key))
    );
    std::io::stdout().flush().context("stdout")?;

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_mtime = modified(config_path);
    loop {
        let reload = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => true,
            _ = tick.tick() => {
                if let Some(path) = stats_file {
                    write_stats(&plane, path);
                }
                let now = modified(config_path);
                let changed = watch && now != last_mtime;
                last_mtime = now;
                changed
            }
        };
        if reload {
            reload_peers(&plane, config_path, &cfg);
        }
    }
    tracing::info!("shutting down");
    plane
        .shutdown()
        .await
        .context("shutting down the data plane")?;
    Ok(())
}

/// Re-reads the file and applies its peer list. A broken file leaves the current peers in place;
/// changes to the node's own settings need a restart and are reported as such.
fn reload_peers(
    plane: &DataPlane,
    path: &Path,
    running: &tabbify_mesh::dataplane::DataPlaneConfig,
) {
    let file = match MeshConfigFile::load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the current peers");
            return;
        }
    };
    match file.data_plane_config() {
        Ok(c) if c != *running => {
            tracing::warn!("node settings changed in the config file; they apply on restart")
        }
        Err(e) => tracing::warn!(error = %e, "node settings in the config file are invalid"),
        _ => {}
    }
    plane.set_peers(file.peer_configs());
}

fn write_stats(plane: &DataPlane, path: &Path) {
    let stats = plane.stats();
    let result = serde_json::to_vec_pretty(&stats)
        .map_err(std::io::Error::other)
        .and_then(|json| tabbify_fsutil::atomic_write(path, &json, 0o644));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not write stats");
    }
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
