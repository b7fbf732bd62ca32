//! Input rules of the contract, shared by every caller.
// The patterns below are constants; the tests exercise every one of them.
#![allow(clippy::expect_used)]

use regex::Regex;
use std::sync::LazyLock;

use super::ServiceError;

// Each pattern is written once and serves both the server (Rust `regex`) and the
// OpenAPI document (`schema` below), so the two cannot disagree. They use only what
// ECMA-262, Python's `re` and Rust's `regex` read alike: ASCII classes (`[0-9]`, never
// `\d` or `\s`, whose meaning differs), `\xHH` escapes, explicit anchors.
pub const SLUG_PATTERN: &str = r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$";
pub const R_VERSION_PATTERN: &str = r"^(latest|[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?)$";
pub const PACKAGE_PATTERN: &str = r"^[A-Za-z0-9._/@#:=-]+$";
pub const ENTRY_SCRIPT_PATTERN: &str = r"^[A-Za-z0-9_.-]+\.R$";
pub const USERNAME_PATTERN: &str = r"^[A-Za-z0-9_.@-]+$";
pub const ENV_KEY_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$";
/// No NUL: it would cut the value short in the container's environment.
pub const ENV_VALUE_PATTERN: &str = r"^[^\x00]*$";
/// Not starting with `-`, so git never reads it as an option.
pub const BRANCH_PATTERN: &str = r"^[A-Za-z0-9._/][A-Za-z0-9._/-]*$";
/// `https://`, a host part not starting with `/`, then printable ASCII (no spaces or
/// control characters; anything else must be percent-encoded).
pub const REPO_URL_PATTERN: &str = r"^https://[!-.0-~][!-~]*$";
/// Empty (no address), or `local@domain.tld` without spaces or control characters.
pub const EMAIL_PATTERN: &str =
    r"^([^@\x00-\x20\x7F]+@[^@.\x00-\x20\x7F][^@\x00-\x20\x7F]*\.[^@\x00-\x20\x7F]+)?$";

macro_rules! pattern {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pattern).expect("static regex"));
    };
}
pattern!(SLUG, SLUG_PATTERN);
pattern!(R_VERSION, R_VERSION_PATTERN);
pattern!(PACKAGE, PACKAGE_PATTERN);
pattern!(ENTRY_SCRIPT, ENTRY_SCRIPT_PATTERN);
pattern!(USERNAME, USERNAME_PATTERN);
pattern!(ENV_KEY, ENV_KEY_PATTERN);
pattern!(ENV_VALUE, ENV_VALUE_PATTERN);
pattern!(BRANCH, BRANCH_PATTERN);
pattern!(REPO_URL, REPO_URL_PATTERN);
pattern!(EMAIL, EMAIL_PATTERN);

