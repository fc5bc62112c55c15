//! Finding the admin token: `TABBIFY_ADMIN_TOKEN`, else `--admin-token-file`, else the
//! coordinator's default data dir (works on the coordinator's own host).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const DEFAULT_ADMIN_TOKEN_FILE: &str = "/var/lib/tabbify-coordinator/admin-token";

pub fn admin_token(from_env: Option<&str>, file: Option<&Path>) -> Result<String> {
    if let Some(t) = from_env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let path = file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_TOKEN_FILE));
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => bail!("admin token file {} is empty", path.display()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "no admin token: set TABBIFY_ADMIN_TOKEN or pass --admin-token-file (tried {})",
                path.display()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_file_then_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("admin-token");
        std::fs::write(&f, "tbfa_file\n").unwrap();
        assert_eq!(
            admin_token(Some(" tbfa_env "), Some(&f)).unwrap(),
            "tbfa_env"
        );
        assert_eq!(admin_token(None, Some(&f)).unwrap(), "tbfa_file");
        let missing = d.path().join("nope");
        let err = admin_token(None, Some(&missing)).unwrap_err();
        assert!(
            format!("{err:#}").contains("TABBIFY_ADMIN_TOKEN"),
            "{err:#}"
        );
    }
}
