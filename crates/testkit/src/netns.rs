//! Network-namespace "hosts" on a private underlay LAN, for tests that need real interfaces.
//!
//! A [`Lan`] is a namespace holding a bridge; [`Lan::add_host`] creates another namespace joined to
//! that bridge by a veth pair, with an IPv4 address on `10.200.N.0/24` and loopback up. Nothing
//! is created in the root namespace (veths are made inside the LAN namespace and moved straight
//! into the host's), and no address here is reachable from outside these namespaces.
//!
//! Names carry the test process's pid and a per-process sequence number, so parallel tests and
//! parallel test binaries never collide; namespaces left by a process that no longer exists are
//! removed the next time a `Lan` is made. Dropping the `Lan` kills every process still running in
//! its namespaces and deletes them, also when the test panicked.

use crate::process::ChildGuard;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every namespace this module creates starts with this.
const PREFIX: &str = "tbfns-";
/// Default time limit for [`Host::exec`].
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A bridge in its own namespace; hosts attach to it.
pub struct Lan {
    inner: Arc<LanInner>,
}

struct LanInner {
    /// Namespace holding the bridge.
    ns: String,
    /// Base of every name in this LAN (`tbfns-<pid>-<seq>-<tag>`).
    base: String,
    /// Third octet of the LAN's 10.200.N.0/24.
    net: u8,
    state: Mutex<LanState>,
}

#[derive(Default)]
struct LanState {
    /// Host namespaces, in creation order.
    host_ns: Vec<String>,
    /// Last host octet handed out.
    last_octet: u8,
}

/// One namespace on the LAN.
#[derive(Clone)]
pub struct Host {
    /// The name the test gave (`"a"`).
    pub name: String,
    /// The namespace (`tbfns-<pid>-<seq>-<tag>-a`).
    pub ns: String,
    /// The host's interface to the LAN, inside its namespace.
    pub iface: String,
    addr: Arc<Mutex<Ipv4Addr>>,
    lan: Arc<LanInner>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Kills every process in namespace `ns` (SIGKILL) and deletes it. Errors are ignored: this runs
/// from `Drop` and from stale cleanup, where the best effort is all there is.
fn destroy_namespace(ns: &str) {
    for _ in 0..50 {
        let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Removes namespaces whose creating process is gone.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(ns = %name, "removing stale test namespace");
            destroy_namespace(&name);
        }
    }
}

impl Lan {
    /// Creates the LAN namespace and its bridge. `tag` names the test (short, `[a-z0-9]`).
    pub fn new(tag: &str) -> Result<Lan> {
        remove_stale_namespaces();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{seq}-{tag}", std::process::id());
        let ns = format!("{base}-lan");
        ip(&["netns", "add", &ns])?;
        // From here on Drop cleans up whatever was made.
        let lan = Lan {
            inner: Arc::new(LanInner {
                ns: ns.clone(),
                base,
                net: u8::try_from(seq % 250).unwrap_or(0),
                state: Mutex::new(LanState::default()),
            }),
        };
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(lan)
    }

    /// The LAN's address for host octet `n`: `10.200.N.n`.
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.inner.net, n)
    }

    /// An address on this LAN that no host has been given yet.
    pub fn spare_addr(&self) -> Ipv4Addr {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_octet = st.last_octet.saturating_add(1);
        self.addr(st.last_octet)
    }

    /// Creates host `name` (short, `[a-z0-9]`), attached to the bridge with the next free address.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        let ns = format!("{}-{name}", self.inner.base);
        ip(&["netns", "add", &ns])?;
        let addr = {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.host_ns.push(ns.clone());
            st.last_octet = st.last_octet.saturating_add(1);
            self.addr(st.last_octet)
        };
        let lan_ns = &self.inner.ns;
        let bridge_side = format!("v-{name}");
        ip(&[
            "-n",
            lan_ns,
            "link",
            "add",
            &bridge_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ])?;
        ip(&["-n", lan_ns, "link", "set", &bridge_side, "master", "br0"])?;
        ip(&["-n", lan_ns, "link", "set", &bridge_side, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(Host {
            name: name.into(),
            ns,
            iface: "eth0".into(),
            addr: Arc::new(Mutex::new(addr)),
            lan: self.inner.clone(),
        })
    }

    /// The namespace holding the bridge.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let hosts = std::mem::take(
            &mut self
                .inner
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .host_ns,
        );
        for ns in hosts.iter().rev() {
            destroy_namespace(ns);
        }
        destroy_namespace(&self.inner.ns);
    }
}

