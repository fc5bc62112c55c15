//! Operator tokens at the coordinator: minting one with the admin token, and reading the public
//! key that signs them.

use crate::{ClientError, CoordinatorClient};
use reqwest::Method;
use tabbify_wire::operator::{CreateOperatorTokenRequest, CreatedOperatorToken, SigningKeyInfo};

impl CoordinatorClient {
    /// `POST /v1/admin/operator-tokens`.
    pub async fn create_operator_token(
        &self,
        admin_token: &str,
        req: &CreateOperatorTokenRequest,
    ) -> Result<CreatedOperatorToken, ClientError> {
        let r = self
            .json(Method::POST, "/v1/admin/operator-tokens", req)
            .bearer_auth(admin_token);
        self.send("mint an operator token", r).await
    }

    /// `POST /v1/admin/server-certificates`: a mesh-CA server certificate for a CSR.
    pub async fn issue_server_certificate(
        &self,
        admin_token: &str,
        req: &tabbify_wire::certificate::IssueServerCertificateRequest,
    ) -> Result<tabbify_wire::certificate::IssuedServerCertificate, ClientError> {
        let r = self
            .json(Method::POST, "/v1/admin/server-certificates", req)
            .bearer_auth(admin_token);
        self.send("issue a server certificate", r).await
    }

    /// `GET /v1/mesh/signing-key`.
    pub async fn signing_key(&self) -> Result<SigningKeyInfo, ClientError> {
        let r = self.request(Method::GET, "/v1/mesh/signing-key");
        self.send("read the signing key", r).await
    }
}