// The limits, shared with the OpenAPI document in the same way.
pub const NAME_MAX: usize = 128;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 256;
pub const PACKAGES_MAX: usize = 200;
pub const PACKAGE_MAX: usize = 256;
pub const ENTRY_SCRIPT_MAX: usize = 255;
pub const REPLICAS: (i64, i64) = (1, 10);
pub const REPO_URL_MAX: usize = 2048;
pub const BRANCH_MAX: usize = 255;
pub const MEMORY_MB: (i64, i64) = (64, 262_144);
pub const CPUS: (f64, f64) = (0.05, 64.0);
pub const ENV_MAX: usize = 100;
pub const ENV_VALUE_MAX: usize = 32 * 1024;
pub const EMAIL_MAX: usize = 254;
pub const TOKEN_DAYS: (i64, i64) = (1, 365);

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
    p.check((1..=NAME_MAX).contains(&chars(value)), || {
        format!("{field} must be 1 to {NAME_MAX} characters")
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
    p.check(value.len() <= PACKAGES_MAX, || {
        format!("packages may list at most {PACKAGES_MAX} entries")
    });
    for pkg in value {
        p.check(chars(pkg) <= PACKAGE_MAX && PACKAGE.is_match(pkg), || {
            format!("package {pkg:?} is not a valid package reference")
        });
    }
}

pub fn entry_script(p: &mut Problems, value: &str) {
    p.check(
        chars(value) <= ENTRY_SCRIPT_MAX && ENTRY_SCRIPT.is_match(value),
        || "entryScript must be a file name ending in .R (letters, digits, '_', '.', '-')".into(),
    );
}

pub fn replicas(p: &mut Problems, value: i64) {
    p.check((REPLICAS.0..=REPLICAS.1).contains(&value), || {
        format!("replicas must be from {} to {}", REPLICAS.0, REPLICAS.1)
    });
}

pub fn repo_url(p: &mut Problems, value: &str) {
    p.check(chars(value) <= REPO_URL_MAX && REPO_URL.is_match(value), || {
        format!("codeSource.repoUrl must be an https:// URL of printable ASCII, at most {REPO_URL_MAX} characters")
    });
}

pub fn branch(p: &mut Problems, value: &str) {
    p.check(chars(value) <= BRANCH_MAX && BRANCH.is_match(value), || {
        "codeSource.branch is not a valid branch name".into()
    });
}

pub fn memory_mb(p: &mut Problems, value: i64) {
    p.check((MEMORY_MB.0..=MEMORY_MB.1).contains(&value), || {
        format!("memoryMb must be from {} to {}", MEMORY_MB.0, MEMORY_MB.1)
    });
}

pub fn cpus(p: &mut Problems, value: f64) {
    p.check(
        value.is_finite() && (CPUS.0..=CPUS.1).contains(&value),
        || format!("cpus must be from {} to {}", CPUS.0, CPUS.1),
    );
}

/// Environment variables: valid, unique keys; bounded count and size.
pub fn env<'a>(p: &mut Problems, vars: impl ExactSizeIterator<Item = (&'a str, Option<&'a str>)>) {
    p.check(vars.len() <= ENV_MAX, || {
        format!("env may hold at most {ENV_MAX} variables")
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
            p.check(chars(v) <= ENV_VALUE_MAX && ENV_VALUE.is_match(v), || {
                format!("env value of {key:?} must be at most {ENV_VALUE_MAX} characters without NUL characters")
            });
        }
    }
}

pub fn username(p: &mut Problems, value: &str) {
    p.check(chars(value) <= NAME_MAX && USERNAME.is_match(value), || {
        format!(
            "username must be 1 to {NAME_MAX} characters of letters, digits, '_', '.', '@', '-'"
        )
    });
}

pub fn password(p: &mut Problems, field: &str, value: &str) {
    p.check(
        (PASSWORD_MIN..=PASSWORD_MAX).contains(&chars(value)),
        || format!("{field} must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
    );
}

pub fn email(p: &mut Problems, value: &str) {
    p.check(chars(value) <= EMAIL_MAX && EMAIL.is_match(value), || {
        "email is not a valid address (local@domain.tld, or empty for none)".into()
    });
}

/// The largest `cpus` this host takes: Docker refuses a limit above its cores.
pub fn cpus_max() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores as f64).min(CPUS.1)
}

/// A field that must be absent (`"slug"` on update): any value, `null` included,
/// makes it present.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}
use serde::Deserialize as _;

/// Integer fields read any JSON number with an integral value: `2.0` is an integer
/// to JSON Schema (and to JavaScript clients), so it is one here too.
pub mod int {
    use serde::de::{Error, Unexpected};
    use serde::{Deserialize, Deserializer};

