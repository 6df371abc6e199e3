//! `cargo xtask bench cache`: the semantic cache at scale (issue 5; scenario in
//! `bench/cache.md`).
//!
//! Builds the server in release and runs its hidden `patchbay cache bench` once per backend and
//! size: SQLite (a temporary database file) at 10k and 100k entries, PostgreSQL + pgvector (a
//! throwaway cluster started here, a fresh database per size) at 10k, 100k and 1M. Each run
//! prints one JSON object; they are kept in `bench/out/cache/` and summarized in the `cache`
//! section of `bench/README.md`.
//!
//! Large PostgreSQL runs (`--bulk-load-from`, default 1M) load the entries with COPY and build
//! the HNSW index once, as one would load a large cache, instead of inserting one by one
//! (which maintains the graph per row: hours at 1M on two cores). The report says which.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::json::{Json, JsonPath as _};
use super::{Flags, report};
use crate::postgres::Postgres;
use crate::util::{self, TempDir};
use crate::{cargo, say, setup};

const SQLITE_SIZES: &[u64] = &[10_000, 100_000];
const POSTGRES_SIZES: &[u64] = &[10_000, 100_000, 1_000_000];

/// Issue 5's targets.
const POSTGRES_TARGET: (u64, f64, f64) = (1_000_000, 5.0, 0.98);
const SQLITE_TARGET: (u64, f64) = (100_000, 20.0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

struct Options {
    backends: Vec<Backend>,
    sizes: Option<Vec<u64>>,
    dimensions: u32,
    queries: u32,
    recall_queries: u32,
    concurrency: u32,
    foreign_fraction: f64,
    seed: u64,
    bulk_load_from: u64,
    shared_buffers: String,
    maintenance_work_mem: String,
    /// PostgreSQL `hnsw.ef_search` values, each measured on the same loaded data.
    ef_search: String,
    warmup: u32,
    /// `cache.semantic.hnsw_m` / `hnsw_ef_construction` for the runs (None: the server's
    /// defaults).
    hnsw_m: Option<u32>,
    hnsw_ef_construction: Option<u32>,
}

impl Options {
    fn sizes(&self, backend: Backend) -> Vec<u64> {
        match (&self.sizes, backend) {
            (Some(sizes), _) => sizes.clone(),
            (None, Backend::Sqlite) => SQLITE_SIZES.to_vec(),
            (None, Backend::Postgres) => POSTGRES_SIZES.to_vec(),
        }
    }

    fn bulk(&self, backend: Backend, entries: u64) -> bool {
        backend == Backend::Postgres && self.bulk_load_from > 0 && entries >= self.bulk_load_from
    }

    /// The command line that reproduces this run.
    fn reproduce(&self) -> String {
        let backend = match self.backends.as_slice() {
            [Backend::Sqlite] => "sqlite",
            [Backend::Postgres] => "postgres",
            _ => "both",
        };
        let mut line = format!("cargo xtask bench cache --backend {backend}");
        if let Some(sizes) = &self.sizes {
            let sizes: Vec<String> = sizes.iter().map(u64::to_string).collect();
            let _ = write!(line, " --sizes {}", sizes.join(","));
        }
        let _ = write!(
            line,
            " --queries {} --recall-queries {} --concurrency {} --foreign-fraction {} --seed {} \
             --warmup {} --ef-search {} --bulk-load-from {} --shared-buffers {} --maintenance-work-mem {}",
            self.queries,
            self.recall_queries,
            self.concurrency,
            self.foreign_fraction,
            self.seed,
            self.warmup,
            self.ef_search,
            self.bulk_load_from,
            self.shared_buffers,
            self.maintenance_work_mem
        );
        if let Some(m) = self.hnsw_m {
            let _ = write!(line, " --hnsw-m {m}");
        }
        if let Some(ef) = self.hnsw_ef_construction {
            let _ = write!(line, " --hnsw-ef-construction {ef}");
        }
        line
    }
}

fn parse_sizes(text: &str) -> Result<Vec<u64>> {
    text.split(',')
        .map(|s| {
            let s = s.trim().replace('_', "");
            let (digits, factor) = match s.strip_suffix(['k', 'K']) {
                Some(d) => (d.to_string(), 1_000),
                None => match s.strip_suffix(['m', 'M']) {
                    Some(d) => (d.to_string(), 1_000_000),
                    None => (s.clone(), 1),
                },
            };
            let n: u64 = digits
                .parse()
                .with_context(|| format!("--sizes: `{s}` is not a number of entries"))?;
            anyhow::ensure!(n > 0, "--sizes: sizes must be above 0");
            Ok(n * factor)
        })
        .collect()
}

fn setting_ok(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric())
}

