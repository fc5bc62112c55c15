//! How an update restarts the supervisor. In production this is `systemctl restart
//! tabbify-supervisor` (the unit has `KillMode=process`, so only the supervisor's own process is
//! stopped and its runners keep serving); tests and other init systems pass their own command.
//! The command runs through `/bin/sh -c` and must finish within its timeout.

use std::process::Stdio;
use std::time::Duration;

/// The production default.
pub const SYSTEMD_RESTART: &str = "systemctl restart tabbify-supervisor";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartCommand {
    pub shell: String,
    pub timeout: Duration,
}

impl RestartCommand {
    pub fn new(shell: impl Into<String>, timeout: Duration) -> Self {
        Self {
            shell: shell.into(),
            timeout,
        }
    }

    /// Runs the command; its output goes to our stderr (the journal). `Err` says why it failed.
    pub async fn run(&self) -> Result<(), String> {
        tracing::info!(command = %self.shell, "restarting the supervisor");
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.shell)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", self.shell))?;
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("`{}` failed ({status})", self.shell)),
            Ok(Err(e)) => Err(format!("waiting for `{}`: {e}", self.shell)),
            Err(_) => Err(format!(
                "`{}` did not finish within {:?}",
                self.shell, self.timeout
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn success_failure_and_timeout_are_told_apart() {
        let t = Duration::from_secs(5);
        assert_eq!(RestartCommand::new("true", t).run().await, Ok(()));
        let err = RestartCommand::new("exit 4", t).run().await.unwrap_err();
        assert!(err.contains("exit status: 4"), "{err}");
        let err = RestartCommand::new("sleep 5", Duration::from_millis(100))
            .run()
            .await
            .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