impl Host {
    /// The host's current underlay address.
    pub fn underlay_addr(&self) -> Ipv4Addr {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `Command` that runs `program` inside this host's namespace (`ip netns exec`, which
    /// execs the program, so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(&self.ns).arg(program);
        cmd
    }

    /// Spawns a command made by [`command`](Self::command) (stdin closed); the guard kills it.
    pub fn spawn(&self, mut cmd: Command) -> Result<ChildGuard> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?} in {}", self.ns))?;
        Ok(ChildGuard::new(
            format!("{}:{:?}", self.name, cmd.get_args().nth(3)),
            child,
        ))
    }

    /// Runs `program args` in the namespace to completion (at most 30 s), capturing output.
    pub fn exec<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<Output> {
        self.exec_timeout(program, args, EXEC_TIMEOUT)
    }

    /// Like [`exec`](Self::exec) with a time limit; the process is killed when it runs over.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        program: &str,
        args: &[S],
        timeout: Duration,
    ) -> Result<Output> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {program} in {}", self.ns))?;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out_t = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err_t = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().context("waiting")? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{program} in {} ran over {timeout:?}", self.ns);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        })
    }

    /// Runs `program args` and returns its stdout, failing with its stderr when it fails.
    pub fn exec_ok<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<String> {
        let out = self.exec(program, args)?;
        if !out.status.success() {
            bail!(
                "{program} in {} failed ({}): {}{}",
                self.ns,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Moves the host to a new underlay address (the old one is removed).
    pub fn set_underlay_addr(&self, new: Ipv4Addr) -> Result<()> {
        let mut addr = self.addr.lock().unwrap_or_else(|p| p.into_inner());
        // Old first: deleting a primary address also deletes the secondaries of its subnet.
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "del",
            &format!("{}/24", *addr),
            "dev",
            &self.iface,
        ])?;
        ip(&[
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{new}/24"),
            "dev",
            &self.iface,
        ])?;
        *addr = new;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this host's network namespace, and returns its
    /// result. Sockets made inside stay in the namespace, so a test can bind a listener "on the
    /// host" and use it from any thread.
    pub fn in_namespace<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<R> {
                    let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                    // SAFETY: setns on a descriptor we hold open; affects only this thread.
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET)
                    };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("setns into {path}"));
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.ns))?
        })
    }

    /// The host's own namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The LAN namespace this host hangs off.
    pub fn lan_namespace(&self) -> &str {
        &self.lan.ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capability;

    fn namespaces() -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn hosts_reach_each_other_and_everything_goes_on_drop() {
        crate::require!(Capability::NetNs);
        let lan = Lan::new("kit").unwrap();
        let a = lan.add_host("a").unwrap();
        let b = lan.add_host("b").unwrap();
        let target = b.underlay_addr().to_string();
        a.exec_ok("ping", &["-c", "1", "-W", "2", &target]).unwrap();

        // Moving b: the old address stops answering, the new one answers.
        let new = lan.spare_addr();
        b.set_underlay_addr(new).unwrap();
        a.exec_ok("ping", &["-c", "1", "-W", "2", &new.to_string()])
            .unwrap();
        let old = a.exec("ping", &["-c", "1", "-W", "1", &target]).unwrap();
        assert!(!old.status.success());

        let mut sleeper = a.command("sleep");
        sleeper.arg("600");
        let guard = a.spawn(sleeper).unwrap();
        let pid = guard.pid();
        std::mem::forget(guard); // the Lan must kill it on its own
        let names = [a.ns.clone(), b.ns.clone(), lan.namespace().to_string()];
        drop(lan);
        let left = namespaces();
        for n in &names {
            assert!(!left.contains(n), "{n} left behind");
        }
        // The forgotten child was killed (it may linger as a zombie of this process).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "sleep still running: {stat}"
        );
    }

    #[test]
    fn exec_times_out() {
        crate::require!(Capability::NetNs);
        let lan = Lan::new("kitto").unwrap();
        let a = lan.add_host("a").unwrap();
        let err = a
            .exec_timeout("sleep", &["5"], Duration::from_millis(200))
            .unwrap_err();
        assert!(err.to_string().contains("ran over"), "{err}");
    }
}
