//! The JSON file `tabbify-mesh up --config FILE` reads: the node's key, interface and addresses,
//! and its peer list. Written by an operator or a test, so unknown fields are rejected.

use super::config::{DEFAULT_MTU, DEFAULT_TUN_NAME, DataPlaneConfig, PeerConfig};
use super::keys::{KeyTextError, decode_key};
use super::offload::OffloadPolicy;
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use tabbify_wire::{Endpoint, Ipv6Prefix, MESH_LISTEN_PORT, PublicKeyB64};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfigFile {
    /// Base64 X25519 private key (`tabbify-mesh genkey`).
    pub private_key: String,
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    pub ula: Ipv6Addr,
    pub subnet: Ipv6Prefix,
    pub mesh_prefix: Ipv6Prefix,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Segmentation offloads (TUN, UDP GSO/GRO): `false` forces them off, `true` uses what the
    /// kernel has; absent defers to `TABBIFY_MESH_OFFLOAD` (default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<bool>,
    #[serde(default)]
    pub peers: Vec<PeerFileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFileEntry {
    pub public_key: PublicKeyB64,
    pub allowed: Ipv6Prefix,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
}

fn default_tun_name() -> String {
    DEFAULT_TUN_NAME.into()
}
fn default_listen_port() -> u16 {
    MESH_LISTEN_PORT
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("private_key: {0}")]
    PrivateKey(#[from] KeyTextError),
}

impl MeshConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.into(),
            source,
        })
    }

    pub fn data_plane_config(&self) -> Result<DataPlaneConfig, ConfigFileError> {
        Ok(DataPlaneConfig {
            private_key: decode_key(&self.private_key)?,
            tun_name: self.tun_name.clone(),
            listen_port: self.listen_port,
            ula: self.ula,
            subnet: self.subnet,
            mesh_prefix: self.mesh_prefix,
            mtu: self.mtu,
        })
    }

    /// The offload policy this file asks for (see [`MeshConfigFile::offload`]).
    pub fn offload_policy(&self) -> OffloadPolicy {
        OffloadPolicy::from_switch(self.offload)
    }

    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.peers
            .iter()
            .map(|p| PeerConfig {
                public_key: *p.public_key.as_bytes(),
                allowed: p.allowed,
                endpoint: p.endpoint,
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn minimal_file_gets_defaults() {
        let text = format!(
            r#"{{"private_key":"{KEY}","ula":"fd00:1:2:1::1","subnet":"fd00:1:2:1::/64","mesh_prefix":"fd00:1:2::/48",
               "peers":[{{"public_key":"{KEY}","allowed":"fd00:1:2:2::/64","endpoint":"10.0.0.2:51820"}}]}}"#
        );
        let f: MeshConfigFile = serde_json::from_str(&text).unwrap();
        let c = f.data_plane_config().unwrap();
        assert_eq!(c.tun_name, "tbf0");
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.mtu, 1420);
        let peers = f.peer_configs();
        assert_eq!(peers[0].endpoint, Some("10.0.0.2:51820".parse().unwrap()));
        assert_eq!(peers[0].persistent_keepalive, None);
        assert_eq!(f.offload, None);
        let off: MeshConfigFile =
            serde_json::from_str(&text.replacen('{', r#"{"offload":false,"#, 1)).unwrap();
        assert_eq!(off.offload_policy(), OffloadPolicy::Off);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_keys() {
        let text = format!(
            r#"{{"private_key":"{KEY}","ula":"fd00::1","subnet":"fd00::/64","mesh_prefix":"fd00::/48","colour":"red"}}"#
        );
        let err = serde_json::from_str::<MeshConfigFile>(&text).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let text = r#"{"private_key":"short","ula":"fd00::1","subnet":"fd00::/64","mesh_prefix":"fd00::/48"}"#;
        let f: MeshConfigFile = serde_json::from_str(text).unwrap();
        assert!(matches!(
            f.data_plane_config(),
            Err(ConfigFileError::PrivateKey(_))
        ));
    }
}
