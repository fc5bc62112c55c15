//! The real `tabbify-appsrv` binary on loopback: uploads verified by digest, ranged downloads,
//! and the node-side fetcher resuming a cut download and refusing tampered bytes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use tabbify_appsrv::{BlobFetcher, FetchError, digest_of};
use tabbify_testkit::{ChildGuard, bin_path, read_ready_line};

struct Server {
    _guard: ChildGuard,
    url: String,
    data: tempfile::TempDir,
    /// An `artifacts:write` token signed with `key`.
    token: String,
    key: tabbify_auth::SigningKey,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(
    key: &tabbify_auth::SigningKey,
    scope: tabbify_auth::Scope,
    issued: u64,
    ttl: u64,
) -> String {
    let grant = tabbify_auth::Grant {
        subject: "test".into(),
        scopes: vec![scope],
        ttl_secs: ttl,
        nodes: None,
        tags: None,
    };
    tabbify_auth::mint(key, &grant, issued).0
}

fn start(with_token: bool) -> Server {
    let data = tempfile::tempdir().unwrap();
    let key = tabbify_auth::SigningKey::generate();
    let token = token(&key, tabbify_auth::Scope::ArtifactsWrite, unix_now(), 600);
    let token_file = data.path().join("signing-key.pub");
    key.verifying_key().save(&token_file).unwrap();
    let mut cmd = Command::new(bin_path("tabbify-appsrv").unwrap());
    cmd.args(["--listen", "127.0.0.1:0", "--max-blob-bytes", "4000000"])
        .arg("--data-dir")
        .arg(data.path().join("store"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if with_token {
        cmd.arg("--token-key-file").arg(&token_file);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let guard = ChildGuard::new("appsrv", child);
    let url = read_ready_line(out, "tabbify-appsrv listening on", Duration::from_secs(20)).unwrap();
    Server {
        _guard: guard,
        url,
        data,
        token,
        key,
    }
}

/// Uploads need an `artifacts:write` token signed by the configured key, current: the admin
/// token, a node token, a token from another key and an expired one are all refused, and
/// nothing is stored.
#[test]
fn uploads_take_only_current_artifact_tokens_from_the_configured_key() {
    use tabbify_auth::{Scope, SigningKey};
    let srv = start(true);
    let rt = rt();
    let http = reqwest::Client::new();
    let data = blob(1000);
    let digest = digest_of(&data);
    let url = format!("{}/v1/blobs/{}", srv.url, digest.as_str());
    let now = unix_now();
    let cases = [
        ("tbfa_an_admin_token".to_string(), "token_malformed"),
        (token(&srv.key, Scope::NodeWrite, now, 600), "wrong_scope"),
        (
            token(&SigningKey::generate(), Scope::ArtifactsWrite, now, 600),
            "token_bad_signature",
        ),
        (
            token(&srv.key, Scope::ArtifactsWrite, now - 700, 600),
            "token_expired",
        ),
    ];
    rt.block_on(async {
        for (t, code) in &cases {
            let r = http
                .put(&url)
                .bearer_auth(t)
                .body(data.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{code}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], *code, "{body}");
            let head = http.head(&url).send().await.unwrap();
            assert_eq!(head.status(), 404, "nothing stored after {code}");
        }
        let r = http
            .put(&url)
            .bearer_auth(&srv.token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    });
}

fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn uploads_are_verified_and_downloads_support_ranges() {
    let srv = start(true);
    let rt = rt();
    let http = reqwest::Client::new();
    let data = blob(100_000);
    let digest = digest_of(&data);
    let url = format!("{}/v1/blobs/{}", srv.url, digest.as_str());
    rt.block_on(async {
        // No token → 401; wrong digest → 400 and nothing stored.
        let r = http.put(&url).body(data.clone()).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let wrong = format!("{}/v1/blobs/{}", srv.url, digest_of(b"x").as_str());
        let r = http
            .put(&wrong)
            .bearer_auth(&srv.token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body = r.text().await.unwrap();
        assert!(body.contains("hashes to"), "{body}");
        assert_eq!(http.get(&wrong).send().await.unwrap().status(), 404);
        // Malformed digest → 400 naming the rule.
        let r = http
            .get(format!("{}/v1/blobs/md5:abc", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Too large → 413.
        let big = blob(4_000_001);
        let r = http
            .put(format!("{}/v1/blobs/{}", srv.url, digest_of(&big).as_str()))
            .bearer_auth(&srv.token)
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        // Good upload → 201, again → 200.
        for want in [201, 200] {
            let r = http
                .put(&url)
                .bearer_auth(&srv.token)
                .body(data.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want);
        }
        let r = http.head(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"].to_str().unwrap(),
            data.len().to_string()
        );
        let r = http
            .get(&url)
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[1000..2000]);
        let all = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(all.as_ref(), &data[..]);

        // What happened, as metrics.
        let text = http
            .get(format!("{}/metrics", srv.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "tabbify_appsrv_uploads_total{outcome=\"created\"} 1",
            "tabbify_appsrv_uploads_total{outcome=\"existed\"} 1",
            "tabbify_appsrv_uploads_total{outcome=\"mismatch\"} 1",
            "tabbify_appsrv_uploads_total{outcome=\"too_large\"} 1",
            "tabbify_appsrv_blobs 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    });
    let stored: Vec<_> = std::fs::read_dir(srv.data.path().join("store/sha256"))
        .unwrap()
        .collect();
    assert_eq!(stored.len(), 1, "only the verified blob is stored");
}

#[test]
fn uploads_are_refused_when_no_token_is_configured() {
    let srv = start(false);
    let data = blob(10);
    let status = rt().block_on(async {
        reqwest::Client::new()
            .put(format!(
                "{}/v1/blobs/{}",
                srv.url,
                digest_of(&data).as_str()
            ))
            .bearer_auth("anything")
            .body(data)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 403);
}

/// Forwards one connection to `upstream`, passing at most `limit` response bytes, then cuts it.
fn cutting_proxy(upstream: String, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = TcpStream::connect(upstream.trim_start_matches("http://")).unwrap();
        let mut buf = [0u8; 8192];
        let n = client.read(&mut buf).unwrap();
        server.write_all(&buf[..n]).unwrap();
        let mut passed = 0;
        while passed < limit {
            let n = server.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let take = n.min(limit - passed);
            client.write_all(&buf[..take]).unwrap();
            passed += take;
        }
        // Dropping both ends cuts the transfer half-way.
    });
    format!("http://{addr}")
}

#[test]
fn a_cut_download_resumes_and_tampered_bytes_are_never_used() {
    let srv = start(true);
    let rt = rt();
    let data = blob(1_000_000);
    let digest = digest_of(&data);
    rt.block_on(async {
        let r = reqwest::Client::new()
            .put(format!("{}/v1/blobs/{}", srv.url, digest.as_str()))
            .bearer_auth(&srv.token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    });
    let cache = tempfile::tempdir().unwrap();
    let fetcher = BlobFetcher::new(cache.path());
    let proxy = cutting_proxy(srv.url.clone(), 400_000);
    let first = rt.block_on(fetcher.fetch(&proxy, &digest));
    assert!(
        matches!(first, Err(FetchError::Transport { .. })),
        "{first:?}"
    );
    assert!(!fetcher.cached_path(&digest).exists(), "nothing usable yet");

    let done = rt.block_on(fetcher.fetch(&srv.url, &digest)).unwrap();
    assert!(done.resumed_from > 0, "kept the partial: {done:?}");
    assert_eq!(done.resumed_from + done.downloaded, data.len() as u64);
    assert!(done.downloaded < data.len() as u64);
    assert_eq!(std::fs::read(&done.path).unwrap(), data);
    // Cached now: no network.
    assert_eq!(
        rt.block_on(fetcher.fetch(&srv.url, &digest))
            .unwrap()
            .downloaded,
        0
    );

    // Tamper with the server's copy: a fresh node refuses it and keeps nothing.
    let on_disk = srv.data.path().join("store/sha256").join(digest.hex());
    let mut bad = data.clone();
    bad[10] ^= 0xff;
    std::fs::write(&on_disk, &bad).unwrap();
    let cache2 = tempfile::tempdir().unwrap();
    let fetcher2 = BlobFetcher::new(cache2.path());
    let err = rt.block_on(fetcher2.fetch(&srv.url, &digest)).unwrap_err();
    assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
    assert!(!fetcher2.cached_path(&digest).exists());
    assert_eq!(
        std::fs::read_dir(cache2.path().join("partial"))
            .unwrap()
            .count(),
        0,
        "the bad download is discarded"
    );
}
