//! The supervisor's end of the control socket: connect, send one request line, read one reply.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tabbify_wire::app::AppId;
use tabbify_wire::runner::{
    RunnerErrorCode, RunnerOp, RunnerReply, RunnerRequest, RunnerResponse, RunnerStatus,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a request to a runner failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to runner socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("runner socket i/o: {0}")]
    Io(#[from] io::Error),
    #[error("runner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("runner closed the connection without answering")]
    Closed,
    #[error("runner sent an unreadable reply: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("runner refused the request ({code:?}): {message}")]
    Refused {
        code: RunnerErrorCode,
        message: String,
    },
    #[error("runner sent an unexpected reply: {0:?}")]
    Unexpected(Box<RunnerReply>),
}

/// A client for one runner's control socket. Each request uses its own connection.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    socket: PathBuf,
    timeout: Duration,
}

impl RunnerClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(2),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `op` and returns the reply; an `error` reply becomes [`ClientError::Refused`].
    pub async fn request(&self, op: RunnerOp) -> Result<RunnerReply, ClientError> {
        let mut line = serde_json::to_vec(&RunnerRequest::new(op))?;
        line.push(b'\n');
        self.raw_line(&line).await
    }

    /// Sends one line as is (tests use it to send what a well-behaved client would not).
    pub async fn raw_line(&self, line: &[u8]) -> Result<RunnerReply, ClientError> {
        let exchange = async {
            let mut stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| ClientError::Connect {
                        path: self.socket.clone(),
                        source,
                    })?;
            stream.write_all(line).await?;
            let mut reader = BufReader::new(stream);
            let mut reply = String::new();
            if reader.read_line(&mut reply).await? == 0 {
                return Err(ClientError::Closed);
            }
            let response: RunnerResponse = serde_json::from_str(reply.trim())?;
            match response.reply {
                RunnerReply::Error { code, message } => Err(ClientError::Refused { code, message }),
                other => Ok(other),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// `ping`: the app id and pid of the runner on the other end.
    pub async fn ping(&self) -> Result<(AppId, u32), ClientError> {
        match self.request(RunnerOp::Ping).await? {
            RunnerReply::Pong { app_id, pid } => Ok((app_id, pid)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    pub async fn status(&self) -> Result<RunnerStatus, ClientError> {
        match self.request(RunnerOp::Status).await? {
            RunnerReply::Status(status) => Ok(status),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// `stop`: the runner drains for up to `grace` and exits.
    pub async fn stop(&self, grace: Duration) -> Result<(), ClientError> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        match self.request(RunnerOp::Stop { grace_ms }).await? {
            RunnerReply::Stopping { .. } => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}
