//! Random identifiers and API token material.

use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// API tokens are `rsp_` + 40 random alphanumerics (≈238 bits).
pub const TOKEN_PREFIX: &str = "rsp_";
const TOKEN_RANDOM_LEN: usize = 40;
/// Characters of the raw token kept for display.
pub const TOKEN_DISPLAY_LEN: usize = 12;

/// A new session id: 128 random bits, hex.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A new raw API token.
pub fn new_api_token() -> String {
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(TOKEN_RANDOM_LEN)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{random}")
}

/// A generated password for first-run admin and CLI resets.
pub fn new_password() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// What the store keeps of a token: lower-case hex SHA-256.
pub fn token_hash(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// The first characters of a raw token, for display.
pub fn token_display_prefix(raw: &str) -> String {
    raw.chars().take(TOKEN_DISPLAY_LEN).collect()
}

/// Does this look like one of our tokens? Cheap pre-check before hashing and lookup.
pub fn looks_like_token(raw: &str) -> bool {
    raw.len() == TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN
        && raw.starts_with(TOKEN_PREFIX)
        && raw[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Is this a well-formed session id (32 lower-case hex characters)?
pub fn looks_like_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = new_api_token();
        assert_eq!(t.len(), 44);
        assert!(looks_like_token(&t));
        assert_eq!(token_display_prefix(&t).len(), 12);
        assert_eq!(token_hash(&t).len(), 64);
        assert_ne!(new_api_token(), t);
        assert!(!looks_like_token("rsp_short"));
    }

    #[test]
    fn session_id_shape() {
        let s = new_session_id();
        assert!(looks_like_session_id(&s));
        assert!(!looks_like_session_id("XYZ"));
    }
}
