//! Where results go: a section per scenario in `bench/README.md`, with the date and the machine.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

const HEADER: &str = "# Benchmarks

Benchmarks are not tests: they measure, and report ratios between variants run side by side on
the same machine in the same session. Each section below is written by
`cargo xtask bench <scenario>` (see `xtask/src/bench/`); rerun the command shown in a section to
reproduce it. Raw tool output of the last run is kept in `bench/out/` (not committed).
";

/// Replaces (or appends) the section between `<!-- bench:NAME:start -->` and
/// `<!-- bench:NAME:end -->` in `path`, creating the file with a header if missing.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, replace_section(&text, name, body))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn replace_section(text: &str, name: &str, body: &str) -> String {
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let section = format!("{start}\n{}\n{end}", body.trim_end());
    if let Some(s) = text.find(&start)
        && let Some(e) = text[s..].find(&end)
    {
        let e = s + e + end.len();
        return format!("{}{section}{}", &text[..s], &text[e..]);
    }
    format!("{}\n\n{section}\n", text.trim_end())
}

/// `2 x AMD EPYC (nproc 2), Linux 6.1.0`: enough to tell machines apart in a report.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model} (nproc {nproc}), Linux {}", kernel.trim())
}

/// The 1/5/15-minute load averages, to tell a quiet machine's figures from a busy one's.
pub fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    fields.join(" ")
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_then_replaces_a_section() {
        let text = replace_section("# Benchmarks\n", "http", "first");
        assert_eq!(
            text,
            "# Benchmarks\n\n<!-- bench:http:start -->\nfirst\n<!-- bench:http:end -->\n"
        );
        let text = replace_section(&(text + "\nafter\n"), "http", "second\n");
        assert_eq!(
            text,
            "# Benchmarks\n\n<!-- bench:http:start -->\nsecond\n<!-- bench:http:end -->\n\nafter\n"
        );
        let text = replace_section(&text, "cache", "c");
        assert!(text.contains("second") && text.ends_with("<!-- bench:cache:end -->\n"));
    }

    #[test]
    fn converts_days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn describes_the_machine() {
        assert!(machine().contains("nproc"));
        assert_eq!(load_average().split(' ').count(), 3);
    }
}
