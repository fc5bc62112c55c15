//! The runner's hands on its container through the Docker API: find this version's containers by
//! label, create and start one, wait until it listens, watch until it ends (riding out a daemon
//! that goes away while the container still answers), stop it with a grace period and remove it.

use super::plan::{self, ContainerPlan, Found};
use super::{DockerError, is_not_found, output};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tabbify_wire::app::DockerNetwork;
use tokio::net::TcpStream;

/// Lines of the container's output quoted when it fails to start.
const OUTPUT_LINES: usize = 10;
/// How often a runner that lost the daemon looks for it again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The containers labelled for this version (running or not).
pub async fn find(docker: &Docker, plan: &ContainerPlan) -> Result<Vec<Found>, DockerError> {
    let filters = HashMap::from([("label", vec![plan.label_filter()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| DockerError::api("list the app's containers", e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            Some(Found {
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                id: c.id?,
            })
        })
        .collect())
}

/// Removes container `id` (killing it if it runs); a container already gone is fine.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(DockerError::api("remove a container", e)),
    }
}

/// Creates and starts the planned container; its id.
pub async fn create_and_start(
    docker: &Docker,
    plan: &ContainerPlan,
) -> Result<String, DockerError> {
    let options = CreateContainerOptionsBuilder::default()
        .name(&plan.name)
        .build();
    let created = docker
        .create_container(Some(options), plan.create_body())
        .await
        .map_err(|e| DockerError::api(&format!("create container {}", plan.name), e))?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| DockerError::api(&format!("start container {}", plan.name), e))?;
    Ok(created.id)
}

/// What the runner needs to know of its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub ip: Option<IpAddr>,
    /// The `PORT` it was created with.
    pub port: Option<u16>,
}

pub fn seen(c: &ContainerInspectResponse) -> Seen {
    let state = c.state.as_ref();
    let ip = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|nets| {
            nets.values()
                .filter_map(|n| n.ip_address.as_deref())
                .find_map(|ip| ip.parse().ok())
        });
    Seen {
        running: state.and_then(|s| s.status) == Some(ContainerStateStatusEnum::RUNNING),
        exit_code: state.and_then(|s| s.exit_code).unwrap_or(0),
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        ip,
        port: c
            .config
            .as_ref()
            .and_then(|c| c.env.as_deref())
            .and_then(plan::port_from_env),
    }
}

pub async fn inspect(docker: &Docker, id: &str) -> Result<Seen, bollard::errors::Error> {
    docker.inspect_container(id, None).await.map(|c| seen(&c))
}

