//! `cargo xtask bench plugins`: the plugin host against `wasmtime serve` and a native handler,
//! then under overload.
//!
//! 1. The same `hello` component runs in Patchbay (loaded from `PATCHBAY_PLUGINS_DIR`) and in
//!    `wasmtime serve` (wasmtime-cli built from crates.io), beside `bench/native-hello`, the
//!    same handler in plain actix-web. wrk loads `GET /hello/world` on each in turn for several
//!    rounds, so drift hits all alike; medians of the rounds are compared as ratios.
//! 2. `slow` (a narrow pool and a short queue) is driven at ten times its instance count by
//!    closed-loop connections (`load.rs`): p50/p99 of the accepted requests, responses by status
//!    and the server's memory. Once as shipped (`shed`), once switched to `block`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::load::{self, Tally};
use super::server::Server;
use super::wrk::{self, Figures, Load, PERCENTILES, Wrk};
use super::{Flags, median, report};
use crate::util::{self, TempDir};
use crate::{guests, say, setup};

/// The `wasmtime serve` we compare with: built from crates.io, never downloaded prebuilt.
const WASMTIME_VERSION: &str = "48.0.8";
const HELLO_PATH: &str = "/hello/world";
const HELLO_BODY: &[u8] = b"Hello, world!";
/// Above this 1-minute load average the figures say more about the neighbours than about us.
const BUSY_LOAD: f64 = 3.0;
/// Indices into `PERCENTILES`.
const P50: usize = 0;
const P99: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Patchbay,
    Wasmtime,
    Native,
}

impl Side {
    /// The order of the table; rounds run in the same order.
    const ALL: [Side; 3] = [Side::Patchbay, Side::Wasmtime, Side::Native];

    fn label(self) -> &'static str {
        match self {
            Side::Patchbay => "Patchbay",
            Side::Wasmtime => "wasmtime serve",
            Side::Native => "native actix-web",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Side::Patchbay => "patchbay",
            Side::Wasmtime => "wasmtime",
            Side::Native => "native",
        }
    }
}

struct Overload {
    backpressure: String,
    limits: String,
    connections: usize,
    tally: Tally,
    memory_before: Memory,
    memory_after: Memory,
    /// VmHWM was reset just before the load, so it is the peak during it.
    peak_of_run: bool,
}

