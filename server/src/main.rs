//! The `patchbay` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use patchbay::config::Config;
use patchbay::store::Role;
use patchbay::{auth, clock, server, store, telemetry};

#[derive(Parser)]
#[command(
    name = "patchbay",
    version,
    about = "A server people extend with WebAssembly"
)]
struct Cli {
    /// A TOML file; PATCHBAY_* environment variables override it.
    #[arg(long, global = true, env = "PATCHBAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Plugins on a running server.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// API keys, managed offline against the configured database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply patches to a document offline and print the result (no server, no database).
    Materialize {
        /// The base document (JSON).
        #[arg(long)]
        base: PathBuf,
        /// One patch (an array of operations), an array of patches, or patch records
        /// (`[{"seq", "ops"}, ...]` as the API lists them; seqs are checked from 1).
        #[arg(long)]
        patches: PathBuf,
        /// Indent the output.
        #[arg(long)]
        pretty: bool,
        /// Also check the result is a valid workflow document.
        #[arg(long)]
        validate: bool,
    },
    /// The result caches, managed offline against the configured database.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Drop every semantic cache entry and recreate the semantic table (and its index) for a
    /// new embedding dimension. Set cache.semantic.dimensions to the same number.
    Reindex {
        #[arg(long)]
        dimensions: u32,
    },
    /// Benchmark the semantic cache's store (insert rate, lookup p50/p99, throughput, recall@1)
    /// and print JSON. Use a scratch database: it fixes the semantic dimension if unset.
    #[command(hide = true)]
    Bench {
        #[arg(long, default_value_t = 10_000)]
        entries: usize,
        #[arg(long, default_value_t = 384)]
        dimensions: u32,
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        #[arg(long, default_value_t = 200)]
        recall_queries: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Share of entries put in a second workspace, so the workspace filter has work to do.
        #[arg(long, default_value_t = 0.0)]
        foreign_fraction: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Defaults to a temporary SQLite database; postgres://... for PostgreSQL.
        #[arg(long)]
        database_url: Option<String>,
        /// PostgreSQL: hnsw.ef_search (default: cache.semantic.ef_search); several, comma
        /// separated, are measured in turn on the same data.
        #[arg(long, value_delimiter = ',')]
        ef_search: Vec<u32>,
        /// Untimed lookups before each setting's timed ones.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Keep the benchmark's workspaces and entries.
        #[arg(long)]
        keep: bool,
        /// PostgreSQL: COPY the entries in, then build the HNSW index once (a scratch
        /// database: the index is dropped and rebuilt), instead of inserting one by one.
        #[arg(long)]
        bulk_load: bool,
        /// PostgreSQL bulk load: maintenance_work_mem for the index build.
        #[arg(long, default_value = "4GB")]
        maintenance_work_mem: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration with secrets masked.
    Show,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Upload a plugin: a directory with plugin.toml, or a manifest file.
    Push {
        target: PathBuf,
        /// The server's base URL.
        #[arg(long, env = "PATCHBAY_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// A system key.
        #[arg(long, env = "PATCHBAY_KEY", hide_env_values = true)]
        key: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it alone.
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A system key (manages workspaces and plugins).
        #[arg(long)]
        system: bool,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?} is not a role: read, write or admin"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: works wherever the binary does.
    if let Command::Materialize {
        base,
        patches,
        pretty,
        validate,
    } = &cli.command
    {
        return match materialize(base, patches, *pretty, *validate) {
            Ok(document) => {
                println!("{document}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("patchbay materialize: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("patchbay: {err}");
            return ExitCode::from(2);
        }
    };
    let mut log = config.log.clone();
    if matches!(
        cli.command,
        Command::Cache {
            command: CacheCommand::Bench { .. }
        }
    ) {
        // The benchmark prints JSON on stdout, where the log goes: errors only.
        log.level = "error".into();
    }
    telemetry::logging::init(&log);
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config.masked()).unwrap_or_default()
            );
            Ok(())
        }
        Command::Plugins {
            command:
                PluginsCommand::Push {
                    target,
                    server,
                    key,
                },
        } => patchbay::cli_push::push(&target, &server, &key),
        Command::Serve => actix_web::rt::System::new().block_on(server::serve(config)),
        Command::Migrate => runtime().and_then(|rt| rt.block_on(migrate(config))),
        Command::Keys {
            command:
                KeysCommand::Create {
                    workspace,
                    role,
                    system,
                    expires_at,
                    label,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(create_key(
                config, workspace, role, system, expires_at, label,
            ))
        }),
        Command::Materialize { .. } => unreachable!("handled before the configuration is loaded"),
        Command::Cache {
            command: CacheCommand::Reindex { dimensions },
        } => runtime().and_then(|rt| rt.block_on(reindex(config, dimensions))),
        Command::Cache {
            command:
                CacheCommand::Bench {
                    entries,
                    dimensions,
                    queries,
                    recall_queries,
                    concurrency,
                    foreign_fraction,
                    seed,
                    database_url,
                    ef_search,
                    warmup,
                    keep,
                    bulk_load,
                    maintenance_work_mem,
                },
        } => {
            let search = patchbay::store::cache::SemanticSearch {
                ef_search: ef_search
                    .first()
                    .copied()
                    .unwrap_or(config.cache.semantic.ef_search),
                iterative_scan: config.cache.semantic.iterative_scan,
                max_scan_tuples: config.cache.semantic.max_scan_tuples,
                exact_max_entries: config.cache.semantic.exact_search_max_entries,
            };
            let options = patchbay::cache::bench::BenchOptions {
                entries,
                table: patchbay::store::cache::SemanticTable {
                    dimensions,
                    ..config.cache.semantic.table()
                },
                queries,
                recall_queries,
                concurrency,
                foreign_fraction,
                seed,
                search,
                keep,
                database_url: database_url.clone(),
                bulk_load,
                maintenance_work_mem,
                sqlite_index_max_bytes: config.cache.semantic.sqlite_index_max_bytes,
                ef_searches: ef_search,
                warmup,
            };
            multi_thread_runtime().and_then(|rt| rt.block_on(bench(config, database_url, options)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("patchbay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `patchbay materialize`: the document after the patches, as JSON text. A failing patch is
/// named by its position in the file (and the version it would have made), with the failing
/// operation's index, kind, JSON Pointer and reason.
fn materialize(
    base: &Path,
    patches: &Path,
    pretty: bool,
    validate: bool,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use patchbay_materializer::Materializer;
    let base_text =
        std::fs::read(base).with_context(|| format!("reading --base {}", base.display()))?;
    let patches_text = std::fs::read(patches)
        .with_context(|| format!("reading --patches {}", patches.display()))?;
    let mut m = Materializer::from_slice(&base_text, 0)
        .map_err(|e| anyhow::anyhow!("--base {}: {}", base.display(), e.error))?;
    if let Err(e) = m.apply_slice(&patches_text) {
        let which = match e.patch_index {
            Some(i) => format!("patch #{} (index {i}) of {}", i + 1, patches.display()),
            None => format!("--patches {}", patches.display()),
        };
        let op = match (e.error.op_index, &e.error.path) {
            (Some(op), Some(path)) => format!(", operation {op} at {path:?}"),
            (Some(op), None) => format!(", operation {op}"),
            _ => String::new(),
        };
        anyhow::bail!(
            "{which} failed{op}: {}: {} ({} patches applied before it)",
            e.error.kind,
            e.error.reason,
            m.version()
        );
    }
    if validate && let Err(issues) = m.validate() {
        let lines: Vec<String> = issues
            .iter()
            .map(|i| {
                format!(
                    "  {} ({}): {}",
                    if i.pointer.is_empty() {
                        "/"
                    } else {
                        &i.pointer
                    },
                    i.code,
                    i.message
                )
            })
            .collect();
        anyhow::bail!("the result is not a valid workflow:\n{}", lines.join("\n"));
    }
    let document = m.into_document();
    Ok(if pretty {
        serde_json::to_string_pretty(&document)?
    } else {
        String::from_utf8(patchbay_materializer::to_json_bytes(&document))?
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn multi_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = store::open(&config).await?;
    // The semantic table's shape comes from the configuration, not from a migration.
    store
        .cache()
        .prepare_semantic(&config.cache.semantic.table())
        .await?;
    eprintln!("patchbay: {} migrations are up to date", store.backend());
    Ok(())
}

async fn reindex(config: Config, dimensions: u32) -> anyhow::Result<()> {
    let mut check = config.clone();
    check.cache.semantic.dimensions = dimensions;
    check.validate()?;
    let store = store::open(&config).await?;
    let dropped = store
        .cache()
        .reindex_semantic(&check.cache.semantic.table())
        .await?;
    eprintln!(
        "patchbay: the semantic cache is empty and takes {dimensions}-dimension embeddings ({dropped} entries dropped); \
         set cache.semantic.dimensions = {dimensions} (PATCHBAY_CACHE__SEMANTIC__DIMENSIONS={dimensions})"
    );
    Ok(())
}

async fn bench(
    mut config: Config,
    database_url: Option<String>,
    options: patchbay::cache::bench::BenchOptions,
) -> anyhow::Result<()> {
    let scratch = tempfile_dir()?;
    config.database_url = Some(match database_url {
        Some(url) => url,
        None => format!("sqlite://{}", scratch.join("bench.db").display()),
    });
    config.database.max_connections = config
        .database
        .max_connections
        .max(options.concurrency as u32 + 1);
    let store = store::open(&config).await?;
    let report = patchbay::cache::bench::run(store, &options).await;
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", serde_json::to_string_pretty(&report?)?);
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("patchbay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn create_key(
    config: Config,
    workspace: String,
    role: Role,
    system: bool,
    expires_at: Option<String>,
    label: Option<String>,
) -> anyhow::Result<()> {
    let store = store::open(&config).await?;
    let expires_at_ms = match expires_at.as_deref() {
        None => None,
        Some(text) => Some(
            clock::parse_rfc3339(text)
                .ok_or_else(|| anyhow::anyhow!("--expires-at {text:?} is not RFC 3339"))?,
        ),
    };
    let service = auth::AuthService::new(std::sync::Arc::clone(&store), &config);
    service.bootstrap(config.admin_token.as_deref()).await?;
    let ws = store
        .get_workspace(&workspace)
        .await?
        .ok_or_else(|| anyhow::anyhow!("workspace {workspace:?} does not exist"))?;
    let (_, text) = service
        .mint(&ws, role, system, expires_at_ms, label)
        .await?;
    println!("{text}");
    Ok(())
}
