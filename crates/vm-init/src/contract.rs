//! The contract between the host (`tabbify-vm`) and the guest's init, in one place so the two
//! sides cannot drift: where things live in the root filesystem and the initramfs, what the host
//! puts on the kernel command line, the app description it writes into the rootfs, the lines init
//! prints on the console for the host to read, and the line the host sends to ask for a stop.
//!
//! Everything here is plain data and pure functions; the host renders, the guest parses (and the
//! other way round for console events).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Our init inside the root filesystem (the kernel's `init=`).
pub const INIT_PATH: &str = "/.tabbify/init";
/// The directory holding init and its app description inside the rootfs.
pub const TABBIFY_DIR: &str = "/.tabbify";
/// The app description ([`GuestApp`], JSON) inside the rootfs.
pub const APP_CONFIG_PATH: &str = "/.tabbify/app.json";
/// A file present only in our initramfs: init started from it is stage 1 (load modules, mount
/// the root filesystem, switch to it).
pub const INITRAMFS_MARKER: &str = "/.tabbify-initramfs";
/// Kernel modules inside the initramfs.
pub const INITRAMFS_MODULES_DIR: &str = "/modules";
/// File in [`INITRAMFS_MODULES_DIR`] naming the modules to load, one file name a line, in order.
pub const MODULE_ORDER_FILE: &str = "order";
/// Where stage 1 mounts the root filesystem before switching to it.
pub const NEW_ROOT: &str = "/newroot";
/// Every console line init prints for the host starts with this.
pub const EVENT_PREFIX: &str = "tabbify-init: ";
/// Console input line asking init to stop the app: `tabbify:stop <grace_ms>`.
pub const STOP_COMMAND: &str = "tabbify:stop";

/// Kernel command-line keys of ours.
pub const CMDLINE_IP: &str = "tabbify.ip";
pub const CMDLINE_GATEWAY: &str = "tabbify.gw";
pub const CMDLINE_HOSTNAME: &str = "tabbify.hostname";

/// A malformed value on the kernel command line or in the app description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("kernel command line {key}={value:?}: {reason}")]
    BadParam {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("app description: {0}")]
    BadApp(String),
}

/// What to run in the guest: written by the host to [`APP_CONFIG_PATH`]. Unknown fields are
/// ignored (both ends are ours; a newer host may add some).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestApp {
    /// Program and arguments; the program is looked up on the `PATH` of `env` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries, the whole environment of the app.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub workdir: String,
    pub uid: u32,
    pub gid: u32,
}

impl GuestApp {
    /// Checks what the guest cannot work around: an empty command, a relative working directory,
    /// an environment entry without `=`, or a NUL byte anywhere.
    pub fn validate(&self) -> Result<(), ContractError> {
        let Some(program) = self.argv.first() else {
            return Err(ContractError::BadApp("the command is empty".into()));
        };
        if program.is_empty() {
            return Err(ContractError::BadApp("the program name is empty".into()));
        }
        if !self.workdir.starts_with('/') {
            return Err(ContractError::BadApp(format!(
                "working directory {:?} is not absolute",
                self.workdir
            )));
        }
        for e in &self.env {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => {
                    return Err(ContractError::BadApp(format!(
                        "environment entry {e:?} is not KEY=VALUE"
                    )));
                }
            }
        }
        let all = self
            .argv
            .iter()
            .chain(&self.env)
            .chain(std::iter::once(&self.workdir));
        if let Some(bad) = all.into_iter().find(|s| s.contains('\0')) {
            return Err(ContractError::BadApp(format!(
                "{bad:?} contains a NUL byte"
            )));
        }
        Ok(())
    }

    /// The value of `key` in [`env`](Self::env), if set.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// The guest's one network interface, as the host asks for it on the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestNet {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl GuestNet {
    /// `tabbify.ip=A.B.C.D/N [tabbify.gw=E.F.G.H]`.
    pub fn to_cmdline(&self) -> String {
        let mut s = format!("{CMDLINE_IP}={}/{}", self.addr, self.prefix_len);
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" {CMDLINE_GATEWAY}={gw}"));
        }
        s
    }

    /// Reads the network from a kernel command line; `Ok(None)` when it names none.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<GuestNet>, ContractError> {
        let Some(ip) = cmdline_param(cmdline, CMDLINE_IP) else {
            return Ok(None);
        };
        let bad = |reason| ContractError::BadParam {
            key: CMDLINE_IP,
            value: ip.to_string(),
            reason,
        };
        let (addr, len) = ip.split_once('/').ok_or(bad("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("prefix is not a number"))?;
        if !(1..=32).contains(&prefix_len) {
            return Err(bad("prefix must be 1..=32"));
        }
        let gateway = match cmdline_param(cmdline, CMDLINE_GATEWAY) {
            None => None,
            Some(gw) => Some(gw.parse().map_err(|_| ContractError::BadParam {
                key: CMDLINE_GATEWAY,
                value: gw.to_string(),
                reason: "not an IPv4 address",
            })?),
        };
        Ok(Some(GuestNet {
            addr,
            prefix_len,
            gateway,
        }))
    }

    /// The netmask of [`prefix_len`](Self::prefix_len).
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_to_netmask(self.prefix_len)
    }
}

