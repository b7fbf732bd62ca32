//! App images: the generated Dockerfile and its helper scripts, the content hash that
//! names an image, the build context (a tar made here) and fetching git sources.
//!
//! Nothing the user typed is ever spliced into a shell command, R code or the
//! Dockerfile: package names travel in `packages.txt`, the entry script's name in
//! `entry`, and the R scripts read those files.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// Bump when the generated Dockerfile or scripts change: it is part of every image
/// hash, so apps get rebuilt with the new template on their next start.
pub const TEMPLATE_VERSION: u32 = 1;
/// Repository prefix of app images: `rserve-app-<slug>:<hash>`.
pub const APP_IMAGE_PREFIX: &str = "rserve-app-";
/// Where the helper scripts live inside app images.
const LIB_DIR: &str = "/usr/local/lib/rserve-proxy";
/// Limits on the code put into an image (uploads are limited earlier; git clones are not).
const MAX_CODE_FILES: usize = 20_000;
const MAX_CODE_BYTES: u64 = 512 * 1024 * 1024;
/// How long a `git clone` or `git ls-remote` may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How packages get installed; depends on what the base image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// `pak::pkg_install()`: CRAN names and pak references (`user/repo`, `pkg@1.0`, …).
    Pak,
    /// `install.packages()` from CRAN; plain package names only.
    InstallPackages,
}

/// One regular file of an app's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFile {
    /// Path relative to the code root, `/`-separated.
    pub rel: String,
    pub executable: bool,
    pub sha256: [u8; 32],
    pub size: u64,
}

/// An app's code as found on disk, sorted by path.
#[derive(Debug, Clone)]
pub struct CodeTree {
    pub root: PathBuf,
    pub files: Vec<CodeFile>,
}

impl CodeTree {
    /// One digest over paths, modes and contents.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            // Length-prefixed fields: no two different trees hash alike.
            h.update((f.rel.len() as u64).to_le_bytes());
            h.update(f.rel.as_bytes());
            h.update([u8::from(f.executable)]);
            h.update(f.sha256);
        }
        hex::encode(h.finalize())
    }
}

/// Where the code of an image came from, as far as the hash is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceId {
    Upload {
        digest: String,
    },
    Git {
        url: String,
        branch: Option<String>,
        commit: String,
    },
}

/// Everything an image depends on.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInputs {
    /// Image id of the base (`sha256:…`): a rebuilt base, e.g. a new `latest`, means
    /// new app images.
    pub base_image_id: String,
    pub r_version: String,
    /// Normalised with [`normalize_packages`].
    pub packages: Vec<String>,
    pub entry_script: String,
    pub source: SourceId,
}

/// Sorted, without duplicates or empty entries: the order packages are listed in does
/// not change what gets installed, so it must not force a rebuild.
pub fn normalize_packages(packages: &[String]) -> Vec<String> {
    let mut p: Vec<String> = packages
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    p.sort();
    p.dedup();
    p
}

/// First 12 hex digits of the SHA-256 of the inputs and the template version.
pub fn image_hash(inputs: &ImageInputs) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        template: u32,
        inputs: &'a ImageInputs,
    }
    let doc = Doc {
        template: TEMPLATE_VERSION,
        inputs,
    };
    // Serialising plain strings and vectors cannot fail; fall back to Debug anyway.
    let bytes = serde_json::to_vec(&doc).unwrap_or_else(|_| format!("{inputs:?}").into_bytes());
    let mut h = hex::encode(Sha256::digest(&bytes));
    h.truncate(12);
    h
}

pub fn image_repo(slug: &str) -> String {
    format!("{APP_IMAGE_PREFIX}{slug}")
}

/// `rserve-base:<rVersion>`; `None` when the version could not be a tag (the API
/// validates it; this keeps the Dockerfile safe whoever calls).
pub fn base_image_ref(r_version: &str) -> Option<String> {
    let ok = !r_version.is_empty()
        && r_version.len() <= 32
        && r_version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    ok.then(|| format!("{}:{r_version}", super::BASE_IMAGE_REPO))
}

