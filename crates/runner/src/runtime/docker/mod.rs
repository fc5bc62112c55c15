//! The docker runtime: the app is a container on the node's Docker daemon (`DOCKER_HOST`, else
//! the default socket), and the runner stands in front of it.
//!
//! Loading makes sure the image is there ([`image`]: present, or loaded from the deployed
//! `docker save` tarball; never pulled), then looks for this version's container by its labels
//! ([`plan`]): a running one is adopted (a runner that was killed and started again must not
//! start a second container), leftovers are removed, otherwise a container is created with the
//! manifest's command, env, `PORT`, memory and CPU limits, Docker's restart policy off. The app
//! is ready once the container accepts connections on its port. Serving forwards the app's
//! address to the container ([`proxy`]), copies its output to the app log ([`output`]) and
//! watches it ([`container::watch`]): when it exits the runner exits too, so the supervisor's
//! restart policy decides what comes next. A stop stops the container with the grace period,
//! then removes it.

mod container;
mod image;
mod output;
pub mod plan;
pub(crate) mod proxy;

pub use proxy::ERROR_HEADER;

use crate::control::ControlState;
use crate::log_file::AppLog;
use crate::runtime::AppEnded;
use crate::stats::RequestStats;
use bollard::Docker;
use container::Ended;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::app::{DockerNetwork, RuntimeSpec};
use tabbify_wire::runner::{RunnerSpec, RunnerState};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The start of the runner's error when the container ended before it listened; the supervisor
/// tells an app that fails at start from a bad image by it.
pub const EXITED_EARLY: &str = "the container exited before it listened";
/// The start of the error when the daemon does not answer; the supervisor tells a node that lost
/// its daemon from an app that failed by it.
pub const UNREACHABLE: &str = "cannot reach the Docker daemon";
/// How long the daemon has to answer the first request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest quote of a failed container's output in an error (the error is one line).
const MAX_QUOTE: usize = 600;

/// Why a docker app could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{UNREACHABLE} at {host}: {message}")]
    Unreachable { host: String, message: String },
    #[error(
        "image {image} is not on this node's Docker daemon and no image tarball was deployed with the app (the node does not pull: send `docker save {image}` as the deploy's artifact, or load the image on the node)"
    )]
    ImageMissing { image: String },
    #[error("cannot read the image tarball {path}: {source}")]
    ReadTarball {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable `docker save` tarball: {message}")]
    Tarball { path: PathBuf, message: String },
    #[error("the deployed image tarball does not hold image {image} (it holds {holds})")]
    NotInTarball { image: String, holds: String },
    #[error("the Docker daemon refused to {what}: {message}")]
    Api { what: String, message: String },
    #[error("{}", exited_early(*.code, *.oom_killed, *.port, .output))]
    ExitedEarly {
        code: i64,
        oom_killed: bool,
        port: u16,
        output: String,
    },
    #[error("{message}")]
    Container { message: String },
    #[error("the spec's runtime is {0}, not docker")]
    NotDocker(tabbify_wire::app::RuntimeKind),
}

impl DockerError {
    /// Whether the deployed artifact (the image tarball) is at fault, rather than the app, its
    /// image reference or the daemon: the deploy is refused as an invalid artifact then, while
    /// anything else is an app that could not start and goes through the restart policy.
    pub fn is_artifact_problem(&self) -> bool {
        matches!(
            self,
            DockerError::ReadTarball { .. }
                | DockerError::Tarball { .. }
                | DockerError::NotInTarball { .. }
        )
    }

    pub fn api(what: &str, e: bollard::errors::Error) -> Self {
        let message = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        };
        DockerError::Api {
            what: what.to_string(),
            message,
        }
    }
}

fn exited_early(code: i64, oom_killed: bool, port: u16, output: &str) -> String {
    let how = if oom_killed {
        "killed for exceeding its memory limit".to_string()
    } else {
        format!("exit code {code}{}", container::signal_note(code))
    };
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let quote = lines.join(" | ");
    let quote = match quote.char_indices().rev().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("…{}", &quote[cut..]),
        None => quote,
    };
    if quote.is_empty() {
        format!("{EXITED_EARLY} on port {port} ({how}); it printed nothing")
    } else {
        format!("{EXITED_EARLY} on port {port} ({how}); its last output: {quote}")
    }
}

/// Whether the daemon answered 404 (no such container or image).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Where the daemon is, for messages: `DOCKER_HOST`, else the default socket.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

