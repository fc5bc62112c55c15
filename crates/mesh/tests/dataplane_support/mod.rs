//! Shared by the `dataplane_*` tests: a LAN of namespace hosts, each running the real
//! `tabbify-mesh` binary with a generated key, ULA and config file, plus the traffic checks
//! (ping6, a TCP echo) and stats reads the tests assert on.

#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tabbify_mesh::dataplane::config_file::{MeshConfigFile, PeerFileEntry};
use tabbify_mesh::dataplane::{DataPlaneStats, keys};
use tabbify_testkit::netns::{Host, Lan};
use tabbify_testkit::{ChildGuard, read_ready_line};
use tabbify_wire::{Ipv6Prefix, PublicKeyB64};

pub const MESH_PREFIX: &str = "fd7a:7bf0:1::/48";
pub const PORT: u16 = 51820;

pub struct Node {
    pub host: Host,
    pub private_key: [u8; 32],
    pub public_key: [u8; 32],
    pub ula: Ipv6Addr,
    pub subnet: Ipv6Prefix,
    pub config_path: PathBuf,
    pub stats_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<ChildGuard>,
}

/// Runs a test body `fn name(offload: bool)` twice: as `name::offload_on` (segmentation offload
/// wherever the kernel has it) and `name::offload_off` (forced off: plain TUN, one datagram per
/// message), so both data paths stay tested.
#[macro_export]
macro_rules! with_and_without_offload {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn offload_on() {
                    super::$name(true)
                }
                #[test]
                fn offload_off() {
                    super::$name(false)
                }
            }
        )*
    };
}

pub struct Mesh {
    // Field order is drop order: processes before namespaces, namespaces before the temp dir.
    pub nodes: Vec<Node>,
    pub lan: Lan,
    pub dir: tempfile::TempDir,
    /// The `offload` switch written into every node's config.
    pub offload: bool,
}

impl Mesh {
    /// `n` hosts on one LAN, node `i` owning `fd7a:7bf0:1:<i+1>::/64` with ULA `...::1`, offload
    /// on.
    pub fn new(tag: &str, n: usize) -> Result<Mesh> {
        Self::with_offload(tag, n, true)
    }

