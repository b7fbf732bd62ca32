//! The two pieces of TLS state the request path reads: the certificate being served
//! and the pending HTTP-01 challenge answers. Both are `ArcSwap` snapshots, so a
//! handshake or a challenge request never takes a lock or reads the store, and a
//! renewal takes effect with one atomic swap (no restart, no dropped connections).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// rustls asks this for the certificate on every handshake.
#[derive(Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl CertResolver {
    /// Serve `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    /// One certificate for every name: it carries all configured names. `None` (no
    /// certificate yet) makes rustls refuse the handshake.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// HTTP-01 answers: token → key authorization. Written only by the ACME task, a few
/// times per order; read by the proxy for `/.well-known/acme-challenge/<token>`.
#[derive(Clone, Default)]
pub struct Challenges {
    map: Arc<ArcSwap<HashMap<String, String>>>,
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("pending", &self.map.load().len())
            .finish()
    }
}

impl Challenges {
    /// The key authorization for `token`, if an order is waiting for it.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.map.load().get(token).cloned()
    }

    pub fn publish(&self, token: &str, key_authorization: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(token.to_string(), key_authorization.to_string());
            m
        });
    }

    pub fn withdraw(&self, token: &str) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(token);
            m
        });
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_publish_answer_withdraw() {
        let c = Challenges::default();
        let reader = c.clone();
        assert_eq!(reader.answer("t1"), None);
        c.publish("t1", "t1.thumb");
        c.publish("t2", "t2.thumb");
        assert_eq!(reader.answer("t1").as_deref(), Some("t1.thumb"));
        c.withdraw("t1");
        assert_eq!(reader.answer("t1"), None);
        assert_eq!(reader.answer("t2").as_deref(), Some("t2.thumb"));
        assert_eq!(reader.len(), 1);
    }

    #[test]
    fn resolver_starts_empty_and_swaps() {
        let r = CertResolver::default();
        assert!(r.current().is_none());
        assert!(format!("{r:?}").contains("loaded: false"));
    }
}
