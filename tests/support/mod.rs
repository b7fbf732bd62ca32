//! Test code shared by test crates that talk to Rserve (data plane, end-to-end).
#![allow(dead_code)]

pub mod qap;
