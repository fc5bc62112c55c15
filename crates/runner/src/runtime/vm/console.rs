//! The guest's console into the app log. `tabbify_vm` appends console lines to a file path; the
//! runner hands it a FIFO in the VM's run directory and copies what comes out of it into the
//! app's rotating log, so the console gets the log's rotation and nothing grows unbounded beside
//! it.

use crate::log_file::AppLog;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// After the VM is gone, how long the copy waits for more before it ends.
const DRAIN: Duration = Duration::from_millis(200);

/// A running copy from the console FIFO to the app log.
pub struct ConsoleCopy {
    pub fifo: PathBuf,
    done: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ConsoleCopy {
    /// Makes the FIFO `fifo` and starts copying it into `log`.
    pub fn start(fifo: &Path, log: AppLog) -> std::io::Result<ConsoleCopy> {
        let _ = std::fs::remove_file(fifo);
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)?;
        // Read-write: the reader never sees end-of-file between the VMM's writers.
        let rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(fifo)?;
        let (done, done_rx) = oneshot::channel();
        let task = tokio::spawn(copy(rx, log, done_rx));
        Ok(ConsoleCopy {
            fifo: fifo.to_path_buf(),
            done: Some(done),
            task: Some(task),
        })
    }

    /// Copies what is left (the VM has ended) and stops.
    pub async fn finish(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let _ = std::fs::remove_file(&self.fifo);
    }
}

impl Drop for ConsoleCopy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.fifo);
    }
}

async fn copy(rx: tokio::net::unix::pipe::Receiver, log: AppLog, mut done: oneshot::Receiver<()>) {
    let mut reader = BufReader::new(rx);
    let mut line = Vec::new();
    let mut draining = false;
    loop {
        let read = if draining {
            match tokio::time::timeout(DRAIN, reader.read_until(b'\n', &mut line)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = reader.read_until(b'\n', &mut line) => r,
                _ = &mut done => {
                    draining = true;
                    continue;
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Err(e) = log.write(&line) {
                    tracing::warn!(error = %e, "cannot write the guest console to the app log");
                }
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        line.push(b'\n');
        let _ = log.write(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn fifo_lines_land_in_the_app_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = AppLog::open(&dir.path().join("app.log"), 1 << 20, 1).unwrap();
        let fifo = dir.path().join("console.fifo");
        let copy = ConsoleCopy::start(&fifo, log.clone()).unwrap();
        for text in ["kernel booting\n", "tabbify-init: booted\n"] {
            // Like the VMM's pumps: open for append, write, close.
            let mut w = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&fifo)
                .await
                .unwrap();
            w.write_all(text.as_bytes()).await.unwrap();
        }
        copy.finish().await;
        let text = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
        assert_eq!(text, "kernel booting\ntabbify-init: booted\n");
        assert!(!fifo.exists());
    }
}
