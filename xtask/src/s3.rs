//! An S3-compatible server for the tests: moto's standalone server (PyPI `moto[server]`), which
//! runs offline, accepts any credentials and unsigned requests, and keeps everything in memory.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{http, say, sys, util};

/// Pinned for reproducibility; any importable moto is accepted.
const MOTO: &str = "moto[server]==5.2.1";

/// Where xtask installs moto (`pip install --target`): a private directory avoids Debian's
/// "externally managed environment" refusal and leaves the system's Python untouched.
fn python_dir() -> Result<PathBuf> {
    Ok(util::cache_dir()?.join("python"))
}

fn python() -> Result<Command> {
    let mut cmd = Command::new("python3");
    let mut path = vec![python_dir()?];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        path.extend(std::env::split_paths(&existing));
    }
    cmd.env("PYTHONPATH", std::env::join_paths(path)?);
    Ok(cmd)
}

pub fn ensure_installed() -> Result<()> {
    let probe =
        util::probe(python()?.args(["-c", "import moto, moto.server; print(moto.__version__)"]));
    if let Some(version) = probe {
        say!("moto (S3 test server): {version} (present)");
        return Ok(());
    }
    let dir = python_dir()?;
    say!("installing {MOTO} into {}", dir.display());
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--upgrade",
                "--target",
            ])
            .arg(&dir)
            .arg(MOTO),
    )
}

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers; logs go to `work/moto.log`.
    pub fn start(work: &Path) -> Result<Moto> {
        let port = util::free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = work.join("moto.log");
        let log_file = File::create(&log)?;
        let mut cmd = python()?;
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Out of the terminal's Ctrl-C: xtask kills it after the tests are gone.
        .process_group(0);
        say!("starting moto on {addr}: {}", util::display(&cmd));
        let child = cmd.spawn().context("cannot start moto")?;
        let mut moto = Moto { child, addr };

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http::request(addr, "GET", "/").is_ok() {
                return Ok(moto);
            }
            if let Some(status) = moto.child.try_wait()? {
                bail!(
                    "moto exited ({status}) before answering:\n{}",
                    util::tail(&log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "moto did not answer on {addr} within 60 s:\n{}",
                    util::tail(&log, 30)
                );
            }
            util::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let status = http::request(self.addr, "PUT", &format!("/{bucket}"))?;
        if status != 200 {
            bail!("creating bucket {bucket} on moto answered {status}");
        }
        say!("created bucket {bucket} on {}", self.endpoint());
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The whole group, in case moto ever forks helpers (werkzeug's reloader does).
        sys::kill_group(self.child.id(), sys::SIGKILL);
        let _ = self.child.wait();
        say!("stopped moto");
    }
}
