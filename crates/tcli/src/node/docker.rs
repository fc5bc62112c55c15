//! The Docker backend of `tcli node`: start a planned node container through the Docker API
//! (bollard) and wait until its `/health` answers; show its state; stream its logs; stop and
//! remove it. The node's API listens inside the container (on its ULA), so `/health` is asked
//! from inside: the address comes from the supervisor's `listening on` line in the container's
//! log, and the image's busybox `wget` fetches it.

use super::plan::ContainerPlan;
use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tabbify_wire::health::SupervisorHealth;

const LISTENING_MARKER: &str = "tabbify-supervisor listening on ";

/// Connects to the daemon at `DOCKER_HOST` (or the default socket), agreeing on an API version
/// both sides speak.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_defaults().context("configuring the Docker client")?;
    docker
        .negotiate_version()
        .await
        .context("cannot reach the Docker daemon (is it running, and may this user use it?)")
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Creates and starts the container. Refuses when the image is missing or the name is taken;
/// removes the container again when it cannot be started.
pub async fn create_and_start(docker: &Docker, plan: &ContainerPlan) -> Result<()> {
    match docker.inspect_image(&plan.image).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => bail!(
            "image {} is not on this Docker host; build it with deploy/docker/build-images.sh \
             (see docs/install.md)",
            plan.image
        ),
        Err(e) => return Err(e).context("inspecting the image"),
    }
    match docker.inspect_container(&plan.name, None).await {
        Ok(c) => bail!(
            "a container named {} already exists ({}); `tcli node down` removes it",
            plan.name,
            state_word(&c)
        ),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).context("looking for an existing container"),
    }
    let options = CreateContainerOptionsBuilder::default()
        .name(&plan.name)
        .build();
    docker
        .create_container(Some(options), plan.create_body())
        .await
        .with_context(|| format!("creating container {}", plan.name))?;
    if let Err(e) = docker.start_container(&plan.name, None).await {
        let _ = docker
            .remove_container(
                &plan.name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        return Err(e).with_context(|| {
            format!(
                "starting container {} (it was removed again; check /dev/net/tun, and /dev/kvm \
                 for firecracker)",
                plan.name
            )
        });
    }
    Ok(())
}

/// Polls until the node's `/health` answers, the container stops for good, or `timeout` passes.
pub async fn wait_for_health(
    docker: &Docker,
    name: &str,
    timeout: Duration,
) -> Result<SupervisorHealth> {
    let started = Instant::now();
    let mut last: String;
    loop {
        let c = docker
            .inspect_container(name, None)
            .await
            .with_context(|| format!("inspecting container {name}"))?;
        let status = c.state.as_ref().and_then(|s| s.status);
        match status {
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
                if !will_restart(&c) =>
            {
                bail!(
                    "the node container {name} stopped ({}); its log ends with:\n{}",
                    state_word(&c),
                    log_tail(docker, name, 15).await
                );
            }
            Some(ContainerStateStatusEnum::RUNNING) => match health(docker, name).await {
                Ok(h) => return Ok(h),
                Err(e) => last = format!("{e:#}"),
            },
            _ => last = format!("container is {}", state_word(&c)),
        }
        if started.elapsed() >= timeout {
            bail!(
                "the node did not answer /health within {}s ({last}); the container keeps \
                 running — `tcli node logs` shows what it does, `tcli node down` removes it. Its \
                 log ends with:\n{}",
                timeout.as_secs(),
                log_tail(docker, name, 15).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn will_restart(c: &ContainerInspectResponse) -> bool {
    use bollard::models::RestartPolicyNameEnum as R;
    let policy = c
        .host_config
        .as_ref()
        .and_then(|h| h.restart_policy.as_ref())
        .and_then(|p| p.name);
    let exit = c.state.as_ref().and_then(|s| s.exit_code).unwrap_or(0);
    match policy {
        Some(R::ALWAYS | R::UNLESS_STOPPED) => true,
        Some(R::ON_FAILURE) => exit != 0,
        _ => false,
    }
}

/// `GET /health` of the node, asked from inside its container.
pub async fn health(docker: &Docker, name: &str) -> Result<SupervisorHealth> {
    let logs = collect_logs(docker, name, 500, false).await?;
    let addr = logs
        .lines()
        .rev()
        .find_map(|l| l.split_once(LISTENING_MARKER).map(|(_, a)| a.trim()))
        .context("the supervisor has not announced its API yet")?
        .trim_start_matches("http://")
        .to_string();
    let url = format!("http://{addr}/health");
    // busybox wget crashes with -T; `timeout` bounds it instead.
    let (code, out) = exec(
        docker,
        name,
        &["timeout", "5", "wget", "-q", "-O", "-", &url],
    )
    .await?;
    if code != 0 {
        bail!(
            "GET {url} inside the container failed (wget exit {code}): {}",
            out.trim()
        );
    }
    serde_json::from_str(&out).with_context(|| format!("GET {url} answered {}", out.trim()))
}

/// Runs `cmd` in the container; returns its exit code and combined output.
async fn exec(docker: &Docker, name: &str, cmd: &[&str]) -> Result<(i64, String)> {
    let created = docker
        .create_exec(
            name,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .context("creating an exec")?;
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None)
        .await
        .context("starting an exec")?
    {
        while let Some(chunk) = output.next().await {
            text.push_str(&String::from_utf8_lossy(
                &chunk.context("exec output")?.into_bytes(),
            ));
        }
    }
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .context("inspecting an exec")?;
    Ok((inspect.exit_code.unwrap_or(-1), text))
}

/// The last `tail` lines of the container's log (stdout and stderr interleaved).
pub async fn collect_logs(docker: &Docker, name: &str, tail: u32, stderr: bool) -> Result<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(stderr)
        .tail(&tail.to_string())
        .build();
    let mut stream = Box::pin(docker.logs(name, Some(options)));
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.context("reading the log")?.into_bytes(),
        ));
    }
    Ok(text)
}