pub fn run(flags: &Flags) -> Result<()> {
    let rounds: usize = flags.get("rounds", 3)?;
    let load = Load {
        duration: Duration::from_secs(flags.get("duration", 10)?),
        connections: flags.get("connections", 64)?,
        threads: flags.get("threads", 1)?,
    };
    let warmup = Duration::from_secs(flags.get("warmup", 3)?);
    let overload = load::Load {
        connections: flags.get("overload-connections", 40)?,
        duration: Duration::from_secs(flags.get("overload-duration", 10)?),
    };
    let slow_ms: u64 = flags.get("slow-ms", 50)?;
    let block: bool = flags.get("block", true)?;
    // 0: the server's defaults (one per CPU for each).
    let http_workers: u32 = flags.get("http-workers", 0)?;
    let guest_threads: u32 = flags.get("guest-threads", 0)?;
    flags.reject_unknown()?;
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        load.duration.as_secs() >= 1 && overload.duration.as_secs() >= 1,
        "--duration and --overload-duration must be at least 1 (seconds)"
    );
    anyhow::ensure!(
        overload.connections >= 1,
        "--overload-connections must be at least 1"
    );
    let reproduce = format!(
        "cargo xtask bench plugins --duration {} --rounds {rounds} --connections {} --threads {} \
         --overload-connections {} --overload-duration {} --slow-ms {slow_ms} --block {block} --http-workers {http_workers} \
         --guest-threads {guest_threads}",
        load.duration.as_secs(),
        load.connections,
        load.threads,
        overload.connections,
        overload.duration.as_secs(),
    );

    setup::run()?;
    let release = super::build_release()?;
    let dist = guests::build()?;
    let wasmtime = ensure_wasmtime()?;
    util::check_interrupted()?;
    let hello_manifest = fs::read_to_string(dist.join("hello").join("plugin.toml"))?;
    let hello_field =
        |key: &str| manifest_value(&hello_manifest, key).unwrap_or_else(|| "?".to_string());
    let hello_limits = format!(
        "{} instances, queue {}",
        hello_field("max_instances"),
        hello_field("queue")
    );

    // Before our own servers and load add to it.
    let load_average = report::load_average();
    let (http_workers, guest_threads) = (http_workers.to_string(), guest_threads.to_string());
    let patchbay_env = [
        ("PATCHBAY_PLUGINS_DIR", util::path_str(&dist)?),
        ("PATCHBAY_METRICS__ENABLED", "true"),
        ("PATCHBAY_HTTP__WORKERS", &http_workers),
        ("PATCHBAY_PLUGINS__GUEST_THREADS", &guest_threads),
    ];
    let per_cpu = |n: &str| {
        if n == "0" {
            "one per CPU".to_string()
        } else {
            n.to_string()
        }
    };
    let patchbay_threads = format!(
        "HTTP workers: {}, guest threads: {}",
        per_cpu(&http_workers),
        per_cpu(&guest_threads)
    );
    let mut servers = Vec::new();
    for side in Side::ALL {
        let server = match side {
            Side::Patchbay => Server::spawn(&release.join("patchbay"), "patchbay", &patchbay_env)?,
            Side::Wasmtime => {
                let mut cmd = Command::new(&wasmtime);
                // `-S cli`: components from recent rustc import wasi:cli beyond the proxy world.
                cmd.args(["serve", "-S", "cli", "--addr", "127.0.0.1:0"])
                    .arg(dist.join("hello").join("hello.wasm"));
                Server::command(cmd, "wasmtime serve")?
            }
            Side::Native => {
                let mut cmd = Command::new(release.join("native-hello"));
                cmd.args(["--addr", "127.0.0.1:0"]);
                Server::command(cmd, "native-hello")?
            }
        };
        wait_for(&server, side.label(), HELLO_PATH, |r| {
            r.status == 200 && r.body == HELLO_BODY
        })?;
        servers.push(server);
    }

    let scratch = TempDir::new("patchbay-bench-wrk")?;
    let wrk = Wrk::new(scratch.path())?;
    let out_dir = util::repo_root().join("bench/out/plugins");
    fs::create_dir_all(&out_dir)?;
    let url = |server: &Server| format!("{}{HELLO_PATH}", server.url());

    say!("warming up each server for {}s", warmup.as_secs());
    for server in &servers {
        wrk.run(
            &url(server),
            Load {
                duration: warmup,
                ..load
            },
            None,
        )?;
    }
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); Side::ALL.len()];
    for round in 1..=rounds {
        for (i, (side, server)) in Side::ALL.iter().zip(&servers).enumerate() {
            util::check_interrupted()?;
            let log = out_dir.join(format!("round{round}-{}.txt", side.file_name()));
            let figures = wrk.run(&url(server), load, Some(&log))?;
            say!(
                "round {round}/{rounds} {:<16}: {:>9.0} req/s, p50 {}, p99 {}, errors {}",
                side.label(),
                figures.requests_per_sec,
                wrk::format_latency(figures.latency[P50]),
                wrk::format_latency(figures.latency[P99]),
                figures.errors
            );
            results[i].push(figures);
        }
    }

    // The overload runs against Patchbay alone.
    let patchbay = servers.swap_remove(0);
    drop(servers);
    let slow_path = format!("/slow?ms={slow_ms}");
    let mut overloads = vec![run_overload(&patchbay, &dist, &slow_path, overload)?];
    drop(patchbay);
    if block {
        // A copy of `slow` switched to `block`, in a plugins dir of its own.
        let plugins = TempDir::new("patchbay-bench-plugins")?;
        let slow = plugins.path().join("slow");
        util::copy_dir_all(&dist.join("slow"), &slow)?;
        let manifest = slow.join("plugin.toml");
        fs::write(
            &manifest,
            with_backpressure(&fs::read_to_string(&manifest)?, "block"),
        )?;
        let env = [("PATCHBAY_PLUGINS_DIR", util::path_str(plugins.path())?)];
        let server = Server::spawn(&release.join("patchbay"), "patchbay (slow: block)", &env)?;
        overloads.push(run_overload(&server, plugins.path(), &slow_path, overload)?);
    }

    let body = render(&Report {
        results: &results,
        hello_limits: &hello_limits,
        patchbay_threads: &patchbay_threads,
        load,
        rounds,
        warmup,
        overloads: &overloads,
        slow_ms,
        overload_duration: overload.duration,
        load_average: &load_average,
        reproduce: &reproduce,
    });
    println!("\n{body}");
    let readme = util::repo_root().join("bench/README.md");
    report::write_section(&readme, "plugins", &body)?;
    say!("wrote the plugins section of {}", readme.display());
    Ok(())
}

