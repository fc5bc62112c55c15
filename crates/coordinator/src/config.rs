//! Command line and environment of `tabbify-coordinator`, and the checked configuration the
//! server runs with.

use crate::liveness::LivenessPolicy;
use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default number of events the log keeps for watchers that resume.
pub const DEFAULT_EVENT_LOG_CAPACITY: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The mesh coordinator: roster, addresses, join tokens, liveness and the watch stream.
#[derive(Debug, Clone, Parser)]
#[command(name = "tabbify-coordinator", version)]
pub struct CoordinatorArgs {
    /// Address to serve HTTP on. Use port 0 for any free port (the ready line names it).
    #[arg(long, env = "TABBIFY_COORDINATOR_LISTEN", default_value = "[::]:8888")]
    pub listen: SocketAddr,

    /// Where the database and the admin token live.
    #[arg(
        long,
        env = "TABBIFY_COORDINATOR_DATA_DIR",
        default_value = "/var/lib/tabbify-coordinator"
    )]
    pub data_dir: PathBuf,

    /// Serve plain HTTP and authenticate nodes by bearer peer credentials instead of TLS and
    /// client certificates. Anyone on the path reads join tokens and credentials. Labs only.
    #[arg(long, env = "TABBIFY_COORDINATOR_INSECURE_NO_MTLS", value_parser = BoolishValueParser::new())]
    pub insecure_no_mtls: bool,

    /// Serve this certificate (PEM chain) instead of one from the mesh CA, e.g. a public one;
    /// nodes then verify it with the system roots. Needs --tls-key.
    #[arg(long, env = "TABBIFY_COORDINATOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TABBIFY_COORDINATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Another name or address for the coordinator's certificate (repeatable); localhost, the
    /// host name and the addresses it listens on are always in it.
    #[arg(
        long = "tls-san",
        env = "TABBIFY_COORDINATOR_TLS_SAN",
        value_delimiter = ','
    )]
    pub tls_sans: Vec<String>,

    /// How long a node certificate is valid; nodes renew at half of it (e.g. 24h, 10m).
    #[arg(long, env = "TABBIFY_COORDINATOR_NODE_CERT_TTL", default_value = "24h",
          value_parser = humantime::parse_duration)]
    pub node_cert_ttl: Duration,

    /// Let nodes join without a join token. Anyone who can reach the port can join the mesh.
    #[arg(long, env = "TABBIFY_COORDINATOR_OPEN_JOIN", value_parser = BoolishValueParser::new())]
    pub open_join: bool,

    /// How often nodes are told to send a heartbeat (e.g. 5s, 200ms).
    #[arg(long, env = "TABBIFY_COORDINATOR_HEARTBEAT_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// A node that misses this many heartbeat intervals is marked offline.
    #[arg(
        long,
        env = "TABBIFY_COORDINATOR_OFFLINE_AFTER_MISSED",
        default_value_t = 3
    )]
    pub offline_after_missed: u32,

    /// An offline node keeps its address this long after its last heartbeat, then is removed.
    #[arg(long, env = "TABBIFY_COORDINATOR_RETENTION", default_value = "7d",
          value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// A replica on a node that went offline stays assigned this long, then is placed elsewhere
    /// (e.g. 30s, 2m).
    #[arg(long, env = "TABBIFY_COORDINATOR_NODE_LOST_GRACE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub node_lost_grace: Duration,

    /// The artifact server (tabbify-appsrv) nodes fetch apps from when a deploy names none,
    /// e.g. http://10.0.0.5:9000.
    #[arg(long, env = "TABBIFY_COORDINATOR_APPSRV")]
    pub appsrv: Option<String>,

    /// Log format on stderr.
    #[arg(
        long,
        env = "TABBIFY_COORDINATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Roster events kept for resuming watchers (older ones get a snapshot instead).
    #[arg(long, hide = true, default_value_t = DEFAULT_EVENT_LOG_CAPACITY)]
    pub event_log_capacity: u64,

    #[command(flatten)]
    pub guards: crate::guards::GuardArgs,
}

