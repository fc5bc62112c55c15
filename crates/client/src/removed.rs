//! Removing peers for good and letting them back: revoking a join token together with the peers
//! it admitted, listing the peers whose keys are refused, and re-admitting one. Also the roster
//! watch sent with a peer credential, so the coordinator counts a node's streams under its own
//! identity rather than its address.

use crate::{ClientError, CoordinatorClient, WatchMessage};
use futures_util::Stream;
use reqwest::Method;
use tabbify_wire::mesh::{RemovedPeer, RemovedPeerList};
use tabbify_wire::token::RevokedJoinToken;

impl CoordinatorClient {
    /// Revokes join token `id` and removes every peer it admitted (admin).
    pub async fn revoke_join_token_cascade(
        &self,
        admin_token: &str,
        id: &str,
    ) -> Result<RevokedJoinToken, ClientError> {
        let r = self
            .request(Method::DELETE, &format!("/v1/admin/join-tokens/{id}"))
            .query(&[("cascade", "true")])
            .bearer_auth(admin_token);
        self.send("revoke join token with its peers", r).await
    }

    /// The peers whose keys are refused until re-admitted (admin).
    pub async fn removed_peers(&self, admin_token: &str) -> Result<RemovedPeerList, ClientError> {
        let r = self
            .request(Method::GET, "/v1/admin/removed-peers")
            .bearer_auth(admin_token);
        self.send("list removed peers", r).await
    }

    /// Lets a removed peer's key register again; `which` is its peer id or public key (admin).
    pub async fn readmit_peer(
        &self,
        admin_token: &str,
        which: &str,
    ) -> Result<RemovedPeer, ClientError> {
        // A base64 key may hold `/` and `+`: send it as one escaped path segment.
        let mut url = reqwest::Url::parse(&format!("{}/v1/admin/removed-peers", self.base))
            .map_err(|_| ClientError::BadUrl(self.base.clone()))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::BadUrl(self.base.clone()))?
            .push(which)
            .push("readmit");
        let r = self
            .http()
            .request(Method::POST, url)
            .timeout(std::time::Duration::from_secs(30))
            .bearer_auth(admin_token);
        self.send("re-admit peer", r).await
    }

    /// Like [`CoordinatorClient::watch`], sent with this node's peer credential.
    pub async fn watch_as_peer(
        &self,
        peer_credential: &str,
        since: Option<u64>,
    ) -> Result<impl Stream<Item = Result<WatchMessage, ClientError>> + use<>, ClientError> {
        let mut r = self
            .http()
            .get(format!("{}/v1/mesh/watch", self.base))
            .bearer_auth(peer_credential);
        if let Some(rev) = since {
            r = r.query(&[("since", rev)]);
        }
        let resp = self.send_raw("watch", r).await?;
        Ok(crate::watch::parse_stream(resp.bytes_stream()))
    }
}
