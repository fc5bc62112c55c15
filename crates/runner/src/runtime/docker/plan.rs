//! What the container of one app version looks like, decided from the runner spec alone: its
//! name, the labels that tie it to the app (so a restarted runner finds it again), the
//! environment, the limits, and where the runner forwards the app's address to. Also which of the
//! containers found for this version to adopt and which to remove. Pure functions, no Docker.

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use tabbify_wire::app::{DockerNetwork, DockerRuntime};
use tabbify_wire::runner::RunnerSpec;

/// Label naming the app a container belongs to.
pub const LABEL_APP_ID: &str = "tabbify.app_id";
/// Label naming the app's name (for people running `docker ps`).
pub const LABEL_APP_NAME: &str = "tabbify.app_name";
/// Label naming the deployed version (`v3`).
pub const LABEL_VERSION: &str = "tabbify.version";
/// Label holding the version directory of the runner that owns the container: what a runner
/// looks its container up by, and what tells one node's containers from another's on a shared
/// daemon.
pub const LABEL_APP_DIR: &str = "tabbify.app_dir";
/// The variable that tells the app which port to listen on.
pub const PORT_ENV: &str = "PORT";

/// The container of one app version.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    /// `None`: the image's own command.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value`, the manifest's `[env]` plus `PORT`.
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub network: DockerNetwork,
    /// The port the app listens on inside its network namespace (the node's, with `host`).
    pub port: u16,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
}

impl ContainerPlan {
    /// The plan for `spec`, whose app runs `docker`. `port` is where the app must listen: the
    /// manifest's `[http] port` on a bridge or no network, a free port of the node with `host`.
    pub fn new(spec: &RunnerSpec, docker: &DockerRuntime, port: u16) -> Self {
        let dir = version_dir(spec);
        let version = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut env: Vec<String> = spec
            .manifest
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != PORT_ENV)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{PORT_ENV}={port}"));
        let labels = HashMap::from([
            (LABEL_APP_ID.to_string(), spec.app_id.to_string()),
            (LABEL_APP_NAME.to_string(), spec.name().to_string()),
            (LABEL_VERSION.to_string(), version.clone()),
            (LABEL_APP_DIR.to_string(), dir.display().to_string()),
        ]);
        Self {
            name: container_name(spec.app_id.as_str(), &version),
            image: docker.image.clone(),
            cmd: (!docker.command.is_empty()).then(|| docker.command.clone()),
            env,
            labels,
            network: docker.network,
            port,
            memory_bytes: i64::try_from(spec.manifest.memory_bytes()).unwrap_or(i64::MAX),
            nano_cpus: (spec.manifest.resources.cpus * 1e9).round() as i64,
        }
    }

    /// The Docker API's create request. Docker's restart policy stays off (the supervisor
    /// restarts), swap is off (the memory limit is the limit), and an init process reaps zombies
    /// and passes SIGTERM on, so a stop is graceful even for an app that does not handle signals
    /// as PID 1.
    pub fn create_body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: self.cmd.clone(),
            env: Some(self.env.clone()),
            labels: Some(self.labels.clone()),
            host_config: Some(HostConfig {
                memory: Some(self.memory_bytes),
                memory_swap: Some(self.memory_bytes),
                nano_cpus: Some(self.nano_cpus),
                network_mode: Some(network_mode(self.network).to_string()),
                init: Some(true),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The `label=` filter that finds this version's containers.
    pub fn label_filter(&self) -> String {
        format!(
            "{LABEL_APP_DIR}={}",
            self.labels.get(LABEL_APP_DIR).map_or("", String::as_str)
        )
    }
}

/// The runner's version directory: where its socket lives.
pub fn version_dir(spec: &RunnerSpec) -> &Path {
    spec.socket.parent().unwrap_or(Path::new(""))
}

/// `tabbify-<app id>-<version>`, with anything Docker does not take in a name replaced by `-`.
pub fn container_name(app_id: &str, version: &str) -> String {
    let raw = format!("tabbify-{app_id}-{version}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn network_mode(network: DockerNetwork) -> &'static str {
    match network {
        DockerNetwork::Bridge => "bridge",
        DockerNetwork::Host => "host",
        DockerNetwork::None => "none",
    }
}

/// Where the runner forwards the app's address: the container's bridge address, the node's
/// loopback with `host`, nowhere with `none`. `Err` when a bridge container has no address.
pub fn upstream(
    network: DockerNetwork,
    container_ip: Option<IpAddr>,
    port: u16,
) -> Result<Option<SocketAddr>, String> {
    match network {
        DockerNetwork::Bridge => match container_ip {
            Some(ip) => Ok(Some(SocketAddr::new(ip, port))),
            None => Err("the container has no address on its network".into()),
        },
        DockerNetwork::Host => Ok(Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))),
        DockerNetwork::None => Ok(None),
    }
}

/// The `PORT` a container was created with (an adopted container keeps its own).
pub fn port_from_env(env: &[String]) -> Option<u16> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(PORT_ENV)?.strip_prefix('='))
        .and_then(|p| p.parse().ok())
}

/// A container found for this version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub running: bool,
}

/// What to do with the containers found for this version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    /// The running container to serve with, instead of creating one.
    pub adopt: Option<String>,
    /// Everything else: exited leftovers, and any second running one (one container per app).
    pub remove: Vec<String>,
}

