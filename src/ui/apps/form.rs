//! The new/edit app form: what the browser posts → the service's `CreateAppInput` /
//! `UpdateAppInput`, and the service's validation errors → messages beside their
//! fields. The form keeps what was typed so a refused post re-renders as sent.
//!
//! Only type conversions happen here (a number field that is not a number); every
//! rule (lengths, patterns, ranges) is the service's, so the form and the API agree.
//!
//! Field names (the browser tests' hooks): `name`, `slug`, `r_version`, `packages`
//! (comma/space separated), `code_source` (`upload`|`git`), `git_url`, `git_branch`,
//! `entry_script`, `replicas`, `memory_mb`, `cpus`, and env rows `env_key_N`,
//! `env_value_N`, `env_secret_N` (checkbox, N = 0, 1, …; indexed because an unchecked
//! box sends nothing, so repeated names could not be paired up).

use std::collections::BTreeMap;

use crate::model::{App, CodeSource};
use crate::service::apps::{CreateAppInput, EnvInput, UpdateAppInput};
use crate::service::ServiceError;

/// Empty env rows offered below the filled ones (no JavaScript needed to add some).
pub const BLANK_ENV_ROWS: usize = 3;
/// Highest env row index read from a post (the service allows 100 variables).
const ENV_ROWS_MAX: usize = 200;

/// One environment variable row as shown and posted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvRow {
    pub key: String,
    /// Never holds a stored secret's value: those rows render empty.
    pub value: String,
    pub secret: bool,
    /// The row names a stored secret: an empty value keeps it.
    pub stored_secret: bool,
}

/// The form's values, as typed (strings, so a refused post re-renders exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppForm {
    pub name: String,
    pub slug: String,
    pub r_version: String,
    /// As typed: `dplyr, jsonlite` or `dplyr jsonlite`.
    pub packages: String,
    /// `upload` or `git`.
    pub code_source: String,
    pub git_url: String,
    pub git_branch: String,
    pub entry_script: String,
    pub replicas: String,
    pub memory_mb: String,
    pub cpus: String,
    pub env: Vec<EnvRow>,
}

impl Default for AppForm {
    /// A new app's form: the service's defaults shown.
    fn default() -> Self {
        let settings = crate::model::AppSettings::default();
        AppForm {
            name: String::new(),
            slug: String::new(),
            r_version: "latest".into(),
            packages: String::new(),
            code_source: "upload".into(),
            git_url: String::new(),
            git_branch: String::new(),
            entry_script: crate::service::apps::DEFAULT_ENTRY_SCRIPT.into(),
            replicas: "1".into(),
            memory_mb: settings.memory_mb.to_string(),
            cpus: cpus_text(settings.cpu_millis),
            env: Vec::new(),
        }
    }
}

fn cpus_text(millis: u32) -> String {
    // 1500 → "1.5", 1000 → "1", 50 → "0.05"
    let s = format!("{}.{:03}", millis / 1000, millis % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `dplyr, jsonlite  ggplot2` → `[dplyr, jsonlite, ggplot2]`, first occurrence kept.
pub fn split_packages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if !p.is_empty() && !out.iter().any(|q| q == p) {
            out.push(p.to_string());
        }
    }
    out
}

impl AppForm {
    /// The edit form of a stored app. Secret values are left out.
    pub fn from_app(app: &App) -> Self {
        let (code_source, git_url, git_branch) = match &app.code_source {
            CodeSource::Upload => ("upload", String::new(), String::new()),
            CodeSource::Git { repo_url, branch } => {
                ("git", repo_url.clone(), branch.clone().unwrap_or_default())
            }
        };
        AppForm {
            name: app.name.clone(),
            slug: app.slug.clone(),
            r_version: app.r_version.clone(),
            packages: app.packages.join(", "),
            code_source: code_source.into(),
            git_url,
            git_branch,
            entry_script: app.entry_script.clone(),
            replicas: app.replicas.to_string(),
            memory_mb: app.settings.memory_mb.to_string(),
            cpus: cpus_text(app.settings.cpu_millis),
            env: app
                .settings
                .env
                .iter()
                .map(|e| EnvRow {
                    key: e.key.clone(),
                    value: if e.secret {
                        String::new()
                    } else {
                        e.value.clone()
                    },
                    secret: e.secret,
                    stored_secret: e.secret,
                })
                .collect(),
        }
    }

