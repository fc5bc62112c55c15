//! The container's stdout and stderr, followed through the Docker API and appended to the app
//! log as they come, so `GET /v1/apps/{id}/logs` shows a container's output like a wasm app's,
//! and followed again after the daemon comes back.

use crate::log_file::AppLog;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use std::time::Duration;

/// How long to wait before following again after the stream broke (the daemon went away).
const REFOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Follows the output of container `id` into `log` until the container ends or is removed.
/// `since` (unix seconds) skips what an earlier runner already copied; `None` takes everything.
/// A stream that breaks (the daemon went away) is followed again from then on once the daemon
/// answers; output printed meanwhile may be missed.
pub async fn follow(docker: Docker, id: String, log: AppLog, mut since: Option<i64>) {
    loop {
        let mut options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true);
        if let Some(since) = since {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let mut stream = docker.logs(&id, Some(options.build()));
        let broke = loop {
            match stream.next().await {
                None => return,
                Some(Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message },
                )) => {
                    if let Err(e) = log.write(&message) {
                        tracing::warn!(error = %e, "cannot write container output to the app log");
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) if super::is_not_found(&e) => return,
                Some(Err(e)) => break e,
            }
        };
        log.runner_line(&format!(
            "lost the container's output ({broke}); following it again once the daemon answers"
        ));
        tokio::time::sleep(REFOLLOW_EVERY).await;
        since = Some(super::unix_now());
    }
}

/// The last `lines` lines the container printed, for error messages (empty when unavailable).
pub async fn tail(docker: &Docker, id: &str, lines: usize) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
    }
    text.trim_end().to_string()
}
