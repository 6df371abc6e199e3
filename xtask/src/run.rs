//! `cargo xtask run`: builds what the server needs and starts it with the embedded defaults
//! (SQLite and blob files under `./data`). The server prints its URL and, on first start, the
//! admin API key.

use anyhow::{Result, bail};

use crate::{cargo, setup, sys, util, wasm};

pub fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    wasm::run()?;
    let mut cmd = cargo::cargo()?;
    cmd.args(["run", "--release", "-p", "patchbay", "--", "serve"])
        .args(args);
    // Ctrl-C reaches xtask, which passes it on to the server exactly once and waits for its
    // graceful shutdown instead of giving the prompt back while it still runs.
    let status = util::status_relaying_signals(&mut cmd)?;
    if !status.success() && sys::received().is_none() {
        bail!("the server exited with {status}");
    }
    Ok(())
}
