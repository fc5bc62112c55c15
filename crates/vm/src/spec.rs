//! The VM spec: one plain data type that both VMM backends carry out — kernel, initramfs, root
//! filesystem, vCPUs, memory, the one network interface (a tap), boot arguments, where the
//! console goes. Also the pure decisions around it: validation, the kernel command line, and the
//! per-slot tap addressing (a /30 per VM out of 10.213.0.0/16: host `.1`, guest `.2`).

use crate::error::{Result, VmError};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use tabbify_vm_init::contract::{CMDLINE_HOSTNAME, GuestNet, INIT_PATH};

/// First address of the tap subnets.
pub const TAP_BASE: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
/// Tap slots (one /30 each) in 10.213.0.0/16.
pub const TAP_SLOTS: u32 = 16_384;
pub const MAX_VCPUS: u32 = 32;
pub const MIN_MEMORY_MB: u32 = 32;

/// A VM to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Names the VM in logs, the VMM's process and its hostname: `[a-z0-9-]`, 1–48 chars.
    pub name: String,
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// The VM's own (writable) copy of the root filesystem image.
    pub rootfs: PathBuf,
    #[serde(default)]
    pub rootfs_read_only: bool,
    pub vcpus: u32,
    pub memory_mb: u32,
    /// The VM's network interface; `None` boots without one.
    #[serde(default)]
    pub tap: Option<TapConfig>,
    /// Appended to the kernel command line we build.
    #[serde(default)]
    pub boot_args: Option<String>,
    /// Serial console output (the guest kernel, init and the app) is appended here.
    pub console_log: PathBuf,
    /// A private directory for the VMM's sockets.
    pub run_dir: PathBuf,
}

/// The tap device of a VM and the /30 (or wider) it shares with the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapConfig {
    /// Interface name on the host, at most 15 bytes.
    pub name: String,
    pub host_addr: Ipv4Addr,
    pub guest_addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Locally administered MAC of the guest's interface.
    pub guest_mac: String,
    /// Forward and masquerade what the guest sends beyond the host side ([`crate::egress`]);
    /// off, the guest reaches the host side's address only.
    #[serde(default)]
    pub egress: bool,
}

impl TapConfig {
    /// The tap of slot `slot` (< [`TAP_SLOTS`]): `tbfvm<slot>`, 10.213.x.y/30.
    pub fn for_slot(slot: u32) -> Result<TapConfig> {
        if slot >= TAP_SLOTS {
            return Err(VmError::Spec(format!(
                "tap slot {slot} is not below {TAP_SLOTS}"
            )));
        }
        let net = u32::from(TAP_BASE) + slot * 4;
        Ok(TapConfig {
            name: format!("tbfvm{slot}"),
            host_addr: Ipv4Addr::from(net + 1),
            guest_addr: Ipv4Addr::from(net + 2),
            prefix_len: 30,
            guest_mac: format!("02:54:42:00:{:02x}:{:02x}", slot >> 8, slot & 0xff),
            egress: false,
        })
    }

    /// The guest's `addr:port`.
    pub fn guest_socket(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.guest_addr, port))
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > tabbify_vm_init::netif::MAX_IFNAME
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(VmError::Spec(format!(
                "tap name {:?} must be 1-15 of [A-Za-z0-9_-]",
                self.name
            )));
        }
        if !(1..=30).contains(&self.prefix_len) {
            return Err(VmError::Spec(format!(
                "tap prefix /{} must be 1..=30",
                self.prefix_len
            )));
        }
        let mask = u32::from(tabbify_vm_init::contract::prefix_to_netmask(
            self.prefix_len,
        ));
        let (h, g) = (u32::from(self.host_addr), u32::from(self.guest_addr));
        if h & mask != g & mask || h == g {
            return Err(VmError::Spec(format!(
                "tap addresses {} and {} are not two hosts of one /{} subnet",
                self.host_addr, self.guest_addr, self.prefix_len
            )));
        }
        let octets: Vec<&str> = self.guest_mac.split(':').collect();
        let mac_ok = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && u8::from_str_radix(o, 16).is_ok())
            && u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 0);
        if !mac_ok {
            return Err(VmError::Spec(format!(
                "guest MAC {:?} is not a unicast aa:bb:cc:dd:ee:ff",
                self.guest_mac
            )));
        }
        Ok(())
    }
}