/// Health check of app images: the base image's probe (a WebSocket upgrade on 8081).
/// 5 s instead of the base image's 30 s because Docker 20.10 runs the first probe
/// only after one interval: this is how long a fresh replica waits for traffic.
pub const HEALTHCHECK: &str =
    "HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
     CMD [\"/usr/local/bin/rserve-healthcheck\", \"8081\"]";

/// What the generated files are made from.
#[derive(Debug, Clone, Copy)]
pub struct Template<'a> {
    /// `rserve-base:<rVersion>`, from [`base_image_ref`].
    pub base_ref: &'a str,
    pub app_id: Uuid,
    /// The rserve-proxy instance (data dir) that owns the app; see `LABEL_INSTANCE`.
    pub instance: &'a str,
    /// Checked with [`valid_slug`].
    pub slug: &'a str,
    pub installer: Installer,
    /// Normalised with [`normalize_packages`].
    pub packages: &'a [String],
    pub entry_script: &'a str,
}

/// Slugs become image names, container names and a label value: lower-case letters,
/// digits and `-` only (the API enforces this; the spawner does not rely on it).
pub fn valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
}

/// The generated Dockerfile. With the classic builder every step commits a layer,
/// which costs seconds on some storage drivers (fuse-overlayfs), so the order is
/// chosen for the layer cache: HEALTHCHECK and CMD are the same for every app (cached
/// once per base image), the package layer is shared by apps with the same packages,
/// the LABEL is cached per app, and a code change rebuilds only COPY and the syntax
/// check. WORKDIR /app and EXPOSE 8081 come from the base image; the user (nobody) is
/// set when replicas are created.
pub fn dockerfile(t: &Template) -> String {
    let mut d = format!(
        "# Generated by rserve-proxy (template {TEMPLATE_VERSION}) from the app's settings; do not edit.\n\
         FROM {base}\n\
         {HEALTHCHECK}\n\
         CMD [\"Rscript\", \"{LIB_DIR}/runtime/start.R\"]\n",
        base = t.base_ref,
    );
    if !t.packages.is_empty() {
        d.push_str(&format!(
            "COPY packages/ {LIB_DIR}/packages/\n\
             RUN [\"Rscript\", \"{LIB_DIR}/packages/install.R\"]\n"
        ));
    }
    d.push_str(&format!(
        "LABEL managed-by=\"rserve-proxy\" rserve-proxy.instance=\"{instance}\" rserve-proxy.app-id=\"{app}\" rserve-proxy.slug=\"{slug}\"\n\
         COPY rootfs/ /\n\
         RUN [\"Rscript\", \"{LIB_DIR}/runtime/check.R\"]\n",
        instance = t.instance,
        app = t.app_id,
        slug = t.slug,
    ));
    d
}

const INSTALL_PAK: &str = r#"# rserve-proxy: install the app's packages with pak (one reference per line).
pkgs <- readLines("/usr/local/lib/rserve-proxy/packages/packages.txt", warn = FALSE)
pkgs <- pkgs[nzchar(pkgs)]
pak::pkg_install(pkgs, ask = FALSE, upgrade = FALSE)
"#;

const INSTALL_BASE: &str = r#"# rserve-proxy: install the app's packages from CRAN (one name per line).
# Packages already in the image (base, recommended, Rserve) are kept as they are.
pkgs <- readLines("/usr/local/lib/rserve-proxy/packages/packages.txt", warn = FALSE)
pkgs <- pkgs[nzchar(pkgs)]
have <- function(p) nzchar(system.file(package = p))
need <- pkgs[!vapply(pkgs, have, logical(1))]
refs <- need[!grepl("^[A-Za-z][A-Za-z0-9.]*$", need)]
if (length(refs) > 0L)
  stop("these package references need pak, which the base image does not have: ",
       paste(refs, collapse = ", "), call. = FALSE)