/// Adopts the first running container, removes the rest.
pub fn choose(found: &[Found]) -> Choice {
    let mut choice = Choice::default();
    for f in found {
        if f.running && choice.adopt.is_none() {
            choice.adopt = Some(f.id.clone());
        } else {
            choice.remove.push(f.id.clone());
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabbify_wire::app::{AppId, Manifest, RuntimeSpec};

    fn spec(extra: &str) -> (RunnerSpec, DockerRuntime) {
        let manifest = Manifest::from_toml_str(&format!(
            "[app]\nname = \"web\"\n[runtime]\nkind = \"docker\"\nimage = \"hello:1\"\n{extra}"
        ))
        .unwrap();
        let RuntimeSpec::Docker(docker) = manifest.runtime.clone() else {
            panic!("not docker");
        };
        let spec = RunnerSpec {
            app_id: AppId::new("web-0a1b2c3d").unwrap(),
            manifest,
            artifact: "/d/apps/web-0a1b2c3d/v3/image.tar".into(),
            listen: "127.0.0.1:4000".parse().unwrap(),
            log_file: "/d/apps/web-0a1b2c3d/app.log".into(),
            log_max_bytes: 1,
            log_keep: 1,
            socket: "/d/apps/web-0a1b2c3d/v3/runner.sock".into(),
            cache_dir: "/d/cache".into(),
            request_deadline_ms: 1,
            max_concurrent_requests: 1,
            vm_kernel: None,
        };
        (spec, docker)
    }

    #[test]
    fn names_labels_env_and_limits_come_from_the_spec() {
        let (spec, docker) = spec(
            "command = [\"/hello-http\", \"-v\"]\n[resources]\nmemory_mb = 64\ncpus = 0.5\n[env]\nGREETING = \"hi\"\nPORT = \"1\"\n",
        );
        let plan = ContainerPlan::new(&spec, &docker, 8080);
        assert_eq!(plan.name, "tabbify-web-0a1b2c3d-v3");
        assert_eq!(plan.labels[LABEL_APP_ID], "web-0a1b2c3d");
        assert_eq!(plan.labels[LABEL_VERSION], "v3");
        assert_eq!(plan.labels[LABEL_APP_DIR], "/d/apps/web-0a1b2c3d/v3");
        assert_eq!(
            plan.label_filter(),
            "tabbify.app_dir=/d/apps/web-0a1b2c3d/v3"
        );
        // The node's PORT wins over one in [env].
        assert_eq!(plan.env, vec!["GREETING=hi", "PORT=8080"]);
        let body = plan.create_body();
        assert_eq!(body.image.as_deref(), Some("hello:1"));
        assert_eq!(
            body.cmd,
            Some(vec!["/hello-http".to_string(), "-v".to_string()])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory, "no swap beyond the limit");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.init, Some(true));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO),
            "our supervision restarts, not Docker's"
        );
    }

    #[test]
    fn the_image_command_is_kept_when_none_is_given() {
        let (spec, docker) = spec("network = \"host\"\n");
        let plan = ContainerPlan::new(&spec, &docker, 41000);
        assert_eq!(plan.create_body().cmd, None);
        assert_eq!(
            plan.create_body()
                .host_config
                .unwrap()
                .network_mode
                .as_deref(),
            Some("host")
        );
    }

    #[test]
    fn names_only_hold_what_docker_takes() {
        assert_eq!(container_name("a-1", "v2"), "tabbify-a-1-v2");
        assert_eq!(container_name("a-1", "v 2/x"), "tabbify-a-1-v-2-x");
    }

    #[test]
    fn upstream_depends_on_the_network() {
        let ip: IpAddr = "172.17.0.5".parse().unwrap();
        assert_eq!(
            upstream(DockerNetwork::Bridge, Some(ip), 8080),
            Ok(Some("172.17.0.5:8080".parse().unwrap()))
        );
        assert!(upstream(DockerNetwork::Bridge, None, 8080).is_err());
        assert_eq!(
            upstream(DockerNetwork::Host, None, 41000),
            Ok(Some("127.0.0.1:41000".parse().unwrap()))
        );
        assert_eq!(upstream(DockerNetwork::None, Some(ip), 8080), Ok(None));
    }

    #[test]
    fn reads_the_port_back_from_the_environment() {
        let env = ["A=1".to_string(), "PORT=9000".to_string(), "PORTX=1".into()];
        assert_eq!(port_from_env(&env), Some(9000));
        assert_eq!(port_from_env(&["PORT=x".to_string()]), None);
        assert_eq!(port_from_env(&[]), None);
    }

    #[test]
    fn adopts_one_running_container_and_removes_the_rest() {
        let f = |id: &str, running| Found {
            id: id.into(),
            running,
        };
        assert_eq!(choose(&[]), Choice::default());
        assert_eq!(
            choose(&[f("old", false), f("live", true), f("twin", true)]),
            Choice {
                adopt: Some("live".into()),
                remove: vec!["old".into(), "twin".into()],
            }
        );
        assert_eq!(
            choose(&[f("dead", false)]),
            Choice {
                adopt: None,
                remove: vec!["dead".into()],
            }
        );
    }
}