/// wasmtime-cli `WASMTIME_VERSION` in `~/.cache/patchbay/tools`, installed from crates.io with
/// `cargo install` when missing (a long build).
/// Features of the wasmtime-cli build: `serve` plus the engine features a stock build serves with.
const WASMTIME_FEATURES: &str = "serve,run,cranelift,pooling-allocator,parallel-compilation,cache,wat,logging,component-model-async";

fn ensure_wasmtime() -> Result<PathBuf> {
    let root = util::cache_dir()?.join("tools");
    let bin = root.join("bin").join("wasmtime");
    // `wasmtime --version` prints `wasmtime 48.0.8 (<commit> <date>)`.
    let installed = util::probe(Command::new(&bin).arg("--version"));
    if installed
        .as_deref()
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(WASMTIME_VERSION))
    {
        say!("wasmtime-cli: {WASMTIME_VERSION} (present)");
        return Ok(bin);
    }
    say!(
        "installing wasmtime-cli {WASMTIME_VERSION} from crates.io into {} (found: {}); this \
         compiles all of wasmtime and takes a long time (tens of minutes on a small machine)",
        root.display(),
        installed.as_deref().unwrap_or("none")
    );
    util::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "wasmtime-cli", "--version", WASMTIME_VERSION])
            // Only what `wasmtime serve` needs (stock defaults otherwise): the full default
            // feature set (wast, winch, gc, wasi-nn, ...) roughly doubles the build.
            .args(["--no-default-features", "--features", WASMTIME_FEATURES])
            .args(["--locked", "--root"])
            .arg(&root)
            // A throwaway target dir of its own, not the workspace's release dir.
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    Ok(bin)
}

