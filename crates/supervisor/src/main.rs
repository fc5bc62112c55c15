//! `tabbify-supervisor`: parse flags, set up logging, run the node.

use clap::Parser;
use tabbify_supervisor::config::SupervisorArgs;

fn main() -> std::process::ExitCode {
    let args = SupervisorArgs::parse();
    args.log.init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tabbify-supervisor: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tabbify_supervisor::run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tabbify-supervisor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
