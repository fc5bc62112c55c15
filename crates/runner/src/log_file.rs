//! The app's log file: guest stdout and stderr, and the runner's own load errors, with size-based
//! rotation (`app.log` → `app.log.1` → … → `app.log.N`, the oldest dropped) so an app that prints
//! forever cannot fill the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A shared handle to one app's rotating log. Writes are whole: a chunk never straddles two files.
#[derive(Debug, Clone)]
pub struct AppLog {
    inner: Arc<Mutex<Rotating>>,
}

#[derive(Debug)]
struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl AppLog {
    /// Opens (appending to) the log at `path`; it rotates before growing past `max_bytes`, keeping
    /// `keep` rotated files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Rotating {
                path: path.to_path_buf(),
                max_bytes: max_bytes.max(1),
                keep,
                file: Some(file),
                size,
            })),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Appends `bytes`, rotating first if they would not fit.
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.lock().write(bytes)
    }

    /// Appends one line written by the runner itself, prefixed so it stands out from app output.
    pub fn runner_line(&self, message: &str) {
        let line = format!("[tabbify-runner] {}\n", message.trim_end());
        if let Err(e) = self.write(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write to the app log");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rotating> {
        // A panic while holding the lock leaves the file usable; keep logging.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Rotating {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.path)?),
        };
        file.write_all(bytes)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            fs::remove_file(numbered(self.keep)).or_else(ignore_missing)?;
            for n in (1..self.keep).rev() {
                fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&self.path, numbered(1)).or_else(ignore_missing)?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let log = AppLog::open(&path, 10, 2).unwrap();
        for chunk in ["aaaaaa", "bbbbbb", "cccccc", "dddddd"] {
            log.write(chunk.as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "dddddd");
        assert_eq!(read(&dir.path().join("logs/app.log.1")), "cccccc");
        assert_eq!(read(&dir.path().join("logs/app.log.2")), "bbbbbb");
        assert!(!dir.path().join("logs/app.log.3").exists());
    }

    #[test]
    fn appends_to_an_existing_log_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        fs::write(&path, "12345678").unwrap();
        let log = AppLog::open(&path, 10, 1).unwrap();
        log.write(b"9").unwrap();
        assert_eq!(read(&path), "123456789");
        log.write(b"abc").unwrap();
        assert_eq!(read(&path), "abc");
        assert_eq!(read(&dir.path().join("app.log.1")), "123456789");
    }

    #[test]
    fn oversized_chunk_goes_whole_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let log = AppLog::open(&path, 4, 0).unwrap();
        log.write(b"ab").unwrap();
        log.write(b"0123456789").unwrap();
        assert_eq!(read(&path), "0123456789");
        log.runner_line("loaded\n");
        assert_eq!(read(&path), "[tabbify-runner] loaded\n");
    }
}
