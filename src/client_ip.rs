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

/// The end user's address as the gateway sees it through `trusted` proxies.
pub fn resolve(
    peer: Option<IpAddr>,
    forwarded_for: Option<&[u8]>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for.and_then(|h| std::str::from_utf8(h).ok()) else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in header.rsplit(',').take(32) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            // An unparseable hop ends what can be believed.
            Err(_) => break,
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
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let xff = Some(&b"203.0.113.7, 198.51.100.1, 10.0.0.2"[..]);
        assert_eq!(
            resolve(Some(ip("10.0.0.1")), xff, &trusted),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            resolve(Some(ip("192.0.2.9")), xff, &trusted),
            Some(ip("192.0.2.9"))
        );
        assert_eq!(
            resolve(Some(ip("10.0.0.1")), None, &trusted),
            Some(ip("10.0.0.1"))
        );
        let junk = Some(&b"evil, 10.0.0.3"[..]);
        assert_eq!(
            resolve(Some(ip("10.0.0.1")), junk, &trusted),
            Some(ip("10.0.0.3"))
        );
    }
}
