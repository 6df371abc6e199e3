//! Building the guest plugins in `plugins/` (their own workspace, target wasm32-wasip2) into
//! `plugins/dist/<name>/{<name>.wasm,plugin.toml}` with `plugins/build.sh`.
//!
//! Their target dir sits inside ours (outside the clone, so fresh CI clones build incrementally)
//! but apart from the host's, so a guest build never waits for the host build's lock.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{cargo, util};

/// Builds every plugin (about a second when nothing changed) and returns the dist dir.
pub fn build() -> Result<PathBuf> {
    let plugins = util::repo_root().join("plugins");
    util::run(
        Command::new("bash")
            .arg(plugins.join("build.sh"))
            .env(
                "CARGO",
                std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            )
            .env("CARGO_TARGET_DIR", cargo::target_dir()?.join("plugins")),
    )?;
    Ok(plugins.join("dist"))
}