/// How the coordinator serves TLS (absent with `--insecure-no-mtls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// An operator's certificate and key instead of one from the mesh CA.
    pub operator_cert: Option<(PathBuf, PathBuf)>,
    pub extra_sans: Vec<String>,
    pub node_cert_ttl: Duration,
}

/// A configuration that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub open_join: bool,
    pub tls: Option<TlsConfig>,
    pub liveness: LivenessPolicy,
    pub event_log_capacity: u64,
    pub node_lost_grace: Duration,
    /// Checked, without a trailing slash.
    pub appsrv: Option<String>,
    pub guards: crate::guards::Guards,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--node-cert-ttl must be between 2s and 365d, got {0}")]
    NodeCertTtl(String),
    #[error("--tls-cert/--tls-key cannot be used with --insecure-no-mtls")]
    TlsWithInsecure,
    #[error("--heartbeat-interval must be between 10ms and 1h, got {0}")]
    HeartbeatInterval(String),
    #[error("--offline-after-missed must be at least 1")]
    OfflineAfterMissed,
    #[error("--retention ({retention}) must be longer than the offline threshold ({offline})")]
    Retention { retention: String, offline: String },
    #[error("--event-log-capacity must be at least 1")]
    EventLogCapacity,
    #[error("--appsrv: {0}")]
    Appsrv(String),
    #[error(transparent)]
    Guards(#[from] crate::guards::GuardError),
}

impl CoordinatorArgs {
    pub fn into_config(self) -> Result<CoordinatorConfig, ConfigError> {
        if self.insecure_no_mtls && self.tls_cert.is_some() {
            return Err(ConfigError::TlsWithInsecure);
        }
        if self.node_cert_ttl < Duration::from_secs(2)
            || self.node_cert_ttl > Duration::from_secs(365 * 24 * 3600)
        {
            return Err(ConfigError::NodeCertTtl(
                humantime::format_duration(self.node_cert_ttl).to_string(),
            ));
        }
        let tls = (!self.insecure_no_mtls).then(|| TlsConfig {
            operator_cert: self.tls_cert.clone().zip(self.tls_key.clone()),
            extra_sans: self.tls_sans.clone(),
            node_cert_ttl: self.node_cert_ttl,
        });
        if self.heartbeat_interval < Duration::from_millis(10)
            || self.heartbeat_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::HeartbeatInterval(
                humantime::format_duration(self.heartbeat_interval).to_string(),
            ));
        }
        if self.offline_after_missed == 0 {
            return Err(ConfigError::OfflineAfterMissed);
        }
        let liveness = LivenessPolicy {
            heartbeat_interval: self.heartbeat_interval,
            offline_after_missed: self.offline_after_missed,
            retention: self.retention,
        };
        if self.retention <= liveness.offline_after() {
            return Err(ConfigError::Retention {
                retention: humantime::format_duration(self.retention).to_string(),
                offline: humantime::format_duration(liveness.offline_after()).to_string(),
            });
        }
        if self.event_log_capacity == 0 {
            return Err(ConfigError::EventLogCapacity);
        }
        let appsrv = match &self.appsrv {
            Some(url) => Some(
                crate::app_spec::check_appsrv_url(url)
                    .map_err(|e| ConfigError::Appsrv(e.to_string()))?,
            ),
            None => None,
        };
        Ok(CoordinatorConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            open_join: self.open_join,
            tls,
            liveness,
            event_log_capacity: self.event_log_capacity,
            node_lost_grace: self.node_lost_grace,
            appsrv,
            guards: self.guards.into_guards()?,
        })
    }
}

