//! Small helpers shared by every task: announcing and running commands, paths, temp dirs, ports.

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::sys;

/// Prints a progress line. Everything xtask says goes to stderr, like cargo's own status lines,
/// so that stdout stays clean for output meant to be captured (e.g. `services` printing env).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("xtask: {}", format_args!($($arg)*)) };
}

/// The repository root: xtask lives one level below it. `cargo run` (so `cargo xtask`) sets
/// `CARGO_MANIFEST_DIR` for the process; it wins over the compile-time value, which a binary
/// kept in a shared target dir may carry from another clone built from the same sources.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

pub fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `$HOME/.cache/patchbay`: outside the clone, so downloads survive fresh CI clones.
pub fn cache_dir() -> Result<PathBuf> {
    Ok(home()?.join(".cache").join("patchbay"))
}

/// A command line as a user would type it, for logs.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Announces and runs a command with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", display(cmd));
    }
    Ok(())
}

/// Announces and runs a command with inherited stdio; returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    say!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("cannot run `{}`", display(cmd)))
}

/// Announces and runs a chatty command with its output captured; shows the output only when it
/// fails, so that a green run stays readable.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    say!("$ {}", display(cmd));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", display(cmd)))?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("`{}` failed: {}", display(cmd), out.status);
    }
    Ok(())
}

/// Runs a probe silently and returns its trimmed stdout if it exits 0, `None` otherwise
/// (including when the program does not exist).
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Looks a program up on PATH, like `command -v`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Announces and runs a long-lived command as the leader of its own process group, relaying
/// SIGINT/SIGTERM received by xtask to that group: the first one as is, a second one as SIGKILL.
/// Outside the terminal's foreground group, Ctrl-C reaches only xtask, which stays alive to
/// clean up after the child is gone; stdin is closed because a read from the terminal would
/// stop a background process.
pub fn status_relaying_signals(cmd: &mut Command) -> Result<ExitStatus> {
    say!("$ {}", display(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run `{}`", display(cmd)))?;
    wait_relaying_signals(&mut child)
}

fn wait_relaying_signals(child: &mut Child) -> Result<ExitStatus> {
    let pgid = child.id();
    let mut relayed = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let received = sys::received_count();
        if received > relayed {
            if relayed == 0 {
                say!("interrupted: passing the signal on and cleaning up (again to force)");
                sys::kill_group(pgid, sys::received().unwrap_or(sys::SIGINT));
            } else {
                sys::kill_group(pgid, sys::SIGKILL);
            }
            relayed = received;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails fast with a clear message when xtask was interrupted between steps.
pub fn check_interrupted() -> Result<()> {
    if sys::received().is_some() {
        bail!("interrupted");
    }
    Ok(())
}

/// Asks the OS for a port that is free now. Another process could take it before we bind it
/// again, which is an accepted race for throwaway test services.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A directory under the system temp dir, removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            say!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Copies a directory tree; `fs::copy` keeps each file's permission bits.
pub fn copy_dir_all(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir_all(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A path as `&str`, for arguments and environment values that must be text.
pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
