//! Peers removed for good: `tcli peers removed` lists the peers whose keys the coordinator
//! refuses, `tcli peers readmit` lets one back, and `tcli token revoke --cascade` removes the
//! peers a token admitted together with the token.

use crate::table;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::time::SystemTime;
use tabbify_client::CoordinatorClient;
use tabbify_wire::mesh::RemovedPeer;

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// List removed peers: their keys may not register again until re-admitted.
    Removed {
        #[arg(long)]
        json: bool,
    },
    /// Let a removed peer's key register again (with a join token, as a new peer).
    Readmit {
        /// The removed peer's id, or its public key.
        peer: String,
    },
}

pub async fn run(client: &CoordinatorClient, admin: &str, cmd: PeersCommand) -> Result<()> {
    match cmd {
        PeersCommand::Removed { json } => {
            let list = client.removed_peers(admin).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_removed(&list.removed_peers);
            }
        }
        PeersCommand::Readmit { peer } => {
            let r = client
                .readmit_peer(admin, &peer)
                .await
                .with_context(|| format!("re-admitting {peer}"))?;
            println!(
                "re-admitted {} ({}): key {} may join again with a join token",
                r.peer_id, r.display_name, r.public_key
            );
        }
    }
    Ok(())
}

pub async fn revoke_cascade(client: &CoordinatorClient, admin: &str, id: &str) -> Result<()> {
    let done = client
        .revoke_join_token_cascade(admin, id)
        .await
        .with_context(|| format!("revoking join token {id} with its peers"))?;
    println!(
        "revoked {} and removed {} peer(s) it admitted",
        done.id,
        done.removed_peers.len()
    );
    print_removed(&done.removed_peers);
    Ok(())
}

fn print_removed(list: &[RemovedPeer]) {
    if list.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.display_name.clone(),
                r.peer_id.clone(),
                r.public_key.to_string(),
                table::ago(r.removed_at, now),
                r.reason.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["NAME", "PEER ID", "PUBLIC KEY", "REMOVED", "WHY"], &rows)
    );
}
