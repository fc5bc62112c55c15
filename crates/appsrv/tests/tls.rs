//! The appsrv over HTTPS with a certificate from the mesh CA: `tcli cert issue` gets it from a
//! real coordinator (admin token, CSR), `tabbify-appsrv --tls-cert/--tls-key` serves it, and a
//! node's fetcher that trusts its `mesh-ca.crt` downloads and verifies. A client that does not
//! trust the mesh CA, one that trusts another mesh's CA, and plain HTTP all get nothing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tabbify_appsrv::{BlobFetcher, FetchError, digest_of};
use tabbify_testkit::cluster::CoordinatorProc;
use tabbify_testkit::{ChildGuard, bin_path, read_ready_line};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `tcli cert issue` against `coord` into `out`; returns its exit status and stderr.
fn tcli_cert_issue(coord: &CoordinatorProc, names: &[&str], out: &Path) -> (bool, String) {
    let mut cmd = Command::new(bin_path("tcli").unwrap());
    cmd.arg("--coordinator")
        .arg(&coord.url)
        .arg("--admin-token-file")
        .arg(coord.data_dir.join("admin-token"))
        .args(["cert", "issue", "--out"])
        .arg(out)
        .env_remove("TABBIFY_ADMIN_TOKEN")
        .env_remove("TABBIFY_MESH_COORDINATOR");
    for n in names {
        cmd.args(["--name", n]);
    }
    let output = cmd.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start_appsrv(
    dir: &Path,
    tls: Option<&Path>,
    key: &tabbify_auth::SigningKey,
) -> (ChildGuard, String) {
    std::fs::create_dir_all(dir).unwrap();
    let key_file = dir.join("signing-key.pub");
    key.verifying_key().save(&key_file).unwrap();
    let mut cmd = Command::new(bin_path("tabbify-appsrv").unwrap());
    cmd.args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("store"))
        .arg("--token-key-file")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(tls) = tls {
        cmd.arg("--tls-cert")
            .arg(tls.join("tls.crt"))
            .arg("--tls-key")
            .arg(tls.join("tls.key"));
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let guard = ChildGuard::new("appsrv", child);
    let url = read_ready_line(out, "tabbify-appsrv listening on", Duration::from_secs(20)).unwrap();
    (guard, url)
}

#[test]
fn the_appsrv_serves_https_from_the_mesh_ca_and_only_mesh_clients_trust_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    let tls_dir = dir.path().join("appsrv-tls");
    let (ok, err) = tcli_cert_issue(&coord, &["127.0.0.1", "localhost"], &tls_dir);
    assert!(ok, "tcli cert issue failed: {err}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tls_dir.join("tls.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the key is private");
    assert_eq!(
        std::fs::read(tls_dir.join("ca.crt")).unwrap(),
        std::fs::read(coord.ca_file()).unwrap(),
        "ca.crt is the mesh CA"
    );

    // Issuing again keeps the key: the certificate changes, the key does not.
    let key_before = std::fs::read(tls_dir.join("tls.key")).unwrap();
    let cert_before = std::fs::read(tls_dir.join("tls.crt")).unwrap();
    assert!(tcli_cert_issue(&coord, &["127.0.0.1"], &tls_dir).0);
    assert_eq!(std::fs::read(tls_dir.join("tls.key")).unwrap(), key_before);
    assert_ne!(std::fs::read(tls_dir.join("tls.crt")).unwrap(), cert_before);

    let signing = tabbify_auth::SigningKey::generate();
    let (_appsrv, url) = start_appsrv(&dir.path().join("appsrv"), Some(&tls_dir), &signing);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = digest_of(&data);
    let grant = tabbify_auth::Grant {
        subject: "test".into(),
        scopes: vec![tabbify_auth::Scope::ArtifactsWrite],
        ttl_secs: 600,
        nodes: None,
        tags: None,
    };
    let token = tabbify_auth::mint(&signing, &grant, unix_now()).0;
    let blob_url = format!("{url}/v1/blobs/{}", digest.as_str());

    rt.block_on(async {
        // Without the mesh CA (public roots only) the TLS handshake fails: nothing is sent.
        let stranger = reqwest::Client::new();
        let refused = stranger
            .put(&blob_url)
            .bearer_auth(&token)
            .body(data.clone())
            .send()
            .await;
        assert!(refused.is_err(), "a client without the mesh CA got through");

        // Plain HTTP to the HTTPS port carries nothing either.
        let plain = reqwest::Client::new()
            .get(blob_url.replace("https://", "http://"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            plain.is_err() || !plain.unwrap().status().is_success(),
            "plain HTTP was served"
        );

        // Trusting the mesh CA: the upload goes through.
        let ca = reqwest::Certificate::from_pem(&std::fs::read(coord.ca_file()).unwrap()).unwrap();
        let mesh = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let r = mesh
            .put(&blob_url)
            .bearer_auth(&token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    });

    // A node's fetcher trusting its saved mesh-ca.crt downloads and verifies.
    let node = tempfile::tempdir().unwrap();
    std::fs::copy(coord.ca_file(), node.path().join("mesh-ca.crt")).unwrap();
    let fetcher = BlobFetcher::new(&node.path().join("cache"))
        .trusting_ca_file(&node.path().join("mesh-ca.crt"));
    let got = rt.block_on(fetcher.fetch(&url, &digest)).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), data);

    // A node of another mesh (another CA) refuses this appsrv and keeps nothing.
    let other = CoordinatorProc::start(&dir.path().join("other"), "127.0.0.1:0", &[]).unwrap();
    let foreign = tempfile::tempdir().unwrap();
    std::fs::copy(other.ca_file(), foreign.path().join("mesh-ca.crt")).unwrap();
    let fetcher = BlobFetcher::new(&foreign.path().join("cache"))
        .trusting_ca_file(&foreign.path().join("mesh-ca.crt"));
    let err = rt.block_on(fetcher.fetch(&url, &digest)).unwrap_err();
    assert!(matches!(err, FetchError::Transport { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the error names the certificate: {err}"
    );
    assert!(!fetcher.cached_path(&digest).exists());
}

#[test]
fn certificates_are_issued_only_to_the_admin_and_for_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let coord = CoordinatorProc::start(&dir.path().join("coord"), "127.0.0.1:0", &[]).unwrap();
    let (ok, err) = tcli_cert_issue(&coord, &["not a name"], &dir.path().join("bad"));
    assert!(!ok);
    assert!(
        err.contains("neither a DNS name nor an IP address"),
        "{err}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = coord.client().unwrap();
    let key = tabbify_pki::NodeKey::generate().unwrap();
    let req = tabbify_wire::certificate::IssueServerCertificateRequest {
        csr: key.csr_pem().unwrap(),
        names: vec!["appsrv.example".into()],
        ttl_secs: None,
    };
    rt.block_on(async {
        let e = client
            .issue_server_certificate("tbfa_wrong", &req)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        let bad_csr = tabbify_wire::certificate::IssueServerCertificateRequest {
            csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            ..req.clone()
        };
        let e = client
            .issue_server_certificate(&coord.admin_token().unwrap(), &bad_csr)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        let issued = client
            .issue_server_certificate(&coord.admin_token().unwrap(), &req)
            .await
            .unwrap();
        let leaf = &tabbify_pki::pem::certificates(issued.certificate_chain.as_bytes(), "chain")
            .unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.server_auth && !eku.client_auth,
            "server authentication only"
        );
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", sans.value.general_names),
            "[DNSName(\"appsrv.example\")]"
        );
        let days = (cert.validity().not_after.timestamp() - unix_now() as i64) / 86400;
        assert!((89..=90).contains(&days), "90 days by default, got {days}");
    });
}
