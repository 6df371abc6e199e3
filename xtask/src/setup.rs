//! `cargo xtask setup`: installs what the build and the tests need when it is missing.
//!
//! Every step checks first and installs only what is absent, so running it on every
//! `test`/`run`/`bench` costs about a second once the machine is set up. It prints each thing it
//! installs, and on a machine where it cannot install (not root) it says what to install.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::postgres::{self, PgInstall};
use crate::{s3, say, sys, util};

/// Rust targets: wasm32-wasip2 for the plugins, wasm32-unknown-unknown for the materializer.
const RUST_TARGETS: &[&str] = &["wasm32-wasip2", "wasm32-unknown-unknown"];

/// Debian packages, each found by a program it installs.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("promtool", "prometheus"), // `promtool check metrics` on a scrape
    ("chromium", "chromium"),   // browser tests
    ("chromedriver", "chromium-driver"), // wasm-bindgen-test-runner drives chromium through it
    ("wrk", "wrk"),             // `bench http`
    ("hyperfine", "hyperfine"), // later benchmarks
    ("python3", "python3"),     // pip, for the PostgreSQL wheel and moto
];

/// What later steps need from setup.
pub struct Tools {
    pub pg: PgInstall,
}

pub fn run() -> Result<Tools> {
    say!("setup: checking what the build and tests need");
    rust_targets()?;
    debian_packages()?;
    let pg = postgres::ensure_installed()?;
    s3::ensure_installed()?;
    say!("setup: done");
    Ok(Tools { pg })
}

fn rust_targets() -> Result<()> {
    let Some(installed) =
        util::probe(Command::new("rustup").args(["target", "list", "--installed"]))
    else {
        // A toolchain without rustup (distro rustc) may still have the targets; the build
        // will say so if not.
        say!("warning: rustup not found; make sure these targets are installed: {RUST_TARGETS:?}");
        return Ok(());
    };
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        say!("rust targets: {} (present)", RUST_TARGETS.join(", "));
        return Ok(());
    }
    say!("installing rust targets: {}", missing.join(", "));
    util::run(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

fn debian_packages() -> Result<()> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(program, _)| util::which(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    // pip is a separate package on Debian; probe it only once python3 exists.
    if util::which("python3").is_some()
        && util::probe(Command::new("python3").args(["-m", "pip", "--version"])).is_none()
    {
        missing.push("python3-pip");
    }
    if missing.is_empty() {
        say!(
            "debian packages: present (promtool, chromium, chromedriver, wrk, hyperfine, python3, pip)"
        );
        return Ok(());
    }
    if !sys::is_root() {
        bail!(
            "missing Debian packages: {0}\n  install them with: sudo apt-get install -y {0}",
            missing.join(" ")
        );
    }
    say!("installing Debian packages: {}", missing.join(" "));
    wait_for_other_package_managers()?;
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        // Wait for the dpkg lock rather than failing when something else holds it.
        cmd.args(["-o", "DPkg::Lock::Timeout=900"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    util::run(&mut apt(&["update", "-q"]))?;
    util::run(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

/// An apt or dpkg started by someone else (an unattended upgrade, a developer's install in
/// another terminal) holds the locks; wait for it instead of failing halfway.
fn wait_for_other_package_managers() -> Result<()> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let busy = busy_package_managers();
        if busy.is_empty() {
            return Ok(());
        }
        if !announced {
            say!(
                "waiting for running package managers to finish: {}",
                busy.join(", ")
            );
            announced = true;
        }
        if start.elapsed() > Duration::from_secs(30 * 60) {
            bail!(
                "package managers still running after 30 minutes: {}",
                busy.join(", ")
            );
        }
        util::check_interrupted()?;
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn busy_package_managers() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let comm = fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            ["apt", "apt-get", "dpkg", "unattended-upgr"]
                .contains(&comm)
                .then(|| format!("{comm} (pid {})", e.file_name().to_string_lossy()))
        })
        .collect()
}
