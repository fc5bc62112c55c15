//! The coordinator's apps API: the operator's calls (create, list, get, delete an app) and the
//! node's (follow its assignments, report what runs). See `docs/coordinator-apps-api.md`.

use crate::{ClientError, CoordinatorClient, with_bearer};
use futures_util::Stream;
use reqwest::{Method, StatusCode};
use tabbify_wire::app::AppName;
use tabbify_wire::placement::{
    AppEndpoints, AppList, AppView, AssignmentSet, CreateAppRequest, NodeAppsReport,
    NodeAppsReportAck, SSE_ASSIGNMENTS,
};

/// What `POST /v1/apps` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppChange {
    Created,
    /// The name existed; the version went up if anything changed.
    Updated,
}

impl CoordinatorClient {
    /// Creates or updates an app (admin).
    pub async fn create_app(
        &self,
        admin_token: &str,
        req: &CreateAppRequest,
    ) -> Result<(AppChange, AppView), ClientError> {
        let r = self
            .json(Method::POST, "/v1/apps", req)
            .bearer_auth(admin_token);
        let resp = self.send_raw("create app", r).await?;
        let change = if resp.status() == StatusCode::CREATED {
            AppChange::Created
        } else {
            AppChange::Updated
        };
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        let view = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: "create app".into(),
            detail: e.to_string(),
        })?;
        Ok((change, view))
    }

    pub async fn apps(&self, admin_token: &str) -> Result<AppList, ClientError> {
        let r = self
            .request(Method::GET, "/v1/apps")
            .bearer_auth(admin_token);
        self.send("list apps", r).await
    }

    pub async fn app(&self, admin_token: &str, name: &AppName) -> Result<AppView, ClientError> {
        let r = self
            .request(Method::GET, &format!("/v1/apps/{name}"))
            .bearer_auth(admin_token);
        self.send("get app", r).await
    }

    /// Deletes an app (admin); its replicas are withdrawn from their nodes.
    pub async fn delete_app(&self, admin_token: &str, name: &AppName) -> Result<(), ClientError> {
        let r = self
            .request(Method::DELETE, &format!("/v1/apps/{name}"))
            .bearer_auth(admin_token);
        self.send_raw("delete app", r).await.map(drop)
    }

    /// Where the app's running replicas are; `token` is the admin token, or a peer credential
    /// without mTLS (with mTLS a node passes `None`: its certificate identifies it).
    pub async fn app_endpoints(
        &self,
        token: Option<&str>,
        name: &AppName,
    ) -> Result<AppEndpoints, ClientError> {
        let r = self.request(Method::GET, &format!("/v1/apps/{name}/endpoints"));
        self.send("get app endpoints", with_bearer(r, token)).await
    }

    /// This node's assignments now (`credential`: see [`CoordinatorClient::heartbeat`]).
    pub async fn assignments(
        &self,
        credential: Option<&str>,
    ) -> Result<AssignmentSet, ClientError> {
        let r = self.request(Method::GET, "/v1/nodes/self/assignments");
        self.send("get assignments", with_bearer(r, credential))
            .await
    }

    /// Follows this node's assignments: each item is the complete set as of its revision. The
    /// first comes at once unless `since` is the current revision. The stream ends when the
    /// connection drops; reconnect with the last revision seen.
    pub async fn watch_assignments(
        &self,
        credential: Option<&str>,
        since: Option<u64>,
    ) -> Result<impl Stream<Item = Result<AssignmentSet, ClientError>> + use<>, ClientError> {
        let mut r = with_bearer(
            self.http()
                .get(format!("{}/v1/nodes/self/assignments/watch", self.base)),
            credential,
        );
        if let Some(rev) = since {
            r = r.query(&[("since", rev)]);
        }
        let resp = self.send_raw("watch assignments", r).await?;
        Ok(parse_assignment_stream(resp.bytes_stream()))
    }

    /// Reports the state of every assignment-driven app on this node.
    pub async fn report_apps_state(
        &self,
        credential: Option<&str>,
        report: &NodeAppsReport,
    ) -> Result<NodeAppsReportAck, ClientError> {
        let r = self.json(Method::POST, "/v1/nodes/self/apps/state", report);
        self.send("report apps state", with_bearer(r, credential))
            .await
    }
}

fn parse_assignment_stream<S, B, E>(
    bytes: S,
) -> impl Stream<Item = Result<AssignmentSet, ClientError>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    crate::watch::sse_items(bytes, "assignment watch", decode_assignments)
}

fn decode_assignments(event: &str, data: &str) -> Result<Option<AssignmentSet>, ClientError> {
    if event != SSE_ASSIGNMENTS {
        // Other event names come from a newer coordinator: skip them.
        return Ok(None);
    }
    serde_json::from_str(data)
        .map(Some)
        .map_err(|e| ClientError::Decode {
            what: "assignment watch event".into(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{StreamExt, stream};

    #[tokio::test]
    async fn parses_assignment_sets_and_skips_other_events() {
        let text = "id: 4\nevent: assignments\ndata: {\"revision\":4,\"peer_id\":\"p\",\"assignments\":[]}\n\n\
                    event: later\ndata: {}\n\n: keep-alive\n\n\
                    id: 9\nevent: assignments\ndata: {\"revision\":9,\"peer_id\":\"p\",\"assignments\":[]}\n\n";
        let chunks: Vec<Result<Vec<u8>, String>> =
            text.as_bytes().chunks(5).map(|c| Ok(c.to_vec())).collect();
        let got: Vec<_> = parse_assignment_stream(stream::iter(chunks))
            .collect()
            .await;
        let revs: Vec<u64> = got.into_iter().map(|s| s.unwrap().revision).collect();
        assert_eq!(revs, vec![4, 9]);
    }

    #[tokio::test]
    async fn a_bad_set_is_a_decode_error() {
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(
            b"event: assignments\ndata: {\"revision\":\"x\"}\n\n".to_vec(),
        )];
        let got: Vec<_> = parse_assignment_stream(stream::iter(chunks))
            .collect()
            .await;
        assert!(matches!(got[0], Err(ClientError::Decode { .. })));
    }
}
