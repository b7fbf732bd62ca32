//! Credentials: password hashing, session ids, API tokens and the login rate limiter.
//! Pure functions and small types; the services decide when to use them.

pub mod cookie;
pub mod password;
pub mod rate_limit;
pub mod secrets;
