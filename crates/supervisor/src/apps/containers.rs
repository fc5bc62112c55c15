//! Containers of docker apps, from the supervisor's side. A runner stops and removes its own
//! container when it is told to stop; this removes what a runner could not (it was killed, or its
//! deploy was rolled back): every container of an app when the app goes (awaited: a delete is
//! answered once they are gone), a version's containers when that version goes, and at start the
//! containers of apps no record names any more (a delete while the daemon was away). Only
//! containers whose `tabbify.app_dir` label lies in this node's apps directory are touched, so
//! nodes that share a daemon leave each other's containers alone.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tabbify_runner::runtime::docker::{self, plan};
use tabbify_wire::app::AppId;

/// Which containers to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    App(AppId),
    /// The version directory the containers were labelled with.
    Version(PathBuf),
}

impl Scope {
    fn label_filter(&self) -> String {
        match self {
            Scope::App(id) => format!("{}={id}", plan::LABEL_APP_ID),
            Scope::Version(dir) => format!("{}={}", plan::LABEL_APP_DIR, dir.display()),
        }
    }
}

/// Whether a container with `labels` belongs to the node whose apps live in `apps_dir`.
pub fn ours(labels: &HashMap<String, String>, apps_dir: &Path) -> bool {
    labels
        .get(plan::LABEL_APP_DIR)
        .is_some_and(|dir| Path::new(dir).starts_with(apps_dir))
}

/// Removes (force: running ones are killed) the containers of `scope`; how many went.
pub async fn remove(apps_dir: &Path, scope: &Scope) -> Result<usize, String> {
    remove_matching(apps_dir, &scope.label_filter(), |_| true).await
}

/// Removes this node's containers whose app is not in `known`; how many went.
pub async fn remove_orphans(apps_dir: &Path, known: &BTreeSet<AppId>) -> Result<usize, String> {
    remove_matching(apps_dir, plan::LABEL_APP_ID, |labels| {
        labels
            .get(plan::LABEL_APP_ID)
            .is_some_and(|id| !known.iter().any(|k| k.as_str() == id))
    })
    .await
}

/// Removes the containers that match the daemon's `label` filter, are ours and pass `pick`.
async fn remove_matching(
    apps_dir: &Path,
    label: &str,
    pick: impl Fn(&HashMap<String, String>) -> bool,
) -> Result<usize, String> {
    use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
    let docker = docker::connect().await.map_err(|e| e.to_string())?;
    let filters = HashMap::from([("label", vec![label.to_string()])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut removed = 0;
    for c in list {
        let (Some(id), Some(labels)) = (c.id, c.labels) else {
            continue;
        };
        if !ours(&labels, apps_dir) || !pick(&labels) {
            continue;
        }
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(e) if docker::is_not_found(&e) => {}
            Err(e) => return Err(format!("cannot remove container {id}: {e}")),
        }
    }
    Ok(removed)
}

/// [`remove`] in the background, with the outcome logged.
pub fn spawn_remove(apps_dir: &Path, scope: Scope) {
    let apps_dir = apps_dir.to_path_buf();
    tokio::spawn(async move {
        match remove(&apps_dir, &scope).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(?scope, removed = n, "removed containers left behind"),
            Err(e) => tracing::warn!(?scope, error = %e, "cannot remove the containers"),
        }
    });
}

/// Removes a version's containers if the version in `version_dir` is a docker app (its spec says
/// so); call before the directory goes.
pub fn forget_version(apps_dir: &Path, version_dir: &Path) {
    let is_docker = tabbify_runner::AppDir::new(version_dir)
        .read_spec()
        .is_ok_and(|s| s.runtime_kind() == tabbify_wire::app::RuntimeKind::Docker);
    if is_docker {
        spawn_remove(apps_dir, Scope::Version(version_dir.to_path_buf()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_containers_under_our_apps_dir_are_ours() {
        let labels = |dir: &str| HashMap::from([(plan::LABEL_APP_DIR.to_string(), dir.into())]);
        let apps = Path::new("/var/lib/tabbify/apps");
        assert!(ours(&labels("/var/lib/tabbify/apps/web-1/v2"), apps));
        assert!(!ours(&labels("/var/lib/tabbify/apps2/web-1/v2"), apps));
        assert!(!ours(&labels("/srv/other/apps/web-1/v2"), apps));
        assert!(!ours(&HashMap::new(), apps));
    }

    #[test]
    fn scopes_filter_by_app_or_by_version() {
        let id = AppId::new("web-0a1b2c3d").unwrap();
        assert_eq!(Scope::App(id).label_filter(), "tabbify.app_id=web-0a1b2c3d");
        assert_eq!(
            Scope::Version("/d/apps/web-0a1b2c3d/v2".into()).label_filter(),
            "tabbify.app_dir=/d/apps/web-0a1b2c3d/v2"
        );
    }
}
