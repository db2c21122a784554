//! The client's address: the TCP peer, or, when the peer is one of the
//! configured trusted proxies (`NEXUS_TRUSTED_PROXIES`), the rightmost address
//! of `X-Forwarded-For` that is not a trusted proxy. Everything left of that is
//! written by the client and ignored: a client can put any address there.

use std::net::IpAddr;

use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at, from the right; a longer chain of
/// trusted proxies is not a deployment, and the walk stays bounded.
const MAX_FORWARDED_HOPS: usize = 16;

/// The client's address, as the gate found it; kept in the request's
/// extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's address the gate stored, or (without the gate: a bare test
/// app) the TCP peer's.
pub fn client_ip_of(req: &actix_web::HttpRequest) -> IpAddr {
    use actix_web::HttpMessage;
    match req.extensions().get::<ClientIp>() {
        Some(ClientIp(ip)) => *ip,
        None => req
            .peer_addr()
            .map(|a| a.ip().to_canonical())
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
    }
}

/// The address ranges of the proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Why `NEXUS_TRUSTED_PROXIES` is refused: which entry (from 1), never its text
/// (a setting's value is not echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {0} is no CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32) nor an address")]
pub struct NotARange(usize);

impl TrustedProxies {
    /// Comma-separated CIDR ranges or single addresses; empty: none.
    pub fn parse(text: &str) -> Result<TrustedProxies, NotARange> {
        text.split(',')
            .map(str::trim)
            .enumerate()
            .filter(|(_, item)| !item.is_empty())
            .map(|(index, item)| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| NotARange(index + 1))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` header
    /// values (in the order received).
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
            // A malformed entry was not written by a trusted proxy: the last
            // address vouched for is the best known.
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(trusted: &str, peer: &str, forwarded: &[&str]) -> IpAddr {
        TrustedProxies::parse(trusted)
            .unwrap()
            .client(ip(peer), forwarded.iter().copied())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        assert_eq!(client("", "192.0.2.1", &["198.51.100.7"]), ip("192.0.2.1"));
        // A peer outside the trusted ranges: its header is the client's own.
        assert_eq!(
            client("10.0.0.0/8", "192.0.2.1", &["198.51.100.7"]),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let trusted = "10.0.0.0/8, 2001:db8::/32";
        assert_eq!(
            client(trusted, "10.0.0.2", &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Whatever the client wrote on the left is ignored.
        assert_eq!(
            client(trusted, "10.0.0.2", &["1.2.3.4, 198.51.100.7, 10.9.9.9"]),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(trusted, "10.0.0.2", &["1.2.3.4", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(trusted, "2001:db8::1", &["2001:db8::5, 2001:db9::7"]),
            ip("2001:db9::7")
        );
        // IPv4-mapped IPv6 addresses count as the IPv4 address.
        assert_eq!(
            client(trusted, "::ffff:10.0.0.2", &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_missing_or_malformed_header_leaves_the_last_vouched_address() {
        assert_eq!(client("10.0.0.0/8", "10.0.0.2", &[]), ip("10.0.0.2"));
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.2", &["198.51.100.7, 10.0.0.1, junk"]),
            ip("10.0.0.2")
        );
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.2", &["junk, 10.0.0.1"]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ranges_and_single_addresses_parse_and_junk_is_refused() {
        let proxies = TrustedProxies::parse("10.1.2.3/8,192.0.2.9 , ::1").unwrap();
        assert!(proxies.trusts(ip("10.200.0.1")));
        assert!(proxies.trusts(ip("192.0.2.9")));
        assert!(!proxies.trusts(ip("192.0.2.10")));
        assert!(proxies.trusts(ip("::1")));
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
    }
}
