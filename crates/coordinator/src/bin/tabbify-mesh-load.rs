//! `tabbify-mesh-load`: simulates a mesh of N nodes from one process against a running
//! coordinator, for `bench/mesh-scale.sh`. Prints `name value` lines.
//!
//! 1. Registers N nodes (a fresh connection each, as a joining node makes; with TLS a full
//!    handshake and, with mTLS, a certificate issued for its CSR) and reports registrations/s and
//!    p99 over the last `--window` registrations before each checkpoint roster size.
//! 2. Heartbeats every node on a schedule (`--heartbeat-rate` per second in total, each node in
//!    turn) for `--heartbeat-secs` over kept-alive connections and reports the achieved rate,
//!    p50/p99 and the coordinator's CPU over that time (`--coordinator-pid`).
//! 3. Opens `--watchers` watch streams (one connection each), then makes `--watch-events`
//!    roster changes one after another and reports how long each took to reach the last
//!    watcher.
//!
//! Connections come from `--sources` loopback addresses (127.0.0.1, .2, ...) so that tens of
//! thousands of connections do not run out of ephemeral ports. Heartbeats and watches need the
//! peer credentials of `--insecure-no-mtls`; against an mTLS coordinator only phase 1 runs (one
//! process holding 100,000 client identities is not what is being measured).

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tabbify_wire::mesh::{RegisterRequest, RegisterResponse};
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
    /// The mesh CA to trust (`<data-dir>/ca.crt`) for an `https://` URL.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Nodes to register.
    #[arg(long, default_value_t = 10_000)]
    peers: u64,
    /// Roster sizes at which registrations/s and p99 are reported (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    checkpoints: Vec<u64>,
    /// Registrations per checkpoint window.
    #[arg(long, default_value_t = 1000)]
    window: u64,
    /// Registrations in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Loopback source addresses to spread connections over.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Heartbeats per second, all nodes together (100,000 nodes every 5 s is 20,000).
    #[arg(long, default_value_t = 20_000)]
    heartbeat_rate: u64,
    /// How long the heartbeat phase runs (0 skips it).
    #[arg(long, default_value_t = 20)]
    heartbeat_secs: u64,
    /// Heartbeat requests in flight at most.
    #[arg(long, default_value_t = 512)]
    heartbeat_concurrency: u64,
    /// Watch streams to open (0 skips the phase).
    #[arg(long, default_value_t = 10_000)]
    watchers: u64,
    /// Roster changes timed to the last watcher.
    #[arg(long, default_value_t = 5)]
    watch_events: u64,
    /// The coordinator's pid, for its CPU time and RSS.
    #[arg(long)]
    coordinator_pid: Option<u32>,
}

struct Node {
    credential: Option<String>,
}

fn client(args: &Args, source: u8, keep_alive: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source.max(1))))
        .pool_max_idle_per_host(if keep_alive { usize::MAX } else { 0 })
        .timeout(Duration::from_secs(120));
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

fn clients(args: &Args, keep_alive: bool) -> Result<Arc<Vec<reqwest::Client>>> {
    let list = (1..=args.sources.max(1))
        .map(|s| client(args, s, keep_alive))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(list))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let admin = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| format!("reading {}", args.admin_token_file.display()))?
        .trim()
        .to_string();
    let base = args.url.trim_end_matches('/').to_string();
    let keep = clients(&args, true)?;
    let token: CreatedJoinToken = keep[0]
        .post(format!("{base}/v1/admin/join-tokens"))
        .bearer_auth(&admin)
        .json(&CreateJoinTokenRequest {
            reusable: true,
            description: Some("mesh-load".into()),
            ..Default::default()
        })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = Arc::new(token.token);
    let mtls = args.ca_file.is_some();
    // One CSR serves every registration: the coordinator's cost is the same, the bench's less.
    let csr = if mtls {
        Some(Arc::new(tabbify_pki::NodeKey::generate()?.csr_pem()?))
    } else {
        None
    };

    println!("mode {}", if mtls { "mtls" } else { "plain" });
    let nodes = register_phase(&args, &base, &token, csr.clone()).await?;
    if let Some(pid) = args.coordinator_pid {
        println!("coordinator_rss_kib_at_{} {}", args.peers, rss_kib(pid)?);
    }
    if mtls {
        println!(
            "heartbeat_and_watch skipped: they need one client identity per node; run with --insecure-no-mtls"
        );
        return Ok(());
    }
    if args.heartbeat_secs > 0 {
        heartbeat_phase(&args, &base, &keep, &nodes).await?;
    }
    if args.watchers > 0 {
        watch_phase(&args, &base, &token, &nodes).await?;
    }
    if let Some(pid) = args.coordinator_pid {
        println!("coordinator_rss_kib_end {}", rss_kib(pid)?);
    }
    Ok(())
}