/// `24` → `255.255.255.0`. Lengths above 32 are taken as 32.
pub fn prefix_to_netmask(prefix_len: u8) -> Ipv4Addr {
    let len = u32::from(prefix_len.min(32));
    let bits = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(bits)
}

/// The value of the last `key=value` word on a kernel command line (the kernel's own rule: a
/// later word wins). Quoted values (`key="a b"`) are not used by us and not supported.
pub fn cmdline_param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .next_back()
}

/// True when the bare word `flag` (e.g. `ro`) is on the command line.
pub fn cmdline_flag(cmdline: &str, flag: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| w == flag)
}

/// The parameters for loadable module `module` found on the command line as `module.key=value`
/// (what `modprobe` does for modules that are not built in), joined with spaces for
/// `finit_module`. Dashes and underscores in the module name are the same, as for the kernel.
pub fn module_params(cmdline: &str, module: &str) -> String {
    let norm = |s: &str| s.replace('-', "_");
    let want = norm(module);
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| {
            let (name, rest) = w.split_once('.')?;
            (norm(name) == want && rest.contains('=')).then_some(rest)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `virtio_blk.ko` → `virtio_blk`.
pub fn module_name(file_name: &str) -> &str {
    file_name.split('.').next().unwrap_or(file_name)
}

/// What init tells the host, one console line each (`tabbify-init: <event>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// Init runs in the final root filesystem and the network is configured.
    Booted,
    /// The app was started.
    AppStarted { pid: u32 },
    /// The app exited by itself or after a stop, with this exit code.
    AppExited { code: i32 },
    /// The app was ended by this signal.
    AppKilled { signal: i32 },
    /// Init is asked to stop the app.
    Stopping { grace_ms: u64 },
    /// Init could not do its job; the VM powers off next.
    Error(String),
}

impl GuestEvent {
    /// The console line, without a newline.
    pub fn render(&self) -> String {
        let body = match self {
            GuestEvent::Booted => "booted".to_string(),
            GuestEvent::AppStarted { pid } => format!("app-started pid={pid}"),
            GuestEvent::AppExited { code } => format!("app-exited code={code}"),
            GuestEvent::AppKilled { signal } => format!("app-killed signal={signal}"),
            GuestEvent::Stopping { grace_ms } => format!("stopping grace_ms={grace_ms}"),
            // One line, whatever the message holds.
            GuestEvent::Error(m) => format!("error: {}", m.replace(['\r', '\n'], " ")),
        };
        format!("{EVENT_PREFIX}{body}")
    }

    /// Finds an event in a console line (the app's output may precede it on the same line, as
    /// both write to the one serial console). `None` for any other line.
    pub fn parse(line: &str) -> Option<GuestEvent> {
        let at = line.find(EVENT_PREFIX)?;
        let body = line[at + EVENT_PREFIX.len()..].trim_end_matches(['\r', '\n']);
        let num = |prefix: &str| body.strip_prefix(prefix).map(str::trim);
        if body == "booted" {
            Some(GuestEvent::Booted)
        } else if let Some(v) = num("app-started pid=") {
            v.parse().ok().map(|pid| GuestEvent::AppStarted { pid })
        } else if let Some(v) = num("app-exited code=") {
            v.parse().ok().map(|code| GuestEvent::AppExited { code })
        } else if let Some(v) = num("app-killed signal=") {
            v.parse()
                .ok()
                .map(|signal| GuestEvent::AppKilled { signal })
        } else if let Some(v) = num("stopping grace_ms=") {
            v.parse()
                .ok()
                .map(|grace_ms| GuestEvent::Stopping { grace_ms })
        } else {
            body.strip_prefix("error: ")
                .map(|m| GuestEvent::Error(m.to_string()))
        }
    }
}

/// The host's request to stop the app, sent as one line on the console input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    pub grace_ms: u64,
}

impl StopRequest {
    /// The line to write, with its newline.
    pub fn render(&self) -> String {
        format!("{STOP_COMMAND} {}\n", self.grace_ms)
    }

