//! `cargo xtask bench http`: what the metrics middleware costs on the cheapest endpoint.
//!
//! Two servers from the same release build run side by side, identical except for
//! `PATCHBAY_METRICS__ENABLED`; wrk loads `GET /health` on one, then the other, alternating for
//! several rounds so that drift (thermal, noisy neighbours) hits both sides alike. Medians of
//! the rounds are compared as ratios on/off.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::server::Server;
use super::wrk::{self, Figures, Load, PERCENTILES, Wrk};
use super::{Flags, median, report};
use crate::util::{self, TempDir};
use crate::{http, say, setup};

struct Side {
    label: &'static str,
    metrics: &'static str,
}

const SIDES: [Side; 2] = [
    Side {
        label: "metrics on",
        metrics: "true",
    },
    Side {
        label: "metrics off",
        metrics: "false",
    },
];

pub fn run(flags: &Flags) -> Result<()> {
    let rounds: usize = flags.get("rounds", 3)?;
    let load = Load {
        duration: Duration::from_secs(flags.get("duration", 10)?),
        connections: flags.get("connections", 64)?,
        threads: flags.get("threads", 1)?,
    };
    let warmup = Duration::from_secs(flags.get("warmup", 3)?);
    // A prebuilt server (e.g. another revision's) instead of building this tree's.
    let prebuilt: String = flags.get("binary", String::new())?;
    flags.reject_unknown()?;
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        load.duration.as_secs() >= 1,
        "--duration must be at least 1 (seconds)"
    );
    let reproduce = format!(
        "cargo xtask bench http --duration {} --rounds {rounds} --connections {} --threads {}",
        load.duration.as_secs(),
        load.connections,
        load.threads
    );

    setup::run()?;
    let binary = if prebuilt.is_empty() {
        super::build_release()?.join("patchbay")
    } else {
        PathBuf::from(prebuilt)
    };

    // Before our own servers and wrk add to it.
    let load_average = report::load_average();
    let servers = SIDES
        .iter()
        .map(|side| {
            Server::spawn(
                &binary,
                side.label,
                &[("PATCHBAY_METRICS__ENABLED", side.metrics)],
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for (side, server) in SIDES.iter().zip(&servers) {
        sanity_check(side, server)?;
    }

    let scratch = TempDir::new("patchbay-bench-wrk")?;
    let wrk = Wrk::new(scratch.path())?;
    let out_dir = util::repo_root().join("bench/out/http");
    fs::create_dir_all(&out_dir)?;

    say!("warming up each server for {}s", warmup.as_secs());
    for server in &servers {
        wrk.run(
            &health(server),
            Load {
                duration: warmup,
                ..load
            },
            None,
        )?;
    }

    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); SIDES.len()];
    for round in 1..=rounds {
        for (i, (side, server)) in SIDES.iter().zip(&servers).enumerate() {
            util::check_interrupted()?;
            let log = out_dir.join(format!("round{round}-{}.txt", side.label.replace(' ', "-")));
            let figures = wrk.run(&health(server), load, Some(&log))?;
            say!(
                "round {round}/{rounds} {:<11}: {:>10.0} req/s, p50 {}, p99 {}, errors {}",
                side.label,
                figures.requests_per_sec,
                wrk::format_latency(figures.latency[0]),
                wrk::format_latency(figures.latency[PERCENTILES.len() - 1]),
                figures.errors
            );
            results[i].push(figures);
        }
    }
    drop(servers);

    let body = render(&results, load, rounds, &load_average, &reproduce);
    println!("\n{body}");
    let readme = util::repo_root().join("bench/README.md");
    report::write_section(&readme, "http", &body)?;
    say!("wrote the http section of {}", readme.display());
    Ok(())
}

fn health(server: &Server) -> String {
    format!("{}/health", server.url())
}

/// `/health` must answer 200 on both; `/metrics` tells whether the switch took effect.
fn sanity_check(side: &Side, server: &Server) -> Result<()> {
    let addr = server.addr()?;
    let health = http::request(addr, "GET", "/health")?;
    let metrics = http::request(addr, "GET", "/metrics")?;
    say!(
        "{}: GET /health -> {health}, GET /metrics -> {metrics}",
        side.label
    );
    anyhow::ensure!(health == 200, "{}: /health answered {health}", side.label);
    if (side.metrics == "true") != (metrics == 200) {
        say!(
            "warning: {}: /metrics answered {metrics}; is PATCHBAY_METRICS__ENABLED honoured?",
            side.label
        );
    }
    Ok(())
}

