//! The guest's serial console as the host sees it: the VMM's stdout (and stderr) are pumped line
//! by line into the console log, the last lines are kept for error messages, and init's event
//! lines update the [`GuestState`] that the rest of the library waits on.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tabbify_vm_init::contract::GuestEvent;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Lines kept for error messages.
const TAIL_LINES: usize = 40;
/// Longest line kept (a guest can print anything).
const MAX_LINE: usize = 4096;

/// How the app in the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    Exited(i32),
    Killed(i32),
}

/// What init has reported so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestState {
    pub booted: bool,
    pub app_pid: Option<u32>,
    pub stopping: bool,
    pub exit: Option<GuestExit>,
    pub error: Option<String>,
}

impl GuestState {
    /// Folds one event in.
    pub fn apply(&mut self, event: &GuestEvent) {
        match event {
            GuestEvent::Booted => self.booted = true,
            GuestEvent::AppStarted { pid } => self.app_pid = Some(*pid),
            GuestEvent::Stopping { .. } => self.stopping = true,
            GuestEvent::AppExited { code } => self.exit = Some(GuestExit::Exited(*code)),
            GuestEvent::AppKilled { signal } => self.exit = Some(GuestExit::Killed(*signal)),
            GuestEvent::Error(m) => self.error = Some(m.clone()),
        }
    }

    /// Why the guest is going away, if it is: init's error, or the app's end.
    pub fn ending(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("guest init failed: {e}"));
        }
        match self.exit {
            Some(GuestExit::Exited(code)) => Some(format!("the app exited with code {code}")),
            Some(GuestExit::Killed(sig)) => Some(format!("the app was killed by signal {sig}")),
            None => None,
        }
    }
}

/// The last console lines.
#[derive(Debug, Default)]
pub struct ConsoleTail {
    lines: Mutex<VecDeque<String>>,
}

impl ConsoleTail {
    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == TAIL_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The kept lines, newline separated.
    pub fn text(&self) -> String {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        l.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Copies `from` line by line to the log at `log` (appending; `prefix` marks each line) and to
/// `tail`, and feeds init's events to `state`. Ends at end of stream.
pub fn spawn_pump(
    from: impl AsyncRead + Unpin + Send + 'static,
    log: &Path,
    prefix: &'static str,
    tail: Arc<ConsoleTail>,
    state: Option<watch::Sender<GuestState>>,
) -> tokio::task::JoinHandle<()> {
    let log = log.to_path_buf();
    tokio::spawn(async move {
        let mut out = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(log = %log.display(), error = %e, "cannot open the console log");
                None
            }
        };
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf[..buf.len().min(MAX_LINE)]);
            let line = text.trim_end_matches(['\r', '\n']).to_string();
            if let Some(f) = out.as_mut() {
                let _ = f.write_all(format!("{prefix}{line}\n").as_bytes()).await;
            }
            if let Some(tx) = &state
                && let Some(ev) = GuestEvent::parse(&line)
            {
                tx.send_modify(|s| s.apply(&ev));
            }
            tail.push(format!("{prefix}{line}"));
        }
        if let Some(f) = out.as_mut() {
            let _ = f.flush().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fold_into_the_state() {
        let mut s = GuestState::default();
        assert_eq!(s.ending(), None);
        for e in [
            GuestEvent::Booted,
            GuestEvent::AppStarted { pid: 7 },
            GuestEvent::AppExited { code: 3 },
        ] {
            s.apply(&e);
        }
        assert!(s.booted);
        assert_eq!(s.app_pid, Some(7));
        assert_eq!(s.ending().unwrap(), "the app exited with code 3");
        s.apply(&GuestEvent::Error("no /bin/app".into()));
        assert_eq!(s.ending().unwrap(), "guest init failed: no /bin/app");
    }

    #[tokio::test]
    async fn the_pump_logs_keeps_a_tail_and_reads_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let tail = Arc::new(ConsoleTail::default());
        let (tx, rx) = watch::channel(GuestState::default());
        let mut input = String::new();
        for i in 0..50 {
            input.push_str(&format!("kernel line {i}\r\n"));
        }
        input.push_str("tabbify-init: booted\nhello\ntabbify-init: app-exited code=0\n");
        spawn_pump(
            std::io::Cursor::new(input.into_bytes()),
            &log,
            "",
            tail.clone(),
            Some(tx),
        )
        .await
        .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.starts_with("kernel line 0\n"), "{logged}");
        assert!(logged.ends_with("hello\ntabbify-init: app-exited code=0\n"));
        let t = tail.text();
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(!t.contains("kernel line 0\n"));
        let st = rx.borrow().clone();
        assert!(st.booted);
        assert_eq!(st.exit, Some(GuestExit::Exited(0)));
    }
}
