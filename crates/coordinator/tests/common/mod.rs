//! Shared test support: run the real `tabbify-coordinator` binary on a loopback port with a data
//! dir in a temp dir, talk to it over real HTTP, and read its watch stream.
#![allow(dead_code, clippy::unwrap_used)] // test support: a panic is the failure report

use base64::Engine;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tabbify_testkit::{ChildGuard, read_ready_line};
use tabbify_wire::mesh::{RegisterRequest, RosterEvent, RosterSnapshot};
use tabbify_wire::token::{CreateJoinTokenRequest, CreatedJoinToken};
use tabbify_wire::{ErrorBody, ErrorCode, PublicKeyB64, Tag};

pub const READY: &str = "tabbify-coordinator listening on ";

/// A running coordinator process; killed when dropped.
pub struct Coordinator {
    pub guard: ChildGuard,
    pub url: String,
    pub data_dir: PathBuf,
    pub admin: String,
    pub http: reqwest::Client,
}

impl Coordinator {
    /// Starts the binary on `127.0.0.1:0` with `data_dir` and `extra` flags, serving plain
    /// HTTP (`--insecure-no-mtls`, so tests of everything but TLS can use bearer credentials);
    /// waits for the ready line. Logs go to `<data_dir>.log` (appended across restarts).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--insecure-no-mtls"];
        args.extend_from_slice(extra);
        Self::start_with(data_dir, &args)
    }

    /// Starts it as operators do by default: TLS from the mesh CA, nodes by certificate. The
    /// test client trusts the CA in the data dir.
    pub fn start_tls(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra)
    }

    /// The mesh CA's PEM, from the data dir.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("ca.crt")).unwrap()
    }

    fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tabbify-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard::new("tabbify-coordinator", child);
        let url = read_ready_line(stdout, READY, Duration::from_secs(30)).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
            panic!("coordinator did not become ready: {e}\n--- log ---\n{log}")
        });
        let tls = url.starts_with("https://");
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{url}"
        );
        let admin = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if tls {
            let ca = std::fs::read(data_dir.join("ca.crt")).unwrap();
            let roots = tabbify_pki::pem::certificates(&ca, "ca.crt").unwrap();
            let config =
                tabbify_pki::tls::client_config(&tabbify_pki::ServerTrust::Roots(roots), None)
                    .unwrap();
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder.build().unwrap();
        Self {
            guard,
            url,
            data_dir: data_dir.to_path_buf(),
            admin,
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn create_token(&self, req: &CreateJoinTokenRequest) -> CreatedJoinToken {
        let resp = self
            .http
            .post(self.url("/v1/admin/join-tokens"))
            .bearer_auth(&self.admin)
            .json(req)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.unwrap()
    }

    pub async fn reusable_token(&self) -> String {
        self.create_token(&CreateJoinTokenRequest {
            reusable: true,
            ..Default::default()
        })
        .await
        .token
    }

    /// POSTs a register body; returns the status and the raw JSON answer.
    pub async fn register_raw(
        &self,
        token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = self.http.post(self.url("/v1/mesh/register")).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Registers and expects success.
    pub async fn register<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        body: &RegisterRequest,
    ) -> T {
        let (status, json) = self.register_raw(token, body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        serde_json::from_value(json).unwrap()
    }

    /// GETs as the operator (the roster is for members and operators only).
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> T {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }

    pub async fn admin_get<T: DeserializeOwned>(&self, path: &str) -> T {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.unwrap()
    }

    /// Opens `GET /v1/mesh/watch` as the operator, with `since` as a query parameter or
    /// `Last-Event-ID`.
    pub async fn watch(&self, since: Option<u64>, as_last_event_id: bool) -> SseReader {
        let mut req = self
            .http
            .get(self.url("/v1/mesh/watch"))
            .bearer_auth(&self.admin);
        match (since, as_last_event_id) {
            (Some(rev), true) => req = req.header("Last-Event-ID", rev.to_string()),
            (Some(rev), false) => req = req.query(&[("since", rev)]),
            (None, _) => {}
        }
        // No overall timeout on a stream: reads are bounded by `next`.
        let resp = req.timeout(Duration::from_secs(3600)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            resp,
            buf: String::new(),
        }
    }
}

pub fn key(i: u64) -> PublicKeyB64 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_le_bytes());
    b[31] = 0x5a;
    PublicKeyB64::from_bytes(b)
}