fn register_body(i: u64, csr: Option<&str>) -> Result<RegisterRequest> {
    Ok(RegisterRequest {
        public_key: PublicKeyB64::from_bytes(rand::rng().random()),
        display_name: format!("load-{i}"),
        tags: vec![Tag::wasm()],
        endpoints: vec![format!("192.0.2.{}:51820", i % 250 + 1).parse()?],
        requested_ula: None,
        version: "bench".into(),
        peer_credential: None,
        resources: None,
        csr: csr.map(str::to_string),
    })
}

async fn register_one(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    i: u64,
    csr: Option<&str>,
) -> Result<RegisterResponse> {
    let resp = http
        .post(format!("{base}/v1/mesh/register"))
        .bearer_auth(token)
        .json(&register_body(i, csr)?)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "register {i}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp.json().await?)
}

async fn register_phase(
    args: &Arc<Args>,
    base: &str,
    token: &Arc<String>,
    csr: Option<Arc<String>>,
) -> Result<Vec<Node>> {
    let fresh = clients(args, false)?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (next, done, fresh, token, csr, base, peers) = (
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&fresh),
            Arc::clone(token),
            csr.clone(),
            base.to_string(),
            args.peers,
        );
        workers.push(tokio::spawn(async move {
            // (completion order, completed at, latency, credential)
            let mut out: Vec<(u64, Duration, Duration, Option<String>)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= peers {
                    return Ok::<_, anyhow::Error>(out);
                }
                let http = &fresh[usize::try_from(i).unwrap_or(0) % fresh.len()];
                let t = Instant::now();
                let resp = register_one(http, &base, &token, i, csr.as_deref().map(|s| s.as_str()))
                    .await?;
                let order = done.fetch_add(1, Ordering::Relaxed) + 1;
                out.push((order, start.elapsed(), t.elapsed(), resp.peer_credential));
            }
        }));
    }
    let mut all = Vec::with_capacity(usize::try_from(args.peers).unwrap_or(0));
    for w in workers {
        all.extend(w.await??);
    }
    all.sort_by_key(|r| r.0);
    let total = start.elapsed().as_secs_f64();
    println!("registrations {}", all.len());
    println!(
        "registrations_per_sec_overall {:.0}",
        all.len() as f64 / total
    );
    for &c in &args.checkpoints {
        let c = c.min(all.len() as u64);
        let w = args.window.min(c).max(1);
        let (lo, hi) = (
            usize::try_from(c - w).unwrap_or(0),
            usize::try_from(c).unwrap_or(0),
        );
        if hi == 0 {
            continue;
        }
        let t0 = if lo == 0 {
            Duration::ZERO
        } else {
            all[lo - 1].1
        };
        let secs = (all[hi - 1].1 - t0).as_secs_f64();
        let mut lat: Vec<Duration> = all[lo..hi].iter().map(|r| r.2).collect();
        println!("registrations_per_sec_at_{c} {:.0}", w as f64 / secs);
        println!(
            "register_p99_ms_at_{c} {:.2}",
            percentile_ms(&mut lat, 99.0)
        );
    }
    Ok(all.into_iter().map(|r| Node { credential: r.3 }).collect())
}

