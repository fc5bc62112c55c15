//! systemd integration: READY/STATUS/STOPPING notifications and watchdog pets. Every call is a
//! no-op when the supervisor does not run under systemd (`NOTIFY_SOCKET` unset).

use sd_notify::NotifyState;
use std::time::Duration;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Pets the watchdog at half the period systemd asked for, when `WATCHDOG_USEC` is set.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(100));
    tracing::info!(?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
