//! From the path the client asked for to the one the replica gets: `/app/<name>/<rest>?<q>`
//! becomes `/<rest>?<q>` on `http://<replica>`. Works on the raw (still percent-encoded) path so
//! an encoded `/` in `<rest>` reaches the app as the client wrote it.

use axum::http::Uri;
use std::net::SocketAddr;

const APP_PREFIX: &str = "/app/";

/// Splits `/app/<name>[/<rest>]` into `<name>` and the path the app sees (`/` when empty).
/// `None` when the path is not under `/app/` or the name is empty.
pub(crate) fn split_app_path(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix(APP_PREFIX)?;
    let (name, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    if name.is_empty() {
        return None;
    }
    Some((name, if rest.is_empty() { "/" } else { rest }))
}

/// The URI of `path?query` on the replica at `addr`.
pub(crate) fn replica_uri(
    addr: SocketAddr,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, axum::http::Error> {
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path_and_query)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_name_and_rest() {
        assert_eq!(split_app_path("/app/hello"), Some(("hello", "/")));
        assert_eq!(split_app_path("/app/hello/"), Some(("hello", "/")));
        assert_eq!(split_app_path("/app/hello/a/b"), Some(("hello", "/a/b")));
        assert_eq!(
            split_app_path("/app/hello/a%2Fb"),
            Some(("hello", "/a%2Fb"))
        );
        assert_eq!(split_app_path("/app/hello//x"), Some(("hello", "//x")));
        assert_eq!(split_app_path("/app/"), None);
        assert_eq!(split_app_path("/app//x"), None);
        assert_eq!(split_app_path("/apps/hello"), None);
        assert_eq!(split_app_path("/v1/apps"), None);
    }

    #[test]
    fn builds_replica_uris_for_both_families() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let uri = replica_uri(v4, "/a/b", Some("x=1&y=%20")).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8080/a/b?x=1&y=%20");
        let v6: SocketAddr = "[fd00:1:2:3::1]:80".parse().unwrap();
        let uri = replica_uri(v6, "/", None).unwrap();
        assert_eq!(uri.to_string(), "http://[fd00:1:2:3::1]:80/");
    }
}
