//! Everything that can stop the data plane from starting or shutting down cleanly.

use super::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("invalid data plane configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "interface {name:?} already exists and is not a TUN device; choose another tun_name or remove it"
    )]
    NameTaken { name: String },
    #[error(
        "TUN device {name:?} is held open by another running process (is another node running?)"
    )]
    TunBusy { name: String },
    #[error("could not remove the stale TUN device {name:?}: {source}")]
    StaleTun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not create TUN device {name:?} (needs CAP_NET_ADMIN and /dev/net/tun): {source}"
    )]
    CreateTun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not configure TUN device {name:?} ({what}): {source}")]
    ConfigureTun {
        name: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("could not bind the WireGuard UDP socket on port {port}: {source}")]
    BindUdp {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start a data plane thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("a data plane thread panicked")]
    ThreadPanicked,
}