pub fn run(flags: &Flags) -> Result<()> {
    let backends = match flags.get("backend", "both".to_string())?.as_str() {
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        other => bail!("--backend {other}: sqlite, postgres or both"),
    };
    let sizes = flags.get("sizes", String::new())?;
    let options = Options {
        backends,
        sizes: (!sizes.is_empty())
            .then(|| parse_sizes(&sizes))
            .transpose()?,
        dimensions: flags.get("dimensions", 384)?,
        queries: flags.get("queries", 1000)?,
        recall_queries: flags.get("recall-queries", 200)?,
        concurrency: flags.get("concurrency", 4)?,
        foreign_fraction: flags.get("foreign-fraction", 0.0)?,
        seed: flags.get("seed", 42)?,
        bulk_load_from: flags.get("bulk-load-from", 1_000_000)?,
        shared_buffers: flags.get("shared-buffers", "4GB".to_string())?,
        maintenance_work_mem: flags.get("maintenance-work-mem", "4GB".to_string())?,
        ef_search: flags.get("ef-search", "40,60,100,200".to_string())?,
        warmup: flags.get("warmup", 200)?,
        // 0: the server's default.
        hnsw_m: Some(flags.get("hnsw-m", 0u32)?).filter(|m| *m > 0),
        hnsw_ef_construction: Some(flags.get("hnsw-ef-construction", 0u32)?).filter(|e| *e > 0),
    };
    // A prebuilt server (e.g. another revision's) instead of building this tree's.
    let prebuilt: String = flags.get("binary", String::new())?;
    flags.reject_unknown()?;
    anyhow::ensure!(
        options.queries >= 1 && options.concurrency >= 1,
        "--queries and --concurrency must be at least 1"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&options.foreign_fraction),
        "--foreign-fraction must be from 0 to below 1"
    );
    anyhow::ensure!(
        setting_ok(&options.shared_buffers) && setting_ok(&options.maintenance_work_mem),
        "--shared-buffers and --maintenance-work-mem take sizes such as 4GB"
    );
    anyhow::ensure!(
        options.ef_search.split(',').all(|ef| ef
            .trim()
            .parse::<u32>()
            .is_ok_and(|n| (1..=1000).contains(&n))),
        "--ef-search takes values from 1 to 1000, comma separated"
    );

    let tools = setup::run()?;
    let binary = if prebuilt.is_empty() {
        util::run(cargo::cargo()?.args(["build", "--release", "-p", "patchbay"]))?;
        cargo::target_dir()?.join("release").join("patchbay")
    } else {
        PathBuf::from(prebuilt)
    };
    let out_dir = util::repo_root().join("bench/out/cache");
    fs::create_dir_all(&out_dir)?;
    let load_average = report::load_average();
    let scratch = TempDir::new("patchbay-bench-cache")?;

    let mut results = Vec::new();
    for &backend in &options.backends {
        // One throwaway cluster for all PostgreSQL sizes, a fresh database for each.
        let pg = match backend {
            Backend::Postgres => Some(Postgres::start_with(
                &tools.pg,
                scratch.path(),
                &[
                    ("shared_buffers", options.shared_buffers.as_str()),
                    // A throwaway cluster: no WAL for the bulk load's index build, and little
                    // disk for the rest (a 1M run's table and index take about 4.5 GB).
                    ("wal_level", "minimal"),
                    ("max_wal_senders", "0"),
                    ("max_wal_size", "1GB"),
                ],
            )?),
            Backend::Sqlite => None,
        };
        for entries in options.sizes(backend) {
            util::check_interrupted()?;
            let database = pg
                .as_ref()
                .map(|pg| create_database(pg, entries))
                .transpose()?;
            let result = run_one(
                &binary,
                &options,
                backend,
                entries,
                database.as_deref(),
                scratch.path(),
                &out_dir,
            );
            if let (Some(pg), Some(_)) = (&pg, &database) {
                // Frees the disk (a 1M run takes several GB) before the next size.
                drop_database(pg, entries)?;
            }
            results.push(result?);
        }
    }
    drop(scratch);

    let body = render(&results, &options, &load_average);
    println!("\n{body}");
    let readme = util::repo_root().join("bench/README.md");
    report::write_section(&readme, "cache", &body)?;
    say!("wrote the cache section of {}", readme.display());
    Ok(())
}

