//! `cargo xtask wasm`: builds the materializer for the browser into `web/pkg` with wasm-bindgen.
//!
//! The wasm-bindgen CLI must be exactly the version of the `wasm-bindgen` crate the materializer
//! links (the two share an unstable schema), so the crate pins it with `=` and we install the
//! CLI to match.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, say, util};

pub const PACKAGE: &str = "patchbay-materializer";
const CRATE_DIR: &str = "materializer-wasm";

/// `cargo xtask wasm`.
pub fn run() -> Result<()> {
    let root = util::repo_root();
    let Some(version) = bindgen_version(&root)? else {
        say!("wasm: {CRATE_DIR} has no wasm-bindgen dependency yet; skipping the web build");
        return Ok(());
    };
    let bindgen = ensure_cli(&version)?;
    util::run(cargo::cargo()?.args([
        "build",
        "-p",
        PACKAGE,
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ]))?;
    let wasm = cargo::target_dir()?
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", PACKAGE.replace('-', "_")));
    let out_dir = root.join("web").join("pkg");
    util::run(
        Command::new(bindgen)
            .args(["--target", "web", "--out-dir"])
            .arg(&out_dir)
            .arg(&wasm),
    )?;
    say!("wasm: wrote {}", out_dir.display());
    Ok(())
}

/// The wasm-bindgen version the materializer links: its `=X.Y.Z` pin in Cargo.toml, else (not
/// pinned, or inherited from the workspace) the version resolved in Cargo.lock. `None` when the
/// crate does not use wasm-bindgen.
pub fn bindgen_version(root: &Path) -> Result<Option<String>> {
    let manifest_path = root.join(CRATE_DIR).join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let Some(line) = manifest.lines().find(|l| is_bindgen_dependency(l)) else {
        return Ok(None);
    };
    if let Some(pinned) = pinned_version(line) {
        return Ok(Some(pinned));
    }
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    match locked_version(&lock, "wasm-bindgen") {
        Some(version) => {
            say!(
                "warning: {CRATE_DIR}/Cargo.toml does not pin wasm-bindgen with `=`; using {version} from Cargo.lock"
            );
            Ok(Some(version))
        }
        None => {
            bail!("cannot tell which wasm-bindgen version {CRATE_DIR} uses: pin it with `=X.Y.Z`")
        }
    }
}

/// `wasm-bindgen = ...` or `wasm-bindgen.workspace = true`, not `wasm-bindgen-test` & co.
fn is_bindgen_dependency(line: &str) -> bool {
    let line = line.trim_start();
    line.strip_prefix("wasm-bindgen")
        .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
}

/// `wasm-bindgen = "=0.2.100"` or `wasm-bindgen = { version = "=0.2.100", ... }` -> `0.2.100`.
fn pinned_version(line: &str) -> Option<String> {
    let start = line.find("\"=")? + 2;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].trim().to_string())
}

/// The version of `package` in a Cargo.lock, if exactly one is locked.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let name_line = format!("name = \"{package}\"");
    let mut versions = lock
        .split("[[package]]")
        .filter(|block| block.lines().any(|l| l.trim() == name_line))
        .filter_map(|block| {
            let line = block.lines().find(|l| l.trim().starts_with("version = "))?;
            Some(
                line.trim()
                    .trim_start_matches("version = ")
                    .trim_matches('"')
                    .to_string(),
            )
        });
    let first = versions.next()?;
    versions.next().is_none().then_some(first)
}

/// Installs wasm-bindgen-cli `version` unless that exact version is already installed, and
/// returns the `wasm-bindgen` binary. `wasm-bindgen-test-runner` comes with it.
pub fn ensure_cli(version: &str) -> Result<PathBuf> {
    let bin = cargo::install_bin_dir()?.join("wasm-bindgen");
    let installed = util::probe(Command::new(&bin).arg("--version"));
    // `wasm-bindgen --version` prints `wasm-bindgen 0.2.100`.
    if installed
        .as_deref()
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(version))
    {
        say!("wasm-bindgen-cli: {version} (present)");
        return Ok(bin);
    }
    say!(
        "installing wasm-bindgen-cli {version} (found: {})",
        installed.as_deref().unwrap_or("none")
    );
    util::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
            "install",
            "wasm-bindgen-cli",
            "--locked",
            "--force",
            "--version",
            version,
        ]),
    )?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bindgen_dependency_only() {
        assert!(is_bindgen_dependency(r#"wasm-bindgen = "=0.2.100""#));
        assert!(is_bindgen_dependency("wasm-bindgen.workspace = true"));
        assert!(is_bindgen_dependency(
            r#"wasm-bindgen = { version = "=0.2.100" }"#
        ));
        assert!(!is_bindgen_dependency(r#"wasm-bindgen-test = "0.3""#));
        assert!(!is_bindgen_dependency(r#"wasm-bindgen-futures = "0.4""#));
        assert!(!is_bindgen_dependency("# wasm-bindgen later"));
    }

    #[test]
    fn reads_the_pin() {
        assert_eq!(
            pinned_version(r#"wasm-bindgen = "=0.2.100""#).as_deref(),
            Some("0.2.100")
        );
        assert_eq!(
            pinned_version(r#"wasm-bindgen = { version = "=0.2.130", default-features = false }"#)
                .as_deref(),
            Some("0.2.130")
        );
        assert_eq!(pinned_version(r#"wasm-bindgen = "0.2""#), None);
    }

    #[test]
    fn reads_the_lock() {
        let lock = r#"
[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "wasm-bindgen-test"
version = "0.3.80"
"#;
        assert_eq!(
            locked_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(locked_version(lock, "serde"), None);
    }
}