pub fn random_key() -> PublicKeyB64 {
    PublicKeyB64::from_bytes(rand::Rng::random(&mut rand::rng()))
}

pub fn request(key: PublicKeyB64, name: &str) -> RegisterRequest {
    RegisterRequest {
        public_key: key,
        display_name: name.into(),
        tags: vec![Tag::wasm()],
        endpoints: vec!["192.0.2.10:51820".parse().unwrap()],
        requested_ula: None,
        version: "0.1.0".into(),
        peer_credential: None,
        resources: None,
        csr: None,
    }
}

/// Asserts an error answer: status, code, and a message containing `needle`.
pub fn assert_error(
    (status, json): &(StatusCode, serde_json::Value),
    want_status: StatusCode,
    want_code: ErrorCode,
    needle: &str,
) {
    assert_eq!(*status, want_status, "{json}");
    let body: ErrorBody = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(body.error, want_code, "{json}");
    assert!(
        body.message.contains(needle),
        "message {:?} should contain {needle:?}",
        body.message
    );
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Sse {
    pub fn revision(&self) -> u64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
    pub fn roster_event(&self) -> RosterEvent {
        assert_ne!(self.event, "snapshot");
        let ev: RosterEvent = serde_json::from_str(&self.data).unwrap();
        assert_eq!(ev.kind.as_str(), self.event);
        assert_eq!(ev.revision, self.revision());
        ev
    }
    pub fn snapshot(&self) -> RosterSnapshot {
        assert_eq!(self.event, "snapshot");
        let s: RosterSnapshot = serde_json::from_str(&self.data).unwrap();
        assert_eq!(s.revision, self.revision());
        s
    }
}

/// Minimal SSE parser over a streaming response (comments, i.e. keep-alives, are skipped).
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Reads events from an already opened streaming response.
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event, or `None` when nothing arrives within `wait` or the stream ends.
    pub async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ev) = self.take_event() {
                return Some(ev);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Reads events until one with revision `rev` arrives; returns them all.
    pub async fn until_revision(&mut self, rev: u64, wait: Duration) -> Vec<Sse> {
        let mut out = Vec::new();
        loop {
            let ev = self.next(wait).await.unwrap_or_else(|| {
                panic!("no event up to revision {rev}; got {} events", out.len())
            });
            let r = ev.revision();
            out.push(ev);
            if r >= rev {
                return out;
            }
        }
    }

    fn take_event(&mut self) -> Option<Sse> {
        loop {
            let end = self.buf.find("\n\n")?;
            let block: String = self.buf.drain(..end + 2).collect();
            let mut ev = Sse {
                id: None,
                event: "message".into(),
                data: String::new(),
            };
            let mut has_field = false;
            for line in block.lines() {
                if line.starts_with(':') || line.is_empty() {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                has_field = true;
                match field {
                    "id" => ev.id = Some(value.into()),
                    "event" => ev.event = value.into(),
                    "data" => {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(value)
                    }
                    _ => {}
                }
            }
            if has_field {
                return Some(ev);
            }
        }
    }
}

/// Asserts `events` carry exactly the revisions `from..=to`, in order.
pub fn assert_contiguous(events: &[Sse], from: u64, to: u64) {
    let revs: Vec<u64> = events.iter().map(Sse::revision).collect();
    let want: Vec<u64> = (from..=to).collect();
    assert_eq!(
        revs, want,
        "revisions must be contiguous with no gap or duplicate"
    );
}

pub fn is_error_code(json: &serde_json::Value, code: ErrorCode) -> bool {
    serde_json::from_value::<ErrorBody>(json.clone()).is_ok_and(|b| b.error == code)
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
