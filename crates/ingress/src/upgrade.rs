//! Upgraded connections (websockets and any other `Upgrade` protocol): once the replica has
//! answered `101 Switching Protocols` and the client has been sent the same, the two
//! connections are joined and bytes are copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tabbify_wire::app::AppName;

/// Joins the two sides in a task of its own; the request's handler has returned by the time
/// the client side upgrades.
pub(crate) fn splice(app: AppName, addr: SocketAddr, client: OnUpgrade, replica: OnUpgrade) {
    tokio::spawn(async move {
        let (client, replica) = match tokio::try_join!(client, replica) {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!(%app, %addr, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut replica = TokioIo::new(replica);
        match tokio::io::copy_bidirectional(&mut client, &mut replica).await {
            Ok((up, down)) => {
                tracing::debug!(%app, %addr, bytes_up = up, bytes_down = down, "upgraded connection closed");
            }
            Err(e) => {
                tracing::debug!(%app, %addr, error = %e, "upgraded connection ended with an error");
            }
        }
    });
}
