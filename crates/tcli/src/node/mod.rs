//! `tcli node up|status|logs|down`: bring one node online from a declarative `node.toml` and
//! operate it. `spec` reads the file, `plan` decides the container (pure), `docker` talks to the
//! daemon. `up --dry-run` prints the exact `docker run` instead of starting anything.

mod docker;
mod plan;
mod spec;
#[cfg(test)]
mod spec_tests;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tabbify_wire::Tag;
use tabbify_wire::health::SupervisorHealth;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Start the node a node.toml describes (Docker), and wait until its /health answers.
    Up {
        /// The node's declaration.
        #[arg(short = 'f', long = "file", value_name = "NODE_TOML")]
        file: PathBuf,
        /// Print the `docker run` command instead of starting the node.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for /health.
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Show the node container's state and its /health.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the node's log.
    Logs {
        #[command(flatten)]
        target: Target,
        /// Keep following the log.
        #[arg(long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Stop and remove the node container (its state volume stays unless --purge).
    Down {
        #[command(flatten)]
        target: Target,
        /// Also delete the state volume: the node's mesh identity is lost and it would rejoin
        /// as a new peer.
        #[arg(long)]
        purge: bool,
    },
}

/// Which node: the one a node.toml names, or a container name.
#[derive(Debug, Args)]
pub struct Target {
    /// The node's declaration (its [backend] container names the container).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "NODE_TOML",
        conflicts_with = "container"
    )]
    file: Option<PathBuf>,
    /// The container name (default tbf-sup).
    #[arg(long)]
    container: Option<String>,
}

impl Target {
    fn resolve(&self) -> Result<(String, Option<spec::NodeSpec>)> {
        match (&self.file, &self.container) {
            (Some(f), _) => {
                let s = spec::load(f)?;
                Ok((s.container.clone(), Some(s)))
            }
            (None, Some(c)) => Ok((c.clone(), None)),
            (None, None) => Ok((spec::DEFAULT_CONTAINER.to_string(), None)),
        }
    }
}

pub async fn run(cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Up {
            file,
            dry_run,
            wait,
        } => up(&file, dry_run, wait).await,
        NodeCommand::Status { target, json } => status(&target, json).await,
        NodeCommand::Logs {
            target,
            follow,
            tail,
        } => {
            let (name, _) = target.resolve()?;
            let docker = docker::connect().await?;
            docker::stream_logs(&docker, &name, follow, tail).await
        }
        NodeCommand::Down { target, purge } => down(&target, purge).await,
    }
}

async fn up(file: &std::path::Path, dry_run: bool, wait: Duration) -> Result<()> {
    let spec = spec::load(file)?;
    let plan = plan::plan(&spec);
    if dry_run {
        print!("{}", plan.render_shell());
        return Ok(());
    }
    if let Some(spec::JoinToken::File(p)) = &spec.join_token
        && !p.is_file()
    {
        anyhow::bail!("[mesh] join_token_file {} does not exist", p.display());
    }
    let docker = docker::connect().await?;
    docker::create_and_start(&docker, &plan).await?;
    eprintln!(
        "started container {} from {}; waiting for /health",
        plan.name, plan.image
    );
    let health = docker::wait_for_health(&docker, &plan.name, wait).await?;
    println!("node {} is up: {}", plan.name, health_line(&health));
    Ok(())
}

async fn status(target: &Target, json: bool) -> Result<()> {
    let (name, _) = target.resolve()?;
    let docker = docker::connect().await?;
    let Some(c) = docker::inspect(&docker, &name).await? else {
        anyhow::bail!("there is no container named {name}; `tcli node up -f node.toml` starts one");
    };
    let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let health = if running {
        docker::health(&docker, &name)
            .await
            .map_err(|e| format!("{e:#}"))
    } else {
        Err("the container is not running".to_string())
    };
    if json {
        let doc = serde_json::json!({
            "container": name,
            "state": docker::state_word(&c),
            "image": c.config.as_ref().and_then(|cfg| cfg.image.clone()),
            "started_at": c.state.as_ref().and_then(|s| s.started_at.clone()),
            "restart_count": c.restart_count.unwrap_or(0),
            "health": health.as_ref().ok(),
            "health_error": health.as_ref().err(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let image = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.image.clone())
        .unwrap_or_default();
    println!("container  {name} ({})", docker::state_word(&c));
    println!("image      {image}");
    if let Some(started) = c.state.as_ref().and_then(|s| s.started_at.as_deref()) {
        println!("started    {started}");
    }
    match health {
        Ok(h) => println!("health     {}", health_line(&h)),
        Err(e) => println!("health     unavailable: {e}"),
    }
    Ok(())
}

async fn down(target: &Target, purge: bool) -> Result<()> {
    let (name, spec) = target.resolve()?;
    let docker = docker::connect().await?;
    if docker::stop_and_remove(&docker, &name).await? {
        println!("stopped and removed {name}");
    } else {
        println!("no container named {name}");
    }
    if purge {
        let volume = match spec.map(|s| s.state) {
            Some(spec::StateMount::Volume(v)) => v,
            Some(spec::StateMount::HostDir(p)) => anyhow::bail!(
                "the state lives in the host directory {}; remove it by hand if you mean to",
                p.display()
            ),
            None => spec::DEFAULT_VOLUME.to_string(),
        };
        if docker::remove_volume(&docker, &volume)
            .await
            .context("purging the state")?
        {
            println!("removed volume {volume} (the node's mesh identity is gone)");
        }
    }
    Ok(())
}

fn health_line(h: &SupervisorHealth) -> String {
    let tags = h.tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",");
    let ula = h.ula.map_or("-".to_string(), |u| u.to_string());
    let mesh = serde_json::to_value(h.mesh)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut line = format!(
        "status {}, mesh {mesh}, ula {ula}, tags {tags}, version {}",
        h.status, h.version
    );
    if let Some(e) = &h.mesh_error {
        line.push_str(&format!(" ({e})"));
    }
    line
}