/// Waits until the container accepts connections on its port (or only runs, with no network);
/// the address to forward to. A container that exits first is an error quoting its output.
pub async fn wait_ready(
    docker: &Docker,
    id: &str,
    network: DockerNetwork,
    port: u16,
) -> Result<Option<SocketAddr>, DockerError> {
    let mut pause = Duration::from_millis(2);
    loop {
        let state = inspect(docker, id)
            .await
            .map_err(|e| DockerError::api("inspect the container", e))?;
        if !state.running {
            return Err(DockerError::ExitedEarly {
                code: state.exit_code,
                oom_killed: state.oom_killed,
                port,
                output: output::tail(docker, id, OUTPUT_LINES).await,
            });
        }
        let upstream = plan::upstream(network, state.ip, port)
            .map_err(|message| DockerError::Container { message })?;
        let Some(addr) = upstream else {
            return Ok(None);
        };
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
        {
            return Ok(Some(addr));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How a container's life ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited {
        code: i64,
        oom_killed: bool,
    },
    /// Someone removed it behind the runner's back.
    Removed,
    /// The daemon went away and the container stopped answering.
    Lost(String),
}

impl Ended {
    pub fn describe(&self, memory_mb: u32) -> String {
        match self {
            Ended::Exited {
                oom_killed: true, ..
            } => format!(
                "the container was killed for exceeding its memory limit of {memory_mb} MiB"
            ),
            Ended::Exited { code, .. } => format!(
                "the container exited with code {code}{}",
                signal_note(*code)
            ),
            Ended::Removed => "the container was removed outside tabbify".into(),
            Ended::Lost(why) => {
                format!("lost the Docker daemon ({why}) and the container no longer answers")
            }
        }
    }
}

/// ` (SIGKILL)` for 137 and the like: shells and Docker report a signal as 128 + its number.
pub fn signal_note(code: i64) -> String {
    let signal = i32::try_from(code - 128).ok().filter(|s| *s > 0);
    match signal.and_then(|s| nix::sys::signal::Signal::try_from(s).ok()) {
        Some(s) if code > 128 => format!(" ({})", s.as_str()),
        _ => String::new(),
    }
}

/// Resolves when container `id` ends. If the daemon goes away meanwhile, the container may well
/// still run (a daemon restart with live-restore, or a socket that is only forwarded): the
/// runner keeps serving as long as the container answers at `upstream`, and looks for the
/// daemon again every second.
pub async fn watch(docker: Docker, id: String, upstream: Option<SocketAddr>) -> Ended {
    loop {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let why = match docker.wait_container(&id, Some(options)).next().await {
            Some(Ok(r)) => return exited(&docker, &id, r.status_code).await,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return exited(&docker, &id, code).await;
            }
            Some(Err(e)) if is_not_found(&e) => return Ended::Removed,
            Some(Err(e)) => e.to_string(),
            None => "the wait stream ended without an answer".to_string(),
        };
        tracing::warn!(%why, "lost sight of the container; looking for the daemon again");
        loop {
            tokio::time::sleep(RECONNECT_EVERY).await;
            match inspect(&docker, &id).await {
                Ok(state) if state.running => {
                    tracing::info!("the Docker daemon answers again; the container still runs");
                    break;
                }
                Ok(state) => {
                    return Ended::Exited {
                        code: state.exit_code,
                        oom_killed: state.oom_killed,
                    };
                }
                Err(e) if is_not_found(&e) => return Ended::Removed,
                Err(e) => {
                    if !answers(upstream).await {
                        return Ended::Lost(e.to_string());
                    }
                }
            }
        }
    }
}

async fn exited(docker: &Docker, id: &str, code: i64) -> Ended {
    let oom_killed = inspect(docker, id).await.is_ok_and(|s| s.oom_killed);
    Ended::Exited { code, oom_killed }
}

/// Whether something accepts connections at `upstream` (with no network there is nothing to ask:
/// assume it runs).
async fn answers(upstream: Option<SocketAddr>) -> bool {
    let Some(addr) = upstream else {
        return true;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Stops the container (SIGTERM, SIGKILL after `grace`) and removes it.
pub async fn stop_and_remove(docker: &Docker, id: &str, grace: Duration) {
    let secs = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::default().t(secs).build();
    let deadline = grace + Duration::from_secs(10);
    match tokio::time::timeout(deadline, docker.stop_container(id, Some(options))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if is_not_found(&e) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "stopping the container failed; removing it anyway")
        }
        Err(_) => tracing::warn!("the daemon did not stop the container in time; removing it"),
    }
    if let Err(e) = remove(docker, id).await {
        tracing::warn!(error = %e, "cannot remove the container");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signals_in_exit_codes() {
        assert_eq!(signal_note(137), " (SIGKILL)");
        assert_eq!(signal_note(143), " (SIGTERM)");
        assert_eq!(signal_note(3), "");
        assert_eq!(signal_note(128), "");
        assert_eq!(signal_note(255), "");
    }

    #[test]
    fn describes_how_a_container_ended() {
        let exit = Ended::Exited {
            code: 137,
            oom_killed: false,
        };
        assert_eq!(
            exit.describe(64),
            "the container exited with code 137 (SIGKILL)"
        );
        let oom = Ended::Exited {
            code: 137,
            oom_killed: true,
        };
        assert!(oom.describe(64).contains("memory limit of 64 MiB"));
        assert!(
            Ended::Lost("x".into())
                .describe(1)
                .contains("no longer answers")
        );
    }
}