async fn heartbeat_phase(
    args: &Arc<Args>,
    base: &str,
    keep: &Arc<Vec<reqwest::Client>>,
    nodes: &[Node],
) -> Result<()> {
    let creds: Arc<Vec<String>> =
        Arc::new(nodes.iter().filter_map(|n| n.credential.clone()).collect());
    if creds.is_empty() {
        bail!("no peer credentials to heartbeat with");
    }
    let rate = args.heartbeat_rate.max(1) as f64;
    let total = (rate * args.heartbeat_secs as f64) as u64;
    let url = Arc::new(format!("{base}/v1/mesh/heartbeat"));
    let cpu0 = args.coordinator_pid.map(cpu_ticks).transpose()?;
    let start = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(args.heartbeat_concurrency).unwrap_or(512),
    ));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        usize::try_from(total).unwrap_or(0),
    )));
    let failed = Arc::new(AtomicU64::new(0));
    let mut late = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        // Node k mod N, at its place in the schedule.
        let due = Duration::from_secs_f64(k as f64 / rate);
        let now = start.elapsed();
        if due > now {
            tokio::time::sleep(due - now).await;
        } else {
            late = late.max(now - due);
        }
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let idx = usize::try_from(k).unwrap_or(0) % creds.len();
        let (creds, url, keep, lat, failed) = (
            Arc::clone(&creds),
            Arc::clone(&url),
            Arc::clone(keep),
            Arc::clone(&lat),
            Arc::clone(&failed),
        );
        tasks.spawn(async move {
            let http = &keep[idx % keep.len()];
            let t = Instant::now();
            let ok = http
                .post(url.as_str())
                .bearer_auth(&creds[idx])
                .json(&serde_json::json!({}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let took = t.elapsed();
            drop(permit);
            if ok {
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(took);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = args.coordinator_pid.map(cpu_ticks).transpose()?;
    let mut lat = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    println!("heartbeat_nodes {}", creds.len());
    println!("heartbeat_target_per_sec {rate:.0}");
    println!("heartbeats_per_sec {:.0}", lat.len() as f64 / secs);
    println!("heartbeat_failed {}", failed.load(Ordering::Relaxed));
    println!(
        "heartbeat_schedule_max_late_ms {:.0}",
        late.as_secs_f64() * 1000.0
    );
    println!("heartbeat_p50_ms {:.2}", percentile_ms(&mut lat, 50.0));
    println!("heartbeat_p99_ms {:.2}", percentile_ms(&mut lat, 99.0));
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        let hz = clock_ticks_per_sec();
        println!(
            "heartbeat_coordinator_cpu_percent {:.0}",
            (b - a) as f64 / hz / secs * 100.0
        );
    }
    Ok(())
}

/// What one watcher has seen: the highest revision and when (ns since the phase started).
#[derive(Default)]
struct Seen {
    revision: AtomicU64,
    at_ns: AtomicU64,
}

async fn watch_phase(
    args: &Arc<Args>,
    base: &str,
    token: &Arc<String>,
    nodes: &[Node],
) -> Result<()> {
    let creds: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.credential.clone())
        .take(usize::try_from(args.watchers).unwrap_or(0))
        .collect();
    let watch_clients = clients(args, true)?;
    let keep = clients(args, true)?;
    let head: RegisterResponse = register_one(&keep[0], base, token, u64::MAX, None).await?;
    let since = head.revision;
    let epoch = Instant::now();
    let seen: Arc<Vec<Seen>> = Arc::new((0..creds.len()).map(|_| Seen::default()).collect());
    let connected = Arc::new(AtomicU64::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for (i, cred) in creds.into_iter().enumerate() {
        let http = watch_clients[i % watch_clients.len()].clone();
        let url = format!("{base}/v1/mesh/watch?since={since}");
        let (seen, connected) = (Arc::clone(&seen), Arc::clone(&connected));
        streams.spawn(async move {
            let mut resp = match http.get(url).bearer_auth(cred).send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return Err(format!("watch {i}: {}", r.status())),
                Err(e) => return Err(format!("watch {i}: {e}")),
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut carry: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                carry.extend_from_slice(&chunk);
                let mut newest = None;
                while let Some(end) = find(&carry, b"\n\n") {
                    let frame: Vec<u8> = carry.drain(..end + 2).collect();
                    if let Some(rev) = frame_id(&frame) {
                        newest = Some(rev);
                    }
                }
                if let Some(rev) = newest {
                    let at = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    seen[i].at_ns.store(at, Ordering::Release);
                    seen[i].revision.store(rev, Ordering::Release);
                }
            }
            Ok(())
        });
        if i % 500 == 499 {
            // Let the accept loop keep up with the connection burst.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let want = seen.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline || streams.is_empty() {
            bail!(
                "only {} of {want} watch streams connected",
                connected.load(Ordering::Relaxed)
            );
        }
        if let Some(Ok(Err(e))) = streams.try_join_next() {
            bail!("{e}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("watchers {want}");
    // Let the streams settle (first frames, keep-alives) before timing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last_watcher = Vec::new();
    for e in 0..args.watch_events {
        let t0 = epoch.elapsed();
        let reg = register_one(&keep[0], base, token, u64::MAX - 1 - e, None).await?;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let behind = seen
                .iter()
                .filter(|s| s.revision.load(Ordering::Acquire) < reg.revision)
                .count();
            if behind == 0 {
                break;
            }
            if Instant::now() > until {
                bail!("{behind} watchers never saw revision {}", reg.revision);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let last = seen
            .iter()
            .map(|s| s.at_ns.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        let took = Duration::from_nanos(last).saturating_sub(t0);
        last_watcher.push(took);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "event_to_last_watcher_p50_ms {:.1}",
        percentile_ms(&mut last_watcher, 50.0)
    );
    println!(
        "event_to_last_watcher_max_ms {:.1}",
        percentile_ms(&mut last_watcher, 100.0)
    );
    streams.abort_all();
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn frame_id(frame: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(frame).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .and_then(|v| v.trim().parse().ok())
}

fn proc_status_field(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn rss_kib(pid: u32) -> Result<u64> {
    proc_status_field(pid, "VmRSS:")
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("malformed /proc/pid/stat")
    };
    Ok(get(11)? + get(12)?)
}

/// The unit of /proc's CPU times (`USER_HZ`), 100 on Linux whatever the kernel's tick rate.
fn clock_ticks_per_sec() -> f64 {
    100.0
}

fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
}
