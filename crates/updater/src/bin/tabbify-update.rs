//! `tabbify-update`: move the node to a new release behind a health gate, rolling back when the
//! new one does not stay healthy.
//!
//! Exit codes: 0 updated or already up to date; 1 refused or failed before anything moved;
//! 2 the candidate was rejected or rolled back (the old version serves); 3 the rollback did not
//! come back healthy (the node needs an operator).

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tabbify_updater::check::CheckSettings;
use tabbify_updater::gate::GatePolicy;
use tabbify_updater::health::default_health_url;
use tabbify_updater::restart::{RestartCommand, SYSTEMD_RESTART};
use tabbify_updater::update::{UpdateError, UpdateOutcome, UpdateSettings, run_update};
use tabbify_updater::{Layout, ReleaseServer};

#[derive(Debug, Parser)]
#[command(
    name = "tabbify-update",
    version,
    about = "Health-gated self-update of a Tabbify node"
)]
struct Args {
    /// Base URL of the release server; `<URL>/manifest.json` lists the releases.
    #[arg(long, env = "TABBIFY_RELEASE_URL")]
    release_url: String,
    /// Version to move to (default: the manifest's `latest`).
    #[arg(long, value_name = "VERSION")]
    release: Option<String>,
    /// The node's state directory (releases, `current`, the mesh identity).
    #[arg(long, env = "TABBIFY_DATA_DIR", default_value = "/var/lib/tabbify")]
    data_dir: PathBuf,
    /// Shell command that restarts the supervisor.
    #[arg(long, env = "TABBIFY_UPDATE_RESTART_COMMAND", default_value = SYSTEMD_RESTART)]
    restart_command: String,
    /// How long the restart command may take.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    restart_timeout: Duration,
    /// The supervisor's health URL (default: http://[ULA]:8730/health from the identity file).
    #[arg(long, env = "TABBIFY_UPDATE_HEALTH_URL")]
    health_url: Option<String>,
    /// Time the restarted supervisor has to become steadily healthy.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    health_window: Duration,
    /// How long health must hold without a failed probe.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Time between health probes.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    probe_every: Duration,
    /// Time the candidate's check mode may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    check_timeout: Duration,
    /// Retry a version that is quarantined.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tabbify_updater::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tabbify-update: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match ReleaseServer::new(&args.release_url) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tabbify-update: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = UpdateSettings {
        requested: args.release.clone(),
        force: args.force,
        check: CheckSettings {
            timeout: args.check_timeout,
            ..CheckSettings::default()
        },
        restart: RestartCommand::new(&args.restart_command, args.restart_timeout),
        health_url: args
            .health_url
            .clone()
            .unwrap_or_else(|| default_health_url(&args.data_dir)),
        gate: GatePolicy {
            window: args.health_window,
            settle: args.settle,
        },
        probe_every: args.probe_every,
    };
    let layout = Layout::new(&args.data_dir);
    let result = runtime.block_on(run_update(&server, &layout, &settings));
    report(result.with_context(|| format!("updating from {}", server.base())))
}

fn report(result: anyhow::Result<UpdateOutcome>) -> ExitCode {
    match result {
        Ok(UpdateOutcome::UpToDate { version }) => {
            println!("tabbify-update: {version} is current; nothing to do");
            ExitCode::SUCCESS
        }
        Ok(UpdateOutcome::Updated { from, to }) => {
            println!("tabbify-update: updated {from} -> {to}; healthy");
            ExitCode::SUCCESS
        }
        Ok(UpdateOutcome::Rejected {
            version,
            reason,
            quarantined,
        }) => {
            println!(
                "tabbify-update: rejected {version}: {reason}; quarantined in {}; nothing changed",
                quarantined.display()
            );
            ExitCode::from(2)
        }
        Ok(UpdateOutcome::RolledBack {
            from,
            to,
            reason,
            quarantined,
        }) => {
            println!(
                "tabbify-update: rolled back to {from}: {to} {reason}; quarantined in {}",
                quarantined.display()
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("tabbify-update: {e:#}");
            let rollback_failed = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(UpdateError::RollbackFailed { .. })));
            ExitCode::from(if rollback_failed { 3 } else { 1 })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
