//! Real Rserve, started natively (R + r-cran-rserve, installed by
//! scripts/install-test-deps.sh) with examples/hello, the way the platform starts apps.
//! Missing R is a failure, never a skip.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rserve {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rserve {
    /// Start examples/hello on a free port and wait (bounded) until it accepts.
    pub fn start() -> Rserve {
        let found = Command::new("Rscript")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "Rscript not found: these tests need R and Rserve (run scripts/install-test-deps.sh)"
        );
        let port = super::free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rserve.log");
        let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
        let script = format!(
            "source('run_rserve.R'); Rserve::run.Rserve(websockets.port={port}L, websockets=TRUE, oob=TRUE, websockets.qap.oc=TRUE, qap=FALSE)"
        );
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("Rscript")
            .arg("-e")
            .arg(script)
            .current_dir(&app)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: Rserve forks a child per connection; the group
            // is killed as one on drop.
            .process_group(0)
            .spawn()
            .expect("start Rscript");
        let mut r = Rserve {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(r.addr).is_err() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("Rserve exited ({status}): {}", r.log());
            }
            assert!(
                Instant::now() < deadline,
                "Rserve did not listen within 30 s: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rserve {
    fn drop(&mut self) {
        // The group is the one `start` created: its id is the Rscript's pid.
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            if pgid > 1 {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}
