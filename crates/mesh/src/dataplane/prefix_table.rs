//! Longest-prefix match over IPv6 prefixes: how an outbound packet finds the peer whose AllowedIPs
//! hold its destination. Peers normally own one /64 each, so the table keeps one hash map per
//! distinct prefix length and a lookup costs one hash probe per length (usually one).

use std::collections::HashMap;
use std::net::Ipv6Addr;
use tabbify_wire::Ipv6Prefix;

/// Maps IPv6 prefixes to values; lookups return the value of the longest prefix that contains the
/// address.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    /// One map per prefix length, longest length first; keys are masked addresses.
    by_len: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl<T> PrefixTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `value` for `prefix`, returning the value it replaces (same prefix, same length).
    pub fn insert(&mut self, prefix: Ipv6Prefix, value: T) -> Option<T> {
        let len = prefix.len();
        let key = u128::from(prefix.addr()) & mask(len);
        let pos = match self.by_len.iter().position(|(l, _)| *l <= len) {
            Some(p) if self.by_len[p].0 == len => p,
            Some(p) => {
                self.by_len.insert(p, (len, HashMap::new()));
                p
            }
            None => {
                self.by_len.push((len, HashMap::new()));
                self.by_len.len() - 1
            }
        };
        self.by_len[pos].1.insert(key, value)
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<&T> {
        let a = u128::from(addr);
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&(a & mask(*len))))
    }

    /// The value stored for exactly `prefix`.
    pub fn get_exact(&self, prefix: &Ipv6Prefix) -> Option<&T> {
        let key = u128::from(prefix.addr()) & mask(prefix.len());
        self.by_len
            .iter()
            .find(|(l, _)| *l == prefix.len())
            .and_then(|(_, map)| map.get(&key))
    }

    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv6Prefix {
        s.parse().unwrap()
    }
    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_the_peer_whose_64_holds_the_address() {
        let mut t = PrefixTable::new();
        t.insert(p("fd00:1:2:1::/64"), "a");
        t.insert(p("fd00:1:2:2::/64"), "b");
        assert_eq!(t.lookup(a("fd00:1:2:1::5")), Some(&"a"));
        assert_eq!(t.lookup(a("fd00:1:2:2:ffff:ffff:ffff:ffff")), Some(&"b"));
        assert_eq!(t.lookup(a("fd00:1:2:3::1")), None);
        assert_eq!(t.lookup(a("fd00:1:2::1")), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn longest_prefix_wins_whatever_the_insert_order() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let entries = [
                (p("fd00:1::/32"), 32),
                (p("fd00:1:2::/48"), 48),
                (p("fd00:1:2:3::/64"), 64),
            ];
            let mut t = PrefixTable::new();
            for i in order {
                t.insert(entries[i].0, entries[i].1);
            }
            assert_eq!(t.lookup(a("fd00:1:2:3::1")), Some(&64));
            assert_eq!(t.lookup(a("fd00:1:2:4::1")), Some(&48));
            assert_eq!(t.lookup(a("fd00:1:9::1")), Some(&32));
            assert_eq!(t.lookup(a("fd00:2::1")), None);
        }
    }

    #[test]
    fn host_routes_and_default_route() {
        let mut t = PrefixTable::new();
        t.insert(p("::/0"), "default");
        t.insert(p("fd00::7/128"), "host");
        assert_eq!(t.lookup(a("fd00::7")), Some(&"host"));
        assert_eq!(t.lookup(a("fd00::8")), Some(&"default"));
        assert_eq!(t.get_exact(&p("fd00::7/128")), Some(&"host"));
        assert_eq!(t.get_exact(&p("fd00::/64")), None);
    }

    #[test]
    fn insert_replaces_same_prefix() {
        let mut t = PrefixTable::new();
        assert_eq!(t.insert(p("fd00:1:2:1::/64"), 1), None);
        assert_eq!(t.insert(p("fd00:1:2:1::/64"), 2), Some(1));
        assert_eq!(t.lookup(a("fd00:1:2:1::1")), Some(&2));
        assert_eq!(t.len(), 1);
    }
}
