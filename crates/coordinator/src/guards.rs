//! The flags that bound what a node (or any caller) can make the coordinator do beyond what its
//! credential says: how many watch streams stay open, and whether loopback replica addresses are
//! accepted (a one-machine lab). Kept apart from `config` so each flag group has one home.

use clap::Args;
use clap::builder::BoolishValueParser;

/// Default cap on open watch streams (roster and assignment streams together) per identity.
/// A node needs two; an operator's `tcli` a few.
pub const DEFAULT_WATCH_STREAMS_PER_IDENTITY: usize = 16;
/// Default cap on open watch streams in total: two per node for 10,000 nodes, with room.
pub const DEFAULT_WATCH_STREAMS_TOTAL: usize = 25_000;

#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// Open watch streams (`/v1/mesh/watch` and assignment watches together) one caller may hold;
    /// one more is refused with 429. A caller is a peer (its credential), the admin token, or
    /// else a remote IP.
    #[arg(long, env = "TABBIFY_COORDINATOR_MAX_WATCH_STREAMS_PER_IDENTITY",
          default_value_t = DEFAULT_WATCH_STREAMS_PER_IDENTITY)]
    pub max_watch_streams_per_identity: usize,

    /// Open watch streams in total; one more is refused with 429.
    #[arg(long, env = "TABBIFY_COORDINATOR_MAX_WATCH_STREAMS",
          default_value_t = DEFAULT_WATCH_STREAMS_TOTAL)]
    pub max_watch_streams: usize,

    /// Accept loopback replica addresses (127.0.0.1, ::1) from nodes that connect over loopback,
    /// and proxy to them: a node without a data plane on this machine (`tcli dev`, tests).
    /// Labs only: such a node can point the ingress at any local port.
    #[arg(long, env = "TABBIFY_COORDINATOR_ALLOW_LOOPBACK_REPLICAS",
          value_parser = BoolishValueParser::new())]
    pub allow_loopback_replicas: bool,
}

/// Checked guard settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    pub watch_streams_per_identity: usize,
    pub watch_streams_total: usize,
    pub allow_loopback_replicas: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            watch_streams_per_identity: DEFAULT_WATCH_STREAMS_PER_IDENTITY,
            watch_streams_total: DEFAULT_WATCH_STREAMS_TOTAL,
            allow_loopback_replicas: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("--max-watch-streams-per-identity must be at least 1")]
    PerIdentity,
    #[error(
        "--max-watch-streams ({total}) must be at least --max-watch-streams-per-identity ({per_identity})"
    )]
    Total { total: usize, per_identity: usize },
}

impl GuardArgs {
    pub fn into_guards(self) -> Result<Guards, GuardError> {
        if self.max_watch_streams_per_identity == 0 {
            return Err(GuardError::PerIdentity);
        }
        if self.max_watch_streams < self.max_watch_streams_per_identity {
            return Err(GuardError::Total {
                total: self.max_watch_streams,
                per_identity: self.max_watch_streams_per_identity,
            });
        }
        Ok(Guards {
            watch_streams_per_identity: self.max_watch_streams_per_identity,
            watch_streams_total: self.max_watch_streams,
            allow_loopback_replicas: self.allow_loopback_replicas,
        })
    }
}