async fn log_tail(docker: &Docker, name: &str, lines: u32) -> String {
    match collect_logs(docker, name, lines, true).await {
        Ok(t) if t.trim().is_empty() => "  (empty)".to_string(),
        Ok(t) => t.lines().map(|l| format!("  {l}\n")).collect(),
        Err(e) => format!("  (cannot read it: {e:#})"),
    }
}

/// Streams the log to our stdout and stderr.
pub async fn stream_logs(
    docker: &Docker,
    name: &str,
    follow: bool,
    tail: Option<u32>,
) -> Result<()> {
    use std::io::Write;
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .tail(&tail.map_or("all".to_string(), |n| n.to_string()))
        .build();
    let mut stream = Box::pin(docker.logs(name, Some(options)));
    while let Some(chunk) = stream.next().await {
        match chunk.with_context(|| format!("reading the log of {name}"))? {
            LogOutput::StdErr { message } => std::io::stderr().write_all(&message)?,
            other => std::io::stdout().write_all(&other.into_bytes())?,
        }
    }
    Ok(())
}

/// Inspects the container; `None` when there is none of that name.
pub async fn inspect(docker: &Docker, name: &str) -> Result<Option<ContainerInspectResponse>> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting container {name}")),
    }
}

/// Stops (SIGTERM, then SIGKILL after 10 s) and removes the container. `false` when there was
/// none.
pub async fn stop_and_remove(docker: &Docker, name: &str) -> Result<bool> {
    if inspect(docker, name).await?.is_none() {
        return Ok(false);
    }
    match docker
        .stop_container(
            name,
            Some(StopContainerOptionsBuilder::default().t(10).build()),
        )
        .await
    {
        Ok(()) => {}
        // 304: already stopped.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("stopping container {name}")),
    }
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .with_context(|| format!("removing container {name}"))?;
    Ok(true)
}

/// Removes a named volume (the node's identity goes with it).
pub async fn remove_volume(docker: &Docker, volume: &str) -> Result<bool> {
    match docker
        .remove_volume(
            volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing volume {volume}")),
    }
}

/// "running", "restarting (3 restarts)", "exited (code 1)", ...
pub fn state_word(c: &ContainerInspectResponse) -> String {
    let state = c.state.as_ref();
    let status = state
        .and_then(|s| s.status)
        .map_or("unknown".to_string(), |s| s.to_string());
    let restarts = c.restart_count.unwrap_or(0);
    let mut out = status.clone();
    if status == "exited" {
        out.push_str(&format!(
            " (code {})",
            state.and_then(|s| s.exit_code).unwrap_or(-1)
        ));
    }
    if restarts > 0 {
        out.push_str(&format!(", {restarts} restarts"));
    }
    out
}
