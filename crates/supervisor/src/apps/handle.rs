//! The handle the API holds on the app manager: each method sends one command over the channel
//! and awaits the manager's reply. Clone freely.

use super::error::AppError;
use super::manager::{Command, Deployed, Reply};
use super::upload::{Upload, UploadLimits};
use std::path::PathBuf;
use tabbify_wire::app::AppId;
use tabbify_wire::node_apps::AppInfo;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct AppsHandle {
    tx: mpsc::Sender<Command>,
    /// The largest deploy request bodies.
    pub max_upload: UploadLimits,
}

impl AppsHandle {
    pub(super) fn new(tx: mpsc::Sender<Command>, max_upload: UploadLimits) -> Self {
        Self { tx, max_upload }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, AppError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| AppError::manager_gone())?;
        answer.await.map_err(|_| AppError::manager_gone())?
    }

    pub async fn deploy(&self, upload: Upload) -> Result<Deployed, AppError> {
        self.call(|reply| Command::Deploy {
            upload: Box::new(upload),
            reply,
        })
        .await
    }

    pub async fn list(&self) -> Result<Vec<AppInfo>, AppError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::List { reply })
            .await
            .map_err(|_| AppError::manager_gone())?;
        answer.await.map_err(|_| AppError::manager_gone())
    }

    pub async fn get(&self, id: AppId) -> Result<AppInfo, AppError> {
        self.call(|reply| Command::Get { id, reply }).await
    }

    pub async fn stop(&self, id: AppId) -> Result<AppInfo, AppError> {
        self.call(|reply| Command::Stop { id, reply }).await
    }

    pub async fn start(&self, id: AppId) -> Result<AppInfo, AppError> {
        self.call(|reply| Command::Start { id, reply }).await
    }

    pub async fn restart(&self, id: AppId) -> Result<AppInfo, AppError> {
        self.call(|reply| Command::Restart { id, reply }).await
    }

    pub async fn reset(&self, id: AppId) -> Result<AppInfo, AppError> {
        self.call(|reply| Command::Reset { id, reply }).await
    }

    pub async fn delete(&self, id: AppId) -> Result<(), AppError> {
        self.call(|reply| Command::Delete { id, reply }).await
    }

    pub async fn log_file(&self, id: AppId) -> Result<PathBuf, AppError> {
        self.call(|reply| Command::LogFile { id, reply }).await
    }
}
