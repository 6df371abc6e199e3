//! Running wrk and reading its figures.
//!
//! wrk's own `--latency` table has no p95, so a small Lua `done` hook prints the request count,
//! the duration, the errors and any percentiles we want in microseconds, one `key value` per
//! line; those lines are what we parse. wrk's human-readable output is kept beside them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{say, util};

/// Percentiles reported for every run.
pub const PERCENTILES: &[f64] = &[50.0, 90.0, 95.0, 99.0];

const SCRIPT: &str = r#"-- Written by cargo xtask bench: prints machine-readable figures after wrk's summary.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("xtask requests %d\n", summary.requests))
  io.write(string.format("xtask duration_us %d\n", summary.duration))
  io.write(string.format("xtask non_2xx %d\n", e.status))
  io.write(string.format("xtask socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
  for _, p in ipairs({@PERCENTILES@}) do
    io.write(string.format("xtask p%s_us %d\n", p, latency:percentile(p)))
  end
end
"#;

#[derive(Clone, Copy)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

impl Load {
    /// The wrk command line, for reports.
    pub fn describe(&self) -> String {
        format!(
            "wrk -t{} -c{} -d{}s --latency",
            self.threads,
            self.connections,
            self.duration.as_secs()
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub requests_per_sec: f64,
    /// Latency at each of `PERCENTILES`, in seconds.
    pub latency: Vec<f64>,
    pub errors: u64,
}

/// Runs wrk with our Lua hook; `script_dir` holds the hook file.
pub struct Wrk {
    script: PathBuf,
}

impl Wrk {
    pub fn new(script_dir: &Path) -> Result<Wrk> {
        let script = script_dir.join("xtask-figures.lua");
        let list: Vec<String> = PERCENTILES.iter().map(|p| p.to_string()).collect();
        fs::write(&script, SCRIPT.replace("@PERCENTILES@", &list.join(", ")))?;
        Ok(Wrk { script })
    }

    /// Loads `url` and returns the figures; wrk's full output is saved to `log` if given.
    pub fn run(&self, url: &str, load: Load, log: Option<&Path>) -> Result<Figures> {
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{}", load.threads))
            .arg(format!("-c{}", load.connections))
            .arg(format!("-d{}s", load.duration.as_secs()))
            .arg("--latency")
            .arg("-s")
            .arg(&self.script)
            .arg(url);
        say!("$ {}", util::display(&cmd));
        let out = cmd.output().context("cannot run wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(log) = log {
            fs::write(
                log,
                format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
            )?;
        }
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&stdout)
    }
}

/// Reads the `xtask key value` lines printed by the Lua hook.
pub fn parse(output: &str) -> Result<Figures> {
    let value = |key: &str| -> Result<f64> {
        output
            .lines()
            .filter_map(|l| l.strip_prefix("xtask "))
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .with_context(|| format!("wrk output has no `{key}`"))?
            .trim()
            .parse()
            .with_context(|| format!("wrk output: bad `{key}`"))
    };
    let duration = value("duration_us")? / 1e6;
    if duration <= 0.0 {
        bail!("wrk reported a zero duration");
    }
    let latency = PERCENTILES
        .iter()
        .map(|p| Ok(value(&format!("p{p}_us"))? / 1e6))
        .collect::<Result<Vec<f64>>>()?;
    Ok(Figures {
        requests_per_sec: value("requests")? / duration,
        latency,
        errors: (value("non_2xx")? + value("socket_errors")?) as u64,
    })
}

/// Seconds as a short human figure: `850us`, `1.23ms`, `2.50s`.
pub fn format_latency(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0}us", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Running 10s test @ http://127.0.0.1:40000/health
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   610.21us  120.11us   5.01ms   90.00%
    Req/Sec    98.12k     3.01k  105.00k    80.00%
  Latency Distribution
     50%  600.00us
     75%  650.00us
     90%  700.00us
     99%    1.10ms
  981234 requests in 10.00s, 80.00MB read
Requests/sec:  98123.40
Transfer/sec:      8.00MB
xtask requests 981234
xtask duration_us 10000000
xtask non_2xx 0
xtask socket_errors 2
xtask p50_us 600
xtask p90_us 700
xtask p95_us 800
xtask p99_us 1100
";

    #[test]
    fn parses_the_hook_lines() {
        let f = parse(SAMPLE).unwrap();
        assert!((f.requests_per_sec - 98123.4).abs() < 1e-6);
        assert_eq!(f.latency, vec![600e-6, 700e-6, 800e-6, 1100e-6]);
        assert_eq!(f.errors, 2);
    }

    #[test]
    fn missing_hook_lines_are_an_error() {
        assert!(parse("Requests/sec: 1.0\n").is_err());
    }

    #[test]
    fn script_lists_the_percentiles() {
        let dir = util::TempDir::new("xtask-wrk-test").unwrap();
        let wrk = Wrk::new(dir.path()).unwrap();
        let script = fs::read_to_string(&wrk.script).unwrap();
        assert!(script.contains("ipairs({50, 90, 95, 99})"), "{script}");
    }

    #[test]
    fn formats_latencies() {
        assert_eq!(format_latency(850e-6), "850us");
        assert_eq!(format_latency(1.234e-3), "1.23ms");
        assert_eq!(format_latency(2.5), "2.50s");
    }
}
