//! Header rewriting between the client and the replica: hop-by-hop headers belong to one
//! connection and are dropped (RFC 9110 §7.6.1), except that an upgrade is re-announced to
//! the replica; the forwarding headers tell the app who asked and how.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that never cross a proxy, besides those the `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The tokens of every `Connection` header, lowercased.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// The protocol an upgrade request asks for: `Upgrade: <p>` together with `Connection: upgrade`.
pub(crate) fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = connection_tokens(headers).any(|t| t == "upgrade");
    let protocol = headers.get(header::UPGRADE)?;
    wants.then(|| protocol.clone())
}

/// Removes the hop-by-hop headers and every header the `Connection` header lists.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Announces an upgrade to `protocol` on the next hop.
pub(crate) fn announce_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// What the ingress tells the app about the original request.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding<'a> {
    /// The client's address; `None` when the server was not given connect info.
    pub(crate) client_ip: Option<IpAddr>,
    /// `http` or `https`, as the client reached the ingress.
    pub(crate) proto: &'a str,
    /// The `Host` the client asked for.
    pub(crate) host: Option<HeaderValue>,
    /// The path prefix the ingress stripped (`/app/<name>`).
    pub(crate) prefix: &'a str,
}

/// Appends the client to `X-Forwarded-For` (keeping what earlier proxies wrote) and sets
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix`.
pub(crate) fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    if let Some(ip) = f.client_ip {
        let earlier: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let ip = ip.to_canonical().to_string();
        let chain = if earlier.is_empty() {
            ip
        } else {
            format!("{}, {ip}", earlier.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(f.proto) {
        headers.insert(&X_FORWARDED_PROTO, v);
    }
    match &f.host {
        Some(host) => {
            headers.insert(&X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    if let Ok(v) = HeaderValue::from_str(f.prefix) {
        headers.insert(&X_FORWARDED_PREFIX, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_standard_and_listed_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("cookie", "a=b"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "cookie"]);
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let h = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "echo")]);
        assert_eq!(upgrade_protocol(&h), Some(HeaderValue::from_static("echo")));
        assert_eq!(upgrade_protocol(&map(&[("upgrade", "echo")])), None);
        assert_eq!(upgrade_protocol(&map(&[("connection", "upgrade")])), None);
    }

    #[test]
    fn appends_to_x_forwarded_for_and_sets_the_rest() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1 "),
            ("x-forwarded-proto", "gopher"),
        ]);
        let f = Forwarding {
            client_ip: Some("::ffff:192.0.2.1".parse().unwrap()),
            proto: "http",
            host: Some(HeaderValue::from_static("example.test:8888")),
            prefix: "/app/hello",
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1, 192.0.2.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test:8888");
        assert_eq!(h["x-forwarded-prefix"], "/app/hello");
    }

    #[test]
    fn without_connect_info_the_chain_is_left_alone() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-host", "evil"),
        ]);
        let f = Forwarding {
            client_ip: None,
            proto: "https",
            host: None,
            prefix: "/app/a",
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h.get("x-forwarded-host"), None);
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
