//! The admin token: created once per data dir at `<data-dir>/admin-token` (mode 0600, written
//! atomically) and reused on every later start.

use crate::tokens::{self, ADMIN_TOKEN_PREFIX};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const ADMIN_TOKEN_FILE: &str = "admin-token";

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold an admin token (expected one line starting with {ADMIN_TOKEN_PREFIX})"
    )]
    Malformed { path: PathBuf },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AdminTokenError + use<> {
    let path = path.to_path_buf();
    move |source| AdminTokenError::Io {
        action,
        path,
        source,
    }
}

/// Reads the admin token of `data_dir`, creating it (and the directory) when absent.
pub fn load_or_create(data_dir: &Path) -> Result<String, AdminTokenError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if !token.starts_with(ADMIN_TOKEN_PREFIX) || token.len() <= ADMIN_TOKEN_PREFIX.len() {
                return Err(AdminTokenError::Malformed { path });
            }
            if let Ok(meta) = fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "admin token file is readable by others; chmod 600 it");
            }
            Ok(token.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = tokens::new_admin_token();
            write_atomically(&path, format!("{token}\n").as_bytes())?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Write a temp file (0600), fsync it, rename it over `path`, fsync the directory: readers see
/// the old file or the whole new one, never a torn write, even across a crash.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), AdminTokenError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{ADMIN_TOKEN_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(contents).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates the data dir (mode 0700) when it does not exist.
pub fn ensure_data_dir(data_dir: &Path) -> Result<(), AdminTokenError> {
    if data_dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io("create directory", data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_private_mode_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        ensure_data_dir(&data).unwrap();
        let first = load_or_create(&data).unwrap();
        assert!(first.starts_with("tbfa_") && first.len() > 40, "{first}");
        let mode = fs::metadata(data.join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&data).unwrap(), first);
        let leftovers: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(ADMIN_TOKEN_FILE)]);
    }

    #[test]
    fn malformed_file_is_an_error_not_a_new_token() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ADMIN_TOKEN_FILE), "hello\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, AdminTokenError::Malformed { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(ADMIN_TOKEN_FILE)).unwrap(),
            "hello\n",
            "left untouched"
        );
    }
}