    /// Read a posted form. `stored` is the app being edited (None on create): it says
    /// which rows name stored secrets. Values of stored secrets are never copied in.
    pub fn from_pairs(pairs: &[(String, String)], stored: Option<&App>) -> Self {
        let mut f = AppForm {
            code_source: String::new(),
            r_version: String::new(),
            entry_script: String::new(),
            replicas: String::new(),
            memory_mb: String::new(),
            cpus: String::new(),
            ..AppForm::default()
        };
        let mut rows: BTreeMap<usize, EnvRow> = BTreeMap::new();
        for (k, v) in pairs {
            let v = v.clone();
            match k.as_str() {
                "name" => f.name = v,
                "slug" => f.slug = v.trim().to_string(),
                "r_version" => f.r_version = v.trim().to_string(),
                "packages" => f.packages = v,
                "code_source" => f.code_source = v,
                "git_url" => f.git_url = v.trim().to_string(),
                "git_branch" => f.git_branch = v.trim().to_string(),
                "entry_script" => f.entry_script = v.trim().to_string(),
                "replicas" => f.replicas = v.trim().to_string(),
                "memory_mb" => f.memory_mb = v.trim().to_string(),
                "cpus" => f.cpus = v.trim().to_string(),
                other => {
                    let Some((field, n)) = env_field(other) else {
                        continue; // csrf and anything unknown
                    };
                    let row = rows.entry(n).or_default();
                    match field {
                        "key" => row.key = v.trim().to_string(),
                        "value" => row.value = v,
                        _ => row.secret = true, // a checkbox sends only when checked
                    }
                }
            }
        }
        if let Some(app) = stored {
            f.slug = app.slug.clone(); // never changes; the field is read-only
        }
        f.env = rows
            .into_values()
            .filter(|r| !(r.key.is_empty() && r.value.is_empty()))
            .map(|mut r| {
                r.stored_secret = stored
                    .is_some_and(|a| a.settings.env.iter().any(|e| e.secret && e.key == r.key));
                r
            })
            .collect();
        f
    }

    /// The package list as tags.
    pub fn package_tags(&self) -> Vec<String> {
        split_packages(&self.packages)
    }

    /// Env rows to render: the filled ones, then [`BLANK_ENV_ROWS`] empty ones.
    pub fn env_rows(&self) -> Vec<EnvRow> {
        let mut rows = self.env.clone();
        rows.extend(std::iter::repeat_n(EnvRow::default(), BLANK_ENV_ROWS));
        rows
    }

