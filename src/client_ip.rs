//! The end user's address: the peer's, or, when the peer is a trusted proxy, the one it reports
//! in `X-Forwarded-For` (the rightmost address that is not itself a trusted proxy).

use std::net::IpAddr;

/// An address range such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a bad prefix length"))?,
            None => max,
        };
        // A range written in IPv4-mapped form (`::ffff:10.0.0.0/104`, as a dual-stack listener
        // shows its IPv4 peers) is the IPv4 range it maps: peers are compared as IPv4
        // (`canonical`), so the IPv6 form would never match one.
        let (network, prefix) = match network {
            IpAddr::V6(v6) if prefix >= 96 => v6
                .to_ipv4_mapped()
                .map_or((network, prefix), |v4| (IpAddr::V4(v4), prefix - 96)),
            _ => (network, prefix),
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The end user's address as the gateway sees it through `trusted` proxies: the peer, or, when
/// the peer is trusted, the nearest `X-Forwarded-For` hop that is not. A proxy may append to the
/// field or add a field of its own (HAProxy's `option forwardfor`), so the hops are read from the
/// last field to the first, each from right to left: reading only the first field would believe
/// whatever the client wrote there itself.
pub fn resolve<'a>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer;
    if !is_trusted(client) {
        return Some(client);
    }
    let mut hops = 0;
    for field in forwarded_for.rev() {
        let Ok(field) = std::str::from_utf8(field) else {
            break;
        };
        for hop in field.rsplit(',') {
            hops += 1;
            // An unparseable hop, or one past the 32nd, ends what can be believed.
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if hops <= 32 => {
                    client = canonical(ip);
                    if !is_trusted(client) {
                        return Some(client);
                    }
                }
                _ => return Some(client),
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_match_their_ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn a_range_written_ipv4_mapped_matches_its_ipv4_peers() {
        let range = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(range.contains(ip("10.1.2.3")));
        assert!(range.contains(ip("::ffff:10.1.2.3")));
        assert!(!range.contains(ip("11.0.0.1")));
        let one = Cidr::parse("::ffff:10.0.0.1").unwrap();
        assert!(one.contains(ip("10.0.0.1")));
        assert!(!one.contains(ip("10.0.0.2")));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains(ip("2001:db8::7")));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let xff: &[&[u8]] = &[b"203.0.113.7, 198.51.100.1, 10.0.0.2"];
        let none: &[&[u8]] = &[];
        let from = |peer: &str, fields: &[&[u8]]| {
            resolve(Some(ip(peer)), fields.iter().copied(), &trusted)
        };
        assert_eq!(from("10.0.0.1", xff), Some(ip("198.51.100.1")));
        assert_eq!(from("192.0.2.9", xff), Some(ip("192.0.2.9")));
        assert_eq!(from("10.0.0.1", none), Some(ip("10.0.0.1")));
        assert_eq!(from("10.0.0.1", &[b"evil, 10.0.0.3"]), Some(ip("10.0.0.3")));
    }

    #[test]
    fn a_field_a_proxy_added_of_its_own_is_read_before_the_clients() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let from =
            |fields: &[&[u8]]| resolve(Some(ip("10.0.0.1")), fields.iter().copied(), &trusted);
        // The client wrote the first field itself; the proxy added the second.
        assert_eq!(from(&[b"6.6.6.6", b"203.0.113.7"]), Some(ip("203.0.113.7")));
        // Two proxies, each adding a field: the nearer one's hop is trusted, so read on.
        assert_eq!(
            from(&[b"6.6.6.6", b"203.0.113.7", b"10.0.0.2"]),
            Some(ip("203.0.113.7"))
        );
        // A field that is not text ends what can be believed.
        assert_eq!(
            from(&[b"203.0.113.7", b"\xff", b"10.0.0.2"]),
            Some(ip("10.0.0.2"))
        );
        // No more than 32 hops are read.
        let long = vec!["10.0.0.9"; 40].join(",");
        assert_eq!(
            from(&[b"203.0.113.7", long.as_bytes()]),
            Some(ip("10.0.0.9"))
        );
    }
}
