//! Input rules of the contract, shared by every caller.
// The patterns below are constants; the tests exercise every one of them.
#![allow(clippy::expect_used)]

use regex::Regex;
use std::sync::LazyLock;

use super::ServiceError;

static SLUG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$").expect("static regex"));
static R_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(latest|\d+\.\d+(\.\d+)?)$").expect("static regex"));
static PACKAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._/@#:=-]+$").expect("static regex"));
static ENTRY_SCRIPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.-]+\.R$").expect("static regex"));
static USERNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.@-]+$").expect("static regex"));
static ENV_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$").expect("static regex"));
static BRANCH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9._/-]+$").expect("static regex"));

pub use crate::paths::ADMIN_SEGMENTS as RESERVED_SLUGS;

/// Collects every problem of one input, so the client learns them all at once.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// `Ok` when nothing was wrong, else a 400 listing the problems.
    pub fn finish(self) -> Result<(), ServiceError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ServiceError::BadRequest {
            message: format!("Validation failed: {}", self.0.join("; ")),
            details: self.0,
        })
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

pub fn name(p: &mut Problems, field: &str, value: &str) {
    p.check((1..=128).contains(&chars(value)), || {
        format!("{field} must be 1 to 128 characters")
    });
}

pub fn slug(p: &mut Problems, value: &str) {
    if RESERVED_SLUGS.contains(&value) {
        p.push(format!(
            "slug \"{value}\" is reserved for the admin interface; choose another"
        ));
        return;
    }
    p.check(SLUG.is_match(value), || {
        "slug must be 3 to 64 characters of a-z, 0-9 and '-', starting and ending with a letter or digit".into()
    });
}

pub fn r_version(p: &mut Problems, value: &str) {
    p.check(R_VERSION.is_match(value), || {
        "rVersion must be \"latest\" or a version like 4.2 or 4.2.2".into()
    });
}

pub fn packages(p: &mut Problems, value: &[String]) {
    p.check(value.len() <= 200, || {
        "packages may list at most 200 entries".into()
    });
    for pkg in value {
        p.check(
            (1..=256).contains(&pkg.len()) && PACKAGE.is_match(pkg),
            || format!("package {pkg:?} is not a valid package reference"),
        );
    }
}

pub fn entry_script(p: &mut Problems, value: &str) {
    p.check(value.len() <= 255 && ENTRY_SCRIPT.is_match(value), || {
        "entryScript must be a file name ending in .R (letters, digits, '_', '.', '-')".into()
    });
}

pub fn replicas(p: &mut Problems, value: i64) {
    p.check((1..=10).contains(&value), || {
        "replicas must be from 1 to 10".into()
    });
}

pub fn repo_url(p: &mut Problems, value: &str) {
    let ok = value.len() <= 2048
        && value
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    p.check(ok, || "codeSource.repoUrl must be an https:// URL".into());
}

pub fn branch(p: &mut Problems, value: &str) {
    p.check(
        (1..=255).contains(&value.len()) && BRANCH.is_match(value) && !value.starts_with('-'),
        || "codeSource.branch is not a valid branch name".into(),
    );
}

pub fn memory_mb(p: &mut Problems, value: i64) {
    p.check((64..=262_144).contains(&value), || {
        "memoryMb must be from 64 to 262144".into()
    });
}

pub fn cpus(p: &mut Problems, value: f64) {
    p.check(value.is_finite() && (0.05..=64.0).contains(&value), || {
        "cpus must be from 0.05 to 64".into()
    });
}

/// Environment variables: valid, unique keys; bounded count and size.
pub fn env<'a>(p: &mut Problems, vars: impl ExactSizeIterator<Item = (&'a str, Option<&'a str>)>) {
    p.check(vars.len() <= 100, || {
        "env may hold at most 100 variables".into()
    });
    let mut seen = std::collections::HashSet::new();
    for (key, value) in vars {
        p.check(ENV_KEY.is_match(key), || {
            format!("env key {key:?} must be letters, digits and '_', not starting with a digit")
        });
        p.check(seen.insert(key), || {
            format!("env key {key:?} appears twice")
        });
        if let Some(v) = value {
            p.check(v.len() <= 32 * 1024 && !v.contains('\0'), || {
                format!("env value of {key:?} must be at most 32 KiB without NUL characters")
            });
        }
    }
}

pub fn username(p: &mut Problems, value: &str) {
    p.check(
        (1..=128).contains(&chars(value)) && USERNAME.is_match(value),
        || "username must be 1 to 128 characters of letters, digits, '_', '.', '@', '-'".into(),
    );
}

pub fn password(p: &mut Problems, field: &str, value: &str) {
    p.check((8..=256).contains(&chars(value)), || {
        format!("{field} must be 8 to 256 characters")
    });
}

pub fn email(p: &mut Problems, value: &str) {
    let ok = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !value.chars().any(char::is_whitespace);
    p.check(ok, || "email is not a valid address".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: impl FnOnce(&mut Problems)) -> bool {
        let mut p = Problems::default();
        f(&mut p);
        p.finish().is_ok()
    }

    #[test]
    fn slugs() {
        assert!(ok(|p| slug(p, "hello")));
        assert!(ok(|p| slug(p, "a-1")));
        assert!(!ok(|p| slug(p, "ab")));
        assert!(!ok(|p| slug(p, "-ab")));
        assert!(!ok(|p| slug(p, "Hello")));
        assert!(!ok(|p| slug(p, "api")));
        assert!(!ok(|p| slug(p, "metrics")));
        assert!(!ok(|p| slug(p, &"a".repeat(65))));
        assert!(ok(|p| slug(p, &"a".repeat(64))));
    }

    #[test]
    fn other_fields() {
        assert!(ok(|p| r_version(p, "latest")));
        assert!(ok(|p| r_version(p, "4.2.2")));
        assert!(!ok(|p| r_version(p, "4")));
        assert!(ok(|p| packages(
            p,
            &["jsonlite".into(), "user/repo@v1".into()]
        )));
        assert!(!ok(|p| packages(p, &["a b".into()])));
        assert!(!ok(|p| packages(p, &["x;rm -rf".into()])));
        assert!(ok(|p| entry_script(p, "run_rserve.R")));
        assert!(!ok(|p| entry_script(p, "../x.R")));
        assert!(!ok(|p| replicas(p, 0)));
        assert!(!ok(|p| replicas(p, 11)));
        assert!(ok(|p| repo_url(p, "https://example.org/a.git")));
        assert!(!ok(|p| repo_url(p, "http://example.org/a.git")));
        assert!(!ok(|p| repo_url(p, "git@example.org:a.git")));
        assert!(!ok(|p| branch(p, "--upload-pack=x")));
        assert!(ok(|p| email(p, "a@b.org")));
        assert!(!ok(|p| email(p, "a@b")));
    }

    #[test]
    fn problems_are_all_reported() {
        let mut p = Problems::default();
        name(&mut p, "name", "");
        replicas(&mut p, 0);
        match p.finish() {
            Err(ServiceError::BadRequest { details, .. }) => assert_eq!(details.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
