//! Server certificates from the mesh CA for the mesh's other services (the artifact server, an
//! ingress with its own name): `POST /v1/admin/server-certificates`, admin only. The caller
//! keeps its key and sends a CSR; the coordinator signs only the CSR's public key, for the names
//! the request lists.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// Operator input: unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueServerCertificateRequest {
    /// PKCS#10 request, PEM. Only its public key is used.
    pub csr: String,
    /// DNS names and IP addresses the certificate is valid for (at least one).
    pub names: Vec<String>,
    /// Lifetime in seconds; the coordinator has a default (90 days) and a maximum (one year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedServerCertificate {
    /// The certificate, then the mesh CA, PEM.
    pub certificate_chain: String,
    /// The mesh CA alone, PEM: what clients of the service trust.
    pub ca: String,
    /// Hex serial number, for logs.
    pub serial: String,
    pub not_after: Timestamp,
}
