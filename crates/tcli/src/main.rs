//! `tcli`: the operator's command line for a Tabbify mesh. Parses arguments and calls the
//! coordinator through `tabbify-client`; formatting lives in `table`.

mod admin;
mod apps;
mod cert;
mod commands;
mod dev;
mod node;
mod operator;
mod removed;
mod table;
mod trust;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tcli: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcli: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
