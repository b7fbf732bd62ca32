//! The split of the URL space between the admin plane and apps, shared by the proxy
//! (which routes on it) and validation (which keeps slugs out of it).

/// First path segments that belong to the admin plane. Every other first segment is
/// an app slug.
pub const ADMIN_SEGMENTS: &[&str] = &[
    "api",
    "static",
    "login",
    "logout",
    "apps",
    "tokens",
    "settings",
    "users",
    "metrics",
    "health",
    "favicon.ico",
    ".well-known",
];

/// The first segment of a request path (`/a/b?c` → `a`; `/` → ``).
pub fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    &rest[..end]
}

/// Does this first segment belong to the admin plane (including the root)?
pub fn is_admin_segment(segment: &str) -> bool {
    segment.is_empty() || ADMIN_SEGMENTS.contains(&segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(first_segment("/"), "");
        assert_eq!(first_segment("/api/health"), "api");
        assert_eq!(first_segment("/hello"), "hello");
        assert_eq!(first_segment("/hello?x=1"), "hello");
        assert_eq!(first_segment("/hello/a/b"), "hello");
        assert!(is_admin_segment(""));
        assert!(is_admin_segment("api"));
        assert!(!is_admin_segment("apix"));
    }
}