    fn parsed(&self, errors: &mut FieldErrors) -> Parsed {
        let replicas = parse_int(errors, "replicas", &self.replicas);
        let memory_mb = parse_int(errors, "memory_mb", &self.memory_mb);
        let cpus = match self.cpus.as_str() {
            "" => None,
            s => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    errors.add("cpus", "cpus must be a number, like 0.5 or 2");
                    None
                }
            },
        };
        let code_source = match self.code_source.as_str() {
            "" => None,
            "upload" => Some(CodeSource::Upload),
            "git" => Some(CodeSource::Git {
                repo_url: self.git_url.clone(),
                branch: (!self.git_branch.is_empty()).then(|| self.git_branch.clone()),
            }),
            _ => {
                errors.add("code_source", "code source must be upload or git");
                None
            }
        };
        let mut env = Vec::with_capacity(self.env.len());
        for row in &self.env {
            if row.key.is_empty() {
                errors.add("env", "an environment variable has a value but no name");
                continue;
            }
            let value = if row.value.is_empty() && row.stored_secret {
                if !row.secret {
                    errors.add(
                        "env",
                        format!(
                            "type the value of {} again to make it a non-secret variable",
                            row.key
                        ),
                    );
                }
                None // keep the stored value
            } else {
                Some(row.value.clone())
            };
            env.push(EnvInput {
                key: row.key.clone(),
                value,
                secret: row.secret,
            });
        }
        Parsed {
            replicas,
            memory_mb,
            cpus,
            code_source,
            env,
        }
    }

    /// The create input, or the fields that are not even of the right type.
    pub fn to_create(&self) -> Result<CreateAppInput, FieldErrors> {
        let mut errors = FieldErrors::default();
        let p = self.parsed(&mut errors);
        errors.into_result()?;
        Ok(CreateAppInput {
            name: self.name.clone(),
            slug: self.slug.clone(),
            r_version: non_empty(&self.r_version),
            packages: Some(self.package_tags()),
            code_source: p.code_source,
            entry_script: non_empty(&self.entry_script),
            replicas: p.replicas,
            memory_mb: p.memory_mb,
            cpus: p.cpus,
            env: Some(p.env),
        })
    }

    /// The update input: every field as shown (packages and env replace the stored
    /// lists; an empty field leaves its value unchanged).
    pub fn to_update(&self) -> Result<UpdateAppInput, FieldErrors> {
        let mut errors = FieldErrors::default();
        let p = self.parsed(&mut errors);
        errors.into_result()?;
        Ok(UpdateAppInput {
            name: Some(self.name.clone()),
            slug: false,
            r_version: non_empty(&self.r_version),
            packages: Some(self.package_tags()),
            code_source: p.code_source,
            entry_script: non_empty(&self.entry_script),
            replicas: p.replicas,
            memory_mb: p.memory_mb,
            cpus: p.cpus,
            env: Some(p.env),
        })
    }
}

struct Parsed {
    replicas: Option<i64>,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    code_source: Option<CodeSource>,
    env: Vec<EnvInput>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_int(errors: &mut FieldErrors, field: &str, text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    match text.parse::<i64>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.add(field, format!("{field} must be a whole number"));
            None
        }
    }
}

/// `env_key_3` → `("key", 3)`.
fn env_field(name: &str) -> Option<(&'static str, usize)> {
    let rest = name.strip_prefix("env_")?;
    let (field, n) = rest.rsplit_once('_')?;
    let field = match field {
        "key" => "key",
        "value" => "value",
        "secret" => "secret",
        _ => return None,
    };
    let n: usize = n.parse().ok()?;
    (n < ENV_ROWS_MAX).then_some((field, n))
}

/// Messages by form field; `form` holds what belongs to no single field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages of one field joined, or empty when it has none.
    pub fn get(&self, field: &str) -> String {
        self.0.get(field).map(|v| v.join("; ")).unwrap_or_default()
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// Fields with messages, in name order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Place a service error's messages beside the fields they are about. Errors that
    /// are not about the input (Docker down, storage) go to `form`.
    pub fn from_service(e: &ServiceError) -> FieldErrors {
        let mut errors = FieldErrors::default();
        match e {
            ServiceError::BadRequest { message, details } if details.is_empty() => {
                errors.add(field_of(message), message.clone());
            }
            ServiceError::BadRequest { details, .. } => {
                for d in details {
                    errors.add(field_of(d), d.clone());
                }
            }
            ServiceError::Conflict(m) if m.contains("slug") => errors.add("slug", m.clone()),
            other => errors.add("form", other.to_string()),
        }
        errors
    }
}

