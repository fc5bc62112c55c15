//! Reading the few header fields the data plane routes on, straight from packet bytes: the inner
//! IPv6 source and destination, and the WireGuard message type and receiver index that say which
//! peer an incoming datagram belongs to. Pure functions, no allocation.

use std::net::Ipv6Addr;

/// WireGuard message types (first byte of a datagram, little-endian u32 with three zero bytes).
pub const MSG_HANDSHAKE_INIT: u8 = 1;
pub const MSG_HANDSHAKE_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_DATA: u8 = 4;

/// Size of a handshake initiation; the only message that names its sender by static key.
pub const HANDSHAKE_INIT_LEN: usize = 148;

/// Size of a handshake response.
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;

/// Bytes WireGuard adds to an inner packet (header 16 + AEAD tag 16).
pub const DATA_OVERHEAD: usize = 32;

/// What an incoming datagram claims to be, before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireMessage {
    /// A handshake initiation: the peer is found by decrypting its static key.
    HandshakeInit,
    /// A response, cookie reply or data packet, addressed to one of our session indices.
    ToIndex { kind: u8, receiver_index: u32 },
}

/// Classifies a datagram by its header. `None` for anything that is not a well-formed WireGuard
/// message header (unknown type, non-zero reserved bytes, too short).
pub fn classify(datagram: &[u8]) -> Option<WireMessage> {
    if datagram.len() < 8 || datagram[1..4] != [0, 0, 0] {
        return None;
    }
    match datagram[0] {
        MSG_HANDSHAKE_INIT if datagram.len() == HANDSHAKE_INIT_LEN => {
            Some(WireMessage::HandshakeInit)
        }
        // A response carries its sender's index first, then ours; the others only ours.
        MSG_HANDSHAKE_RESPONSE if datagram.len() == HANDSHAKE_RESPONSE_LEN => {
            Some(WireMessage::ToIndex {
                kind: MSG_HANDSHAKE_RESPONSE,
                receiver_index: u32_at(datagram, 8),
            })
        }
        kind @ (MSG_COOKIE_REPLY | MSG_DATA) => Some(WireMessage::ToIndex {
            kind,
            receiver_index: u32_at(datagram, 4),
        }),
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// boringtun puts a per-peer index in the top 24 bits of every session index it hands out
/// (`Tunn::new(.., index, ..)` uses `index << 8`); this recovers it.
pub fn peer_index_of(receiver_index: u32) -> u32 {
    receiver_index >> 8
}

/// The destination of an IPv6 packet, `None` when `packet` is not IPv6 or too short.
pub fn ipv6_destination(packet: &[u8]) -> Option<Ipv6Addr> {
    ipv6_field(packet, 24)
}

/// The source of an IPv6 packet, `None` when `packet` is not IPv6 or too short.
pub fn ipv6_source(packet: &[u8]) -> Option<Ipv6Addr> {
    ipv6_field(packet, 8)
}

fn ipv6_field(packet: &[u8], offset: usize) -> Option<Ipv6Addr> {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return None;
    }
    let bytes: [u8; 16] = packet.get(offset..offset + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p
    }

    #[test]
    fn reads_ipv6_addresses() {
        let src: Ipv6Addr = "fd00:1:2:3::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00:1:2:4::9".parse().unwrap();
        let p = ipv6_packet(src, dst);
        assert_eq!(ipv6_source(&p), Some(src));
        assert_eq!(ipv6_destination(&p), Some(dst));
    }

    #[test]
    fn rejects_ipv4_and_short_packets() {
        let mut p = ipv6_packet(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        assert_eq!(ipv6_destination(&p[..39]), None);
        p[0] = 0x45;
        assert_eq!(ipv6_destination(&p), None);
        assert_eq!(ipv6_source(&[]), None);
    }

    #[test]
    fn classifies_wireguard_headers() {
        let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
        init[0] = MSG_HANDSHAKE_INIT;
        assert_eq!(classify(&init), Some(WireMessage::HandshakeInit));
        // A handshake init of the wrong size is not one.
        assert_eq!(classify(&init[..100]), None);

        let mut data = vec![0u8; 64];
        data[0] = MSG_DATA;
        data[4..8].copy_from_slice(&0x0012_3405u32.to_le_bytes());
        assert_eq!(
            classify(&data),
            Some(WireMessage::ToIndex {
                kind: MSG_DATA,
                receiver_index: 0x0012_3405
            })
        );
        assert_eq!(peer_index_of(0x0012_3405), 0x1234);

        let mut resp = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        resp[0] = MSG_HANDSHAKE_RESPONSE;
        resp[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // sender
        resp[8..12].copy_from_slice(&0x0000_7702u32.to_le_bytes()); // receiver: us
        assert_eq!(
            classify(&resp),
            Some(WireMessage::ToIndex {
                kind: MSG_HANDSHAKE_RESPONSE,
                receiver_index: 0x7702
            })
        );
        assert_eq!(classify(&resp[..60]), None);

        data[2] = 1; // reserved bytes must be zero
        assert_eq!(classify(&data), None);
        data[2] = 0;
        data[0] = 9;
        assert_eq!(classify(&data), None);
        assert_eq!(classify(&[4, 0, 0]), None);
    }
}
