//! `cargo xtask test`: the project's one test command (README and `.ci/run` call exactly this).
//!
//! Sets the machine up, builds the guest plugins (the black-box tests load them from
//! `PATCHBAY_TEST_PLUGINS_DIR`), starts throwaway PostgreSQL and S3 services, runs the whole
//! workspace's tests against them, runs the materializer's browser tests once they exist, and
//! always stops the services, whether the tests pass, fail or are interrupted.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::services::Services;
use crate::{cargo, guests, say, setup, util, wasm};

pub fn run(args: &[String]) -> Result<()> {
    let tools = setup::run()?;
    for program in ["promtool", "chromium"] {
        if util::which(program).is_none() {
            bail!("{program} is not on PATH after setup");
        }
    }
    util::check_interrupted()?;
    let plugins_dir = guests::build()?;
    util::check_interrupted()?;

    let services = Services::start(&tools.pg)?;
    let mut failures = Vec::new();

    let mut cmd = cargo::cargo()?;
    // --no-fail-fast: one run reports every failing test binary, not just the first.
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .envs(services.env())
        .env("PATCHBAY_TEST_PLUGINS_DIR", &plugins_dir);
    if !run_tests(&mut cmd)? {
        failures.push("cargo test --workspace");
    }

    if has_browser_tests(&util::repo_root()) {
        if !browser_tests()? {
            failures.push("browser tests (wasm-bindgen-test in chromium)");
        }
    } else {
        say!("no wasm_bindgen_test in materializer-wasm/tests/ yet: skipping browser tests");
    }

    if !ui_browser_tests()? {
        failures.push("UI browser tests (playwright-core in chromium)");
    }

    drop(services);
    if failures.is_empty() {
        say!("all tests passed");
        Ok(())
    } else {
        bail!("failed: {}", failures.join(", "))
    }
}

/// BROWSER TESTS HOOK: the materializer's `wasm_bindgen_test`s, run in headless Chromium by
/// wasm-bindgen-test-runner (as the cargo runner for wasm32-unknown-unknown) through
/// chromedriver. Called only once `materializer-wasm/tests/` has such tests.
pub fn browser_tests() -> Result<bool> {
    let Some(version) = wasm::bindgen_version(&util::repo_root())? else {
        bail!("materializer-wasm has wasm_bindgen_test tests but no wasm-bindgen dependency");
    };
    wasm::ensure_cli(&version)?;
    let mut cmd = cargo::cargo()?;
    cmd.args([
        "test",
        "-p",
        wasm::PACKAGE,
        "--target",
        "wasm32-unknown-unknown",
    ])
    .env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
        "wasm-bindgen-test-runner",
    )
    .env("CHROMEDRIVER", "/usr/bin/chromedriver")
    // The runner is found on PATH; `cargo install` put it in cargo's bin dir.
    .env("PATH", cargo::path_with_install_dir()?);
    run_tests(&mut cmd)
}

/// The web UI end to end: playwright-core driving Debian's chromium, run by node's test
/// runner against the debug binary `cargo test` just built (see tests/browser/README.md).
pub fn ui_browser_tests() -> Result<bool> {
    let root = util::repo_root();
    wasm::run()?;
    util::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(root.join("tests/browser")),
    )?;
    let mut cmd = Command::new("node");
    // One file at a time: each starts its own server and one a browser, on 2 cores.
    cmd.args(["--test", "--test-concurrency=1", "tests/browser/"])
        .current_dir(&root)
        .env("PATCHBAY_BIN", cargo::target_dir()?.join("debug/patchbay"));
    run_tests(&mut cmd)
}

/// Whether any file in `materializer-wasm/tests/` mentions `wasm_bindgen_test`.
fn has_browser_tests(root: &Path) -> bool {
    let Ok(entries) = fs::read_dir(root.join("materializer-wasm").join("tests")) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| fs::read_to_string(e.path()).is_ok_and(|text| text.contains("wasm_bindgen_test")))
}

/// Runs a test command; true if it passed. An interruption stops everything after it.
fn run_tests(cmd: &mut Command) -> Result<bool> {
    let status = util::status_relaying_signals(cmd)?;
    util::check_interrupted()?;
    Ok(status.success())
}