/// The README section: medians per side and the on/off ratios.
fn render(
    results: &[Vec<Figures>],
    load: Load,
    rounds: usize,
    load_average: &str,
    reproduce: &str,
) -> String {
    let rps: Vec<f64> = results
        .iter()
        .map(|r| median(&r.iter().map(|f| f.requests_per_sec).collect::<Vec<_>>()))
        .collect();
    let latency = |side: usize, p: usize| {
        median(
            &results[side]
                .iter()
                .map(|f| f.latency[p])
                .collect::<Vec<_>>(),
        )
    };
    let p95 = PERCENTILES
        .iter()
        .position(|&p| p == 95.0)
        .expect("p95 is measured");
    let errors: Vec<u64> = results
        .iter()
        .map(|r| r.iter().map(|f| f.errors).sum())
        .collect();

    let mut s = String::new();
    let _ = writeln!(s, "## http: `GET /health`, metrics on vs off\n");
    let _ = writeln!(
        s,
        "{}, on {} (load average {load_average} before the run). `{}` against each of two \
         servers from the same release build, alternating on/off for {rounds} rounds after a \
         warm-up; medians of the rounds. Only `PATCHBAY_METRICS__ENABLED` differs.\n",
        report::today(),
        report::machine(),
        load.describe()
    );
    let _ = writeln!(s, "| | metrics on | metrics off | on/off |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| requests/s | {:.0} | {:.0} | {} |",
        rps[0],
        rps[1],
        ratio(rps[0], rps[1])
    );
    for (p, percentile) in PERCENTILES.iter().enumerate() {
        let (on, off) = (latency(0, p), latency(1, p));
        let _ = writeln!(
            s,
            "| p{percentile} latency | {} | {} | {} |",
            wrk::format_latency(on),
            wrk::format_latency(off),
            ratio(on, off)
        );
    }
    let _ = writeln!(
        s,
        "| errors (all rounds) | {} | {} | |",
        errors[0], errors[1]
    );
    let _ = writeln!(
        s,
        "\nThroughput overhead: {:.2}%. p95 latency overhead: {:.2}%.\n",
        (1.0 - rps[0] / rps[1]) * 100.0,
        (latency(0, p95) / latency(1, p95) - 1.0) * 100.0
    );
    let _ = writeln!(s, "Reproduce: `{reproduce}`");
    s
}

fn ratio(on: f64, off: f64) -> String {
    format!("{:.3} ({:+.2}%)", on / off, (on / off - 1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rps: f64, ms: f64) -> Figures {
        Figures {
            requests_per_sec: rps,
            latency: PERCENTILES.iter().map(|_| ms / 1e3).collect(),
            errors: 0,
        }
    }

    #[test]
    fn renders_medians_and_ratios() {
        let results = vec![
            vec![
                figures(990.0, 1.01),
                figures(980.0, 1.02),
                figures(1000.0, 1.0),
            ],
            vec![
                figures(1000.0, 1.0),
                figures(1000.0, 1.0),
                figures(1000.0, 1.0),
            ],
        ];
        let load = Load {
            threads: 1,
            connections: 64,
            duration: Duration::from_secs(10),
        };
        let text = render(
            &results,
            load,
            3,
            "0.10 0.20 0.30",
            "cargo xtask bench http",
        );
        assert!(
            text.contains("| requests/s | 990 | 1000 | 0.990 (-1.00%) |"),
            "{text}"
        );
        assert!(
            text.contains("| p95 latency | 1.01ms | 1.00ms | 1.010 (+1.00%) |"),
            "{text}"
        );
        assert!(text.contains("Throughput overhead: 1.00%"), "{text}");
        assert!(text.contains("wrk -t1 -c64 -d10s --latency"), "{text}");
        assert!(text.contains("load average 0.10 0.20 0.30"), "{text}");
    }
}