/// Polls `GET path` until `ok` accepts the response: servers may bind before their plugins are
/// loaded.
fn wait_for(
    server: &Server,
    label: &str,
    path: &str,
    ok: impl Fn(&load::Response) -> bool,
) -> Result<()> {
    let addr = server.addr()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let outcome = load::get(addr, path);
        match &outcome {
            Ok(response) if ok(response) => {
                say!(
                    "{label}: GET {path} -> {} {:?}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
                return Ok(());
            }
            _ if Instant::now() > deadline => match outcome {
                Ok(r) => bail!(
                    "{label}: GET {path} still answers {} {:?} after 120 s",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
                Err(e) => bail!("{label}: GET {path} still fails after 120 s: {e:#}"),
            },
            _ => {}
        }
        util::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_overload(
    server: &Server,
    plugins_dir: &Path,
    path: &str,
    overload: load::Load,
) -> Result<Overload> {
    let manifest = fs::read_to_string(plugins_dir.join("slow").join("plugin.toml"))?;
    let field = |key: &str| manifest_value(&manifest, key).unwrap_or_else(|| "?".to_string());
    let backpressure = field("backpressure");
    let limits = format!(
        "{} instances, queue {}, `{backpressure}`, block_timeout_ms {}, timeout_ms {}",
        field("max_instances"),
        field("queue"),
        field("block_timeout_ms"),
        field("timeout_ms")
    );
    wait_for(server, "slow", "/slow?ms=1", |r| r.status == 200)?;
    let pid = server.pid();
    let memory_before = Memory::read(pid)?;
    let peak_of_run = Memory::reset_peak(pid);
    say!(
        "overload ({backpressure}): {} connections on GET {path} for {}s",
        overload.connections,
        overload.duration.as_secs()
    );
    let tally = load::run(server.addr()?, path, overload)?;
    let memory_after = Memory::read(pid)?;
    say!(
        "overload ({backpressure}): 200 {}, 429 {}, 503 {}, other {}, errors {}; accepted p50 {}, \
         p99 {}; RSS {} -> {} (peak {})",
        tally.count(200),
        tally.count(429),
        tally.count(503),
        tally.others(&[200, 429, 503]),
        tally.errors,
        format_percentile(&tally, 50.0),
        format_percentile(&tally, 99.0),
        format_kib(memory_before.rss_kib),
        format_kib(memory_after.rss_kib),
        format_kib(memory_after.peak_kib)
    );
    Ok(Overload {
        backpressure,
        limits,
        connections: overload.connections,
        tally,
        memory_before,
        memory_after,
        peak_of_run,
    })
}

/// A process's resident memory from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Memory {
    /// VmRSS.
    rss_kib: u64,
    /// VmHWM: the peak RSS since start or since the last `reset_peak`.
    peak_kib: u64,
}

impl Memory {
    fn read(pid: u32) -> Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Memory::parse(&status).with_context(|| format!("no VmRSS/VmHWM in {path}"))
    }

    fn parse(status: &str) -> Option<Memory> {
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            line.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(Memory {
            rss_kib: kib("VmRSS")?,
            peak_kib: kib("VmHWM")?,
        })
    }

    /// Resets VmHWM to the current RSS (`5` to `/proc/<pid>/clear_refs`, Linux 4.0+); false if
    /// that is not allowed here.
    fn reset_peak(pid: u32) -> bool {
        fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }
}

/// The value of `key = value` in a flat TOML manifest, unquoted.
fn manifest_value(manifest: &str, key: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        let v = v.split('#').next()?.trim().trim_matches('"');
        (k.trim() == key).then(|| v.to_string())
    })
}

