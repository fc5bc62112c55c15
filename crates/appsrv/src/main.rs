//! `tabbify-appsrv`: parse flags, open the store, serve it.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tabbify_appsrv::BlobStore;
use tabbify_appsrv::server::{AppsrvState, router};
use tabbify_auth::VerifyingKey;

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
    /// The coordinator's token-signing public key (`tbfk_…`, from `GET /v1/mesh/signing-key`):
    /// uploads need an operator token of scope `artifacts:write` signed with it. Without this
    /// or --token-key-file, uploads are refused.
    #[arg(
        long,
        env = "TABBIFY_APPSRV_TOKEN_KEY",
        conflicts_with = "token_key_file"
    )]
    token_key: Option<String>,
    /// A file holding that key, e.g. the coordinator's `<data-dir>/signing-key.pub`.
    #[arg(long, env = "TABBIFY_APPSRV_TOKEN_KEY_FILE")]
    token_key_file: Option<PathBuf>,
    /// Largest blob accepted, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    max_blob_bytes: u64,
    /// Serve HTTPS with this certificate (PEM: the certificate, then the mesh CA), made by
    /// `tcli cert issue`. Needs --tls-key.
    #[arg(long, env = "TABBIFY_APPSRV_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TABBIFY_APPSRV_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (labs only: artifacts and upload tokens then
    /// cross the network in clear text).
    #[arg(long)]
    insecure_no_mtls: bool,
}

async fn run(args: Args) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tabbify_appsrv::tls_serve::load_config(cert, key)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.insecure_no_mtls {
        bail!(
            "refusing to serve plain HTTP on {}: give --tls-cert/--tls-key (`tcli cert issue \
             --name <this host> --out <dir>` makes them from the mesh CA), or --insecure-no-mtls \
             for a lab",
            args.listen
        );
    }
    let store = BlobStore::open(&args.data_dir, args.max_blob_bytes)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let token_key = match (&args.token_key, &args.token_key_file) {
        (Some(text), _) => Some(VerifyingKey::from_text(text).context("--token-key")?),
        (None, Some(p)) => Some(
            VerifyingKey::load(p).with_context(|| format!("--token-key-file {}", p.display()))?,
        ),
        (None, None) => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("local address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("tabbify-appsrv listening on {scheme}://{addr}");
    tracing::info!(%addr, upload_key = ?token_key, "appsrv listening");
    let app = router(Arc::new(AppsrvState {
        store,
        token_key,
        metrics: Default::default(),
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match tls {
        Some(config) => {
            tabbify_appsrv::tls_serve::serve(listener, config, app, shutdown).await;
            Ok(())
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving"),
    }
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
