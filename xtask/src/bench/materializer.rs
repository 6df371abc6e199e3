//! `cargo xtask bench materializer`: the browser materializer against fast-json-patch in one
//! headless Chromium run (plus the same crate natively), then patch append throughput and SSE
//! delivery latency against the release server. Both halves are Node scripts
//! (`bench/materializer/run.mjs`, `bench/workflows/run.mjs`) that print JSON and write their
//! Markdown; this module builds what they need, runs them and assembles the README section.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::{Flags, report};
use crate::util::{self, TempDir};
use crate::{say, wasm};

pub fn run(flags: &Flags) -> Result<()> {
    let rounds: u32 = flags.get("rounds", 15)?;
    let subscribers: u32 = flags.get("subscribers", 1000)?;
    let workflows: u32 = flags.get("workflows", 50)?;
    let duration: u32 = flags.get("duration", 10)?;
    flags.reject_unknown()?;

    let root = util::repo_root();
    wasm::run()?;
    let release = super::build_release()?;
    npm_ci(&root.join("bench/materializer"))?;
    npm_ci(&root.join("tests/browser"))?;
    let load_average = report::load_average();

    let scratch = TempDir::new("patchbay-bench-materializer")?;
    let out_dir = root.join("bench/out/materializer");
    fs::create_dir_all(&out_dir)?;

    say!("materializer: wasm in Chromium vs fast-json-patch, and natively");
    let rounds_arg = rounds.to_string();
    let browser_md = node_script(
        &root,
        &out_dir,
        scratch.path(),
        "browser",
        &[
            "bench/materializer/run.mjs",
            "--rounds",
            &rounds_arg,
            "--native",
        ],
    )?;

    say!("workflows: patch append throughput and SSE delivery latency");
    let bin = release.join("patchbay");
    let (subscribers_arg, workflows_arg) = (subscribers.to_string(), workflows.to_string());
    let duration_arg = duration.to_string();
    let workflows_md = node_script(
        &root,
        &out_dir,
        scratch.path(),
        "workflows",
        &[
            "bench/workflows/run.mjs",
            "--bin",
            util::path_str(&bin)?,
            "--subscribers",
            &subscribers_arg,
            "--workflows",
            &workflows_arg,
            "--duration",
            &duration_arg,
        ],
    )?;

    let mut body = String::new();
    let _ = writeln!(
        body,
        "## materializer: browser, native, appends and live updates\n"
    );
    let _ = writeln!(
        body,
        "{}, on {} (load average {load_average} before the run).\n",
        report::today(),
        report::machine()
    );
    let _ = writeln!(
        body,
        "### wasm in a Web Worker vs fast-json-patch\n\n{}",
        browser_md
    );
    let _ = writeln!(
        body,
        "### patch appends and SSE delivery\n\n{}",
        workflows_md
    );
    let _ = writeln!(
        body,
        "Raw output: `bench/out/materializer/`. Reproduce: `cargo xtask bench materializer \
         --rounds {rounds} --subscribers {subscribers} --workflows {workflows} --duration \
         {duration}`"
    );
    println!("\n{body}");
    let readme = root.join("bench/README.md");
    report::write_section(&readme, "materializer", &body)?;
    say!("wrote the materializer section of {}", readme.display());
    Ok(())
}

/// Runs `node ARGS --out OUT_DIR/NAME.json --markdown SCRATCH/NAME.md` in the repository and
/// returns the Markdown it wrote.
fn node_script(
    root: &Path,
    out_dir: &Path,
    scratch: &Path,
    name: &str,
    args: &[&str],
) -> Result<String> {
    let markdown = scratch.join(format!("{name}.md"));
    util::run(
        Command::new("node")
            .args(args)
            .arg("--out")
            .arg(out_dir.join(format!("{name}.json")))
            .arg("--markdown")
            .arg(&markdown)
            .current_dir(root)
            .stdout(std::process::Stdio::null()),
    )?;
    Ok(fs::read_to_string(&markdown)?)
}

/// `npm ci` in `dir` unless its node_modules is already there.
fn npm_ci(dir: &Path) -> Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    util::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
    )
}