fn database_name(entries: u64) -> String {
    format!("pb_bench_cache_{entries}")
}

fn psql(pg: &Postgres, sql: &str) -> Result<()> {
    util::run_quiet(
        pg.command("psql")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(pg.port().to_string())
            .args(["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]),
    )
}

fn create_database(pg: &Postgres, entries: u64) -> Result<String> {
    let name = database_name(entries);
    psql(pg, &format!("DROP DATABASE IF EXISTS {name}"))?;
    psql(pg, &format!("CREATE DATABASE {name}"))?;
    Ok(format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        pg.port()
    ))
}

fn drop_database(pg: &Postgres, entries: u64) -> Result<()> {
    psql(
        pg,
        &format!("DROP DATABASE IF EXISTS {}", database_name(entries)),
    )
}

/// One `patchbay cache bench` run; its JSON is kept in `out_dir`.
fn run_one(
    binary: &Path,
    options: &Options,
    backend: Backend,
    entries: u64,
    database_url: Option<&str>,
    scratch: &Path,
    out_dir: &Path,
) -> Result<Json> {
    let bulk = options.bulk(backend, entries);
    say!(
        "{} with {entries} entries{} ...",
        backend.name(),
        if bulk { " (bulk load)" } else { "" }
    );
    let mut cmd = Command::new(binary);
    cmd.args(["cache", "bench"])
        .arg("--entries")
        .arg(entries.to_string())
        .arg("--dimensions")
        .arg(options.dimensions.to_string())
        .arg("--queries")
        .arg(options.queries.to_string())
        .arg("--recall-queries")
        .arg(options.recall_queries.to_string())
        .arg("--concurrency")
        .arg(options.concurrency.to_string())
        .arg("--foreign-fraction")
        .arg(options.foreign_fraction.to_string())
        .arg("--seed")
        .arg(options.seed.to_string())
        .arg("--warmup")
        .arg(options.warmup.to_string())
        // The SQLite file goes to the scratch dir; the configuration is the defaults'.
        .env("TMPDIR", scratch)
        .env_remove("PATCHBAY_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.arg("--database-url")
            .arg(url)
            .arg("--ef-search")
            .arg(options.ef_search.replace(' ', ""));
    }
    for (var, value) in [
        ("PATCHBAY_CACHE__SEMANTIC__HNSW_M", options.hnsw_m),
        (
            "PATCHBAY_CACHE__SEMANTIC__HNSW_EF_CONSTRUCTION",
            options.hnsw_ef_construction,
        ),
    ] {
        if let Some(value) = value {
            cmd.env(var, value.to_string());
        }
    }
    if bulk {
        cmd.arg("--bulk-load")
            .arg("--maintenance-work-mem")
            .arg(&options.maintenance_work_mem);
    }
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("`{}` failed: {}", util::display(&cmd), output.status);
    }
    let path = out_dir.join(format!("{}-{entries}.json", backend.name()));
    fs::write(&path, stdout.as_bytes())?;
    let mut json = serde_json::from_str::<Json>(&stdout)
        .with_context(|| format!("reading the output of `{}`", util::display(&cmd)))?;
    // What else ran meanwhile: the 1-minute load average as the run ends (the benchmark's own
    // lookups count about 1).
    if let Json::Object(map) = &mut json {
        let load = report::load_average();
        let one: Option<f64> = load.split(' ').next().and_then(|l| l.parse().ok());
        map.insert("load_average_1m".into(), one.map_or(Json::Null, Json::from));
    }
    say!(
        "{} {entries}: p50 {} ms, p99 {} ms, recall@1 {}, insert {}/s",
        backend.name(),
        number(&json, "lookup.p50_ms", 2),
        number(&json, "lookup.p99_ms", 2),
        number(&json, "recall_at_1", 3),
        number(&json, "insert.per_second", 0),
    );
    Ok(json)
}

