//! The supervisor's record of one app, `<data-dir>/apps/<id>/record.json`: what was deployed,
//! where it listens, which runner process serves it, whether it should run, and the restart
//! policy's memory. Written atomically on every change, so a supervisor that restarts (or
//! crashes at any point) finds either the old or the new record and can adopt its runners.

use super::layout::Layout;
use super::policy::RestartTracker;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tabbify_wire::Timestamp;
use tabbify_wire::app::{AppId, AppName, ArtifactDigest, Manifest};
use tabbify_wire::node_apps::LastExit;
use tabbify_wire::runner::RunnerIdentity;

/// Whether the operator wants the app running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Stopped,
}

/// A live runner as recorded: enough to recognise it after a supervisor restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub identity: RunnerIdentity,
    pub started_at: Timestamp,
}

/// One deployed version of the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u32,
    pub manifest: Manifest,
    pub artifact_digest: ArtifactDigest,
    pub listen: SocketAddr,
    pub deployed_at: Timestamp,
    /// The runner serving this version, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app_id: AppId,
    pub name: AppName,
    pub created_at: Timestamp,
    pub desired: Desired,
    /// The version that serves; `None` only while the first deploy is unconfirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<VersionRecord>,
    /// A deploy in progress: replaces `current` once healthy. A supervisor that restarts with a
    /// pending version rolls it back (nobody was told it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<VersionRecord>,
    #[serde(default)]
    pub restart: RestartTracker,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
    /// The highest version number handed out (versions are never reused).
    pub last_version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid app record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl AppRecord {
    pub fn save(&self, layout: &Layout) -> Result<(), RecordError> {
        let path = layout.record(&self.app_id);
        let json = serde_json::to_vec_pretty(self).map_err(|e| RecordError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        tabbify_fsutil::atomic_write(&path, &json, 0o600)
            .map_err(|source| RecordError::Write { path, source })
    }

    pub fn load(layout: &Layout, id: &AppId) -> Result<Self, RecordError> {
        let path = layout.record(id);
        let bytes = std::fs::read(&path).map_err(|source| RecordError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse { path, source })
    }
}

/// What the apps directory holds: app directories by id, each with its record (or why it has
/// none). Directories whose name is not an app id are skipped.
pub fn scan(layout: &Layout) -> Vec<(AppId, Result<AppRecord, RecordError>)> {
    let Ok(dir) = std::fs::read_dir(layout.apps_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<_> = dir
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| AppId::new(e.file_name().to_str()?).ok())
        .map(|id| {
            let record = AppRecord::load(layout, &id);
            (id, record)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AppRecord {
        let manifest = Manifest::from_toml_str(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"x.wasm\"\n",
        )
        .unwrap();
        AppRecord {
            app_id: AppId::new(id).unwrap(),
            name: AppName::new("hello").unwrap(),
            created_at: Timestamp(1),
            desired: Desired::Running,
            current: Some(VersionRecord {
                version: 1,
                manifest,
                artifact_digest: ArtifactDigest::parse(format!("sha256:{}", "0".repeat(64)))
                    .unwrap(),
                listen: "127.0.0.1:4000".parse().unwrap(),
                deployed_at: Timestamp(1),
                runner: Some(RunnerRecord {
                    identity: RunnerIdentity {
                        pid: 42,
                        start_time_ticks: 7,
                    },
                    started_at: Timestamp(2),
                }),
            }),
            pending: None,
            restart: RestartTracker::default(),
            last_exit: None,
            last_version: 1,
        }
    }

    #[test]
    fn saves_atomically_and_scans_back() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let r = record("hello-1");
        std::fs::create_dir_all(layout.app_dir(&r.app_id)).unwrap();
        r.save(&layout).unwrap();
        // A directory without a record, one with a broken record, and a stray non-id name.
        std::fs::create_dir_all(layout.apps_dir().join("empty-2")).unwrap();
        std::fs::create_dir_all(layout.apps_dir().join("broken-3")).unwrap();
        std::fs::write(layout.apps_dir().join("broken-3/record.json"), "{").unwrap();
        std::fs::create_dir_all(layout.apps_dir().join(".tmp")).unwrap();

        let found = scan(&layout);
        let ids: Vec<_> = found.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["broken-3", "empty-2", "hello-1"]);
        assert!(matches!(found[0].1, Err(RecordError::Parse { .. })));
        assert!(matches!(found[1].1, Err(RecordError::Read { .. })));
        assert_eq!(found[2].1.as_ref().unwrap(), &r);
        let names: Vec<_> = std::fs::read_dir(layout.app_dir(&r.app_id))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["record.json"], "no temporary file left");
    }
}