if (length(need) > 0L) {
  repos <- getOption("repos")
  if (is.null(repos) || !nzchar(repos[["CRAN"]]) || repos[["CRAN"]] == "@CRAN@")
    repos <- c(CRAN = "https://cloud.r-project.org")
  install.packages(need, repos = repos, Ncpus = max(1L, parallel::detectCores()))
}
# install.packages() only warns when a package fails: check.
missing <- need[!vapply(need, have, logical(1))]
if (length(missing) > 0L)
  stop("could not install: ", paste(missing, collapse = ", "), call. = FALSE)
"#;

/// Run at build time: a missing entry script or an R syntax error fails the build, so
/// the previous image keeps serving instead of a replica crash-looping.
const CHECK_R: &str = r#"# rserve-proxy: build-time check of the app's entry script.
entry <- readLines("/usr/local/lib/rserve-proxy/runtime/entry", n = 1L, warn = FALSE)
setwd("/app")
if (!file.exists(entry))
  stop("entry script ", entry, " not found in the app's code", call. = FALSE)
tryCatch(invisible(parse(file = entry, keep.source = FALSE)), error = function(e) {
  message("R syntax error in ", entry, ": ", conditionMessage(e))
  quit(save = "no", status = 1L)
})
"#;

/// The replicas' command: the platform, not the app, starts Rserve.
const START_R: &str = r#"# rserve-proxy: source the app's entry script, then serve it with Rserve
# (OCAP over WebSocket on 8081). Apps define oc.init() and never call run.Rserve().
entry <- readLines("/usr/local/lib/rserve-proxy/runtime/entry", n = 1L, warn = FALSE)
setwd("/app")
source(entry)
if (!exists("oc.init", mode = "function"))
  stop("the entry script ", entry, " must define a function oc.init()", call. = FALSE)
Rserve::run.Rserve(websockets.port = 8081L, websockets = TRUE, oob = TRUE,
                   websockets.qap.oc = TRUE, qap = FALSE)
"#;

/// The build context's generated files (path in the context, contents): the
/// Dockerfile, the runtime scripts and, with packages, the installer and its list.
pub fn support_files(t: &Template) -> Vec<(String, Vec<u8>)> {
    let (installer, packages, entry_script) = (t.installer, t.packages, t.entry_script);
    let mut files = vec![("Dockerfile".to_string(), dockerfile(t).into_bytes())];
    if !packages.is_empty() {
        let script = match installer {
            Installer::Pak => INSTALL_PAK,
            Installer::InstallPackages => INSTALL_BASE,
        };
        let mut list = packages.join("\n");
        list.push('\n');
        files.push(("packages/install.R".into(), script.as_bytes().to_vec()));
        files.push(("packages/packages.txt".into(), list.into_bytes()));
    }
    let runtime = format!("rootfs{LIB_DIR}/runtime");
    files.push((format!("{runtime}/check.R"), CHECK_R.as_bytes().to_vec()));
    files.push((format!("{runtime}/start.R"), START_R.as_bytes().to_vec()));
    files.push((
        format!("{runtime}/entry"),
        format!("{entry_script}\n").into_bytes(),
    ));
    files
}

/// The code root: `dir` itself, or — when `dir` holds nothing but one directory that
/// has the entry script (an archive of a folder, kept as it was) — that directory.
pub fn code_root(dir: &Path, entry_script: &str) -> PathBuf {
    if dir.join(entry_script).is_file() {
        return dir.to_path_buf();
    }
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n != ".git"))
            .collect(),
        Err(_) => return dir.to_path_buf(),
    };
    match entries.as_slice() {
        [only] if only.is_dir() && only.join(entry_script).is_file() => only.clone(),
        _ => dir.to_path_buf(),
    }
}

