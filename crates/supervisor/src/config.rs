//! Command-line flags and environment variables of the supervisor (names fixed by the product
//! spec: `TABBIFY_MESH_COORDINATOR`, `SUPERVISOR_NAME`, `TABBIFY_JOIN_TOKEN`).

use clap::{Args, Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tabbify_wire::Tag;

/// The coordinator a node joins when nothing else is configured. Builds for a private mesh bake
/// their own in with `TABBIFY_DEFAULT_COORDINATOR=http://host:8888 cargo build`.
pub const DEFAULT_COORDINATOR: &str = match option_env!("TABBIFY_DEFAULT_COORDINATOR") {
    Some(url) => url,
    None => "http://127.0.0.1:8888",
};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tabbify-supervisor",
    version,
    about = "Tabbify node: joins the mesh, advertises runtimes, runs apps"
)]
pub struct SupervisorArgs {
    /// Coordinator base URL.
    #[arg(long, env = "TABBIFY_MESH_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,

    /// Display name in the roster (default: the host name).
    #[arg(long, env = "SUPERVISOR_NAME")]
    pub name: Option<String>,

    /// Join token for the first registration.
    #[arg(long, env = "TABBIFY_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// File holding the join token (used when --join-token is not given).
    #[arg(long, env = "TABBIFY_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,

    /// State directory; holds mesh-identity.json.
    #[arg(long, env = "TABBIFY_DATA_DIR", default_value = "/var/lib/tabbify")]
    pub data_dir: PathBuf,

    /// Do not join a mesh: serve the control API alone (loopback dev mode).
    #[arg(long)]
    pub no_mesh: bool,

    /// Address of the control API. Default: the node's ULA, `[ula]:8730`, with the mesh data
    /// plane; `127.0.0.1:8730` with `--no-mesh` or `--dataplane off`.
    #[arg(long, env = "TABBIFY_BIND")]
    pub bind: Option<SocketAddr>,

    /// WireGuard UDP port.
    #[arg(long, env = "TABBIFY_MESH_LISTEN_PORT", default_value_t = tabbify_wire::MESH_LISTEN_PORT)]
    pub listen_port: u16,

    /// Name of the TUN device.
    #[arg(long, env = "TABBIFY_MESH_TUN", default_value = "tbf0")]
    pub tun_name: String,

    /// Underlay address(es) peers should send to, `ip:port` (comma-separated or repeated).
    /// Default: the address the coordinator saw, then every interface address.
    #[arg(
        long = "advertise-endpoint",
        env = "TABBIFY_MESH_ADVERTISE_ENDPOINT",
        value_delimiter = ','
    )]
    pub advertise_endpoints: Vec<tabbify_wire::Endpoint>,

    /// Serve the apps of the mesh to clients outside it: `http://ADDR/app/<name>/…` is proxied
    /// over the mesh to a running replica.
    #[arg(long, env = "TABBIFY_INGRESS")]
    pub ingress: Option<std::net::SocketAddr>,

    /// `tun`: carry mesh traffic (needs NET_ADMIN and /dev/net/tun). `off`: control plane only,
    /// register and heartbeat but carry no traffic (labs, tests, hosts without a TUN device).
    #[arg(long, env = "TABBIFY_DATAPLANE", value_enum, default_value_t = DataplaneMode::Tun)]
    pub dataplane: DataplaneMode,

    /// Extra operator tags to advertise (repeatable), e.g. `--tag eu-west`.
    #[arg(long = "tag", value_name = "TAG")]
    pub extra_tags: Vec<Tag>,

    /// How often to re-probe capabilities (docker, kvm).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// Longest wait between join attempts while the coordinator is unreachable.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub join_backoff_cap: Duration,

    /// The `tabbify-runner` binary (default: beside this executable, else on PATH).
    #[arg(long, env = "TABBIFY_RUNNER_BIN")]
    pub runner_bin: Option<PathBuf>,

    /// Largest app deploy request (manifest + artifact), in MiB.
    #[arg(long, env = "TABBIFY_MAX_APP_UPLOAD_MIB", default_value_t = 64)]
    pub max_app_upload_mib: usize,

    /// Largest deploy request of a docker app that carries its image (a `docker save` tarball),
    /// in MiB. The upload is held in memory while it is checked.
    #[arg(long, env = "TABBIFY_MAX_IMAGE_UPLOAD_MIB", default_value_t = 1024)]
    pub max_image_upload_mib: usize,

    /// An app runner not serving this long after it started is killed (and its deploy fails).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub app_start_timeout: Duration,

    /// Requests to an app that run longer than this are cut off with 504.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub app_request_deadline: Duration,

    /// How long a stopping app may drain its requests before it is killed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub app_stop_grace: Duration,

    /// Guest kernel of microVM apps (`kind = "firecracker"`); the default is where
    /// `tabbify-fetch` installs the release's guest kernel. A `modules/` directory beside it
    /// (virtio drivers) and the guest init `tabbify-vm-init` are used from the same directory.
    #[arg(
        long,
        env = "TABBIFY_VM_KERNEL",
        default_value = "/var/lib/tabbify/kernels/vmlinux"
    )]
    pub vm_kernel: PathBuf,

    /// Unix socket serving the control API to root on this node without a token (mode 0600;
    /// its directory is created). `off` serves none.
    #[arg(
        long,
        env = "TABBIFY_CONTROL_SOCKET",
        default_value = "/run/tabbify/control.sock"
    )]
    pub control_socket: PathBuf,

    #[command(flatten)]
    pub log: LogArgs,
}

impl SupervisorArgs {
    /// The control socket's path, `None` for `--control-socket off`.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        (self.control_socket.as_os_str() != "off").then_some(self.control_socket.as_path())
    }

    /// The display name: `--name`, else the host name, else "node".
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(hostname)
            .unwrap_or_else(|| "node".to_string())
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    Tun,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logging flags shared by our binaries.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, env = "TABBIFY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the tracing subscriber (stderr; filter from `RUST_LOG`, default `info`).
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour_on_stderr());
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
