//! `tabbify-coordinator`: parse arguments, set up logging, run the server until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use tabbify_coordinator::config::{CoordinatorArgs, init_logging};
use tabbify_coordinator::server::Server;

fn main() -> ExitCode {
    let args = CoordinatorArgs::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("tabbify-coordinator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        // The one line on stdout: tests and scripts wait for it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "tabbify-coordinator listening on {}", server.url())
            .and_then(|()| out.flush())
            .context("cannot write the ready line to stdout")?;
        drop(out);
        server
            .serve(shutdown_signal())
            .await
            .context("serving HTTP")
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