/// Sends `tracing` output to stderr (stdout carries only the ready line). `RUST_LOG` filters;
/// the default is `info`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour in log lines only for a person at a terminal: the journal and `docker logs` get plain
/// text, and `NO_COLOR` (set and not empty) turns colour off everywhere.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CoordinatorConfig, ConfigError> {
        let mut argv = vec!["tabbify-coordinator"];
        argv.extend_from_slice(args);
        CoordinatorArgs::try_parse_from(argv).unwrap().into_config()
    }

    #[test]
    fn tls_is_the_default_and_plain_http_needs_the_insecure_flag() {
        let cfg = parse(&[]).unwrap();
        let tls = cfg.tls.clone().unwrap();
        assert_eq!(tls.node_cert_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(tls.operator_cert, None);
        let plain = parse(&["--insecure-no-mtls"]).unwrap();
        assert_eq!(plain.tls, None);
        assert_eq!(
            parse(&["--insecure-no-mtls", "--tls-cert", "a", "--tls-key", "b"]),
            Err(ConfigError::TlsWithInsecure)
        );
        assert!(matches!(
            parse(&["--node-cert-ttl", "1s"]),
            Err(ConfigError::NodeCertTtl(_))
        ));
        let own = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-san",
            "a.example,10.0.0.1",
        ])
        .unwrap();
        let tls = own.tls.unwrap();
        assert_eq!(
            tls.operator_cert,
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(
            tls.extra_sans,
            vec!["a.example".to_string(), "10.0.0.1".to_string()]
        );
        assert!(
            CoordinatorArgs::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err(),
            "a certificate without its key is refused"
        );
        let cfg = parse(&["--insecure-no-mtls"]).unwrap();
        assert_eq!(cfg.listen.port(), 8888);
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/tabbify-coordinator"));
        assert_eq!(cfg.liveness.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(cfg.liveness.offline_after_missed, 3);
        assert_eq!(cfg.liveness.retention, Duration::from_secs(7 * 24 * 3600));
        assert!(!cfg.open_join);
        assert_eq!(cfg.node_lost_grace, Duration::from_secs(30));
        assert_eq!(cfg.appsrv, None);
    }

    #[test]
    fn apps_flags() {
        let cfg = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--node-lost-grace",
            "1500ms",
            "--appsrv",
            "http://10.0.0.5:9000/",
        ])
        .unwrap();
        assert_eq!(cfg.node_lost_grace, Duration::from_millis(1500));
        assert_eq!(cfg.appsrv.as_deref(), Some("http://10.0.0.5:9000"));
        let err = parse(&["--listen", "127.0.0.1:0", "--appsrv", "10.0.0.5:9000"]).unwrap_err();
        assert!(matches!(err, ConfigError::Appsrv(_)), "{err}");
    }

    #[test]
    fn flags_parse_from_the_command_line() {
        use clap::builder::TypedValueParser;
        let cfg = parse(&["--listen", "0.0.0.0:1", "--insecure-no-mtls", "--open-join"]).unwrap();
        assert!(cfg.open_join && cfg.tls.is_none());
        // Environment values like 1/yes/true are covered by clap's boolish parser.
        assert!(
            BoolishValueParser::new()
                .parse_ref(&clap::Command::new("x"), None, std::ffi::OsStr::new("yes"))
                .unwrap()
        );
    }

    #[test]
    fn any_address_is_allowed_with_tls() {
        for listen in ["127.0.0.1:0", "[::1]:9000", "0.0.0.0:1", "10.0.0.1:1"] {
            assert!(parse(&["--listen", listen]).is_ok(), "{listen}");
        }
    }

    #[test]
    fn durations_and_their_limits() {
        let cfg = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "200ms",
            "--offline-after-missed",
            "2",
            "--retention",
            "5s",
        ])
        .unwrap();
        assert_eq!(cfg.liveness.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(cfg.liveness.offline_after(), Duration::from_millis(400));
        let base = ["--listen", "127.0.0.1:0"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(matches!(
            with(&["--heartbeat-interval", "1ms"]),
            Err(ConfigError::HeartbeatInterval(_))
        ));
        assert_eq!(
            with(&["--offline-after-missed", "0"]),
            Err(ConfigError::OfflineAfterMissed)
        );
        assert!(matches!(
            with(&["--retention", "10s"]),
            Err(ConfigError::Retention { .. })
        ));
        assert!(
            CoordinatorArgs::try_parse_from(["x", "--retention", "forever"]).is_err(),
            "humantime rejects nonsense"
        );
    }
}
