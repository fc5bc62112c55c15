//! `tabbify-register-bench`: load generator for `bench/register-bench.sh`.
//!
//! Against a running coordinator it measures, in one run: bare HTTP round trips (`GET /health`,
//! the peer that shows what the HTTP stack alone costs), registrations of fresh keys at a fixed
//! concurrency, and `GET /v1/mesh/peers` at the resulting roster size. Prints `name value` lines.
//!
//! Every registration opens its own connection (as a real joining node does: with TLS that is a
//! full handshake, and with mTLS a certificate issued for its CSR); the roster is listed over one
//! kept-alive connection, as a node's watch would be.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tabbify_wire::mesh::{PeerList, RegisterRequest};
use tabbify_wire::token::{CreateJoinTokenRequest, CreatedJoinToken};
use tabbify_wire::{PublicKeyB64, Tag};

#[derive(Debug, Parser)]
struct Args {
    /// Coordinator base URL, e.g. http://127.0.0.1:8888.
    #[arg(long)]
    url: String,
    /// File holding the admin token (`<data-dir>/admin-token`).
    #[arg(long)]
    admin_token_file: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    peers: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Sequential `GET /v1/mesh/peers` requests timed at the end.
    #[arg(long, default_value_t = 50)]
    list_requests: u64,
    /// The mesh CA to trust (`<data-dir>/ca.crt`) for an `https://` URL.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

fn client(args: &Args, keep_alive: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(if keep_alive {
            usize::try_from(args.concurrency).unwrap_or(64)
        } else {
            0
        })
        .timeout(Duration::from_secs(60));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let roots = tabbify_pki::pem::certificates(&pem, "ca file")?;
        b = b.use_preconfigured_tls(tabbify_pki::tls::client_config(
            &tabbify_pki::ServerTrust::Roots(roots),
            None,
        )?);
    }
    Ok(b.build()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let admin = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| format!("reading {}", args.admin_token_file.display()))?
        .trim()
        .to_string();
    let http = client(&args, true)?;
    let fresh = client(&args, false)?;
    // One CSR serves every registration: the coordinator's cost is the same, the bench's less.
    let csr = Arc::new(tabbify_pki::NodeKey::generate()?.csr_pem()?);
    let base = args.url.trim_end_matches('/').to_string();

    let token: CreatedJoinToken = http
        .post(format!("{base}/v1/admin/join-tokens"))
        .bearer_auth(&admin)
        .json(&CreateJoinTokenRequest {
            reusable: true,
            description: Some("register-bench".into()),
            ..Default::default()
        })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;

    // Peer: the same number of bare round trips at the same concurrency.
    let health_url = format!("{base}/health");
    let (health_secs, _) = run_concurrent(args.peers, args.concurrency, {
        let http = fresh.clone();
        move |_| {
            let (http, url) = (http.clone(), health_url.clone());
            async move {
                http.get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    let health_rps = args.peers as f64 / health_secs;

    let token = Arc::new(token.token);
    let register_url = format!("{base}/v1/mesh/register");
    let (reg_secs, mut lat) = run_concurrent(args.peers, args.concurrency, {
        let http = fresh.clone();
        move |i| {
            let (http, url, token, csr) = (
                http.clone(),
                register_url.clone(),
                Arc::clone(&token),
                Arc::clone(&csr),
            );
            async move {
                let body = RegisterRequest {
                    public_key: PublicKeyB64::from_bytes(rand::rng().random()),
                    display_name: format!("bench-{i}"),
                    tags: vec![Tag::wasm()],
                    endpoints: vec!["192.0.2.1:51820".parse()?],
                    requested_ula: None,
                    version: "bench".into(),
                    peer_credential: None,
                    resources: None,
                    csr: Some(csr.as_str().to_string()),
                };
                let resp = http
                    .post(url)
                    .bearer_auth(token.as_str())
                    .json(&body)
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!(
                        "register {i}: {} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
                resp.bytes().await?;
                Ok(())
            }
        }
    })
    .await?;
    let reg_rps = args.peers as f64 / reg_secs;

    let mut list_lat = Vec::new();
    let mut list_bytes = 0;
    let mut listed = 0;
    for _ in 0..args.list_requests {
        let start = Instant::now();
        let body = http
            .get(format!("{base}/v1/mesh/peers"))
            .bearer_auth(&admin)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        list_lat.push(start.elapsed());
        list_bytes = body.len();
        listed = serde_json::from_slice::<PeerList>(&body)?.peers.len();
    }
    ensure!(
        listed as u64 >= args.peers,
        "roster has {listed} peers, expected at least {}",
        args.peers
    );

    println!("concurrency {}", args.concurrency);
    println!("health_requests_per_sec {health_rps:.0}");
    println!("registrations {}", args.peers);
    println!("registrations_per_sec {reg_rps:.0}");
    println!("register_p50_ms {:.2}", percentile_ms(&mut lat, 50.0));
    println!("register_p99_ms {:.2}", percentile_ms(&mut lat, 99.0));
    println!("register_vs_health_ratio {:.3}", reg_rps / health_rps);
    println!("list_peers {listed}");
    println!("list_body_bytes {list_bytes}");
    println!("list_p50_ms {:.2}", percentile_ms(&mut list_lat, 50.0));
    println!("list_p99_ms {:.2}", percentile_ms(&mut list_lat, 99.0));
    Ok(())
}

/// Runs `count` calls of `op(i)` with `concurrency` in flight; returns wall time and latencies.
async fn run_concurrent<F, Fut>(count: u64, concurrency: u64, op: F) -> Result<(f64, Vec<Duration>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, op) = (Arc::clone(&next), Arc::clone(&op));
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for w in workers {
        all.extend(w.await??);
    }
    Ok((start.elapsed().as_secs_f64(), all))
}

fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
}
