//! What container a [`NodeSpec`] means, as plain data ([`ContainerPlan`]), and its two
//! renderings: the `docker run` command `--dry-run` prints (one argument per line, shell-quoted)
//! and the Docker API request `tcli node up` sends. Both come from the same plan, so the printed
//! command and the started container cannot drift apart.

use super::spec::{JoinToken, NodeSpec, RestartPolicy, StateMount};
use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, RestartPolicy as DockerRestart,
    RestartPolicyNameEnum,
};
use std::collections::HashMap;

/// The state directory inside the image (the supervisor's default `--data-dir`).
pub const STATE_DIR: &str = "/var/lib/tabbify";
/// Where a join token file is mounted.
pub const JOIN_TOKEN_MOUNT: &str = "/run/tabbify/join-token";
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Docker before 26 turns IPv6 off in every container's network namespace; the mesh puts the
/// node's ULA on its TUN device, so the node needs it on.
pub const IPV6_SYSCTL: (&str, &str) = ("net.ipv6.conf.all.disable_ipv6", "0");
/// Label set on containers `tcli node up` starts.
pub const NODE_LABEL: &str = "dev.tabbify.node";

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub restart: RestartPolicy,
    pub devices: Vec<String>,
    pub cap_add: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    pub network: Option<String>,
    /// `source:target[:ro]`, as `--volume` takes it.
    pub mounts: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    /// Arguments after the image (to the supervisor).
    pub args: Vec<String>,
}

/// The container for a node.
pub fn plan(spec: &NodeSpec) -> ContainerPlan {
    let mut devices = vec!["/dev/net/tun".to_string()];
    if spec.firecracker {
        devices.push("/dev/kvm".to_string());
    }
    let network = if spec.docker {
        Some("host".to_string())
    } else {
        spec.network.clone()
    };
    // Docker refuses net.* sysctls in the host's network namespace (and there IPv6 is the
    // host's business).
    let sysctls = if network.as_deref() == Some("host") {
        Vec::new()
    } else {
        vec![(IPV6_SYSCTL.0.to_string(), IPV6_SYSCTL.1.to_string())]
    };
    let mut mounts = vec![match &spec.state {
        StateMount::Volume(v) => format!("{v}:{STATE_DIR}"),
        StateMount::HostDir(p) => format!("{}:{STATE_DIR}", p.display()),
    }];
    if spec.docker {
        mounts.push(format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}"));
    }
    let mut env = Vec::new();
    if let Some(c) = &spec.coordinator {
        env.push(("TABBIFY_MESH_COORDINATOR".to_string(), c.clone()));
    }
    if let Some(n) = &spec.name {
        env.push(("SUPERVISOR_NAME".to_string(), n.clone()));
    }
    match &spec.join_token {
        Some(JoinToken::Inline(t)) => env.push(("TABBIFY_JOIN_TOKEN".to_string(), t.clone())),
        Some(JoinToken::File(p)) => {
            mounts.push(format!("{}:{JOIN_TOKEN_MOUNT}:ro", p.display()));
            env.push((
                "TABBIFY_JOIN_TOKEN_FILE".to_string(),
                JOIN_TOKEN_MOUNT.to_string(),
            ));
        }
        None => {}
    }
    let args = spec
        .tags
        .iter()
        .flat_map(|t| ["--tag".to_string(), t.as_str().to_string()])
        .collect();
    ContainerPlan {
        name: spec.container.clone(),
        image: spec.image.clone(),
        restart: spec.restart.clone(),
        devices,
        cap_add: vec!["NET_ADMIN".to_string()],
        sysctls,
        network,
        mounts,
        env,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
        args,
    }
}

