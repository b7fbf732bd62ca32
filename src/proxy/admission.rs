//! Connection admission: caps on concurrent client connections, in total and per
//! client address, checked when a connection is accepted — before the TLS handshake
//! and before anything is read — so that one client cannot take every descriptor,
//! task and buffer the server has.
//!
//! No lock on this path: the total is one atomic counter, and the per-address counts
//! live in a fixed array of atomic buckets indexed by a keyed hash of the address
//! (an IPv6 client by its /64, which one subscriber usually holds whole). Two
//! addresses that share a bucket share its cap — collisions only make the cap
//! stricter, never looser. The hash key is random per process, so a client cannot
//! aim at another's bucket; with 16,384 buckets, a given client shares with a given
//! other one with probability 1/16,384. The count is given back when the
//! [`Admitted`] guard drops, however the connection ends.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use std::collections::hash_map::RandomState;

const BUCKETS: usize = 16 * 1024;

pub struct Admission {
    open: AtomicU32,
    max_total: u32,
    per_ip: Box<[AtomicU32]>,
    max_per_ip: u32,
    key: RandomState,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this client's address.
    PerIp,
}

/// One admitted connection; dropping it gives its place back.
#[must_use = "the connection counts as open only while this lives"]
pub struct Admitted<'a> {
    admission: &'a Admission,
    bucket: Option<usize>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.bucket {
            self.admission.per_ip[b].fetch_sub(1, Ordering::Relaxed);
        }
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        Admission {
            open: AtomicU32::new(0),
            max_total,
            per_ip: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            max_per_ip,
            key: RandomState::new(),
        }
    }

    pub fn max_total(&self) -> u32 {
        self.max_total
    }

    pub fn max_per_ip(&self) -> u32 {
        self.max_per_ip
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Take a place for a connection from `client` (`None`: not an IP connection; only
    /// the total applies).
    pub fn admit(&self, client: Option<IpAddr>) -> Result<Admitted<'_>, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        // From here on the guard gives the total back on every path.
        let mut admitted = Admitted {
            admission: self,
            bucket: None,
        };
        if let Some(ip) = client {
            let b = self.bucket(ip);
            if self.per_ip[b].fetch_add(1, Ordering::Relaxed) >= self.max_per_ip {
                self.per_ip[b].fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            }
            admitted.bucket = Some(b);
        }
        Ok(admitted)
    }

    fn bucket(&self, ip: IpAddr) -> usize {
        let key: (u8, u64) = match ip.to_canonical() {
            IpAddr::V4(v4) => (4, u64::from(u32::from(v4))),
            IpAddr::V6(v6) => (6, (u128::from(v6) >> 64) as u64),
        };
        (self.key.hash_one(key) as usize) & (BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_ip_cap_refuses_the_extra_and_gives_back_on_drop() {
        let a = Admission::new(100, 3);
        let held: Vec<_> = (0..3).map(|_| a.admit(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(a.admit(ip("192.0.2.1")).err(), Some(Refused::PerIp));
        // Another client is not affected (unless it shares the bucket, which depends on
        // the random key: take one that does not).
        let other = (2..=254)
            .map(|n| format!("198.51.100.{n}"))
            .find(|o| a.bucket(o.parse().unwrap()) != a.bucket("192.0.2.1".parse().unwrap()))
            .unwrap();
        let o = a.admit(ip(&other)).unwrap();
        assert_eq!(a.open(), 4);
        drop(held);
        drop(o);
        assert_eq!(a.open(), 0);
        let again: Vec<_> = (0..3).map(|_| a.admit(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn total_cap_counts_everyone_and_refusals_leave_no_trace() {
        let a = Admission::new(2, 10);
        let x = a.admit(ip("192.0.2.1")).unwrap();
        let y = a.admit(None).unwrap();
        for _ in 0..5 {
            assert_eq!(a.admit(ip("192.0.2.2")).err(), Some(Refused::Total));
        }
        assert_eq!(a.open(), 2);
        drop((x, y));
        assert_eq!(a.open(), 0);
        assert!(a.per_ip.iter().all(|b| b.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a = Admission::new(100, 2);
        let _x = a.admit(ip("2001:db8:1:2::1")).unwrap();
        let _y = a.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(a.admit(ip("2001:db8:1:2::77")).err(), Some(Refused::PerIp));
        let _m = a.admit(ip("192.0.2.9")).unwrap();
        let _n = a.admit(ip("::ffff:192.0.2.9")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.9")).err(), Some(Refused::PerIp));
    }
}
