//! Server certificates for the mesh's other services (the appsrv, say), issued by the mesh CA
//! through the admin API: the check of a request (pure). The names are the operator's; the key
//! stays with the service, which sends only a CSR.

use std::time::Duration;
use tabbify_wire::certificate::IssueServerCertificateRequest;

/// Lifetime when the request names none: re-issue within 90 days (`tcli cert issue`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime: a year, so a lost key stops working on its own.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
pub const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_NAMES: usize = 32;

/// The names and lifetime to issue for; the error is the 400's message.
pub fn check_request(req: &IssueServerCertificateRequest) -> Result<Duration, String> {
    if req.names.is_empty() || req.names.len() > MAX_NAMES {
        return Err(format!(
            "names: give between 1 and {MAX_NAMES} DNS names or IP addresses"
        ));
    }
    for name in &req.names {
        if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
            return Err(format!(
                "names: {name:?} is neither a DNS name nor an IP address"
            ));
        }
    }
    let ttl = req.ttl_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TTL);
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(format!(
            "ttl_secs must be between {} and {} (got {})",
            MIN_TTL.as_secs(),
            MAX_TTL.as_secs(),
            ttl.as_secs()
        ));
    }
    Ok(ttl)
}

/// A host name: labels of letters, digits and `-` (not at either end), 63 bytes at most each,
/// 253 in all; a leading `*.` for a wildcard.
fn is_dns_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && name.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(names: &[&str], ttl: Option<u64>) -> IssueServerCertificateRequest {
        IssueServerCertificateRequest {
            csr: String::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
            ttl_secs: ttl,
        }
    }

    #[test]
    fn names_are_host_names_or_addresses() {
        assert!(check_request(&req(&["appsrv.example.net", "10.0.0.5", "::1"], None)).is_ok());
        assert!(check_request(&req(&["*.apps.example.net"], None)).is_ok());
        for bad in [
            "",
            "a..b",
            "-x.example",
            "x_y.example",
            "a b",
            "*.",
            "http://x",
        ] {
            let err = check_request(&req(&[bad], None)).unwrap_err();
            assert!(err.contains("neither"), "{bad:?}: {err}");
        }
        assert!(check_request(&req(&[], None)).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("h{i}.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check_request(&req(&many, None)).is_err());
    }

    #[test]
    fn lifetime_defaults_and_bounds() {
        assert_eq!(check_request(&req(&["a"], None)).unwrap(), DEFAULT_TTL);
        assert!(check_request(&req(&["a"], Some(59))).is_err());
        assert!(check_request(&req(&["a"], Some(MAX_TTL.as_secs() + 1))).is_err());
        assert_eq!(
            check_request(&req(&["a"], Some(3600))).unwrap(),
            Duration::from_secs(3600)
        );
    }
}