    /// Like [`Mesh::new`], with every node's offload switch set to `offload`.
    pub fn with_offload(tag: &str, n: usize, offload: bool) -> Result<Mesh> {
        let lan = Lan::new(tag)?;
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let host = lan.add_host(&name)?;
            let private_key = keys::generate_private_key();
            let idx = i + 1;
            nodes.push(Node {
                host,
                private_key,
                public_key: keys::public_key(&private_key),
                ula: format!("fd7a:7bf0:1:{idx:x}::1").parse()?,
                subnet: format!("fd7a:7bf0:1:{idx:x}::/64").parse()?,
                config_path: dir.path().join(format!("{name}.json")),
                stats_path: dir.path().join(format!("{name}.stats.json")),
                log_path: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        Ok(Mesh {
            nodes,
            lan,
            dir,
            offload,
        })
    }

    /// Writes node `i`'s config with `peers` (indices), each at its current underlay address.
    pub fn write_config(&self, i: usize, peers: &[usize], keepalive: Option<u16>) -> Result<()> {
        let me = &self.nodes[i];
        let file = MeshConfigFile {
            private_key: keys::encode_key(&me.private_key),
            tun_name: "tbf0".into(),
            listen_port: PORT,
            ula: me.ula,
            subnet: me.subnet,
            mesh_prefix: MESH_PREFIX.parse()?,
            mtu: 1420,
            offload: Some(self.offload),
            peers: peers
                .iter()
                .map(|&p| {
                    let peer = &self.nodes[p];
                    PeerFileEntry {
                        public_key: PublicKeyB64::from_bytes(peer.public_key),
                        allowed: peer.subnet,
                        endpoint: Some(tabbify_wire::Endpoint::Udp(SocketAddr::from((
                            peer.host.underlay_addr(),
                            PORT,
                        )))),
                        persistent_keepalive: keepalive,
                    }
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file)?;
        tabbify_fsutil::atomic_write(&me.config_path, &json, 0o600)?;
        Ok(())
    }

    /// Configures every node with every other node as a peer and starts them all.
    pub fn full_mesh(&mut self, keepalive: Option<u16>) -> Result<()> {
        let n = self.nodes.len();
        for i in 0..n {
            let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            self.write_config(i, &others, keepalive)?;
        }
        for i in 0..n {
            self.start(i)?;
        }
        Ok(())
    }

    /// Starts `tabbify-mesh up` on node `i` and waits for its ready line.
    pub fn start(&mut self, i: usize) -> Result<String> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let mut cmd = node.host.command(env!("CARGO_BIN_EXE_tabbify-mesh"));
        cmd.arg("up")
            .arg("--config")
            .arg(&node.config_path)
            .arg("--stats-file")
            .arg(&node.stats_path)
            .env("RUST_LOG", "info,tabbify_mesh=debug")
            .stdout(Stdio::piped())
            .stderr(log);
        let mut guard = node.host.spawn(cmd)?;
        let stdout = guard
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .context("stdout")?;
        let ready = read_ready_line(stdout, "tabbify-mesh up", Duration::from_secs(20))
            .with_context(|| format!("node {i} did not come up; log:\n{}", self.log(i)))?;
        self.nodes[i].child = Some(guard);
        Ok(ready)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    /// Sends SIGHUP to node `i` (re-read peers).
    pub fn reload(&self, i: usize) -> Result<()> {
        self.signal(i, nix::sys::signal::Signal::SIGHUP)
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) -> Result<()> {
        self.nodes[i]
            .child
            .as_ref()
            .context("node not running")?
            .signal(sig)
    }

    /// The latest stats node `i` wrote.
    pub fn stats(&self, i: usize) -> Result<DataPlaneStats> {
        let text = std::fs::read_to_string(&self.nodes[i].stats_path)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Stats that node `i` counted entirely after this call: the stats file is replaced every
    /// 250 ms, and the first replacement after now may hold a snapshot taken just before it, so
    /// this waits for the second one.
    pub fn stats_from_now(&self, i: usize, timeout: Duration) -> Result<DataPlaneStats> {
        let path = &self.nodes[i].stats_path;
        let modified = || std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let deadline = Instant::now() + timeout;
        let mut after = std::time::SystemTime::now();
        for _ in 0..2 {
            loop {
                if let Some(m) = modified()
                    && m > after
                {
                    after = m;
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {i} did not rewrite {}\nlog:\n{}",
                        path.display(),
                        self.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.stats(i)
    }

    /// Waits until node `i` writes stats satisfying `pred`.
    pub fn wait_stats(
        &self,
        i: usize,
        timeout: Duration,
        pred: impl Fn(&DataPlaneStats) -> bool,
    ) -> Result<DataPlaneStats> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.stats(i)
                && pred(&s)
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "node {i} stats never matched; last: {:?}\nlog:\n{}",
                    self.stats(i).ok(),
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One ping6 round (up to 3 echo requests) from node `from` to `to`'s ULA.
    pub fn ping(&self, from: usize, to: usize) -> bool {
        self.ping_addr(from, self.nodes[to].ula, None)
    }

    pub fn ping_addr(&self, from: usize, target: Ipv6Addr, source: Option<Ipv6Addr>) -> bool {
        let target = target.to_string();
        let mut args = vec!["-6", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "3"];
        let src;
        if let Some(s) = source {
            src = s.to_string();
            args.extend(["-I", src.as_str()]);
        }
        args.push(target.as_str());
        self.nodes[from]
            .host
            .exec("ping", &args)
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Retries `ping(from, to)` until it succeeds or `timeout` passes.
    pub fn ping_until(&self, from: usize, to: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ping(from, to) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }

    /// A TCP echo between ULAs: a listener inside `server`'s namespace on its ULA, a client inside
    /// `client`'s; the bytes must come back unchanged.
    pub fn tcp_echo(&self, client: usize, server: usize) -> Result<()> {
        let ula = self.nodes[server].ula;
        let listener = self.nodes[server]
            .host
            .in_namespace(|| TcpListener::bind(SocketAddrV6::new(ula, 0, 0, 0)))??;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let server_thread = std::thread::spawn(move || -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut s, _) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("no connection within 10 s");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n])?;
            }
        });
        let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let echoed = self.nodes[client]
            .host
            .in_namespace(|| -> Result<Vec<u8>> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut reader = s.try_clone()?;
                let expect = payload.len();
                let reading = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
                    let mut got = vec![0u8; expect];
                    reader.read_exact(&mut got)?;
                    Ok(got)
                });
                s.write_all(&payload)?;
                let got = reading
                    .join()
                    .map_err(|_| anyhow::anyhow!("reader panicked"))??;
                s.shutdown(std::net::Shutdown::Write)?;
                Ok(got)
            })??;
        server_thread
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))??;
        if echoed != payload {
            bail!("echo came back different");
        }
        Ok(())
    }

    /// Sends `bytes` over TCP from node `client` to node `server` (ULA to ULA) and checks that
    /// exactly those bytes arrived: enough to fill 64 KiB super-packets and GSO batches.
    pub fn tcp_bulk(&self, client: usize, server: usize, bytes: usize) -> Result<()> {
        let ula = self.nodes[server].ula;
        let listener = self.nodes[server]
            .host
            .in_namespace(|| TcpListener::bind(SocketAddrV6::new(ula, 0, 0, 0)))??;
        let addr = listener.local_addr()?;
        let server_thread = std::thread::spawn(move || -> Result<(usize, u64)> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut total, mut sum) = (0usize, 0u64);
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok((total, sum));
                }
                for (k, b) in buf[..n].iter().enumerate() {
                    sum = sum.wrapping_add(u64::from(*b) * ((total + k) as u64 % 65521 + 1));
                }
                total += n;
            }
        });
        let payload: Vec<u8> = (0..bytes).map(|i| (i * 31 % 253) as u8).collect();
        let expect_sum = payload.iter().enumerate().fold(0u64, |acc, (k, b)| {
            acc.wrapping_add(u64::from(*b) * (k as u64 % 65521 + 1))
        });
        self.nodes[client].host.in_namespace(|| -> Result<()> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            s.set_write_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(&payload)?;
            s.shutdown(std::net::Shutdown::Write)?;
            Ok(())
        })??;
        let (got, sum) = server_thread
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        if got != bytes || sum != expect_sum {
            bail!(
                "sent {bytes} bytes, received {got} (checksum {sum:#x}, expected {expect_sum:#x})"
            );
        }
        Ok(())
    }

    /// True when node `i`'s namespace has an interface called `tbf0`.
    pub fn has_tun(&self, i: usize) -> bool {
        self.nodes[i]
            .host
            .exec("ip", &["link", "show", "dev", "tbf0"])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Prints every node's log when the test is failing, so the reason is visible.
    pub fn dump_logs_if_panicking(&self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("----- node {i} log -----\n{}", self.log(i));
            }
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.dump_logs_if_panicking();
    }
}
