//! Who the client is, for the `X-Forwarded-*` headers we send upstream (config
//! `trusted_proxies`). From a peer in a trusted network (a load balancer in front of
//! us) its `X-Forwarded-For/-Proto/-Host` are believed; from anyone else they are
//! overwritten with what we see. The control plane keys the login rate limit on
//! `X-Forwarded-For` and marks cookies `Secure` from `X-Forwarded-Proto`, so both then
//! follow the real client.
//!
//! The list is parsed once (config) and read on the hot path through an `ArcSwap`:
//! a reload swaps it without locks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

/// The trusted networks, swappable by a reload.
#[derive(Debug, Default)]
pub struct TrustedProxies(ArcSwap<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(ArcSwap::from_pointee(nets))
    }

    pub fn set(&self, nets: Vec<IpNet>) {
        self.0.store(Arc::new(nets));
    }

    /// What the forwarding headers should say for a request from `peer`.
    pub fn resolve<'a>(
        &self,
        peer: Option<IpAddr>,
        tls: bool,
        headers: &Claims<'a>,
    ) -> Forwarded<'a> {
        let nets = self.0.load();
        resolve(&nets, peer, tls, headers)
    }
}

/// The client's forwarding headers, as received (each possibly repeated).
#[derive(Debug, Default)]
pub struct Claims<'a> {
    pub forwarded_for: Vec<&'a str>,
    pub forwarded_proto: Option<&'a str>,
    pub forwarded_host: Option<&'a str>,
}

/// What we send upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// `X-Forwarded-For` (the client's address); `None`: the header is left out.
    pub client: Option<IpAddr>,
    /// `X-Forwarded-Proto: https`.
    pub https: bool,
    /// `X-Forwarded-Host` given by a trusted proxy; `None`: our own `Host`.
    pub host: Option<&'a str>,
}

fn trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The last value of a possibly comma-separated header: the one the nearest proxy set.
fn last_value(v: &str) -> Option<&str> {
    v.rsplit(',').map(str::trim).find(|s| !s.is_empty())
}

pub fn resolve<'a>(
    nets: &[IpNet],
    peer: Option<IpAddr>,
    tls: bool,
    claims: &Claims<'a>,
) -> Forwarded<'a> {
    let own = Forwarded {
        client: peer,
        https: tls,
        host: None,
    };
    let Some(peer_ip) = peer else { return own };
    if nets.is_empty() || !trusted(nets, peer_ip) {
        return own;
    }
    // Right to left through the chain: each trusted hop vouches for the one before it;
    // the first untrusted address is the client (entries left of it are its claims).
    let mut client = peer_ip;
    let entries = claims
        .forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !trusted(nets, ip) {
            break;
        }
    }
    let https = match claims.forwarded_proto.and_then(last_value) {
        Some(p) if p.eq_ignore_ascii_case("https") => true,
        Some(p) if p.eq_ignore_ascii_case("http") => false,
        _ => tls,
    };
    let host = claims
        .forwarded_host
        .and_then(last_value)
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()));
    Forwarded {
        client: Some(client),
        https,
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peers_are_not_believed() {
        let claims = Claims {
            forwarded_for: vec!["6.6.6.6"],
            forwarded_proto: Some("https"),
            forwarded_host: Some("evil.example"),
        };
        let own = Forwarded {
            client: ip("192.0.2.1"),
            https: false,
            host: None,
        };
        assert_eq!(resolve(&[], ip("192.0.2.1"), false, &claims), own);
        let lb = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(&lb, ip("192.0.2.1"), false, &claims), own);
    }

    #[test]
    fn trusted_peers_give_the_right_most_untrusted_address() {
        let lb = nets(&["10.0.0.0/8", "127.0.0.0/8"]);
        let claims = Claims {
            // The client claims 6.6.6.6; its real address was appended by the LB, then
            // an inner proxy (10.0.0.2) appended the LB's.
            forwarded_for: vec!["6.6.6.6, 203.0.113.9", "10.0.0.2"],
            forwarded_proto: Some("http, https"),
            forwarded_host: Some("r.example.org"),
        };
        let f = resolve(&lb, ip("127.0.0.1"), false, &claims);
        assert_eq!(f.client, ip("203.0.113.9"));
        assert!(f.https);
        assert_eq!(f.host, Some("r.example.org"));

        // Every hop trusted: the left-most one; none given: the peer.
        let inner = Claims {
            forwarded_for: vec!["10.1.1.1:5555, 10.0.0.2"],
            ..Claims::default()
        };
        assert_eq!(
            resolve(&lb, ip("10.0.0.3"), true, &inner).client,
            ip("10.1.1.1")
        );
        let f = resolve(&lb, ip("10.0.0.3"), true, &Claims::default());
        assert_eq!(f.client, ip("10.0.0.3"));
        assert!(f.https, "no X-Forwarded-Proto: our own");
        // Garbage stops the walk at the last good hop.
        let junk = Claims {
            forwarded_for: vec!["203.0.113.9, nonsense"],
            ..Claims::default()
        };
        assert_eq!(
            resolve(&lb, ip("10.0.0.3"), false, &junk).client,
            ip("10.0.0.3")
        );
        // IPv4-mapped peers match IPv4 networks.
        assert_eq!(
            resolve(&lb, ip("::ffff:10.0.0.3"), false, &claims).client,
            ip("203.0.113.9")
        );
    }
}