/// A client of the daemon at `DOCKER_HOST`, with an API version both sides speak.
pub async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |message: String| DockerError::Unreachable {
        host: docker_host(),
        message,
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A container serving the app.
pub struct DockerApp {
    docker: Docker,
    container: String,
    upstream: Option<SocketAddr>,
    log: AppLog,
    stats: Arc<RequestStats>,
    memory_mb: u32,
    output: JoinHandle<()>,
}

impl DockerApp {
    /// Gets the app's container running and listening. Called on a blocking thread of the
    /// runner's runtime.
    pub fn load(
        spec: &RunnerSpec,
        log: AppLog,
        stats: Arc<RequestStats>,
    ) -> Result<Self, DockerError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| DockerError::Container {
            message: format!("no async runtime to talk to Docker from: {e}"),
        })?;
        handle.block_on(Self::start(spec, log, stats))
    }

    async fn start(
        spec: &RunnerSpec,
        log: AppLog,
        stats: Arc<RequestStats>,
    ) -> Result<Self, DockerError> {
        let RuntimeSpec::Docker(runtime) = &spec.manifest.runtime else {
            return Err(DockerError::NotDocker(spec.runtime_kind()));
        };
        let docker = connect().await?;
        if let image::Source::Loaded(path) =
            image::ensure(&docker, &runtime.image, &spec.artifact).await?
        {
            log.runner_line(&format!(
                "loaded image {} from {}",
                runtime.image,
                path.display()
            ));
        }
        let port = match runtime.network {
            DockerNetwork::Host => free_port()?,
            DockerNetwork::Bridge | DockerNetwork::None => spec.manifest.http.port,
        };
        let plan = plan::ContainerPlan::new(spec, runtime, port);
        let choice = plan::choose(&container::find(&docker, &plan).await?);
        for id in &choice.remove {
            container::remove(&docker, id).await?;
        }
        let (id, port, since) = match choice.adopt {
            Some(id) => {
                let seen = container::inspect(&docker, &id)
                    .await
                    .map_err(|e| DockerError::api("inspect the running container", e))?;
                log.runner_line(&format!(
                    "adopted the running container {} ({})",
                    plan.name,
                    short(&id)
                ));
                (id, seen.port.unwrap_or(port), Some(unix_now()))
            }
            None => {
                let id = container::create_and_start(&docker, &plan).await?;
                log.runner_line(&format!(
                    "started container {} ({}) from {}",
                    plan.name,
                    short(&id),
                    runtime.image
                ));
                (id, port, None)
            }
        };
        let output = tokio::spawn(output::follow(
            docker.clone(),
            id.clone(),
            log.clone(),
            since,
        ));
        let upstream = match container::wait_ready(&docker, &id, runtime.network, port).await {
            Ok(upstream) => upstream,
            Err(e) => {
                // A container that ended has its output stream end too: let it finish copying.
                let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
                // Its output is quoted in the error and copied to the app log: nothing needs the
                // container any more, and a failed start must not leave one behind.
                if let Err(rm) = container::remove(&docker, &id).await {
                    tracing::warn!(error = %rm, "cannot remove the container that failed to start");
                }
                return Err(e);
            }
        };
        Ok(Self {
            docker,
            container: id,
            upstream,
            log,
            stats,
            memory_mb: spec.manifest.resources.memory_mb,
            output,
        })
    }

    /// Forwards the app's address to the container until a stop is requested (the container is
    /// stopped with the grace period and removed) or the container ends by itself (an error
    /// unless it exited with 0).
    pub async fn serve(
        self,
        listener: TcpListener,
        control: Arc<ControlState>,
    ) -> Result<(), AppEnded> {
        enum Outcome {
            Stop(Duration),
            Ended(Ended),
        }
        let stop = control.stop_requested();
        let ended = container::watch(self.docker.clone(), self.container.clone(), self.upstream);
        tokio::pin!(stop, ended);
        let mut connections = JoinSet::new();
        let outcome = loop {
            tokio::select! {
                grace = &mut stop => break Outcome::Stop(grace),
                end = &mut ended => break Outcome::Ended(end),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(proxy::forward(stream, self.upstream, self.stats.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        control.set_state(RunnerState::Stopping);
        drop(listener);
        match outcome {
            Outcome::Stop(grace) => {
                tracing::info!(grace_ms = grace.as_millis(), "stopping the container");
                container::stop_and_remove(&self.docker, &self.container, grace).await;
                let drained = tokio::time::timeout(Duration::from_secs(1), async {
                    while connections.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    connections.abort_all();
                }
                self.output.abort();
                Ok(())
            }
            Outcome::Ended(end) => {
                connections.abort_all();
                let _ = tokio::time::timeout(Duration::from_secs(1), self.output).await;
                let what = end.describe(self.memory_mb);
                tracing::warn!(%what, "the container ended");
                match end {
                    Ended::Exited {
                        code: 0,
                        oom_killed: false,
                    } => {
                        self.log.runner_line(&what);
                        Ok(())
                    }
                    _ => Err(AppEnded(what)),
                }
            }
        }
    }
}

/// A free TCP port of the node, for a `host`-network container to listen on.
fn free_port() -> Result<u16, DockerError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DockerError::Container {
            message: format!("cannot find a free port for a host-network container: {e}"),
        })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tarball_errors_blame_the_artifact() {
        let tarball = DockerError::Tarball {
            path: "/a/image.tar".into(),
            message: "x".into(),
        };
        assert!(tarball.is_artifact_problem());
        let missing = DockerError::ImageMissing { image: "x".into() };
        assert!(!missing.is_artifact_problem());
        let gone = DockerError::Unreachable {
            host: "unix:///nope".into(),
            message: "connection refused".into(),
        };
        assert!(!gone.is_artifact_problem());
        assert!(gone.to_string().starts_with(UNREACHABLE), "{gone}");
    }

    #[test]
    fn an_early_exit_is_one_line_quoting_the_output() {
        let msg = exited_early(3, false, 8080, "starting\n\nboom: no config\n");
        assert_eq!(
            msg,
            "the container exited before it listened on port 8080 (exit code 3); its last output: starting | boom: no config"
        );
        assert!(!msg.contains('\n'));
        let silent = exited_early(137, false, 80, "");
        assert!(
            silent.ends_with("(exit code 137 (SIGKILL)); it printed nothing"),
            "{silent}"
        );
        let oom = exited_early(137, true, 80, "x");
        assert!(oom.contains("memory limit"), "{oom}");
        let long = exited_early(1, false, 80, &"y".repeat(5000));
        assert!(long.len() < MAX_QUOTE + 200, "{}", long.len());
        assert!(long.contains('…'));
    }
}
