//! Addresses on the wire: IPv6 prefixes (the mesh /48, a node's /64) and underlay endpoints.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The most underlay endpoints one peer may advertise; the coordinator refuses more.
pub const MAX_ENDPOINTS: usize = 16;

/// An IPv6 prefix such as `fd12:3456:789a::/48`. The address is always stored masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix {0:?} must look like ADDR/LEN")]
    Shape(String),
    #[error("prefix {0:?} has an invalid IPv6 address")]
    Address(String),
    #[error("prefix length in {0:?} must be 0..=128")]
    Length(String),
}

impl Ipv6Prefix {
    /// Builds a prefix, masking away host bits. `len` above 128 is clamped to 128.
    pub fn new(addr: Ipv6Addr, len: u8) -> Self {
        let len = len.min(128);
        Self {
            addr: Ipv6Addr::from(u128::from(addr) & Self::mask(len)),
            len,
        }
    }

    fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        }
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & Self::mask(self.len) == u128::from(self.addr)
    }

    /// True when `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Ipv6Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Shape(s.into()))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| PrefixError::Address(s.into()))?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Length(s.into()))?;
        if len > 128 {
            return Err(PrefixError::Length(s.into()));
        }
        Ok(Self::new(addr, len))
    }
}

impl TryFrom<String> for Ipv6Prefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<Self, PrefixError> {
        s.parse()
    }
}

impl From<Ipv6Prefix> for String {
    fn from(p: Ipv6Prefix) -> String {
        p.to_string()
    }
}

/// Where a node's WireGuard packets can be sent. Today only a direct UDP address; the enum leaves
/// room for a relay endpoint without changing anything that carries endpoints around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Endpoint {
    /// Plain `ip:port`, IPv4 or `[IPv6]:port`.
    Udp(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not an ip:port address")]
    Syntax(String),
    #[error("endpoint {0:?} has port 0")]
    ZeroPort(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let addr: SocketAddr = s.parse().map_err(|_| EndpointError::Syntax(s.into()))?;
        if addr.port() == 0 {
            return Err(EndpointError::ZeroPort(s.into()));
        }
        Ok(Endpoint::Udp(addr))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Udp(a) => write!(f, "{a}"),
        }
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointError;
    fn try_from(s: String) -> Result<Self, EndpointError> {
        s.parse()
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks_and_contains() {
        let p: Ipv6Prefix = "fd00:1:2:3::9/48".parse().unwrap();
        assert_eq!(p.to_string(), "fd00:1:2::/48");
        assert!(p.contains("fd00:1:2:ffff::1".parse().unwrap()));
        assert!(!p.contains("fd00:1:3::1".parse().unwrap()));
        let sub: Ipv6Prefix = "fd00:1:2:7::/64".parse().unwrap();
        assert!(p.covers(&sub));
        assert!(!sub.covers(&p));
    }

    #[test]
    fn prefix_rejects_bad_text() {
        assert!(matches!(
            "fd00::".parse::<Ipv6Prefix>(),
            Err(PrefixError::Shape(_))
        ));
        assert!(matches!(
            "zz::/48".parse::<Ipv6Prefix>(),
            Err(PrefixError::Address(_))
        ));
        assert!(matches!(
            "fd00::/129".parse::<Ipv6Prefix>(),
            Err(PrefixError::Length(_))
        ));
    }

    #[test]
    fn endpoint_parses_v4_and_v6() {
        let e: Endpoint = "10.0.0.1:51820".parse().unwrap();
        assert_eq!(e.to_string(), "10.0.0.1:51820");
        let e: Endpoint = "[fd00::1]:51820".parse().unwrap();
        assert_eq!(e.to_string(), "[fd00::1]:51820");
        assert!("10.0.0.1".parse::<Endpoint>().is_err());
        assert!("10.0.0.1:0".parse::<Endpoint>().is_err());
    }
}