    /// Reads a console input line; `None` for anything else.
    pub fn parse(line: &str) -> Option<StopRequest> {
        let rest = line.trim().strip_prefix(STOP_COMMAND)?;
        let grace = rest.trim();
        if grace.is_empty() {
            return Some(StopRequest { grace_ms: 5_000 });
        }
        grace.parse().ok().map(|grace_ms| StopRequest { grace_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> GuestApp {
        GuestApp {
            argv: vec!["/bin/hello".into(), "-v".into()],
            env: vec!["PATH=/bin".into(), "PORT=8080".into()],
            workdir: "/".into(),
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn net_round_trips_through_the_command_line() {
        let net = GuestNet {
            addr: Ipv4Addr::new(10, 213, 0, 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::new(10, 213, 0, 1)),
        };
        let line = format!("console=ttyS0 {} quiet", net.to_cmdline());
        assert_eq!(GuestNet::from_cmdline(&line), Ok(Some(net)));
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(GuestNet::from_cmdline("console=ttyS0"), Ok(None));
    }

    #[test]
    fn bad_net_parameters_name_the_key_and_value() {
        for (line, key) in [
            ("tabbify.ip=10.0.0.2", CMDLINE_IP),
            ("tabbify.ip=10.0.0/30", CMDLINE_IP),
            ("tabbify.ip=10.0.0.2/33", CMDLINE_IP),
            ("tabbify.ip=10.0.0.2/x", CMDLINE_IP),
            ("tabbify.ip=10.0.0.2/30 tabbify.gw=nope", CMDLINE_GATEWAY),
        ] {
            match GuestNet::from_cmdline(line) {
                Err(ContractError::BadParam { key: k, .. }) => assert_eq!(k, key, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_last_word_wins_and_prefixes_do_not_match() {
        let line = "root=/dev/vda rootfstype=ext4 root=/dev/vdb ro";
        assert_eq!(cmdline_param(line, "root"), Some("/dev/vdb"));
        assert_eq!(cmdline_param(line, "rootfstype"), Some("ext4"));
        assert_eq!(cmdline_param(line, "roo"), None);
        assert!(cmdline_flag(line, "ro"));
        assert!(!cmdline_flag(line, "rw"));
    }

    #[test]
    fn module_params_are_collected_per_module() {
        let line = "virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.force_legacy=1 virtio_net.x=1 \
                    virtio_mmiox.y=2 virtio_mmio.noequals";
        assert_eq!(
            module_params(line, "virtio_mmio"),
            "device=4K@0xd0000000:5 force_legacy=1"
        );
        assert_eq!(module_params(line, "virtio_blk"), "");
        assert_eq!(module_name("virtio_blk.ko"), "virtio_blk");
    }

    #[test]
    fn prefix_lengths_map_to_netmasks() {
        assert_eq!(prefix_to_netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_to_netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(prefix_to_netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(prefix_to_netmask(40), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn events_round_trip_and_are_found_after_app_output() {
        let events = [
            GuestEvent::Booted,
            GuestEvent::AppStarted { pid: 42 },
            GuestEvent::AppExited { code: -3 },
            GuestEvent::AppKilled { signal: 9 },
            GuestEvent::Stopping { grace_ms: 250 },
            GuestEvent::Error("no /bin/sh".into()),
        ];
        for e in events {
            assert_eq!(GuestEvent::parse(&e.render()), Some(e.clone()));
            let mixed = format!("partial app line{}\r\n", e.render());
            assert_eq!(GuestEvent::parse(&mixed), Some(e));
        }
        assert_eq!(GuestEvent::parse("hello world"), None);
        assert_eq!(GuestEvent::parse("tabbify-init: app-exited code=x"), None);
        assert_eq!(
            GuestEvent::Error("two\nlines".into()).render(),
            "tabbify-init: error: two lines"
        );
    }

    #[test]
    fn stop_requests_round_trip() {
        let r = StopRequest { grace_ms: 1500 };
        assert_eq!(StopRequest::parse(&r.render()), Some(r));
        assert_eq!(
            StopRequest::parse("tabbify:stop"),
            Some(StopRequest { grace_ms: 5_000 })
        );
        assert_eq!(StopRequest::parse("tabbify:stop soon"), None);
        assert_eq!(StopRequest::parse("hello"), None);
    }

    #[test]
    fn app_descriptions_are_validated() {
        assert_eq!(app().validate(), Ok(()));
        assert_eq!(app().env_var("PORT"), Some("8080"));
        assert_eq!(app().env_var("POR"), None);
        let mut a = app();
        a.argv.clear();
        assert!(a.validate().is_err());
        let mut a = app();
        a.workdir = "srv".into();
        assert!(a.validate().is_err());
        let mut a = app();
        a.env.push("NOEQUALS".into());
        assert!(a.validate().is_err());
        let mut a = app();
        a.env.push("=x".into());
        assert!(a.validate().is_err());
        let mut a = app();
        a.argv.push("nul\0".into());
        assert!(a.validate().is_err());
    }

    #[test]
    fn app_description_ignores_unknown_fields() {
        let json = r#"{"argv":["/a"],"env":[],"workdir":"/","uid":1,"gid":2,"future":true}"#;
        let a: GuestApp = serde_json::from_str(json).unwrap();
        assert_eq!(a.uid, 1);
    }
}
