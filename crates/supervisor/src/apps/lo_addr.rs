//! App addresses on the loopback device, through the `ip` command (iproute2): add a /128, remove
//! it, list what is there. Needs NET_ADMIN. Blocking calls; the app manager runs them off its
//! task.

use serde::Deserialize;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

/// The device app addresses live on: it survives a supervisor crash, unlike the TUN device.
pub const DEVICE: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum LoAddrError {
    #[error("cannot run `ip`: {0} (iproute2 is needed to give apps mesh addresses)")]
    Spawn(std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot read the output of `ip -j addr show dev {DEVICE}`: {0}")]
    Parse(serde_json::Error),
}

fn ip(args: &[&str]) -> Result<String, LoAddrError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(LoAddrError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LoAddrError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Puts `addr/128` on `lo` (no error when it is there already).
pub fn add(addr: Ipv6Addr) -> Result<(), LoAddrError> {
    let cidr = format!("{addr}/128");
    ip(&["-6", "addr", "replace", &cidr, "dev", DEVICE, "nodad"]).map(drop)
}

/// Removes `addr/128` from `lo` (no error when it is not there).
pub fn remove(addr: Ipv6Addr) -> Result<(), LoAddrError> {
    let cidr = format!("{addr}/128");
    match ip(&["-6", "addr", "del", &cidr, "dev", DEVICE]) {
        Ok(_) => Ok(()),
        Err(LoAddrError::Failed { stderr, .. })
            if stderr.contains("Cannot assign requested address") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    family: String,
    local: Option<String>,
    prefixlen: Option<u8>,
}

/// The IPv6 /128s on `lo`.
pub fn list() -> Result<Vec<Ipv6Addr>, LoAddrError> {
    let json = ip(&["-j", "-6", "addr", "show", "dev", DEVICE])?;
    parse_list(&json)
}

fn parse_list(json: &str) -> Result<Vec<Ipv6Addr>, LoAddrError> {
    let links: Vec<Link> = serde_json::from_str(json).map_err(LoAddrError::Parse)?;
    Ok(links
        .iter()
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet6" && a.prefixlen == Some(128))
        .filter_map(|a| a.local.as_deref()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iproute2_json() {
        let json = r#"[{"ifindex":1,"ifname":"lo","addr_info":[
            {"family":"inet6","local":"::1","prefixlen":128,"scope":"host"},
            {"family":"inet6","local":"fd00:1:2:3::2","prefixlen":128,"scope":"global"},
            {"family":"inet6","local":"fd00:9::1","prefixlen":64,"scope":"global"}]}]"#;
        assert_eq!(
            parse_list(json).unwrap(),
            vec![
                "::1".parse::<Ipv6Addr>().unwrap(),
                "fd00:1:2:3::2".parse().unwrap()
            ]
        );
        assert!(parse_list("[]").unwrap().is_empty());
        assert!(parse_list("not json").is_err());
    }
}
