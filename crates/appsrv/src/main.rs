//! `tabbify-appsrv`: parse flags, open the store, serve it.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tabbify_appsrv::BlobStore;
use tabbify_appsrv::server::{AppsrvState, router};

#[derive(Debug, Parser)]
#[command(
    name = "tabbify-appsrv",
    version,
    about = "Serves staged app artifacts by digest"
)]
struct Args {
    /// Listen address.
    #[arg(long, env = "TABBIFY_APPSRV_LISTEN", default_value = "[::]:9000")]
    listen: SocketAddr,
    /// Where blobs are stored.
    #[arg(
        long,
        env = "TABBIFY_APPSRV_DATA_DIR",
        default_value = "/var/lib/tabbify-appsrv"
    )]
    data_dir: PathBuf,
    /// File with the bearer token uploads must carry (e.g. the coordinator's admin token).
    /// Without it, uploads are refused.
    #[arg(long, env = "TABBIFY_APPSRV_UPLOAD_TOKEN_FILE")]
    upload_token_file: Option<PathBuf>,
    /// Largest blob accepted, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    max_blob_bytes: u64,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long)]
    insecure_no_mtls: bool,
}

async fn run(args: Args) -> Result<()> {
    if !args.listen.ip().is_loopback() && !args.insecure_no_mtls {
        bail!(
            "refusing to serve plain HTTP on {} without --insecure-no-mtls (TLS is pending)",
            args.listen
        );
    }
    let store = BlobStore::open(&args.data_dir, args.max_blob_bytes)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let upload_token = match &args.upload_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("local address")?;
    println!("tabbify-appsrv listening on http://{addr}");
    tracing::info!(%addr, uploads = upload_token.is_some(), "appsrv listening");
    let app = router(Arc::new(AppsrvState {
        store,
        upload_token,
        metrics: Default::default(),
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .context("serving")
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tabbify-appsrv: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabbify-appsrv: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