/// The manifest with its `backpressure` set to `mode`.
fn with_backpressure(manifest: &str, mode: &str) -> String {
    manifest
        .lines()
        .map(|line| {
            if line
                .split('=')
                .next()
                .is_some_and(|k| k.trim() == "backpressure")
            {
                format!("backpressure = \"{mode}\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn format_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn format_percentile(tally: &Tally, p: f64) -> String {
    tally
        .accepted_percentile(p)
        .map_or_else(|| "-".to_string(), |d| wrk::format_latency(d.as_secs_f64()))
}

struct Report<'a> {
    results: &'a [Vec<Figures>],
    hello_limits: &'a str,
    patchbay_threads: &'a str,
    load: Load,
    rounds: usize,
    warmup: Duration,
    overloads: &'a [Overload],
    slow_ms: u64,
    overload_duration: Duration,
    load_average: &'a str,
    reproduce: &'a str,
}

/// The README section.
fn render(r: &Report) -> String {
    let column = |side: Side| Side::ALL.iter().position(|&s| s == side).expect("listed");
    let rps = |side: Side| {
        let figures = &r.results[column(side)];
        median(
            &figures
                .iter()
                .map(|f| f.requests_per_sec)
                .collect::<Vec<_>>(),
        )
    };
    let latency = |side: Side, p: usize| {
        let figures = &r.results[column(side)];
        median(&figures.iter().map(|f| f.latency[p]).collect::<Vec<_>>())
    };
    let errors = |side: Side| -> u64 { r.results[column(side)].iter().map(|f| f.errors).sum() };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "## plugins: `GET {HELLO_PATH}` in Patchbay, `wasmtime serve` and native actix-web\n"
    );
    let busy = r
        .load_average
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > BUSY_LOAD);
    if busy {
        let _ = writeln!(
            s,
            "**The machine was busy (1-minute load average above {BUSY_LOAD} before the run): \
             other work competed for the CPUs, so absolute figures are low and noisy; the \
             ratios, from interleaved rounds, are the part to read.**\n"
        );
    }
    let _ = writeln!(
        s,
        "{}, on {} (load average {} before the run). `{}` against each of three servers in \
         turn for {} rounds after a {}s warm-up each; medians of the rounds. Patchbay (release, \
         metrics on, {}, other settings default) loads `plugins/hello` from `PATCHBAY_PLUGINS_DIR` \
         with its manifest's limits ({}); `wasmtime serve -S cli` \
         (wasmtime-cli {WASMTIME_VERSION} from crates.io, defaults) serves the same `.wasm`; \
         `bench/native-hello` is the same handler in plain actix-web 4 with one worker per CPU, \
         like Patchbay.\n",
        report::today(),
        report::machine(),
        r.load_average,
        r.load.describe(),
        r.rounds,
        r.warmup.as_secs(),
        r.patchbay_threads,
        r.hello_limits
    );
    let _ = writeln!(s, "| | Patchbay | wasmtime serve | native actix-web |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let row = |s: &mut String, name: &str, f: &dyn Fn(Side) -> String| {
        let cells: Vec<String> = Side::ALL.iter().map(|&side| f(side)).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    row(&mut s, "requests/s", &|side| format!("{:.0}", rps(side)));
    for (p, percentile) in PERCENTILES.iter().enumerate() {
        row(&mut s, &format!("p{percentile} latency"), &|side| {
            wrk::format_latency(latency(side, p))
        });
    }
    row(&mut s, "errors (all rounds)", &|side| {
        errors(side).to_string()
    });

    let _ = writeln!(s, "\n| ratio | value | target | |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let mut target = |name: &str, value: f64, at_least: bool, goal: f64| {
        let met = if at_least {
            value >= goal
        } else {
            value <= goal
        };
        let _ = writeln!(
            s,
            "| {name} | {value:.2}x | {} {goal:.1}x | {} |",
            if at_least { "≥" } else { "≤" },
            if met { "met" } else { "**missed**" }
        );
    };
    target(
        "throughput Patchbay / wasmtime serve",
        rps(Side::Patchbay) / rps(Side::Wasmtime),
        true,
        1.0,
    );
    target(
        "p99 latency Patchbay / wasmtime serve",
        latency(Side::Patchbay, P99) / latency(Side::Wasmtime, P99),
        false,
        1.0,
    );
    target(
        "throughput Patchbay / native",
        rps(Side::Patchbay) / rps(Side::Native),
        true,
        0.5,
    );

    let _ = writeln!(
        s,
        "\n### Overload: `GET /slow?ms={}` at 10x capacity\n",
        r.slow_ms
    );
    let _ = writeln!(
        s,
        "`slow` sleeps {} ms per request. Closed-loop keep-alive connections (xtask's load \
         generator, `xtask/src/bench/load.rs`) send each next request as soon as the previous \
         one is answered, ignoring Retry-After, for {}s; the \
         ceiling for accepted requests is instances / {} ms. Latency is that of accepted (200) \
         requests only. Memory is the server's VmRSS before and after the load and its VmHWM \
         (peak RSS) during it.\n",
        r.slow_ms,
        r.overload_duration.as_secs(),
        r.slow_ms
    );
    let _ = writeln!(
        s,
        "| backpressure | limits | connections | accepted/s | p50 accepted | p99 accepted | 200 \
         | 429 | 503 | other | errors | RSS before | peak RSS | RSS after |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for o in r.overloads {
        let t = &o.tally;
        let secs = t.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
            o.backpressure,
            o.limits,
            o.connections,
            t.count(200) as f64 / secs,
            format_percentile(t, 50.0),
            format_percentile(t, 99.0),
            t.count(200),
            t.count(429),
            t.count(503),
            t.others(&[200, 429, 503]),
            t.errors,
            format_kib(o.memory_before.rss_kib),
            format_kib(o.memory_after.peak_kib),
            if o.peak_of_run { "" } else { " (since start)" },
            format_kib(o.memory_after.rss_kib),
        );
    }
    let _ = writeln!(
        s,
        "\nRaw wrk output: `bench/out/plugins/`. Reproduce: `{}`",
        r.reproduce
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: &str = r#"# Sleeps ?ms=N
name = "slow"
component = "slow.wasm"

[limits]
max_instances = 4
queue = 8
backpressure = "shed"   # 429 at once
"#;

    #[test]
    fn reads_and_rewrites_the_manifest() {
        assert_eq!(manifest_value(SLOW, "max_instances").as_deref(), Some("4"));
        assert_eq!(
            manifest_value(SLOW, "backpressure").as_deref(),
            Some("shed")
        );
        assert_eq!(manifest_value(SLOW, "memory_mb"), None);
        let block = with_backpressure(SLOW, "block");
        assert_eq!(
            manifest_value(&block, "backpressure").as_deref(),
            Some("block")
        );
        assert_eq!(manifest_value(&block, "queue").as_deref(), Some("8"));
        assert_eq!(block.lines().count(), SLOW.lines().count());
    }

    #[test]
    fn reads_memory_from_proc_status() {
        let status =
            "Name:\tpatchbay\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss_kib: 40960,
                peak_kib: 81234
            })
        );
        assert_eq!(Memory::parse("Name:\tx\n"), None);
        let own = Memory::read(std::process::id()).unwrap();
        assert!(own.rss_kib > 0 && own.peak_kib >= own.rss_kib);
        assert_eq!(format_kib(40960), "40.0 MiB");
    }

    fn figures(rps: f64, ms: f64) -> Figures {
        Figures {
            requests_per_sec: rps,
            latency: PERCENTILES.iter().map(|_| ms / 1e3).collect(),
            errors: 0,
        }
    }

    #[test]
    fn renders_ratios_against_the_targets() {
        let results = vec![
            vec![figures(12_000.0, 5.0), figures(11_000.0, 6.0)],
            vec![figures(10_000.0, 5.5), figures(10_000.0, 5.5)],
            vec![figures(30_000.0, 2.0), figures(30_000.0, 2.0)],
        ];
        let mut tally = Tally::default();
        tally.statuses.insert(200, 800);
        tally.statuses.insert(429, 90_000);
        tally.accepted = vec![Duration::from_millis(120); 800];
        tally.elapsed = Duration::from_secs(10);
        let memory = Memory {
            rss_kib: 51_200,
            peak_kib: 61_440,
        };
        let overloads = [Overload {
            backpressure: "shed".into(),
            limits: "4 instances, queue 8".into(),
            connections: 40,
            tally,
            memory_before: memory,
            memory_after: memory,
            peak_of_run: true,
        }];
        let text = render(&Report {
            results: &results,
            hello_limits: "16 instances, queue 256",
            patchbay_threads: "HTTP workers: 1, guest threads: 1",
            load: Load {
                threads: 1,
                connections: 64,
                duration: Duration::from_secs(10),
            },
            rounds: 2,
            warmup: Duration::from_secs(3),
            overloads: &overloads,
            slow_ms: 50,
            overload_duration: Duration::from_secs(10),
            load_average: "4.50 2.00 1.00",
            reproduce: "cargo xtask bench plugins",
        });
        assert!(
            text.contains("| requests/s | 11500 | 10000 | 30000 |"),
            "{text}"
        );
        assert!(
            text.contains("| p99 latency | 5.50ms | 5.50ms | 2.00ms |"),
            "{text}"
        );
        assert!(
            text.contains("| throughput Patchbay / wasmtime serve | 1.15x | ≥ 1.0x | met |"),
            "{text}"
        );
        assert!(
            text.contains("| p99 latency Patchbay / wasmtime serve | 1.00x | ≤ 1.0x | met |"),
            "{text}"
        );
        assert!(
            text.contains("| throughput Patchbay / native | 0.38x | ≥ 0.5x | **missed** |"),
            "{text}"
        );
        assert!(
            text.contains("| 40 | 80.0 | 120.00ms | 120.00ms | 800 | 90000 | 0 | 0 | 0 | 50.0 MiB | 60.0 MiB | 50.0 MiB |"),
            "{text}"
        );
        assert!(text.contains("machine was busy"), "{text}");
        assert!(text.contains("limits (16 instances, queue 256)"), "{text}");
        assert!(
            text.ends_with("Reproduce: `cargo xtask bench plugins`\n"),
            "{text}"
        );
    }
}