/// Walk `root`: regular files only (symlinks and special files are skipped, `.git`
/// too), sorted by path, each hashed.
pub fn scan_code(root: &Path) -> Result<CodeTree, String> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let rd =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(format!("file name {:?} is not UTF-8", entry.file_name()));
            };
            let rel = rel_dir.join(name);
            let ft = entry
                .file_type()
                .map_err(|e| format!("cannot stat {}: {e}", rel.display()))?;
            if ft.is_dir() {
                if name != ".git" {
                    stack.push(rel);
                }
            } else if ft.is_file() {
                let path = root.join(&rel);
                let (sha256, size, executable) = hash_file(&path)?;
                total += size;
                files.push(CodeFile {
                    rel: rel_string(&rel)?,
                    executable,
                    sha256,
                    size,
                });
                if files.len() > MAX_CODE_FILES || total > MAX_CODE_BYTES {
                    return Err(format!(
                        "the app's code is too large (limits: {MAX_CODE_FILES} files, {} MB)",
                        MAX_CODE_BYTES / (1024 * 1024)
                    ));
                }
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(CodeTree {
        root: root.to_path_buf(),
        files,
    })
}

fn rel_string(rel: &Path) -> Result<String, String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| format!("path {} is not UTF-8", rel.display()))
}

fn hash_file(path: &Path) -> Result<([u8; 32], u64, bool), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((
        h.finalize().into(),
        size,
        meta.permissions().mode() & 0o111 != 0,
    ))
}

/// The build context as an uncompressed tar: the support files at the top, the code
/// under `rootfs/app/`. Files are re-read and checked against the scan, so the image holds
/// exactly the code its hash names (an upload swapped in meanwhile fails the build).
pub fn context_tar(support: &[(String, Vec<u8>)], code: &CodeTree) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    // Only directories the image does not have yet: entries for existing ones
    // (/usr, /app) would re-apply their modes.
    for d in [
        "packages",
        &format!("rootfs{LIB_DIR}"),
        &format!("rootfs{LIB_DIR}/runtime"),
    ] {
        append_dir(&mut tar, d)?;
    }
    for (path, data) in support {
        append_file(&mut tar, path, data, 0o644)?;
    }
    let mut made_dirs = std::collections::BTreeSet::new();
    for f in &code.files {
        // Parent directories first, so their modes are ours, not Docker's defaults.
        let parts: Vec<&str> = f.rel.split('/').collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if made_dirs.insert(parent.clone()) {
                append_dir(&mut tar, &format!("rootfs/app/{parent}"))?;
            }
        }
        let path = code.root.join(&f.rel);
        let data =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let sha: [u8; 32] = Sha256::digest(&data).into();
        if sha != f.sha256 {
            return Err(format!(
                "{} changed while the image was being prepared; try again",
                f.rel
            ));
        }
        let mode = if f.executable { 0o755 } else { 0o644 };
        append_file(&mut tar, &format!("rootfs/app/{}", f.rel), &data, mode)?;
    }
    tar.into_inner()
        .map_err(|e| format!("cannot write the build context: {e}"))
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    // A fixed time: the context of unchanged code is byte-for-byte the same.
    h.set_mtime(1);
    h
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<(), String> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .map_err(|e| format!("cannot add {path} to the build context: {e}"))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), String> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
    tar.append_data(&mut h, path, data)
        .map_err(|e| format!("cannot add {path} to the build context: {e}"))
}