impl VmSpec {
    /// Checks what a VMM would otherwise fail on later, less clearly.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > 48
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(VmError::Spec(format!(
                "name {:?} must be 1-48 of [a-z0-9-]",
                self.name
            )));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(VmError::Spec(format!(
                "vcpus {} must be 1..={MAX_VCPUS}",
                self.vcpus
            )));
        }
        if self.memory_mb < MIN_MEMORY_MB {
            return Err(VmError::Spec(format!(
                "memory_mb {} is below {MIN_MEMORY_MB}",
                self.memory_mb
            )));
        }
        for (what, p) in [
            ("guest kernel", &self.kernel),
            ("root filesystem", &self.rootfs),
        ] {
            if !p.is_file() {
                return Err(VmError::Missing {
                    what,
                    path: p.clone(),
                });
            }
        }
        if let Some(i) = &self.initrd
            && !i.is_file()
        {
            return Err(VmError::Missing {
                what: "initramfs",
                path: i.clone(),
            });
        }
        if let Some(args) = &self.boot_args
            && args.contains(['\n', '\0'])
        {
            return Err(VmError::Spec("boot_args must be one line".into()));
        }
        if let Some(t) = &self.tap {
            t.validate()?;
        }
        Ok(())
    }

    /// The kernel command line: console on the first serial port, the rootfs on the first
    /// virtio disk, our init, the network for init, then what the VMM needs (`vmm_args`), then
    /// the spec's own `boot_args` (last, so they win).
    pub fn kernel_cmdline(&self, vmm_args: &[&str]) -> String {
        let mut words: Vec<String> = vec![
            "console=ttyS0".into(),
            "panic=-1".into(),
            "quiet".into(),
            "root=/dev/vda".into(),
            "rootfstype=ext4".into(),
            if self.rootfs_read_only { "ro" } else { "rw" }.into(),
            format!("init={INIT_PATH}"),
            format!("{CMDLINE_HOSTNAME}={}", self.name),
        ];
        if let Some(t) = &self.tap {
            let net = GuestNet {
                addr: t.guest_addr,
                prefix_len: t.prefix_len,
                gateway: Some(t.host_addr),
            };
            words.push(net.to_cmdline());
        }
        words.extend(vmm_args.iter().map(|s| s.to_string()));
        if let Some(extra) = &self.boot_args {
            words.push(extra.trim().to_string());
        }
        words.retain(|w| !w.is_empty());
        words.join(" ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(dir: &std::path::Path) -> VmSpec {
        let kernel = dir.join("vmlinuz");
        let rootfs = dir.join("rootfs.ext4");
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::write(&rootfs, b"r").unwrap();
        VmSpec {
            name: "hello".into(),
            kernel,
            initrd: None,
            rootfs,
            rootfs_read_only: false,
            vcpus: 1,
            memory_mb: 128,
            tap: Some(TapConfig::for_slot(3).unwrap()),
            boot_args: Some("loglevel=4".into()),
            console_log: dir.join("console.log"),
            run_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn slots_map_to_disjoint_30s() {
        let a = TapConfig::for_slot(0).unwrap();
        assert_eq!(
            (a.name.as_str(), a.host_addr, a.guest_addr, a.prefix_len),
            (
                "tbfvm0",
                Ipv4Addr::new(10, 213, 0, 1),
                Ipv4Addr::new(10, 213, 0, 2),
                30
            )
        );
        let b = TapConfig::for_slot(TAP_SLOTS - 1).unwrap();
        assert_eq!(b.guest_addr, Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(b.name, "tbfvm16383");
        assert!(b.validate().is_ok());
        assert_ne!(a.guest_mac, b.guest_mac);
        assert!(TapConfig::for_slot(TAP_SLOTS).is_err());
    }

    #[test]
    fn tap_configs_are_checked() {
        let good = TapConfig::for_slot(1).unwrap();
        let mut t = good.clone();
        t.name = "a-very-long-tap-name".into();
        assert!(t.validate().is_err());
        let mut t = good.clone();
        t.guest_addr = Ipv4Addr::new(10, 213, 9, 9);
        assert!(t.validate().is_err());
        let mut t = good.clone();
        t.guest_mac = "03:00:00:00:00:01".into(); // multicast
        assert!(t.validate().is_err());
        let mut t = good;
        t.prefix_len = 31;
        assert!(t.validate().is_err());
    }

    #[test]
    fn the_command_line_has_console_root_init_net_and_extra_args_last() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path());
        assert_eq!(
            s.kernel_cmdline(&["reboot=t"]),
            "console=ttyS0 panic=-1 quiet root=/dev/vda rootfstype=ext4 rw init=/.tabbify/init \
             tabbify.hostname=hello tabbify.ip=10.213.0.14/30 tabbify.gw=10.213.0.13 reboot=t loglevel=4"
        );
        let parsed = GuestNet::from_cmdline(&s.kernel_cmdline(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.addr, Ipv4Addr::new(10, 213, 0, 14));
    }

    #[test]
    fn specs_are_validated_with_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(spec(dir.path()).validate().is_ok());
        let mut s = spec(dir.path());
        s.kernel = dir.path().join("missing");
        assert!(matches!(
            s.validate(),
            Err(VmError::Missing {
                what: "guest kernel",
                ..
            })
        ));
        let mut s = spec(dir.path());
        s.vcpus = 0;
        assert!(s.validate().is_err());
        let mut s = spec(dir.path());
        s.memory_mb = 8;
        assert!(s.validate().is_err());
        let mut s = spec(dir.path());
        s.name = "Bad_Name".into();
        assert!(s.validate().is_err());
        let mut s = spec(dir.path());
        s.boot_args = Some("a\nb".into());
        assert!(s.validate().is_err());
    }
}
