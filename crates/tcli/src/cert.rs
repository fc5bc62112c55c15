//! `tcli cert issue`: a server certificate from the mesh CA for another service of the mesh,
//! such as the appsrv. The key is made here and stays here (0600); only a CSR goes to the
//! coordinator, which signs its public key for the names asked. Issuing again keeps the key
//! (unless `--new-key`), so renewing rewrites one file atomically and a crash leaves either
//! the old certificate or the new one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_client::CoordinatorClient;
use tabbify_pki::NodeKey;
use tabbify_wire::certificate::IssueServerCertificateRequest;

/// The private key, PEM (0600).
pub const KEY_FILE: &str = "tls.key";
/// The certificate then the mesh CA, PEM: what `tabbify-appsrv --tls-cert` takes.
pub const CERT_FILE: &str = "tls.crt";
/// The mesh CA alone, PEM: what clients of the service trust.
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Issue a server certificate for a service of the mesh (the appsrv), with the admin token.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// A DNS name or IP address the service is reached at (repeatable, at least one).
    #[arg(long = "name", required = true)]
    pub names: Vec<String>,
    /// Directory for tls.key, tls.crt and ca.crt (created 0700 if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Lifetime, e.g. 30d (default: the coordinator's, 90 days; at most a year).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Make a new key instead of keeping the one in --out.
    #[arg(long)]
    pub new_key: bool,
}

pub async fn run(client: &CoordinatorClient, admin: &str, cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Issue(args) => {
            let issued = issue(client, admin, &args).await?;
            println!(
                "{}\n{}\n{}",
                args.out.join(CERT_FILE).display(),
                args.out.join(KEY_FILE).display(),
                args.out.join(CA_FILE).display()
            );
            eprintln!(
                "certificate {} for {} valid until {}; serve it with \
                 `tabbify-appsrv --tls-cert {} --tls-key {}`",
                issued.serial,
                args.names.join(", "),
                issued.not_after.to_rfc3339(),
                args.out.join(CERT_FILE).display(),
                args.out.join(KEY_FILE).display()
            );
            Ok(())
        }
    }
}

/// Issues the certificate into `args.out` and returns what the coordinator answered.
pub async fn issue(
    client: &CoordinatorClient,
    admin: &str,
    args: &IssueArgs,
) -> Result<tabbify_wire::certificate::IssuedServerCertificate> {
    tabbify_fsutil::ensure_dir(&args.out, 0o700)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let key = load_or_create_key(&args.out.join(KEY_FILE), args.new_key)?;
    let req = IssueServerCertificateRequest {
        csr: key.csr_pem().context("making the certificate request")?,
        names: args.names.clone(),
        ttl_secs: args.ttl.map(|t| t.as_secs()),
    };
    let issued = client
        .issue_server_certificate(admin, &req)
        .await
        .context("issuing the server certificate")?;
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        tabbify_fsutil::atomic_write(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))
    };
    write(CA_FILE, &issued.ca)?;
    write(CERT_FILE, &issued.certificate_chain)?;
    Ok(issued)
}

fn load_or_create_key(path: &Path, new_key: bool) -> Result<NodeKey> {
    if !new_key && let Ok(text) = std::fs::read_to_string(path) {
        return NodeKey::from_pem(&text).with_context(|| {
            format!(
                "{} is not a private key (--new-key replaces it)",
                path.display()
            )
        });
    }
    let key = NodeKey::generate().context("generating a key")?;
    tabbify_fsutil::atomic_write(path, key.to_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}