/// A git command with no access to the host's git configuration or credentials (the
/// URL is user-supplied), no prompts, and only the allowed transport protocols.
fn git_command(home: &Path, allowed_protocols: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear();
    for key in [
        "PATH",
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("HOME", home)
        .env("LANG", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", allowed_protocols)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run_git(mut cmd: tokio::process::Command, what: &str) -> Result<String, String> {
    let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Err(_) => {
            return Err(format!(
                "git {what} did not finish within {} s",
                GIT_TIMEOUT.as_secs()
            ))
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        return Err(format!("git {what} failed: {err}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit `branch` (or the default branch) points at, without cloning.
pub async fn remote_commit(
    url: &str,
    branch: Option<&str>,
    home: &Path,
    allowed_protocols: &str,
) -> Result<String, String> {
    let mut cmd = git_command(home, allowed_protocols);
    cmd.arg("ls-remote").arg("--").arg(url);
    match branch {
        Some(b) => cmd.args([
            format!("refs/heads/{b}"),
            format!("refs/tags/{b}"),
            format!("refs/tags/{b}^{{}}"),
        ]),
        None => cmd.args(["HEAD".to_string()]),
    };
    let out = run_git(cmd, "ls-remote").await?;
    let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    // A branch wins over a tag of the same name; an annotated tag is peeled (`^{}`).
    let pick = |suffix: &str| {
        refs.iter()
            .find(|(_, r)| r.ends_with(suffix))
            .map(|(c, _)| *c)
    };
    let commit = match branch {
        Some(b) => pick(&format!("refs/heads/{b}"))
            .or_else(|| pick(&format!("refs/tags/{b}^{{}}")))
            .or_else(|| pick(&format!("refs/tags/{b}"))),
        None => pick("HEAD"),
    };
    commit.map(str::to_string).ok_or_else(|| match branch {
        Some(b) => format!("branch {b} not found in {url}"),
        None => format!("{url} has no default branch"),
    })
}

/// `git clone --depth 1 [--branch b] -- <url> <dest>`; returns the cloned commit id.
pub async fn clone(
    url: &str,
    branch: Option<&str>,
    dest: &Path,
    home: &Path,
    allowed_protocols: &str,
) -> Result<String, String> {
    let mut cmd = git_command(home, allowed_protocols);
    cmd.args(["clone", "--quiet", "--depth", "1", "--no-tags"]);
    if let Some(b) = branch {
        cmd.arg("--branch").arg(b);
    }
    cmd.arg("--").arg(url).arg(dest);
    run_git(cmd, "clone").await?;
    let mut rev = git_command(home, allowed_protocols);
    rev.arg("-C").arg(dest).args(["rev-parse", "HEAD"]);
    Ok(run_git(rev, "rev-parse").await?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ImageInputs {
        ImageInputs {
            base_image_id: "sha256:aaa".into(),
            r_version: "4.2.2".into(),
            packages: vec!["jsonlite".into()],
            entry_script: "run_rserve.R".into(),
            source: SourceId::Upload {
                digest: "d1".into(),
            },
        }
    }

    #[test]
    fn hash_is_stable_and_12_hex() {
        let a = image_hash(&inputs());
        assert_eq!(a, image_hash(&inputs()));
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hash_changes_with_each_input() {
        let base = image_hash(&inputs());
        let variants: [fn(&mut ImageInputs); 6] = [
            |i| i.base_image_id = "sha256:bbb".into(),
            |i| i.r_version = "latest".into(),
            |i| i.packages.push("zoo".into()),
            |i| i.entry_script = "app.R".into(),
            |i| {
                i.source = SourceId::Upload {
                    digest: "d2".into(),
                }
            },
            |i| {
                i.source = SourceId::Git {
                    url: "https://example.org/r.git".into(),
                    branch: None,
                    commit: "c1".into(),
                }
            },
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base.clone());
        for change in variants {
            let mut i = inputs();
            change(&mut i);
            assert!(
                seen.insert(image_hash(&i)),
                "a change left the hash as it was"
            );
        }
        let git = |commit: &str, branch: Option<&str>| {
            let mut i = inputs();
            i.source = SourceId::Git {
                url: "https://example.org/r.git".into(),
                branch: branch.map(String::from),
                commit: commit.into(),
            };
            image_hash(&i)
        };
        assert_ne!(git("c1", None), git("c2", None));
        assert_ne!(git("c1", None), git("c1", Some("main")));
    }

    #[test]
    fn package_order_and_duplicates_do_not_matter() {
        let a = normalize_packages(&["zoo".into(), "jsonlite".into(), "zoo".into(), " ".into()]);
        assert_eq!(a, vec!["jsonlite", "zoo"]);
    }

    #[test]
    fn code_digest_covers_paths_modes_and_contents() {
        let f = |rel: &str, exec: bool, byte: u8| CodeFile {
            rel: rel.into(),
            executable: exec,
            sha256: [byte; 32],
            size: 1,
        };
        let tree = |files| CodeTree {
            root: PathBuf::new(),
            files,
        };
        let a = tree(vec![f("a.R", false, 1)]).digest();
        assert_ne!(a, tree(vec![f("b.R", false, 1)]).digest());
        assert_ne!(a, tree(vec![f("a.R", true, 1)]).digest());
        assert_ne!(a, tree(vec![f("a.R", false, 2)]).digest());
        assert_eq!(a, tree(vec![f("a.R", false, 1)]).digest());
    }

    fn template(packages: &[String], installer: Installer) -> Template<'_> {
        Template {
            base_ref: "rserve-base:4.2.2",
            app_id: Uuid::nil(),
            instance: "test-instance",
            slug: "demo",
            installer,
            packages,
            entry_script: "run_rserve.R",
        }
    }

    #[test]
    fn dockerfile_shape() {
        let d = dockerfile(&template(&[], Installer::Pak));
        assert!(d.contains("FROM rserve-base:4.2.2\n"));
        assert!(d.contains(
            "LABEL managed-by=\"rserve-proxy\" rserve-proxy.instance=\"test-instance\" rserve-proxy.app-id=\"00000000-0000-0000-0000-000000000000\" rserve-proxy.slug=\"demo\"\n"
        ));
        assert!(!d.contains("packages"));
        assert!(d.contains("COPY rootfs/ /\n"));
        assert!(d.contains("HEALTHCHECK --interval=5s"));
        assert!(d.contains("rserve-healthcheck"));
        assert!(d.contains("CMD [\"Rscript\", \"/usr/local/lib/rserve-proxy/runtime/start.R\"]"));
        let pkgs = vec!["zoo".to_string()];
        let with = dockerfile(&template(&pkgs, Installer::Pak));
        let pos = |what: &str| with.find(what).unwrap_or(usize::MAX);
        // Cache order: steps shared by every app first, the app's code last.
        assert!(pos("HEALTHCHECK") < pos("install.R"));
        assert!(pos("CMD [") < pos("install.R"));
        assert!(
            pos("install.R") < pos("LABEL"),
            "package layer shared across apps"
        );
        assert!(pos("LABEL") < pos("COPY rootfs/"));
        assert!(pos("COPY rootfs/") < pos("check.R"));
        assert!(START_R.contains(
            "Rserve::run.Rserve(websockets.port = 8081L, websockets = TRUE, oob = TRUE,\n                   websockets.qap.oc = TRUE, qap = FALSE)"
        ));
    }

    #[test]
    fn odd_package_names_only_ever_appear_in_the_list_file() {
        let odd = vec![
            "a'b".to_string(),
            "x\"); system(\"id".to_string(),
            "$(id)".to_string(),
            "user/repo@v1#sub:x=y".to_string(),
        ];
        for installer in [Installer::Pak, Installer::InstallPackages] {
            let files = support_files(&template(&odd, installer));
            for (path, data) in &files {
                let text = String::from_utf8_lossy(data);
                for p in &odd {
                    if path == "packages/packages.txt" {
                        assert!(text.lines().any(|l| l == p), "{p} missing from the list");
                    } else {
                        assert!(!text.contains(p.as_str()), "{p} leaked into {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn installer_choice() {
        let pkgs = vec!["jsonlite".to_string()];
        let get = |installer| {
            let files = support_files(&template(&pkgs, installer));
            files
                .into_iter()
                .find(|(p, _)| p == "packages/install.R")
                .map(|(_, d)| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default()
        };
        let pak = get(Installer::Pak);
        assert!(pak.contains("pak::pkg_install(pkgs"));
        assert!(!pak.contains("install.packages("));
        let base = get(Installer::InstallPackages);
        assert!(base.contains("install.packages(need"));
        assert!(!base.contains("pak::"));
        let none = support_files(&template(&[], Installer::Pak));
        assert!(none.iter().all(|(p, _)| !p.starts_with("packages/")));
    }

    #[test]
    fn slugs_are_checked() {
        assert!(valid_slug("my-app-2"));
        assert!(!valid_slug("My-App"));
        assert!(!valid_slug("a\"b"));
        assert!(!valid_slug("-x"));
        assert!(!valid_slug(""));
    }

    #[test]
    fn base_ref_refuses_odd_versions() {
        assert_eq!(
            base_image_ref("4.2.2").as_deref(),
            Some("rserve-base:4.2.2")
        );
        assert_eq!(
            base_image_ref("latest").as_deref(),
            Some("rserve-base:latest")
        );
        assert_eq!(base_image_ref("4.2\nRUN id"), None);
        assert_eq!(base_image_ref(""), None);
    }

    #[test]
    fn scan_and_tar_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run_rserve.R"), "oc.init <- function() 1\n").unwrap();
        std::fs::create_dir_all(dir.path().join("lib/sub")).unwrap();
        std::fs::write(dir.path().join("lib/sub/util.R"), "x <- 1\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let tree = scan_code(dir.path()).unwrap();
        let rels: Vec<&str> = tree.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, vec!["lib/sub/util.R", "run_rserve.R"]);
        let support = support_files(&template(&[], Installer::Pak));
        let bytes = context_tar(&support, &tree).unwrap();
        // Same input, same bytes: nothing time-dependent in the context.
        assert_eq!(bytes, context_tar(&support, &tree).unwrap());
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "Dockerfile",
            "rootfs/usr/local/lib/rserve-proxy/runtime/start.R",
            "rootfs/usr/local/lib/rserve-proxy/runtime/entry",
            "rootfs/app/run_rserve.R",
            "rootfs/app/lib/sub/util.R",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(!names
            .iter()
            .any(|n| n.contains(".git") || n.contains("link")));
        // A file changed after the scan is refused.
        std::fs::write(dir.path().join("run_rserve.R"), "changed\n").unwrap();
        assert!(context_tar(&support, &tree).is_err());
    }

    #[test]
    fn code_root_descends_into_a_lone_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("myapp")).unwrap();
        std::fs::write(dir.path().join("myapp/run_rserve.R"), "").unwrap();
        assert_eq!(
            code_root(dir.path(), "run_rserve.R"),
            dir.path().join("myapp")
        );
        std::fs::write(dir.path().join("run_rserve.R"), "").unwrap();
        assert_eq!(code_root(dir.path(), "run_rserve.R"), dir.path());
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {ok:?}");
    }

    #[tokio::test]
    async fn git_ls_remote_and_clone_agree() {
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(
            repo.path().join("run_rserve.R"),
            "oc.init <- function() 1\n",
        )
        .unwrap();
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "one"]);
        git(repo.path(), &["checkout", "-q", "-b", "dev"]);
        std::fs::write(repo.path().join("other.R"), "").unwrap();
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "two"]);
        git(repo.path(), &["checkout", "-q", "main"]);
        let url = format!("file://{}", repo.path().display());
        let home = tempfile::tempdir().unwrap();

        let main = remote_commit(&url, None, home.path(), "file")
            .await
            .unwrap();
        let dev = remote_commit(&url, Some("dev"), home.path(), "file")
            .await
            .unwrap();
        assert_ne!(main, dev);
        let dest = home.path().join("clone");
        let cloned = clone(&url, Some("dev"), &dest, home.path(), "file")
            .await
            .unwrap();
        assert_eq!(cloned, dev);
        assert!(dest.join("other.R").is_file());
        assert!(remote_commit(&url, Some("nope"), home.path(), "file")
            .await
            .is_err());
        // Production allows https only: file:// is refused by git itself.
        let dest2 = home.path().join("clone2");
        let err = clone(&url, None, &dest2, home.path(), "https")
            .await
            .unwrap_err();
        assert!(err.contains("git clone failed"), "{err}");
    }
}
