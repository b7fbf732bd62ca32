//! Request ids: keep a client's `x-request-id` when it is safe to log and echo,
//! otherwise make one.

/// The client's id if it is 1–128 characters of `[A-Za-z0-9._:-]`, else a new UUID.
pub fn accept_or_generate(client: Option<&str>) -> String {
    match client {
        Some(id) if is_safe(id) => id.to_string(),
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

fn is_safe(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_safe_ids_and_replaces_others() {
        assert_eq!(accept_or_generate(Some("abc-123")), "abc-123");
        assert_eq!(accept_or_generate(None).len(), 32);
        assert_ne!(accept_or_generate(Some("a b")), "a b");
        assert_ne!(accept_or_generate(Some("x\r\ny")), "x\r\ny");
        assert_eq!(accept_or_generate(Some(&"a".repeat(129))).len(), 32);
    }
}
