//! How tcli trusts the coordinator: `--ca-fingerprint` (as `tcli token create` prints it, or the
//! part of a join token after its `.`), else `--ca-file`, else the mesh CA beside the admin token
//! file (on the coordinator's own host that is all it takes), together with the public roots.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tabbify_client::{CaFingerprint, ServerTrust, TlsSettings};

pub fn settings(
    fingerprint: Option<&str>,
    ca_file: Option<&Path>,
    admin_token_file: Option<&Path>,
) -> Result<TlsSettings> {
    let trust = if let Some(fp) = fingerprint {
        ServerTrust::Pinned(
            fp.parse::<CaFingerprint>()
                .context("--ca-fingerprint / TABBIFY_COORDINATOR_CA_FINGERPRINT")?,
        )
    } else if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        ServerTrust::Roots(
            tabbify_pki::pem::certificates(&pem, &path.display().to_string())
                .with_context(|| format!("the CA file {}", path.display()))?,
        )
    } else {
        let beside = admin_token_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(crate::admin::DEFAULT_ADMIN_TOKEN_FILE))
            .with_file_name(tabbify_pki::ca::CA_CERT_FILE);
        match std::fs::read(&beside) {
            Ok(pem) => ServerTrust::RootsAndSystem(
                tabbify_pki::pem::certificates(&pem, &beside.display().to_string())
                    .with_context(|| format!("the mesh CA {}", beside.display()))?,
            ),
            Err(_) => ServerTrust::System,
        }
    };
    Ok(TlsSettings {
        trust,
        identity: None,
    })
}
