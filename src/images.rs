//! `rserve-proxy images build-base`: build the `rserve-base:<R version>` image from the
//! recipes in `images/rserve-base/`, which are compiled into the binary so an installed
//! rserve-proxy needs no source checkout.

use std::path::Path;
use std::process::Command;

/// The recipe files, by name.
const FILES: &[(&str, &str, u32)] = &[
    (
        "build-from-debian.sh",
        include_str!("../images/rserve-base/build-from-debian.sh"),
        0o755,
    ),
    (
        "Dockerfile",
        include_str!("../images/rserve-base/Dockerfile"),
        0o644,
    ),
    (
        "Rserv.conf",
        include_str!("../images/rserve-base/Rserv.conf"),
        0o644,
    ),
    (
        "rserve-healthcheck",
        include_str!("../images/rserve-base/rserve-healthcheck"),
        0o755,
    ),
];

/// How to build.
#[derive(Debug, Clone)]
pub enum Recipe {
    /// A rootfs from Debian's packages, imported into Docker (no registry needed);
    /// tags `rserve-base:<Debian's R version>` and `latest`.
    FromDebian { force: bool },
    /// `FROM r-base:<version>` from a registry, with Rserve and pak from CRAN.
    Dockerfile { r_version: String },
}

/// Write the recipes to a temp dir and run the chosen one, its output going to ours.
pub fn build_base(recipe: &Recipe) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let mut cmd = command(recipe, dir.path())?;
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    finished(status)
}

/// Like [`build_base`], but each line of the recipe's output (stdout and stderr) goes
/// to `on_line`: the server's first-run build writes them into an app's build log.
pub fn build_base_with(recipe: &Recipe, on_line: &mut dyn FnMut(&str)) -> Result<(), String> {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let mut cmd = command(recipe, dir.path())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for line in rx {
        on_line(&line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the base image build: {e}"))?;
    finished(status)
}

fn finished(status: std::process::ExitStatus) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the base image failed ({status}); see the output above"
        ))
    }
}

/// The recipe for an app's `rVersion` when its base image is missing: Debian's
/// packages for `latest` and Debian's own R version (no registry needed; root only,
/// mmdebstrap), `r-base:<version>` from a registry for any other version.
pub fn recipe_for(r_version: &str) -> Recipe {
    if r_version == "latest" || r_version == DEBIAN_R_VERSION {
        Recipe::FromDebian { force: false }
    } else {
        Recipe::Dockerfile {
            r_version: r_version.to_string(),
        }
    }
}

/// R in Debian 12 (bookworm), what the Debian recipe builds.
pub const DEBIAN_R_VERSION: &str = "4.2.2";

/// The recipes written to `dir`, and the command that runs the chosen one.
fn command(recipe: &Recipe, dir: &Path) -> Result<Command, String> {
    write_files(dir)?;
    Ok(match recipe {
        Recipe::FromDebian { force } => {
            let mut c = Command::new("bash");
            c.arg(dir.join("build-from-debian.sh"));
            if *force {
                c.arg("--force");
            }
            c
        }
        Recipe::Dockerfile { r_version } => {
            if !r_version.chars().all(|c| c.is_ascii_digit() || c == '.') || r_version.is_empty() {
                return Err(format!(
                    "R version {r_version:?} is not like 4.4.1; give a concrete r-base version"
                ));
            }
            let mut c = Command::new("docker");
            c.args(["build", "--build-arg"])
                .arg(format!("R_VERSION={r_version}"))
                .arg("-t")
                .arg(format!("rserve-base:{r_version}"))
                .arg(dir);
            c
        }
    })
}

fn write_files(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (name, text, mode) in FILES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn recipes_are_written_complete_and_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        super::write_files(dir.path()).unwrap();
        let script = dir.path().join("build-from-debian.sh");
        assert!(std::fs::read_to_string(&script)
            .unwrap()
            .contains("mmdebstrap"));
        assert_eq!(
            std::fs::metadata(&script).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(std::fs::read_to_string(dir.path().join("Rserv.conf"))
            .unwrap()
            .contains("remote enable"));
        assert!(std::fs::read_to_string(dir.path().join("Dockerfile"))
            .unwrap()
            .contains("r-base:"));
    }

    #[test]
    fn a_bad_version_is_refused_before_docker_runs() {
        let e = super::build_base(&super::Recipe::Dockerfile {
            r_version: "latest; rm -rf /".into(),
        })
        .unwrap_err();
        assert!(e.contains("not like 4.4.1"), "{e}");
    }
}
