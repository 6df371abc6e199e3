//! Running the inner cargo: same toolchain as the one running xtask, and a target dir outside
//! the clone by default so that fresh CI clones reuse earlier builds.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::util;

/// `$CARGO_TARGET_DIR` if set, else `$HOME/.cache/patchbay/target`.
pub fn target_dir() -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Ok(util::repo_root().join(dir)),
        None => Ok(util::cache_dir()?.join("target")),
    }
}

/// A `cargo` command run from the repository root with the target dir pinned.
pub fn cargo() -> Result<Command> {
    // `cargo run` hands us the path of the cargo binary that runs us: using it keeps the
    // toolchain consistent even when PATH points elsewhere.
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(util::repo_root())
        .env("CARGO_TARGET_DIR", target_dir()?);
    Ok(cmd)
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, default `~/.cargo/bin`.
pub fn install_bin_dir() -> Result<PathBuf> {
    match std::env::var_os("CARGO_HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join("bin")),
        None => Ok(util::home()?.join(".cargo").join("bin")),
    }
}

/// PATH with cargo's install dir in front, for children that must find `wasm-bindgen` & co.
pub fn path_with_install_dir() -> Result<std::ffi::OsString> {
    let mut dirs = vec![install_bin_dir()?];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    Ok(std::env::join_paths(dirs)?)
}
