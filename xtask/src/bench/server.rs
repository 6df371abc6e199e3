//! Starting a server for a benchmark and finding out where it listens.
//!
//! Each server gets port 0 (the OS picks a free port) and its own temp dir; the URL comes from
//! the one line the server prints once bound: `listening on http://HOST:PORT` (Patchbay, the
//! native baseline) or `Serving HTTP on http://HOST:PORT/` (`wasmtime serve`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, TempDir};
use crate::{say, sys};

/// What a server prints before its URL, once bound.
const LISTENING: &[&str] = &["listening on http://", "Serving HTTP on http://"];

/// A running server; stopped (SIGTERM, then SIGKILL after 10 s) and its temp dir removed on
/// drop.
pub struct Server {
    name: String,
    child: Child,
    url: String,
    // Dropped after `child` is stopped, see `Drop`.
    _dir: TempDir,
}

impl Server {
    /// Starts Patchbay (`binary serve`) with the bench defaults plus `env`.
    pub fn spawn(binary: &Path, name: &str, env: &[(&str, &str)]) -> Result<Server> {
        let dir = TempDir::new("patchbay-bench")?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .env("PATCHBAY_LISTEN", "127.0.0.1:0")
            .env("PATCHBAY_DATA_DIR", &data)
            // Quiet under load, but the `listening on` line is logged at info under the
            // lifecycle target, so let that target through (the level is an EnvFilter).
            .env("PATCHBAY_LOG__LEVEL", "warn,patchbay::lifecycle=info")
            .envs(env.iter().copied());
        Server::start(cmd, name, dir)
    }

    /// Starts any server that prints its URL once bound (see `LISTENING`) and serves until
    /// SIGTERM; it should bind port 0.
    pub fn command(cmd: Command, name: &str) -> Result<Server> {
        Server::start(cmd, name, TempDir::new("patchbay-bench")?)
    }

    /// Output goes to `server.log` in `dir`, which lives as long as the server.
    fn start(mut cmd: Command, name: &str, dir: TempDir) -> Result<Server> {
        let log_path = dir.path().join("server.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        say!("starting server `{name}`: {}", util::display(&cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::display(&cmd)))?;

        // Both pipes are drained for the server's whole life (a full pipe would block it) into
        // the log; lines are also sent here until the URL shows up.
        let log = File::create(&log_path)?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for (pipe, log) in [
            (Box::new(stdout) as Box<dyn Read + Send>, log.try_clone()?),
            (Box::new(stderr), log),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || forward_lines(pipe, log, tx));
        }
        drop(tx);

        let mut server = Server {
            name: name.to_string(),
            child,
            url: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(url) = listening_url(&line) {
                        say!("server `{name}` listens on {url}");
                        server.url = url;
                        return Ok(server);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "server `{name}` exited ({status}) before printing its URL:\n{}",
                    util::tail(&log_path, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "server `{name}` printed no URL (`{}...`) within 60 s:\n{}",
                    LISTENING.join("` or `"),
                    util::tail(&log_path, 30)
                );
            }
            util::check_interrupted()?;
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address in `url`, for clients that speak HTTP themselves.
    pub fn addr(&self) -> Result<SocketAddr> {
        self.url
            .trim_start_matches("http://")
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("server URL {} has no address", self.url))
    }

    /// The server's process id (also its process group's), e.g. to read `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id();
        sys::kill_group(pid, sys::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                say!("stopped server `{}`", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say!(
            "warning: server `{}` ignored SIGTERM for 10 s; killing it",
            self.name
        );
        sys::kill_group(pid, sys::SIGKILL);
        let _ = self.child.wait();
    }
}

fn forward_lines(pipe: Box<dyn Read + Send>, mut log: File, tx: mpsc::Sender<String>) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        // The receiver is gone once the URL was found: keep draining regardless.
        let _ = tx.send(line);
    }
}

/// Finds `http://HOST:PORT` after one of `LISTENING` in a text or JSON log line.
fn listening_url(line: &str) -> Option<String> {
    let start = LISTENING
        .iter()
        .find_map(|marker| Some(line.find(marker)? + marker.len() - "http://".len()))?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ".:/[]-_".contains(*c))
        .collect();
    let url = url.trim_end_matches('/').to_string();
    (url.len() > "http://".len()).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn finds_the_url_in_text_and_json_lines() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:41234").as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(
            listening_url("2025-01-01T00:00:00Z  INFO patchbay: listening on http://127.0.0.1:8080/ (2 workers)")
                .as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            listening_url(
                r#"{"level":"INFO","fields":{"message":"listening on http://[::1]:9000"}}"#
            )
            .as_deref(),
            Some("http://[::1]:9000")
        );
        assert_eq!(
            listening_url("Serving HTTP on http://127.0.0.1:36011/").as_deref(),
            Some("http://127.0.0.1:36011")
        );
        assert_eq!(listening_url("listening on http://"), None);
        assert_eq!(listening_url("starting"), None);
    }
}
