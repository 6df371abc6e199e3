//! Patchbay's project tasks (the cargo-xtask convention): `cargo xtask <task>`.
//!
//! Only std and anyhow: xtask is built on every fresh clone before anything else, so it must
//! compile fast and never be the thing that breaks.

mod bench;
mod cargo;
mod guests;
mod http;
mod postgres;
mod run;
mod s3;
mod services;
mod setup;
mod sys;
mod testing;
mod util;
mod wasm;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  setup             install what the build and tests need, when missing (rust targets, Debian
                    packages, PostgreSQL + pgvector, moto)
  test [-- ARGS]    setup, build the guest plugins, start throwaway PostgreSQL and S3, run
                    `cargo test --workspace ARGS` (and the materializer's browser tests once
                    they exist), stop everything
  run [-- ARGS]     setup, build the web UI's wasm, run `patchbay serve ARGS` (release)
  wasm              build the materializer for the browser into web/pkg
  bench <scenario>  run a benchmark and record it in bench/README.md (`bench` lists scenarios)
";

fn main() -> ExitCode {
    // Guards that stop services must run on Ctrl-C too; see `sys::catch_interrupts`.
    sys::catch_interrupts();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no task given");
    };
    // `cargo xtask test -- --nocapture`: the `--` only separates xtask's args from the
    // passed-through ones, so drop it.
    let rest = match rest.split_first() {
        Some((first, after)) if first == "--" => after,
        _ => rest,
    };
    match task.as_str() {
        "setup" => setup::run().map(drop),
        "test" => testing::run(rest),
        "run" => run::run(rest),
        "wasm" => wasm::run(),
        "bench" => bench::run(rest),
        // Hidden: start the test services, run a command with their env, stop them.
        "services" => services::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown task `{other}`")
        }
    }
}
