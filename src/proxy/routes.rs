//! The route snapshot the proxy reads: slug → where the app's replicas are.
//! Immutable; the runtime builds a new one and swaps it in (one atomic store).

use std::collections::HashMap;
use std::net::SocketAddr;

/// One app's routing entry.
#[derive(Debug, Clone, Default)]
pub struct AppRoute {
    /// Healthy replicas' addresses on the managed network.
    pub replicas: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    apps: HashMap<String, AppRoute>,
}

impl RouteTable {
    pub fn new(apps: HashMap<String, AppRoute>) -> Self {
        RouteTable { apps }
    }

    pub fn get(&self, slug: &str) -> Option<&AppRoute> {
        self.apps.get(slug)
    }
}
