//! Who the client is, by address: the peer of the TCP connection, or — when that peer is one of
//! `server.trusted_proxies` — the address its `X-Forwarded-For` names. Owns parsing the proxy
//! list and reading the header; knows nothing of what the address is used for (login limits).

use std::net::IpAddr;

use ipnet::IpNet;

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parse `server.trusted_proxies`: addresses (`10.0.0.1`, `::1`) or CIDR ranges
    /// (`10.0.0.0/8`). The error names the entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{e}` is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying these `X-Forwarded-For` values
    /// (every header line, in order). Walks the chain from the right — the hop nearest to us —
    /// past trusted proxies; the first address that is not one is the client. A peer that is
    /// not trusted is the client whatever the header says (anyone can write one).
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(&client) {
            return client;
        }
        let hops = forwarded_for.rev().flat_map(|line| line.rsplit(','));
        for hop in hops {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Garbage in the chain: stop at the last address we could trust.
                break;
            };
            client = canonical(ip);
            if !self.trusts(&client) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as a dual-stack listener reports them) as
/// plain IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid list")
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let none = proxies(&[]);
        assert_eq!(
            none.client_ip(ip("127.0.0.1"), ["6.6.6.6"].into_iter()),
            ip("127.0.0.1")
        );
        let lo = proxies(&["127.0.0.1"]);
        assert_eq!(
            lo.client_ip(ip("10.1.1.1"), ["6.6.6.6"].into_iter()),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "::1"]);
        // A client may prepend anything; only hops added by our proxies count.
        let chain = ["6.6.6.6, 203.0.113.7", "10.0.0.2"];
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), chain.into_iter()),
            ip("203.0.113.7")
        );
        assert_eq!(
            p.client_ip(ip("::1"), [" 198.51.100.9 "].into_iter()),
            ip("198.51.100.9")
        );
        // Only proxies in the chain: the farthest one is all we know.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), ["10.0.0.3"].into_iter()),
            ip("10.0.0.3")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), ["1.2.3.4, nonsense"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_ipv4_addresses_are_plain_ipv4() {
        let p = proxies(&["127.0.0.1"]);
        assert_eq!(
            p.client_ip(ip("::ffff:127.0.0.1"), ["::ffff:192.0.2.1"].into_iter()),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn entries_that_are_not_addresses_are_refused() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
        assert!(TrustedProxies::parse(&["192.168.0.0/16".into(), "fd00::/8".into()]).is_ok());
    }
}