/// A figure with `decimals` decimals and thousands separators, or `-`.
fn number(json: &Json, path: &str, decimals: usize) -> String {
    match json.at(path).number() {
        Some(x) => group(&format!("{x:.decimals$}")),
        None => "-".to_string(),
    }
}

fn group(text: &str) -> String {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int),
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

fn describe(json: &Json, ef_search: &Json) -> String {
    match json.at("backend").str() {
        Some("sqlite") => format!("SQLite, {}", json.at("search.method").str().unwrap_or("?")),
        Some("postgres") => format!(
            "PostgreSQL {} + pgvector {}, HNSW ef_search {} ({} iterative scan)",
            json.at("postgres.server_version").str().unwrap_or("?"),
            json.at("postgres.pgvector").str().unwrap_or("?"),
            ef_search
                .number()
                .map_or("?".to_string(), |n| format!("{n:.0}")),
            json.at("search.iterative_scan")
                .str()
                .unwrap_or("?")
                .replace('_', " "),
        ),
        _ => "?".to_string(),
    }
}

/// A run's measured settings: its `sweep` entries, or the run itself (older output).
fn settings(json: &Json) -> Vec<&Json> {
    match json.at("sweep") {
        Json::Array(items) if !items.is_empty() => items.iter().collect(),
        _ => vec![json],
    }
}

fn mb(bytes: &Json) -> String {
    bytes
        .number()
        .map_or("?".to_string(), |b| group(&format!("{:.0}", b / 1e6)))
}

fn find<'a>(results: &'a [Json], backend: &str, entries: u64) -> Option<&'a Json> {
    results.iter().find(|r| {
        r.at("backend").str() == Some(backend) && r.at("entries").number() == Some(entries as f64)
    })
}