    fn integral<E: Error>(n: serde_json::Number) -> Result<i64, E> {
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        match n.as_f64() {
            // Integral and inside i64's range (2^63 itself is not).
            Some(x) if x.fract() == 0.0 && x >= -(2f64.powi(63)) && x < 2f64.powi(63) => {
                Ok(x as i64)
            }
            Some(x) => Err(E::invalid_value(Unexpected::Float(x), &"an integer")),
            None => Err(E::custom("expected an integer")),
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        integral(serde_json::Number::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(integral)
            .transpose()
    }
}

/// The same rules as OpenAPI schemas, for the input types' `#[schema(schema_with)]`.
/// Optional fields take `null` as "absent", so their schemas allow it.
pub mod schema {
    use super::*;
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::{Array, KnownFormat, Object, SchemaFormat};

    fn string(min: usize, max: usize, pattern: Option<&str>) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length((min > 0).then_some(min))
            .max_length(Some(max))
            .pattern(pattern)
    }

    fn integer((min, max): (i64, i64)) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min as f64))
            .maximum(Some(max as f64))
    }

    fn or_null(b: ObjectBuilder, t: Type) -> Object {
        b.schema_type(SchemaType::from_iter([t, Type::Null]))
            .build()
    }

    pub fn name() -> Object {
        string(1, NAME_MAX, None).build()
    }
    pub fn name_or_null() -> Object {
        or_null(string(1, NAME_MAX, None), Type::String)
    }
    pub fn slug() -> Object {
        string(3, 64, Some(SLUG_PATTERN))
            .description(Some(format!(
                "Lower-case letters, digits and '-'; not one of the reserved names {}",
                RESERVED_SLUGS.join(", ")
            )))
            .build()
    }
    pub fn r_version() -> Object {
        or_null(string(0, 11, Some(R_VERSION_PATTERN)), Type::String)
    }
    fn packages_builder() -> ArrayBuilder {
        ArrayBuilder::new()
            .items(string(1, PACKAGE_MAX, Some(PACKAGE_PATTERN)).build())
            .max_items(Some(PACKAGES_MAX))
    }
    pub fn packages() -> Array {
        packages_builder()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .build()
    }
    pub fn entry_script() -> Object {
        or_null(
            string(3, ENTRY_SCRIPT_MAX, Some(ENTRY_SCRIPT_PATTERN)),
            Type::String,
        )
    }
    pub fn replicas() -> Object {
        integer(REPLICAS).build()
    }
    pub fn replicas_or_null() -> Object {
        or_null(integer(REPLICAS), Type::Integer)
    }
    pub fn memory_mb() -> Object {
        or_null(
            integer(MEMORY_MB).description(Some("Memory limit per replica in MiB (default 512)")),
            Type::Integer,
        )
    }
    pub fn cpus() -> Object {
        or_null(
            ObjectBuilder::new()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                .minimum(Some(CPUS.0))
                .maximum(Some(cpus_max()))
                .description(Some(
                    "CPU limit per replica in cores (default 1); at most this host's cores",
                )),
            Type::Number,
        )
    }
    pub fn repo_url() -> Object {
        string(9, REPO_URL_MAX, Some(REPO_URL_PATTERN)).build()
    }
    pub fn branch() -> Object {
        or_null(string(1, BRANCH_MAX, Some(BRANCH_PATTERN)), Type::String)
    }
    pub fn env_key() -> Object {
        string(1, 128, Some(ENV_KEY_PATTERN)).build()
    }
    pub fn env_value() -> Object {
        or_null(
            string(0, ENV_VALUE_MAX, Some(ENV_VALUE_PATTERN)).description(Some(
                "Required for a new variable; on update, a variable sent without a value keeps its stored one",
            )),
            Type::String,
        )
    }
    /// On create every variable needs its value (there is no stored one to keep).
    pub fn new_env() -> Array {
        let item = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("Unknown fields are ignored."))
            .property("key", env_key())
            .property(
                "value",
                string(0, ENV_VALUE_MAX, Some(ENV_VALUE_PATTERN)).build(),
            )
            .property("secret", ObjectBuilder::new().schema_type(Type::Boolean))
            .required("key")
            .required("value");
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(item)
            .max_items(Some(ENV_MAX))
            .description(Some("Keys must be distinct."))
            .build()
    }
    pub fn username() -> Object {
        string(1, NAME_MAX, Some(USERNAME_PATTERN)).build()
    }
    pub fn password() -> Object {
        string(PASSWORD_MIN, PASSWORD_MAX, None).build()
    }
    pub fn password_or_null() -> Object {
        or_null(string(PASSWORD_MIN, PASSWORD_MAX, None), Type::String)
    }
    /// What login and the current password take: any stored password, so 1 to 256.
    pub fn any_password() -> Object {
        string(1, PASSWORD_MAX, None).build()
    }
    /// Login takes any name up to the limit; a wrong one is just invalid credentials.
    pub fn login_name() -> Object {
        string(1, NAME_MAX, None).build()
    }
    pub fn email() -> Object {
        or_null(string(0, EMAIL_MAX, Some(EMAIL_PATTERN)), Type::String)
    }
    pub fn token_days() -> Object {
        or_null(integer(TOKEN_DAYS), Type::Integer)
    }
    /// A field that must not be sent (any value, `null` included, is refused).
    /// The document adds `not: {}` (api/openapi.rs): utoipa has no `not`.
    pub fn absent() -> Object {
        ObjectBuilder::new()
            .description(Some(
                "Refused: slugs never change; create a new app instead",
            ))
            .build()
    }
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
        assert!(!ok(|p| r_version(p, "٤.٢")));
        assert!(!ok(|p| repo_url(p, "https:///x")));
        assert!(!ok(|p| repo_url(p, "https://a b")));
        assert!(ok(|p| email(p, "")));
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