impl ContainerPlan {
    /// `docker run` and its arguments, each one `--flag=value` so one line holds one argument.
    pub fn docker_run_argv(&self) -> Vec<String> {
        let mut a = vec![
            "docker".to_string(),
            "run".to_string(),
            "--detach".to_string(),
        ];
        a.push(format!("--name={}", self.name));
        a.push(format!("--restart={}", self.restart));
        a.extend(self.devices.iter().map(|d| format!("--device={d}")));
        a.extend(self.cap_add.iter().map(|c| format!("--cap-add={c}")));
        a.extend(
            self.sysctls
                .iter()
                .map(|(k, v)| format!("--sysctl={k}={v}")),
        );
        if let Some(n) = &self.network {
            a.push(format!("--network={n}"));
        }
        a.extend(self.mounts.iter().map(|m| format!("--volume={m}")));
        a.extend(self.env.iter().map(|(k, v)| format!("--env={k}={v}")));
        if let Some(c) = self.cpus {
            a.push(format!("--cpus={c}"));
        }
        if let Some(m) = self.memory_mb {
            a.push(format!("--memory={m}m"));
        }
        a.push(format!("--label={NODE_LABEL}=1"));
        a.push(self.image.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    /// The command as a shell would take it: one argument per line, quoted where needed.
    pub fn render_shell(&self) -> String {
        let argv = self.docker_run_argv();
        let mut out = String::from("docker run");
        for arg in argv.iter().skip(2) {
            out.push_str(" \\\n  ");
            out.push_str(&shell_quote(arg));
        }
        out.push('\n');
        out
    }

    /// The same container as a Docker API create request.
    pub fn create_body(&self) -> ContainerCreateBody {
        let restart = match &self.restart {
            RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
            RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
            RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
            RestartPolicy::OnFailure { max_retries } => (
                RestartPolicyNameEnum::ON_FAILURE,
                max_retries.map(i64::from),
            ),
        };
        let host_config = HostConfig {
            restart_policy: Some(DockerRestart {
                name: Some(restart.0),
                maximum_retry_count: restart.1,
            }),
            devices: Some(
                self.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.clone()),
                        path_in_container: Some(d.clone()),
                        cgroup_permissions: Some("rwm".to_string()),
                    })
                    .collect(),
            ),
            cap_add: Some(self.cap_add.clone()),
            sysctls: (!self.sysctls.is_empty())
                .then(|| self.sysctls.iter().cloned().collect::<HashMap<_, _>>()),
            network_mode: self.network.clone(),
            binds: Some(self.mounts.clone()),
            nano_cpus: self.cpus.map(|c| (c * 1e9).round() as i64),
            memory: self.memory_mb.map(|m| (m * 1024 * 1024) as i64),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!self.args.is_empty()).then(|| self.args.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([(NODE_LABEL.to_string(), "1".to_string())])),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// Quotes `s` for a POSIX shell: unchanged when it is made of safe characters only, otherwise
/// in single quotes (a single quote inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | ',' | '+' | '%')
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::parse;
    use std::path::Path;

    fn spec(text: &str) -> NodeSpec {
        parse(text, "node.toml", Path::new("/etc/tabbify")).unwrap()
    }

    #[test]
    fn the_default_node_is_the_described_command() {
        let p = plan(&spec(""));
        assert_eq!(
            p.docker_run_argv(),
            [
                "docker",
                "run",
                "--detach",
                "--name=tbf-sup",
                "--restart=on-failure",
                "--device=/dev/net/tun",
                "--cap-add=NET_ADMIN",
                "--sysctl=net.ipv6.conf.all.disable_ipv6=0",
                "--volume=tbf-state:/var/lib/tabbify",
                "--label=dev.tabbify.node=1",
                "tabbify-supervisor",
            ]
        );
    }

    #[test]
    fn docker_capability_means_socket_and_host_network_without_sysctls() {
        let p = plan(&spec("[capabilities]\ndocker = true\n"));
        let argv = p.docker_run_argv();
        assert!(argv.contains(&"--network=host".to_string()));
        assert!(argv.contains(&"--volume=/var/run/docker.sock:/var/run/docker.sock".to_string()));
        assert!(!argv.iter().any(|a| a.starts_with("--sysctl")));
        let body = p.create_body();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.sysctls, None);
    }

    #[test]
    fn firecracker_adds_kvm_and_the_fc_image() {
        let p = plan(&spec("[capabilities]\nfirecracker = true\n"));
        assert_eq!(p.image, "tabbify-supervisor:fc");
        assert_eq!(p.devices, ["/dev/net/tun", "/dev/kvm"]);
    }

    #[test]
    fn the_api_request_matches_the_printed_command() {
        let p = plan(&spec(
            "[backend]\nrestart = \"on-failure:5\"\nnetwork = \"tbf-net\"\n\
             [mesh]\ncoordinator = \"http://coord:8888\"\nname = \"edge-1\"\n\
             join_token_file = \"secrets/token\"\ntags = [\"eu\"]\n\
             [resources]\ncpus = 1.5\nmemory_mb = 512\n",
        ));
        let body = p.create_body();
        let hc = body.host_config.clone().unwrap();
        let rp = hc.restart_policy.unwrap();
        assert_eq!(rp.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(rp.maximum_retry_count, Some(5));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.network_mode.as_deref(), Some("tbf-net"));
        assert_eq!(
            hc.binds.unwrap(),
            [
                "tbf-state:/var/lib/tabbify",
                "/etc/tabbify/secrets/token:/run/tabbify/join-token:ro"
            ]
        );
        assert_eq!(
            body.env.unwrap(),
            [
                "TABBIFY_MESH_COORDINATOR=http://coord:8888",
                "SUPERVISOR_NAME=edge-1",
                "TABBIFY_JOIN_TOKEN_FILE=/run/tabbify/join-token"
            ]
        );
        assert_eq!(body.cmd.unwrap(), ["--tag", "eu"]);
        let argv = p.docker_run_argv();
        assert!(argv.contains(&"--cpus=1.5".to_string()));
        assert!(argv.contains(&"--memory=512m".to_string()));
        assert!(argv.ends_with(&["tabbify-supervisor".into(), "--tag".into(), "eu".into()]));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--name=tbf-sup"), "--name=tbf-sup");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn rendering_puts_one_argument_per_line() {
        let out = plan(&spec("")).render_shell();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "docker run \\");
        assert_eq!(lines[1], "  --detach \\");
        assert_eq!(*lines.last().unwrap(), "  tabbify-supervisor");
        assert_eq!(lines.len(), 10);
    }
}
