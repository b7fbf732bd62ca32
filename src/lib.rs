//! rserve-proxy: run R (Rserve) apps on your own server — proxy, spawner, store and
//! admin API in one binary. See docs/architecture.md for the map.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod images;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod paths;
pub mod prometheus;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod service;
pub mod spawner;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod ui;
pub mod upgrade;
pub mod upload;