/// The form field a service validation message is about (the messages start with the
/// API's field name).
fn field_of(message: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("name ", "name"),
        ("slug", "slug"),
        ("rVersion", "r_version"),
        ("packages", "packages"),
        ("package ", "packages"),
        ("codeSource.repoUrl", "git_url"),
        ("codeSource.branch", "git_branch"),
        ("This app uses git source", "code_source"),
        ("entryScript", "entry_script"),
        ("replicas", "replicas"),
        ("memoryMb", "memory_mb"),
        ("cpus", "cpus"),
        ("env", "env"),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or("form", |(_, field)| field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppSettings, EnvVar};

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn stored() -> App {
        let now = time::OffsetDateTime::now_utc();
        App {
            id: uuid::Uuid::new_v4(),
            name: "Demo".into(),
            slug: "demo".into(),
            r_version: "4.2.2".into(),
            packages: vec!["dplyr".into()],
            code_source: CodeSource::Upload,
            entry_script: "app.R".into(),
            replicas: 2,
            settings: AppSettings {
                memory_mb: 512,
                cpu_millis: 1500,
                env: vec![
                    EnvVar {
                        key: "PLAIN".into(),
                        value: "visible".into(),
                        secret: false,
                    },
                    EnvVar {
                        key: "TOKEN".into(),
                        value: "hunter2".into(),
                        secret: true,
                    },
                ],
            },
            owner_id: uuid::Uuid::new_v4(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn packages_split_on_commas_and_spaces() {
        assert_eq!(
            split_packages(" dplyr,jsonlite  ggplot2,\n,dplyr "),
            ["dplyr", "jsonlite", "ggplot2"]
        );
        assert!(split_packages(" , ").is_empty());
    }

    #[test]
    fn cpus_render_without_trailing_zeros() {
        assert_eq!(cpus_text(1000), "1");
        assert_eq!(cpus_text(1500), "1.5");
        assert_eq!(cpus_text(50), "0.05");
    }

    #[test]
    fn create_form_maps_every_field() {
        let f = AppForm::from_pairs(
            &pairs(&[
                ("csrf", "x"),
                ("name", "My app"),
                ("slug", " my-app "),
                ("r_version", "4.2.2"),
                ("packages", "dplyr, jsonlite"),
                ("code_source", "git"),
                ("git_url", "https://example.com/r.git"),
                ("git_branch", "main"),
                ("entry_script", "app.R"),
                ("replicas", "2"),
                ("memory_mb", "1024"),
                ("cpus", "0.5"),
                ("env_key_1", "B"),
                ("env_value_1", "two"),
                ("env_key_0", "A"),
                ("env_value_0", "one"),
                ("env_secret_0", "on"),
                ("env_key_2", ""),
                ("env_value_2", ""),
            ]),
            None,
        );
        let input = f.to_create().unwrap();
        assert_eq!(input.name, "My app");
        assert_eq!(input.slug, "my-app");
        assert_eq!(input.r_version.as_deref(), Some("4.2.2"));
        assert_eq!(input.packages.unwrap(), ["dplyr", "jsonlite"]);
        assert_eq!(
            input.code_source,
            Some(CodeSource::Git {
                repo_url: "https://example.com/r.git".into(),
                branch: Some("main".into())
            })
        );
        assert_eq!(input.entry_script.as_deref(), Some("app.R"));
        assert_eq!(
            (input.replicas, input.memory_mb, input.cpus),
            (Some(2), Some(1024), Some(0.5))
        );
        let env = input.env.unwrap();
        let got: Vec<_> = env
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.secret))
            .collect();
        assert_eq!(got, [("A", Some("one"), true), ("B", Some("two"), false)]);
    }

    #[test]
    fn empty_optional_fields_take_the_service_defaults() {
        let f = AppForm::from_pairs(&pairs(&[("name", "x"), ("slug", "abc")]), None);
        let input = f.to_create().unwrap();
        assert_eq!(input.r_version, None);
        assert_eq!(input.code_source, None);
        assert_eq!(input.entry_script, None);
        assert_eq!(
            (input.replicas, input.memory_mb, input.cpus),
            (None, None, None)
        );
        assert!(input.env.unwrap().is_empty());
    }

    #[test]
    fn wrong_types_are_field_errors() {
        let f = AppForm::from_pairs(
            &pairs(&[
                ("replicas", "two"),
                ("memory_mb", "1.5"),
                ("cpus", "lots"),
                ("code_source", "ftp"),
                ("env_value_0", "orphan"),
            ]),
            None,
        );
        let e = f.to_create().unwrap_err();
        for field in ["replicas", "memory_mb", "cpus", "code_source", "env"] {
            assert!(e.has(field), "{field}: {e:?}");
        }
        assert!(!e.has("name"));
    }

    #[test]
    fn edit_form_never_holds_secret_values() {
        let app = stored();
        let f = AppForm::from_app(&app);
        assert_eq!(f.env[0].value, "visible");
        assert_eq!(f.env[1].value, "");
        assert!(f.env[1].stored_secret);
        assert_eq!(f.cpus, "1.5");
        assert_eq!(f.packages, "dplyr");
        assert!(!format!("{f:?}").contains("hunter2"));
        assert_eq!(f.env_rows().len(), 2 + BLANK_ENV_ROWS);
    }

    #[test]
    fn empty_secret_on_edit_keeps_the_stored_value() {
        let app = stored();
        let f = AppForm::from_pairs(
            &pairs(&[
                ("name", "Demo"),
                ("slug", "changed"),
                ("env_key_0", "PLAIN"),
                ("env_value_0", "visible"),
                ("env_key_1", "TOKEN"),
                ("env_value_1", ""),
                ("env_secret_1", "on"),
                ("env_key_2", "NEW"),
                ("env_value_2", ""),
            ]),
            Some(&app),
        );
        assert_eq!(f.slug, "demo");
        let input = f.to_update().unwrap();
        assert!(!input.slug);
        let env = input.env.unwrap();
        let got: Vec<_> = env
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.secret))
            .collect();
        assert_eq!(
            got,
            [
                ("PLAIN", Some("visible"), false),
                ("TOKEN", None, true),
                ("NEW", Some(""), false)
            ]
        );
    }

    #[test]
    fn unmarking_a_secret_needs_its_value_again() {
        let app = stored();
        let f = AppForm::from_pairs(
            &pairs(&[
                ("name", "Demo"),
                ("env_key_0", "TOKEN"),
                ("env_value_0", ""),
            ]),
            Some(&app),
        );
        let e = f.to_update().unwrap_err();
        assert!(e.get("env").contains("TOKEN"), "{e:?}");
    }

    #[test]
    fn service_messages_land_beside_their_fields() {
        let e = ServiceError::BadRequest {
            message: "Validation failed: …".into(),
            details: vec![
                "name must be 1 to 128 characters".into(),
                "slug must be 3 to 64 characters".into(),
                "rVersion must be \"latest\" or a version like 4.2 or 4.2.2".into(),
                "package \"a b\" is not a valid package reference".into(),
                "codeSource.repoUrl must be an https:// URL".into(),
                "codeSource.branch is not a valid branch name".into(),
                "entryScript must be a file name ending in .R".into(),
                "replicas must be from 1 to 10".into(),
                "memoryMb must be from 64 to 262144".into(),
                "cpus must be at most 2, the number of cores of this host".into(),
                "env key \"1X\" must be letters".into(),
                "something else".into(),
            ],
        };
        let f = FieldErrors::from_service(&e);
        let fields: Vec<_> = f.fields().map(|(k, _)| k).collect();
        assert_eq!(
            fields,
            [
                "cpus",
                "entry_script",
                "env",
                "form",
                "git_branch",
                "git_url",
                "memory_mb",
                "name",
                "packages",
                "r_version",
                "replicas",
                "slug"
            ]
        );
        let taken = FieldErrors::from_service(&ServiceError::Conflict(
            "An app with slug \"x\" already exists".into(),
        ));
        assert!(taken.get("slug").contains("already exists"));
        let down = FieldErrors::from_service(&ServiceError::Unavailable("Docker down".into()));
        assert_eq!(down.get("form"), "Docker down");
    }
}