fn render(results: &[Json], options: &Options, load_average: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Semantic cache at scale (`cache`)\n");
    let _ = writeln!(
        out,
        "{} on {}; load average before the runs {load_average} (\"load 1m\": as each run \
         ended; 2 cores, so above ~2 other work shared the machine). Scenario: `bench/cache.md`.\n",
        report::today(),
        report::machine(),
    );
    let _ = writeln!(
        out,
        "The store's vector search (`CacheStore::semantic_nearest`, not HTTP) over {}-dimension \
         clustered unit vectors, {} of them in another workspace: {} lookups timed one at a time \
         (p50, p99; the first lookup, which loads SQLite's in-memory index, is reported apart), \
         the same lookups with {} concurrent readers (lookups/s), recall@1 of {} answers against \
         an exact search, inserts through the store with {} concurrent writers unless marked.\n",
        options.dimensions,
        if options.foreign_fraction == 0.0 {
            "none".to_string()
        } else {
            format!("{}%", options.foreign_fraction * 100.0)
        },
        options.queries,
        options.concurrency,
        options.recall_queries,
        options.concurrency,
    );
    let _ = writeln!(
        out,
        "| backend | entries | insert/s | first lookup ms | p50 ms | p99 ms | lookups/s ({}) | recall@1 | load 1m |",
        options.concurrency
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for json in results {
        let bulk = json.at("insert.copy_seconds").number().is_some();
        let insert = if bulk {
            format!("{}*", number(json, "insert.per_second", 0))
        } else {
            number(json, "insert.per_second", 0)
        };
        for setting in settings(json) {
            let ef = match json.at("backend").str() {
                Some("postgres") if setting.at("ef_search").number().is_some() => {
                    setting.at("ef_search")
                }
                _ => json.at("search.ef_search"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {insert} | {} | {} | {} | {} | {} | {} |",
                describe(json, ef),
                number(json, "entries", 0),
                number(json, "lookup.first_ms", 1),
                number(setting, "lookup.p50_ms", 2),
                number(setting, "lookup.p99_ms", 2),
                number(setting, "lookup.throughput_per_second", 0),
                number(setting, "recall_at_1", 3),
                number(json, "load_average_1m", 1),
            );
        }
        if bulk {
            notes.push(format!(
                "\\* {} entries loaded with COPY ({} s), then `CREATE INDEX … USING hnsw` ({} s, \
                 maintenance_work_mem {}, {} parallel worker(s)); insert/s is entries over both.",
                number(json, "entries", 0),
                number(json, "insert.copy_seconds", 0),
                number(json, "insert.index_seconds", 0),
                json.at("insert.maintenance_work_mem").str().unwrap_or("?"),
                number(json, "insert.parallel_maintenance_workers", 0),
            ));
        }
    }
    out.push('\n');
    for note in notes {
        let _ = writeln!(out, "{note}\n");
    }
    let hnsw: Vec<String> = results
        .iter()
        .filter(|r| r.at("backend").str() == Some("postgres"))
        .map(|r| {
            format!(
                "{}: {}",
                number(r, "entries", 0),
                match r.at("postgres.plan_uses_hnsw_index") {
                    Json::Bool(true) => "yes",
                    Json::Bool(false) => "no",
                    _ => "?",
                }
            )
        })
        .collect();
    if let Some(pg) = results
        .iter()
        .find(|r| r.at("backend").str() == Some("postgres"))
    {
        let sizes: Vec<String> = results
            .iter()
            .filter(|r| r.at("backend").str() == Some("postgres"))
            .map(|r| {
                format!(
                    "{}: table {} MB, HNSW index {} MB",
                    number(r, "entries", 0),
                    mb(r.at("postgres.table_bytes")),
                    mb(r.at("postgres.hnsw_index_bytes")),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "PostgreSQL: a throwaway cluster (`fsync=off`, `wal_level=minimal`, shared_buffers \
             {}, huge pages {}, work_mem {}), HNSW index built with m {}, ef_construction {}, a \
             fresh database per size ({}); before timing, {} and {} warm-up lookups per \
             ef_search. `EXPLAIN (ANALYZE, BUFFERS)` of a lookup uses the HNSW index ({}); plans \
             are in `bench/out/cache/postgres-*.json`.\n",
            pg.at("postgres.shared_buffers").str().unwrap_or("?"),
            pg.at("postgres.huge_pages").str().unwrap_or("?"),
            pg.at("postgres.work_mem").str().unwrap_or("?"),
            number(pg, "hnsw.m", 0),
            number(pg, "hnsw.ef_construction", 0),
            sizes.join("; "),
            pg.at("postgres.prewarm")
                .str()
                .map_or("no prewarm".to_string(), |p| {
                    p.split(':').next().unwrap_or(p).to_string()
                }),
            options.warmup,
            hnsw.join(", "),
        );
    }

    let mut targets = Vec::new();
    let (pg_n, pg_p99, pg_recall) = POSTGRES_TARGET;
    if let Some(r) = find(results, "postgres", pg_n) {
        let each: Vec<String> = settings(r)
            .iter()
            .map(|s| {
                let p99 = s.at("lookup.p99_ms").number().unwrap_or(f64::INFINITY);
                let recall = s.at("recall_at_1").number().unwrap_or(0.0);
                format!(
                    "ef_search {}: p99 {} ms, recall@1 {} ({})",
                    number(s, "ef_search", 0),
                    number(s, "lookup.p99_ms", 2),
                    number(s, "recall_at_1", 3),
                    if p99 <= pg_p99 && recall >= pg_recall {
                        "met"
                    } else {
                        "**not met**"
                    }
                )
            })
            .collect();
        targets.push(format!(
            "PostgreSQL at {} (p99 ≤ {pg_p99} ms with recall@1 ≥ {pg_recall}): {}",
            group(&pg_n.to_string()),
            each.join(", ")
        ));
    }
    let (sq_n, sq_p99) = SQLITE_TARGET;
    if let Some(r) = find(results, "sqlite", sq_n) {
        let p99 = r.at("lookup.p99_ms").number().unwrap_or(f64::INFINITY);
        targets.push(format!(
            "SQLite at {}: p99 {} ms (target ≤ {sq_p99}): {}",
            group(&sq_n.to_string()),
            number(r, "lookup.p99_ms", 2),
            if p99 <= sq_p99 { "met" } else { "**not met**" }
        ));
    }
    if !targets.is_empty() {
        let _ = writeln!(out, "Targets (issue 5): {}.\n", targets.join("; "));
    }
    let _ = writeln!(
        out,
        "Reproduce: `flock /tmp/patchbay-bench.lock {}` (the lock only matters on a shared machine).",
        options.reproduce()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes_and_separators() {
        assert_eq!(
            parse_sizes("10000, 100k,1M,1_000").unwrap(),
            vec![10_000, 100_000, 1_000_000, 1_000]
        );
        assert!(parse_sizes("ten").is_err());
        assert!(parse_sizes("0").is_err());
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group("1000000"), "1,000,000");
        assert_eq!(group("-1234.56"), "-1,234.56");
        assert_eq!(group("12"), "12");
    }

    #[test]
    fn renders_rows_targets_and_bulk_notes() {
        let sqlite = serde_json::from_str::<Json>(
            r#"{"backend": "sqlite", "entries": 100000, "insert": {"per_second": 1400},
                "lookup": {"first_ms": 300.1, "p50_ms": 9.5, "p99_ms": 14.25, "throughput_per_second": 180},
                "recall_at_1": 1.0, "search": {"method": "exact scan of the in-memory index"}}"#,
        )
        .unwrap();
        let pg = serde_json::from_str::<Json>(
            r#"{"backend": "postgres", "entries": 1000000,
                "insert": {"per_second": 900, "copy_seconds": 100, "index_seconds": 1000,
                           "maintenance_work_mem": "4GB", "parallel_maintenance_workers": 1},
                "lookup": {"first_ms": 5, "p50_ms": 2.5, "p99_ms": 6.0, "throughput_per_second": 700},
                "recall_at_1": 0.99, "search": {"ef_search": 100, "iterative_scan": "relaxed_order"},
                "sweep": [
                  {"ef_search": 100, "lookup": {"p50_ms": 2.5, "p99_ms": 6.0, "throughput_per_second": 700}, "recall_at_1": 0.99},
                  {"ef_search": 200, "lookup": {"p50_ms": 3.5, "p99_ms": 4.5, "throughput_per_second": 500}, "recall_at_1": 0.995}
                ],
                "hnsw": {"m": 32, "ef_construction": 64},
                "postgres": {"server_version": "18.1", "pgvector": "0.8.1", "shared_buffers": "4GB",
                             "huge_pages": "on", "work_mem": "4MB", "plan_uses_hnsw_index": true}}"#,
        )
        .unwrap();
        let options = Options {
            backends: vec![Backend::Sqlite, Backend::Postgres],
            sizes: None,
            dimensions: 384,
            queries: 1000,
            recall_queries: 200,
            concurrency: 4,
            foreign_fraction: 0.0,
            seed: 42,
            bulk_load_from: 1_000_000,
            shared_buffers: "4GB".into(),
            maintenance_work_mem: "4GB".into(),
            ef_search: "100,200".into(),
            warmup: 200,
            hnsw_m: Some(32),
            hnsw_ef_construction: None,
        };
        let text = render(&[sqlite, pg], &options, "0.1 0.2 0.3");
        assert!(text.contains(
            "| SQLite, exact scan of the in-memory index | 100,000 | 1,400 | 300.1 | 9.50 | 14.25 | 180 | 1.000 | - |"
        ), "{text}");
        assert!(text.contains("HNSW ef_search 100 (relaxed order iterative scan) | 1,000,000 | 900* | 5.0 | 2.50 | 6.00 | 700 | 0.990 | - |"), "{text}");
        assert!(text.contains("HNSW ef_search 200 (relaxed order iterative scan) | 1,000,000 | 900* | 5.0 | 3.50 | 4.50 | 500 | 0.995 | - |"), "{text}");
        assert!(text.contains("PostgreSQL at 1,000,000 (p99 ≤ 5 ms with recall@1 ≥ 0.98): ef_search 100: p99 6.00 ms, recall@1 0.990 (**not met**), ef_search 200: p99 4.50 ms, recall@1 0.995 (met)"), "{text}");
        assert!(
            text.contains("SQLite at 100,000: p99 14.25 ms (target ≤ 20): met"),
            "{text}"
        );
        assert!(text.contains("shared_buffers 4GB, huge pages on, work_mem 4MB), HNSW index built with m 32, ef_construction 64,"), "{text}");
        assert!(text.contains("Reproduce: `flock /tmp/patchbay-bench.lock cargo xtask bench cache --backend both --queries 1000"), "{text}");
        assert!(
            text.contains("--maintenance-work-mem 4GB --hnsw-m 32`"),
            "{text}"
        );
    }
}
