//! `tabbify-fetch`: install a release (and the guest kernel) from a release URL and make it
//! current. The first-boot bootstrap of a node; safe to run again (verified files are kept).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tabbify_updater::fetch::{Installed, install_kernel, install_release};
use tabbify_updater::update::SUPERVISOR_BINARY;
use tabbify_updater::{Layout, ReleaseServer};

#[derive(Debug, Parser)]
#[command(
    name = "tabbify-fetch",
    version,
    about = "Install a Tabbify release from a release URL"
)]
struct Args {
    /// Base URL of the release server; `<URL>/manifest.json` lists the releases.
    #[arg(long, env = "TABBIFY_RELEASE_URL")]
    release_url: String,
    /// Version to install (default: the manifest's `latest`).
    #[arg(long, value_name = "VERSION")]
    release: Option<String>,
    /// The node's state directory; releases go to `<DIR>/releases`, `<DIR>/current` points at one.
    #[arg(long, env = "TABBIFY_DATA_DIR", default_value = "/var/lib/tabbify")]
    data_dir: PathBuf,
    /// Do nothing when a release is already current (first-boot mode).
    #[arg(long)]
    if_missing: bool,
    /// Skip the guest kernel.
    #[arg(long)]
    no_kernel: bool,
    /// Install the release but leave `current` where it is.
    #[arg(long)]
    no_switch: bool,
}

async fn run(args: Args) -> Result<()> {
    let layout = Layout::new(&args.data_dir);
    layout.ensure()?;
    let _lock = layout.lock()?;
    if args.if_missing
        && let Some(current) = layout.current_version()?
    {
        println!("tabbify-fetch: {current} is current; nothing to do (--if-missing)");
        return Ok(());
    }
    let server = ReleaseServer::new(&args.release_url)?;
    let manifest = server
        .manifest()
        .await
        .with_context(|| format!("reading the release manifest from {}", server.base()))?;
    let release = manifest.select(args.release.as_deref())?;
    release.require_files(&[SUPERVISOR_BINARY])?;
    let how = install_release(&server, &layout, release).await?;
    let dir = layout.release_dir(&release.version);
    match how {
        Installed::Fresh => println!("installed {} in {}", release.version, dir.display()),
        Installed::AlreadyPresent => println!(
            "{} already installed and verified in {}",
            release.version,
            dir.display()
        ),
    }
    if !args.no_kernel
        && let Some(kernel) = &manifest.guest_kernel
    {
        let (path, how) = install_kernel(&server, &layout, kernel).await?;
        let verb = match how {
            Installed::Fresh => "installed",
            Installed::AlreadyPresent => "kept",
        };
        println!("{verb} guest kernel {}", path.display());
    }
    if !args.no_switch {
        layout.switch_current(&release.version)?;
        println!(
            "{} -> releases/{}",
            layout.current_link().display(),
            release.version
        );
    }
    Ok(())
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
            eprintln!("tabbify-fetch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabbify-fetch: {e:#}");
            ExitCode::FAILURE
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
